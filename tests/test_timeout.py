"""Tests for lorax._timeout: Timeout, its coercion, NOT_GIVEN and Deadline (no I/O)."""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle
from collections.abc import Callable, Iterator
from decimal import Decimal
from fractions import Fraction

import pytest

from lorax._timeout import DEFAULT_TIMEOUT, NOT_GIVEN, Deadline, NotGiven, Timeout
from lorax.errors import APIConnectionError, APITimeoutError, LoraxError


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- NOT_GIVEN ---------------------------------------------------------------------


def test_not_given_is_a_falsy_singleton_named_not_given() -> None:
    assert repr(NOT_GIVEN) == "NOT_GIVEN"
    assert str(NOT_GIVEN) == "NOT_GIVEN"
    assert bool(NOT_GIVEN) is False
    assert NOT_GIVEN is NotGiven.NOT_GIVEN
    assert list(NotGiven) == [NOT_GIVEN]


@pytest.mark.parametrize(
    "clone",
    [copy.copy, copy.deepcopy, lambda v: pickle.loads(pickle.dumps(v))],
    ids=["copy", "deepcopy", "pickle"],
)
def test_not_given_stays_a_singleton(clone: Callable[[object], object]) -> None:
    assert clone(NOT_GIVEN) is NOT_GIVEN


def test_not_given_is_not_none() -> None:
    assert NOT_GIVEN is not None
    assert Timeout.coerce(NOT_GIVEN) != Timeout.coerce(None)


# --- Timeout -----------------------------------------------------------------------


def test_default_timeout_is_60_connect_60_read_no_total_no_pool() -> None:
    assert Timeout() == Timeout(connect=60.0, read=60.0, total=None, pool=None)
    assert Timeout() == DEFAULT_TIMEOUT
    assert (DEFAULT_TIMEOUT.connect, DEFAULT_TIMEOUT.read, DEFAULT_TIMEOUT.total, DEFAULT_TIMEOUT.pool) == (
        60.0,
        60.0,
        None,
        None,
    )


def test_timeout_is_immutable_and_hashable() -> None:
    timeout = Timeout(connect=1, read=2, total=3, pool=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        timeout.read = 5  # type: ignore[misc]
    assert not hasattr(timeout, "__dict__")
    assert hash(timeout) == hash(Timeout(connect=1.0, read=2.0, total=3.0, pool=4.0))
    assert dataclasses.replace(timeout, total=None) == Timeout(connect=1, read=2, total=None, pool=4)
    assert timeout == Timeout(connect=1, read=2, total=3, pool=4)


def test_timeout_stores_numbers_as_float() -> None:
    timeout = Timeout(connect=5, read=Fraction(1, 4), total=7, pool=1)  # type: ignore[arg-type]
    assert timeout == Timeout(connect=5.0, read=0.25, total=7.0, pool=1.0)
    assert [type(v) for v in (timeout.connect, timeout.read, timeout.total, timeout.pool)] == [float] * 4
    assert repr(Timeout(connect=5)) == "Timeout(connect=5.0, read=60.0, total=None, pool=None)"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (NOT_GIVEN, Timeout(connect=60.0, read=60.0, total=None, pool=None)),
        (None, Timeout(connect=None, read=None, total=None, pool=None)),
        (60, Timeout(connect=60.0, read=60.0, total=None, pool=None)),
        (1, Timeout(connect=1.0, read=1.0, total=None, pool=None)),
        (2.5, Timeout(connect=2.5, read=2.5, total=None, pool=None)),
        (0.001, Timeout(connect=0.001, read=0.001, total=None, pool=None)),
        (Fraction(3, 2), Timeout(connect=1.5, read=1.5, total=None, pool=None)),
        ((3, 30), Timeout(connect=3.0, read=30.0, total=None, pool=None)),
        ((3.5, 0.5), Timeout(connect=3.5, read=0.5, total=None, pool=None)),
        ((None, 30), Timeout(connect=None, read=30.0, total=None, pool=None)),
        ((3, None), Timeout(connect=3.0, read=None, total=None, pool=None)),
        ((None, None), Timeout(connect=None, read=None, total=None, pool=None)),
    ],
    ids=repr,
)
def test_coerce_accepts(value: object, expected: Timeout) -> None:
    assert Timeout.coerce(value) == expected  # type: ignore[arg-type]


def test_coerce_returns_a_timeout_unchanged() -> None:
    timeout = Timeout(connect=1, read=None, total=30, pool=2)
    assert Timeout.coerce(timeout) is timeout


def test_coerce_not_given_is_the_same_as_60() -> None:
    assert Timeout.coerce(NOT_GIVEN) is DEFAULT_TIMEOUT
    assert Timeout.coerce(NOT_GIVEN) == Timeout.coerce(60)


def test_coerce_none_does_not_warn(recwarn: pytest.WarningsRecorder) -> None:
    Timeout.coerce(None)
    assert len(recwarn) == 0


