"""Tests for lorax._retry: what is retried, how long to wait, and the per-call state."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lorax._retry import RetryPolicy, RetryState, parse_retry_after
from lorax._timeout import NOT_GIVEN, Deadline
from lorax.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    BadRequestError,
    ClientClosedError,
    GenerationError,
    IncompleteGenerationError,
    InvalidRequestError,
    LoraxError,
    OverloadedError,
    ProtocolError,
    RateLimitExceededError,
    ResponseDecodeError,
    ServiceUnavailableError,
    ShardTimeoutError,
    StreamInterruptedError,
    UnhealthyError,
    UnknownError,
    ValidationError,
)

# Sun, 06 Nov 1994 08:49:37 GMT, the example date of RFC 9110.
NOW = 784111777.0


def fixed_now() -> float:
    return NOW


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FixedRandom(random.Random):
    """A generator whose every draw is the same number."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


NO_JITTER = RetryPolicy(jitter=0.0)


def connection_error(*, request_sent: object = ..., cls: type[APIConnectionError] = APIConnectionError) -> LoraxError:
    error = cls("connection refused")
    if request_sent is not ...:
        error.request_sent = request_sent  # type: ignore[attr-defined]
    return error


def timeout_error(phase: str, *, request_sent: object = ...) -> APITimeoutError:
    error = APITimeoutError(f"{phase} timed out", phase=phase)
    if request_sent is not ...:
        error.request_sent = request_sent  # type: ignore[attr-defined]
    return error


def status_error(
    cls: type[APIStatusError], status_code: int | None, error_type: str | None, **headers: str
) -> APIStatusError:
    return cls("failed", status_code=status_code, error_type=error_type, headers=headers)


def overloaded(retry_after: str | None = None) -> APIStatusError:
    headers = {} if retry_after is None else {"retry-after": retry_after}
    return OverloadedError("busy", status_code=429, error_type="overloaded", headers=headers)


# --- is_retryable ------------------------------------------------------------------

# (id, factory, retryable before the stream starts). Everything is refused once it has.
CASES: list[tuple[str, Callable[[], BaseException], bool]] = [
    # Connection failures: only with the transport's explicit "nothing was sent".
    ("conn-not-sent", lambda: connection_error(request_sent=False), True),
    ("conn-sent", lambda: connection_error(request_sent=True), False),
    ("conn-unmarked", connection_error, False),
    ("conn-sent-falsy-not-False", lambda: connection_error(request_sent=0), False),
    ("conn-sent-None", lambda: connection_error(request_sent=None), False),
    # Timeouts: connect before sending only.
    ("connect-timeout-not-sent", lambda: timeout_error("connect", request_sent=False), True),
    ("connect-timeout-unmarked", lambda: timeout_error("connect"), False),
    ("connect-timeout-sent", lambda: timeout_error("connect", request_sent=True), False),
    ("read-timeout-not-sent", lambda: timeout_error("read", request_sent=False), False),
    ("read-timeout-unmarked", lambda: timeout_error("read"), False),
    ("total-timeout-not-sent", lambda: timeout_error("total", request_sent=False), False),
    ("pool-timeout-not-sent", lambda: timeout_error("pool", request_sent=False), False),
    # A stream that broke: never, whatever else it looks like.
    ("interrupted", lambda: StreamInterruptedError("reset"), False),
    ("interrupted-not-sent", lambda: connection_error(request_sent=False, cls=StreamInterruptedError), False),
    (
        "interrupted-overloaded-503",
        lambda: StreamInterruptedError("reset", status_code=503, error_type="overloaded"),
        False,
    ),
    # Status errors: by status or by error_type.
    ("overloaded-429", lambda: status_error(OverloadedError, 429, "overloaded"), True),
    ("overloaded-in-stream", lambda: status_error(OverloadedError, None, "overloaded"), True),
    ("overloaded-unusual-status", lambda: status_error(OverloadedError, 500, "overloaded"), True),
    ("rate-limit-429", lambda: status_error(RateLimitExceededError, 429, None), True),
    ("unavailable-503", lambda: status_error(ServiceUnavailableError, 503, None), True),
    ("unhealthy-503", lambda: status_error(UnhealthyError, 503, "healthcheck"), True),
    ("unavailable-502", lambda: status_error(ServiceUnavailableError, 502, None), False),
    ("shard-timeout-504", lambda: status_error(ShardTimeoutError, 504, None), False),
    ("unknown-500", lambda: status_error(UnknownError, 500, None), False),
    ("generation-424", lambda: status_error(GenerationError, 424, "generation"), False),
    ("generation-in-stream", lambda: status_error(GenerationError, None, "generation"), False),
    ("validation-422", lambda: status_error(ValidationError, 422, "validation"), False),
    ("bad-request-400", lambda: status_error(BadRequestError, 400, None), False),
    ("incomplete-in-stream", lambda: status_error(IncompleteGenerationError, None, "incomplete_generation"), False),
    ("status-error-bare", lambda: status_error(APIStatusError, None, None), False),
    ("invalid-request", lambda: InvalidRequestError("bad", error_type="validation"), False),
    # The rest of the tree.
    ("protocol", lambda: ProtocolError("bad frame"), False),
    ("decode", lambda: ResponseDecodeError("bad json"), False),
    ("closed", lambda: ClientClosedError("closed"), False),
    ("lorax-base", lambda: LoraxError("?"), False),
    # Not ours: never, even when they look like a network failure.
    ("builtin-connection-refused", lambda: ConnectionRefusedError(111, "refused"), False),
    ("builtin-timeout", lambda: TimeoutError("timed out"), False),
    ("value-error", lambda: ValueError("x"), False),
    ("keyboard-interrupt", KeyboardInterrupt, False),
]