BAD_CONNECT = "Timeout.connect must be a finite number of seconds above 0, or None for no limit; got "
BAD_READ = "Timeout.read must be a finite number of seconds above 0, or None for no limit; got "
NOT_A_TIMEOUT = "timeout must be a Timeout, a number of seconds, a (connect, read) tuple or None, not "


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (-1, ValueError, BAD_CONNECT + "-1"),
        (0, ValueError, BAD_CONNECT + "0"),
        (0.0, ValueError, BAD_CONNECT + "0.0"),
        (-0.5, ValueError, BAD_CONNECT + "-0.5"),
        (math.nan, ValueError, BAD_CONNECT + "nan"),
        (math.inf, ValueError, BAD_CONNECT + "inf"),
        (-math.inf, ValueError, BAD_CONNECT + "-inf"),
        ((1, -1), ValueError, BAD_READ + "-1"),
        ((math.nan, 1), ValueError, BAD_CONNECT + "nan"),
        ((1, 2, 3), ValueError, "a timeout tuple must be (connect, read); got 3 items: (1, 2, 3)"),
        ((1,), ValueError, "a timeout tuple must be (connect, read); got 1 items: (1,)"),
        ((), ValueError, "a timeout tuple must be (connect, read); got 0 items: ()"),
        ([1, 2], TypeError, NOT_A_TIMEOUT + "list"),
        ("60", TypeError, NOT_A_TIMEOUT + "str"),
        (True, TypeError, NOT_A_TIMEOUT + "bool"),
        (False, TypeError, NOT_A_TIMEOUT + "bool"),
        (Decimal(1), TypeError, NOT_A_TIMEOUT + "Decimal"),
        (object(), TypeError, NOT_A_TIMEOUT + "object"),
        ({"connect": 1}, TypeError, NOT_A_TIMEOUT + "dict"),
        ((True, 1), TypeError, "Timeout.connect must be a number of seconds or None, not bool"),
        ((1, "2"), TypeError, "Timeout.read must be a number of seconds or None, not str"),
    ],
    ids=repr,
)
def test_coerce_rejects(value: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        Timeout.coerce(value)  # type: ignore[arg-type]
    assert str(info.value) == message
    assert not isinstance(info.value, LoraxError)


@pytest.mark.parametrize("field", ["connect", "read", "total", "pool"])
@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        ("1", TypeError),
        (True, TypeError),
    ],
    ids=repr,
)
def test_every_field_is_validated(field: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=rf"^Timeout\.{field} must be "):
        Timeout(**{field: value})  # type: ignore[arg-type]


# --- Deadline ----------------------------------------------------------------------


def test_no_deadline_never_expires_and_bounds_nothing() -> None:
    clock = FakeClock(100.0)
    deadline = Deadline(None, clock=clock)
    clock.advance(1e9)
    assert deadline.total is None
    assert deadline.remaining() is None
    assert deadline.expired() is False
    deadline.check()
    assert deadline.cap(5.0) == 5.0
    assert deadline.cap(None) is None
    assert repr(deadline) == "Deadline(None)"


def test_deadline_counts_down_from_construction() -> None:
    clock = FakeClock(100.0)
    deadline = Deadline(10, clock=clock)
    assert deadline.total == 10.0
    assert deadline.remaining() == 10.0
    clock.advance(4.0)
    assert deadline.remaining() == 6.0
    assert deadline.expired() is False
    deadline.check()
    assert repr(deadline) == "Deadline(total=10, remaining=6.0)"


def test_deadline_cap_takes_the_smaller_bound() -> None:
    clock = FakeClock(0.0)
    deadline = Deadline(10.0, clock=clock)
    clock.advance(4.0)
    assert deadline.cap(5.0) == 5.0
    assert deadline.cap(6.0) == 6.0
    assert deadline.cap(7.0) == 6.0
    assert deadline.cap(None) == 6.0
    clock.advance(5.5)
    assert deadline.cap(None) == 0.5
    assert deadline.cap(60.0) == 0.5


def test_deadline_expires_exactly_at_total() -> None:
    clock = FakeClock(0.0)
    deadline = Deadline(10.0, clock=clock)
    clock.advance(9.5)
    assert deadline.expired() is False
    clock.advance(0.5)
    assert deadline.expired() is True
    assert deadline.remaining() == 0.0
    clock.advance(100.0)
    assert deadline.remaining() == 0.0


@pytest.mark.parametrize(("total", "text"), [(10.0, "10"), (2.5, "2.5"), (0.25, "0.25"), (300, "300")])
def test_check_raises_a_total_timeout_naming_the_configured_total(total: float, text: str) -> None:
    clock = FakeClock(50.0)
    deadline = Deadline(total, clock=clock)
    clock.advance(total)
    with pytest.raises(APITimeoutError) as info:
        deadline.check()
    error = info.value
    assert error.phase == "total"
    assert str(error) == f"the total timeout of {text} s ran out"
    assert error.status_code is None
    assert isinstance(error, APIConnectionError)


def test_cap_raises_once_expired_instead_of_returning_zero() -> None:
    clock = FakeClock(0.0)
    deadline = Deadline(1.0, clock=clock)
    clock.advance(1.0)
    for bound in (5.0, None):
        with pytest.raises(APITimeoutError) as info:
            deadline.cap(bound)
        assert info.value.phase == "total"
        assert str(info.value) == "the total timeout of 1 s ran out"


def test_cap_reads_the_clock_once() -> None:
    # A second reading would see the deadline pass between the test and the result.
    readings: Iterator[float] = iter([0.0, 9.0, 10.0, 11.0])
    deadline = Deadline(10.0, clock=lambda: next(readings))
    assert deadline.cap(5.0) == 1.0


@pytest.mark.parametrize(
    ("total", "error"),
    [
        (0, ValueError),
        (-1.0, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (True, TypeError),
        ("5", TypeError),
    ],
    ids=repr,
)
def test_deadline_rejects_bad_totals(total: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"^total must be "):
        Deadline(total)  # type: ignore[arg-type]


def test_deadline_uses_the_monotonic_clock_by_default() -> None:
    deadline = Deadline(3600.0)
    remaining = deadline.remaining()
    assert remaining is not None
    assert 3599.0 < remaining <= 3600.0
    assert deadline.expired() is False