@pytest.mark.parametrize(("factory", "expected"), [(f, e) for _, f, e in CASES], ids=[c[0] for c in CASES])
def test_is_retryable_before_the_stream_starts(factory: Callable[[], BaseException], expected: bool) -> None:
    assert RetryPolicy().is_retryable(factory(), stream_started=False) is expected


@pytest.mark.parametrize("factory", [f for _, f, _ in CASES], ids=[c[0] for c in CASES])
def test_nothing_is_retryable_once_the_stream_started(factory: Callable[[], BaseException]) -> None:
    assert RetryPolicy().is_retryable(factory(), stream_started=True) is False


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (status_error(ServiceUnavailableError, 502, None), True),
        (status_error(OverloadedError, 429, "overloaded"), False),
        (status_error(OverloadedError, None, "overloaded"), False),
        (status_error(ServiceUnavailableError, 503, None), False),
        (status_error(UnknownError, 500, "custom_busy"), True),
        (status_error(UnknownError, None, "custom_busy"), True),
    ],
    ids=["502", "429-overloaded", "in-stream-overloaded", "503", "500-custom", "in-stream-custom"],
)
def test_retry_sets_are_configurable(error: APIStatusError, expected: bool) -> None:
    policy = RetryPolicy(retry_on_status=frozenset({502}), retry_on_error_type=frozenset({"custom_busy"}))
    assert policy.is_retryable(error, stream_started=False) is expected


def test_invalid_request_is_never_retried_even_when_its_type_is_listed() -> None:
    policy = RetryPolicy(retry_on_error_type=frozenset({"validation"}), retry_on_status=frozenset({422}))
    assert policy.is_retryable(status_error(ValidationError, 422, "validation"), stream_started=False) is True
    refused = InvalidRequestError("refused", status_code=422, error_type="validation")
    assert policy.is_retryable(refused, stream_started=False) is False


# --- backoff -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (NO_JITTER, [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]),
        (RetryPolicy(backoff_base=1.0, backoff_max=5.0, jitter=0.0), [1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0]),
        (RetryPolicy(backoff_base=0.1, backoff_max=0.3, jitter=0.0), [0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]),
        (RetryPolicy(backoff_base=0.0, jitter=0.0), [0.0] * 8),
        (RetryPolicy(backoff_base=2.0, backoff_max=1.0, jitter=0.0), [1.0] * 8),
    ],
    ids=["default", "base1-max5", "base0.1-max0.3", "base0", "max-below-base"],
)
def test_backoff_doubles_up_to_the_cap(policy: RetryPolicy, expected: list[float]) -> None:
    assert [policy.backoff(n, None) for n in range(1, 9)] == expected


def test_backoff_survives_a_huge_attempt_number() -> None:
    assert NO_JITTER.backoff(10_000, None) == 8.0
    assert RetryPolicy(backoff_max=1e300, jitter=0.0).backoff(10_000, None) == 0.5 * 2.0**64


@pytest.mark.parametrize("attempt", [0, -1])
def test_backoff_counts_from_one(attempt: int) -> None:
    with pytest.raises(ValueError, match=rf"^attempt counts retries from 1; got {attempt}$"):
        RetryPolicy().backoff(attempt, None)


@pytest.mark.parametrize(
    ("draw", "jitter", "attempt", "expected"),
    [
        (0.0, 0.25, 1, 0.5),  # the top of the range: d
        (0.5, 0.25, 1, 0.4375),  # d * (1 - 0.125)
        (0.5, 0.25, 3, 1.75),
        (0.5, 0.25, 9, 7.0),  # capped at 8, then jittered
        (0.75, 1.0, 4, 1.0),  # full jitter: uniform in [0, d]
        (0.5, 0.5, 2, 0.75),  # equal jitter: d/2 + uniform in [0, d/2]
        (0.9, 0.0, 2, 1.0),  # no jitter
    ],
)
def test_jitter_only_shortens_the_wait(draw: float, jitter: float, attempt: int, expected: float) -> None:
    policy = RetryPolicy(jitter=jitter)
    assert policy.backoff(attempt, None, rng=FixedRandom(draw)) == expected


def test_seeded_rng_gives_a_reproducible_sequence_within_bounds() -> None:
    policy = RetryPolicy()
    waits = [policy.backoff(n, None, rng=random.Random(1234)) or math.nan for n in range(1, 7)]
    again = [policy.backoff(n, None, rng=random.Random(1234)) for n in range(1, 7)]
    twin = random.Random(1234).random()
    assert waits == again
    assert waits == [d * (1.0 - 0.25 * twin) for d in (0.5, 1.0, 2.0, 4.0, 8.0, 8.0)]
    for wait, ceiling in zip(waits, (0.5, 1.0, 2.0, 4.0, 8.0, 8.0), strict=True):
        assert ceiling * 0.75 <= wait <= ceiling


def test_backoff_uses_the_random_module_without_an_rng(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "random", lambda: 0.5)
    assert RetryPolicy().backoff(1, None) == 0.4375


@given(
    attempt=st.integers(min_value=1, max_value=200),
    base=st.floats(min_value=0.0, max_value=10.0),
    cap=st.floats(min_value=0.0, max_value=120.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_always_within_bounds(attempt: int, base: float, cap: float, jitter: float, seed: int) -> None:
    policy = RetryPolicy(backoff_base=base, backoff_max=cap, jitter=jitter)
    wait = policy.backoff(attempt, None, rng=random.Random(seed))
    assert wait is not None
    upper = min(base * 2.0 ** min(attempt - 1, 64), cap)
    assert upper * (1.0 - jitter) <= wait <= upper
    assert 0.0 <= wait <= cap


@given(draw=st.floats(min_value=0.0, max_value=1.0, exclude_max=True), attempt=st.integers(1, 64))
def test_default_backoff_within_three_quarters_and_full(draw: float, attempt: int) -> None:
    wait = RetryPolicy().backoff(attempt, None, rng=FixedRandom(draw))
    ceiling = min(0.5 * 2.0 ** (attempt - 1), 8.0)
    assert wait is not None
    assert 0.75 * ceiling <= wait <= ceiling <= 8.0


# --- Retry-After -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("007", 7.0),
        ("-1", None),
        ("+3", None),
        ("abc", None),
        ("", None),
        ("   ", None),
        (None, None),
        ("1e3", None),
        (".5", None),
        ("5.", None),
        ("3 seconds", None),
        ("Sun, 06 Nov 1994 08:49:42 GMT", 5.0),  # IMF-fixdate
        ("Sunday, 06-Nov-94 08:49:47 GMT", 10.0),  # RFC 850
        ("Sun Nov  6 08:49:57 1994", 20.0),  # asctime, no zone: GMT
        ("Sun, 06 Nov 1994 08:50:37 -0000", 60.0),  # unknown zone: GMT
        ("Sun, 06 Nov 1994 08:49:37 GMT", None),  # now: not in the future
        ("Sun, 06 Nov 1994 08:49:30 GMT", None),  # past
        ("Sat, 01 Jan 1994 00:00:00 GMT", None),  # long past
        ("Sun, 32 Nov 1994 08:49:37 GMT", None),  # no such day
        ("Sun, 06 Foo 1994 08:49:37 GMT", None),  # no such month
    ],
    ids=repr,
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=fixed_now) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("60", 60.0),  # exactly the cap is still honoured
        ("Sun, 06 Nov 1994 08:49:42 GMT", 5.0),
        ("Sunday, 06-Nov-94 08:49:47 GMT", 10.0),
        # Ignored: the policy's own backoff, 1.0 s before the second retry.
        ("-1", 1.0),
        ("abc", 1.0),
        ("", 1.0),
        ("Sun, 06 Nov 1994 08:49:30 GMT", 1.0),
        # Longer than max_retry_after: do not retry.
        ("61", None),
        ("60.5", None),
        ("3600", None),
        ("Sun, 06 Nov 1994 08:51:37 GMT", None),
    ],
    ids=repr,
)
def test_backoff_honours_retry_after(header: str, expected: float | None) -> None:
    # A draw that would change any jittered wait: Retry-After must bypass jitter.
    policy = RetryPolicy(jitter=1.0)
    rng = FixedRandom(0.0)
    assert policy.backoff(2, overloaded(header), rng=rng, now=fixed_now) == expected


def test_retry_after_is_the_same_at_every_attempt() -> None:
    assert [RetryPolicy().backoff(n, overloaded("3"), rng=FixedRandom(0.9)) for n in (1, 2, 5)] == [3.0, 3.0, 3.0]


def test_retry_after_is_found_whatever_the_header_spelling() -> None:
    error = OverloadedError("busy", status_code=429, error_type="overloaded", headers={"Retry-After": "4"})
    assert RetryPolicy().backoff(1, error) == 4.0


def test_retry_after_cap_is_configurable() -> None:
    assert RetryPolicy(max_retry_after=math.inf).backoff(1, overloaded("100000")) == 100000.0
    assert RetryPolicy(max_retry_after=0.0).backoff(1, overloaded("0")) == 0.0
    assert RetryPolicy(max_retry_after=0.0).backoff(1, overloaded("1")) is None


def test_retry_after_is_ignored_on_foreign_exceptions() -> None:
    error = ValueError("x")
    error.headers = {"retry-after": "30"}  # type: ignore[attr-defined]
    assert NO_JITTER.backoff(1, error) == 0.5


# --- RetryPolicy construction ------------------------------------------------------


def test_default_policy() -> None:
    policy = RetryPolicy()
    assert dataclasses.astuple(policy) == (2, 0.5, 8.0, 0.25, 60.0, frozenset({429, 503}), frozenset({"overloaded"}))


def test_policy_is_immutable_hashable_and_normalised() -> None:
    policy = RetryPolicy(max_retries=3, backoff_base=1, retry_on_status={429}, retry_on_error_type=["overloaded"])  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_retries = 5  # type: ignore[misc]
    assert policy == RetryPolicy(max_retries=3, backoff_base=1.0, retry_on_status=frozenset({429}))
    assert hash(policy) == hash(RetryPolicy(max_retries=3, backoff_base=1.0, retry_on_status=frozenset({429})))
    assert type(policy.backoff_base) is float
    assert type(policy.retry_on_status) is frozenset
    assert type(policy.retry_on_error_type) is frozenset


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_retries": -1}, ValueError, "RetryPolicy.max_retries must be >= 0; got -1"),
        ({"max_retries": 1.5}, TypeError, "RetryPolicy.max_retries must be an int, not float"),
        ({"max_retries": True}, TypeError, "RetryPolicy.max_retries must be an int, not bool"),
        ({"backoff_base": -0.1}, ValueError, "RetryPolicy.backoff_base must be a finite number >= 0; got -0.1"),
        ({"backoff_base": math.nan}, ValueError, "RetryPolicy.backoff_base must be a finite number >= 0; got nan"),
        ({"backoff_max": math.inf}, ValueError, "RetryPolicy.backoff_max must be a finite number >= 0; got inf"),
        ({"backoff_max": "8"}, TypeError, "RetryPolicy.backoff_max must be a number, not str"),
        ({"jitter": 1.5}, ValueError, "RetryPolicy.jitter must be between 0 and 1; got 1.5"),
        ({"jitter": -0.1}, ValueError, "RetryPolicy.jitter must be a finite number >= 0; got -0.1"),
        (
            {"max_retry_after": -1},
            ValueError,
            "RetryPolicy.max_retry_after must be a number >= 0 (math.inf for no cap); got -1",
        ),
        (
            {"max_retry_after": math.nan},
            ValueError,
            "RetryPolicy.max_retry_after must be a number >= 0 (math.inf for no cap); got nan",
        ),
        ({"retry_on_status": 429}, TypeError, "RetryPolicy.retry_on_status must be a set of int, not int"),
        ({"retry_on_status": {"429"}}, TypeError, "RetryPolicy.retry_on_status must hold int values; got '429'"),
        ({"retry_on_status": {True}}, TypeError, "RetryPolicy.retry_on_status must hold int values; got True"),
        (
            {"retry_on_error_type": "overloaded"},
            TypeError,
            "RetryPolicy.retry_on_error_type must be a set of str, not str",
        ),
        ({"retry_on_error_type": {1}}, TypeError, "RetryPolicy.retry_on_error_type must hold str values; got 1"),
    ],
    ids=repr,
)
def test_policy_rejects_bad_values(kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (NOT_GIVEN, RetryPolicy()),
        (None, RetryPolicy(max_retries=0)),
        (0, RetryPolicy(max_retries=0)),
        (5, RetryPolicy(max_retries=5)),
    ],
    ids=repr,
)
def test_coerce_accepts(value: object, expected: RetryPolicy) -> None:
    assert RetryPolicy.coerce(value) == expected  # type: ignore[arg-type]


def test_coerce_returns_a_policy_unchanged() -> None:
    policy = RetryPolicy(max_retries=7, jitter=0.0)
    assert RetryPolicy.coerce(policy) is policy


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (True, TypeError, "retries must be a RetryPolicy, an int or None, not bool"),
        (2.0, TypeError, "retries must be a RetryPolicy, an int or None, not float"),
        ("2", TypeError, "retries must be a RetryPolicy, an int or None, not str"),
        (-1, ValueError, "RetryPolicy.max_retries must be >= 0; got -1"),
    ],
    ids=repr,
)
def test_coerce_rejects(value: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        RetryPolicy.coerce(value)  # type: ignore[arg-type]
    assert str(info.value) == message


# --- RetryState --------------------------------------------------------------------


def test_state_gives_up_after_max_retries() -> None:
    state = RetryState(NO_JITTER, Deadline(None))
    assert state.attempts == 0
    assert state.next_delay(overloaded(), stream_started=False) == 0.5
    assert state.attempts == 1
    assert state.next_delay(overloaded(), stream_started=False) == 1.0
    assert state.attempts == 2
    assert state.next_delay(overloaded(), stream_started=False) is None
    assert state.attempts == 3


@pytest.mark.parametrize("max_retries", [0, 1, 3, 6])
def test_state_allows_exactly_max_retries(max_retries: int) -> None:
    state = RetryState(RetryPolicy(max_retries=max_retries, jitter=0.0), Deadline(None))
    delays = []
    while (delay := state.next_delay(overloaded(), stream_started=False)) is not None:
        delays.append(delay)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0][:max_retries]
    assert state.attempts == max_retries + 1


def test_state_counts_attempts_that_are_not_retried() -> None:
    state = RetryState(NO_JITTER, Deadline(None))
    assert state.next_delay(status_error(GenerationError, 424, "generation"), stream_started=False) is None
    assert state.attempts == 1


def test_state_never_retries_once_the_stream_started() -> None:
    state = RetryState(NO_JITTER, Deadline(None))
    assert state.next_delay(overloaded(), stream_started=True) is None
    assert state.attempts == 1


def test_state_uses_the_injected_rng_and_wall_clock() -> None:
    state = RetryState(RetryPolicy(), Deadline(None), rng=FixedRandom(0.5), now=fixed_now)
    assert state.next_delay(overloaded(), stream_started=False) == 0.4375
    assert state.next_delay(overloaded("Sun, 06 Nov 1994 08:49:42 GMT"), stream_started=False) == 5.0


def test_state_gives_up_on_a_retry_after_above_the_cap() -> None:
    state = RetryState(RetryPolicy(max_retries=5), Deadline(None))
    assert state.next_delay(overloaded("61"), stream_started=False) is None
    assert state.attempts == 1


def test_deadline_cuts_a_sleep_that_would_pass_it() -> None:
    clock = FakeClock(0.0)
    deadline = Deadline(2.0, clock=clock)
    state = RetryState(RetryPolicy(max_retries=5, backoff_base=1.0, jitter=0.0), deadline)
    clock.advance(0.5)  # first attempt fails after 0.5 s: 1.5 s left, 1 s sleep fits
    assert state.next_delay(overloaded(), stream_started=False) == 1.0
    clock.advance(1.0 + 0.2)  # the sleep, then a second attempt of 0.2 s: 0.3 s left
    assert state.next_delay(overloaded(), stream_started=False) is None
    assert state.attempts == 2


@pytest.mark.parametrize(
    ("remaining", "expected"),
    [(1.0, None), (1.25, 1.0), (0.75, None)],
    ids=["sleep-ends-at-deadline", "sleep-fits", "sleep-too-long"],
)
def test_deadline_boundary(remaining: float, expected: float | None) -> None:
    clock = FakeClock(0.0)
    deadline = Deadline(remaining, clock=clock)
    state = RetryState(RetryPolicy(backoff_base=1.0, jitter=0.0), deadline)
    assert state.next_delay(overloaded(), stream_started=False) == expected


def test_deadline_cuts_a_retry_after_within_the_cap() -> None:
    clock = FakeClock(0.0)
    state = RetryState(RetryPolicy(), Deadline(10.0, clock=clock))
    assert state.next_delay(overloaded("30"), stream_started=False) is None


def test_expired_deadline_refuses_even_an_immediate_retry() -> None:
    clock = FakeClock(0.0)
    state = RetryState(RetryPolicy(), Deadline(1.0, clock=clock))
    clock.advance(1.5)
    assert state.next_delay(overloaded("0"), stream_started=False) is None


def test_immediate_retry_inside_the_deadline() -> None:
    clock = FakeClock(0.0)
    state = RetryState(RetryPolicy(), Deadline(1.0, clock=clock))
    assert state.next_delay(overloaded("0"), stream_started=False) == 0.0


def run_with_retries(
    attempts: list[BaseException | None], policy: RetryPolicy, deadline: Deadline, sleeps: list[float]
) -> int:
    """The sync client's loop, with a scripted send and a recorded sleep."""
    state = RetryState(policy, deadline)
    script = iter(attempts)
    while True:
        deadline.check()
        outcome = next(script)
        try:
            if outcome is not None:
                raise outcome
            return state.attempts + 1
        except LoraxError as exc:
            delay = state.next_delay(exc, stream_started=False)
            if delay is None:
                raise
            sleeps.append(delay)


def test_loop_succeeds_after_two_retries() -> None:
    sleeps: list[float] = []
    errors = [status_error(ServiceUnavailableError, 503, None), connection_error(request_sent=False)]
    assert run_with_retries([*errors, None], NO_JITTER, Deadline(None), sleeps) == 3
    assert sleeps == [0.5, 1.0]


def test_loop_reraises_the_original_error_when_it_gives_up() -> None:
    sleeps: list[float] = []
    last = overloaded()
    with pytest.raises(OverloadedError) as info:
        run_with_retries([overloaded(), overloaded(), last], NO_JITTER, Deadline(None), sleeps)
    assert info.value is last
    assert sleeps == [0.5, 1.0]


def test_loop_reraises_a_long_retry_after_with_its_header() -> None:
    sleeps: list[float] = []
    with pytest.raises(OverloadedError) as info:
        run_with_retries([overloaded("120")], NO_JITTER, Deadline(None), sleeps)
    assert info.value.retry_after == "120"
    assert sleeps == []


def test_policy_and_state_reprs() -> None:
    state = RetryState(RetryPolicy(max_retries=1), Deadline(None))
    assert repr(state) == f"RetryState(attempts=0, policy={RetryPolicy(max_retries=1)!r}, deadline=Deadline(None))"
