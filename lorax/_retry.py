"""When to retry a failed call and how long to wait first, without sleeping.

:class:`RetryPolicy` is the immutable configuration a client is built with (README,
"Errors, retries, timeouts"). :class:`RetryState` applies it to one call: after each failed
attempt it answers "sleep this long, then try again" or "give up". The sync client
sleeps with :func:`time.sleep`, the async one with :func:`asyncio.sleep`; the decision
is the same code, so the two cannot drift apart. A client's loop looks like::

    deadline = Deadline(timeout.total)
    state = RetryState(policy, deadline)
    while True:
        deadline.check()
        try:
            return send()
        except LoraxError as exc:
            delay = state.next_delay(exc, stream_started=False)
            if delay is None:
                raise
            time.sleep(delay)  # or: await asyncio.sleep(delay)
"""

from __future__ import annotations

import math
import numbers
import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timezone

from lorax._timeout import NOT_GIVEN, Deadline, NotGiven
from lorax.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    InvalidRequestError,
    LoraxError,
    StreamInterruptedError,
)

__all__ = [
    "RetryPolicy",
    "RetryState",
    "parse_retry_after",
]

# RFC 9110 §10.2.3 defines delta-seconds as digits only. A decimal fraction is accepted
# too, since some gateways send one; a sign is not, so "-1" is garbage, not "now".
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")

# 2**64 times any sane base is far beyond every cap; stopping the exponent there keeps
# a huge retry number from overflowing the float.
_MAX_EXPONENT = 64


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header value, or None to ignore it.

    Accepted forms (RFC 9110 §10.2.3):

    - delta-seconds such as ``"3"``, and a non-negative decimal such as ``"1.5"``;
      ``"0"`` gives ``0.0``, an explicit "retry now".
    - an HTTP-date: the IMF-fixdate ``"Sun, 06 Nov 1994 08:49:37 GMT"`` and the obsolete
      RFC 850 and asctime forms. It gives the seconds from ``now()`` (wall-clock time,
      :func:`time.time` by default) until that date.

    None (fall back to the policy's own backoff) for a missing, empty or unparsable
    value, for a negative number, and for a date that is not in the future. A past date
    is not read as "retry at once": it usually means the two clocks disagree, and with
    a server clock running behind ours every date would look past, so taking them as 0
    would turn every retry into an immediate one.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
    from email.utils import parsedate_to_datetime  # rare (HTTP dates): not at import time

    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # asctime dates carry no zone and "-0000" comes back naive too; HTTP dates are
        # always GMT.
        when = when.replace(tzinfo=timezone.utc)
    try:
        delay = when.timestamp() - now()
    except (OverflowError, ValueError, OSError):
        return None
    return delay if delay > 0 else None


def _retry_after_header(error: BaseException | None) -> str | None:
    if not isinstance(error, LoraxError):
        return None
    value = error.retry_after
    if value is not None:
        return value
    # error.retry_after looks up the lower-case name only; a transport that kept the
    # server's spelling ("Retry-After") must not lose the header.
    for name, header in error.headers.items():
        if name.lower() == "retry-after":
            return header
    return None


def _non_negative(name: str, value: object, *, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"RetryPolicy.{name} must be a number, not {type(value).__name__}")
    number = float(value)
    if math.isnan(number) or number < 0 or (math.isinf(number) and not allow_inf):
        kind = "a number >= 0 (math.inf for no cap)" if allow_inf else "a finite number >= 0"
        raise ValueError(f"RetryPolicy.{name} must be {kind}; got {value!r}")
    return number


def _frozen_set(name: str, values: Iterable[object], kind: type) -> frozenset[object]:
    # A bare string would silently become a set of its characters.
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"RetryPolicy.{name} must be a set of {kind.__name__}, not {type(values).__name__}")
    items = frozenset(values)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, kind):
            raise TypeError(f"RetryPolicy.{name} must hold {kind.__name__} values; got {item!r}")
    return items


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Which failures a client retries, how often, and how long it waits in between.

    A policy is immutable and can be shared by any number of clients and threads.

    What is retried (:meth:`is_retryable`) is only what cannot have produced output
    or a side effect on the server:

    - an :class:`~lorax.errors.APIConnectionError` raised before any byte of the request
      was sent (refused connection, DNS failure, TLS handshake failure), and an
      :class:`~lorax.errors.APITimeoutError` of phase ``"connect"`` in the same
      situation. Transports mark those with ``request_sent = False`` on the exception;
      without that mark a request may have reached the server, and replaying a
      generation could run it twice, so it is not retried;
    - an :class:`~lorax.errors.APIStatusError` whose ``status_code`` is in
      :attr:`retry_on_status` or whose ``error_type`` is in :attr:`retry_on_error_type`,
      whether it came as an HTTP response or as an error event inside a stream;
    - and nothing at all once a stream has handed an event to the caller: retrying then
      would deliver the first tokens twice.

    Waits (:meth:`backoff`) grow exponentially: retry ``k`` (1-based) waits
    ``d = min(backoff_base * 2 ** (k - 1), backoff_max)``, that is 0.5, 1, 2, 4, 8, 8 ...
    seconds by default, then jitter takes a random fraction of up to :attr:`jitter` off
    it: the wait is uniform in ``[d * (1 - jitter), d]``. ``jitter=1.0`` is the "full
    jitter" of AWS's backoff article and ``0.5`` its "equal jitter"; the default 0.25
    keeps at least three quarters of ``d``. Jitter only ever shortens a wait, so
    :attr:`backoff_max` is a true maximum. A valid ``Retry-After`` header replaces all of
    this: the wait is exactly what the server asked for.

    Attributes:
        max_retries: retries after the first attempt; 0 disables retrying.
        backoff_base: seconds before the first retry, before jitter.
        backoff_max: cap on the exponential wait, before jitter.
        jitter: the largest fraction, 0 to 1, that jitter takes off a wait.
        max_retry_after: the longest ``Retry-After`` honoured, in seconds. A longer one
            is not waited for: the error is raised at once, and its ``retry_after``
            tells the caller when the server expects it back. ``math.inf`` honours any.
        retry_on_status: HTTP statuses that are retried.
        retry_on_error_type: LoRAX ``error_type`` values that are retried.

    Invalid values raise TypeError or ValueError when the policy is built.
    """

    max_retries: int = 2
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    jitter: float = 0.25
    max_retry_after: float = 60.0
    retry_on_status: frozenset[int] = field(default_factory=lambda: frozenset({429, 503}))
    retry_on_error_type: frozenset[str] = field(default_factory=lambda: frozenset({"overloaded"}))

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise TypeError(f"RetryPolicy.max_retries must be an int, not {type(self.max_retries).__name__}")
        if self.max_retries < 0:
            raise ValueError(f"RetryPolicy.max_retries must be >= 0; got {self.max_retries!r}")
        jitter = _non_negative("jitter", self.jitter)
        if jitter > 1:
            raise ValueError(f"RetryPolicy.jitter must be between 0 and 1; got {self.jitter!r}")
        # Normalised here so that a policy built from a set or from ints compares, hashes
        # and prints like the canonical one.
        object.__setattr__(self, "backoff_base", _non_negative("backoff_base", self.backoff_base))
        object.__setattr__(self, "backoff_max", _non_negative("backoff_max", self.backoff_max))
        object.__setattr__(self, "jitter", jitter)
        object.__setattr__(
            self, "max_retry_after", _non_negative("max_retry_after", self.max_retry_after, allow_inf=True)
        )
        object.__setattr__(self, "retry_on_status", _frozen_set("retry_on_status", self.retry_on_status, int))
        object.__setattr__(
            self, "retry_on_error_type", _frozen_set("retry_on_error_type", self.retry_on_error_type, str)
        )

    @classmethod
    def coerce(cls, value: RetryPolicy | int | NotGiven | None) -> RetryPolicy:
        """Turn what a user may pass as ``max_retries=`` into a policy.

        A :class:`RetryPolicy` is returned as it is, an int ``n`` gives the default
        policy with ``max_retries=n``, ``None`` gives one that never retries, and
        :data:`~lorax._timeout.NOT_GIVEN` gives the default policy.

        Raises:
            TypeError: ``value`` is of another type (a bool or a float included).
            ValueError: a negative int.
        """
        if isinstance(value, RetryPolicy):
            return value
        if value is NOT_GIVEN:
            return cls()
        if value is None:
            return cls(max_retries=0)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"retries must be a RetryPolicy, an int or None, not {type(value).__name__}")
        return cls(max_retries=value)

    def is_retryable(self, error: BaseException, *, stream_started: bool) -> bool:
        """Whether a failed attempt may be tried again, ignoring how many retries are left.

        ``stream_started`` is True once a stream has yielded an event to the caller;
        nothing is retried after that.
        """
        if stream_started or not isinstance(error, LoraxError):
            return False
        # Before the APIConnectionError and APIStatusError branches: it is both, and
        # tokens may already be out.
        if isinstance(error, StreamInterruptedError):
            return False
        # Checked with `is False` so that only a transport's explicit "nothing was sent"
        # allows a replay; anything else might duplicate a generation.
        not_sent = getattr(error, "request_sent", True) is False
        if isinstance(error, APITimeoutError):
            # A read timeout means the server may be generating; "total" means the
            # call's time is up.
            return error.phase == "connect" and not_sent
        if isinstance(error, APIConnectionError):
            return not_sent
        if isinstance(error, InvalidRequestError):
            # Refused before sending: the same request would be refused again.
            return False
        if isinstance(error, APIStatusError):
            return error.status_code in self.retry_on_status or error.error_type in self.retry_on_error_type
        # ProtocolError, ClientClosedError: a retry would meet the same peer or the same
        # closed client.
        return False

    def backoff(
        self,
        attempt: int,
        error: BaseException | None,
        *,
        rng: random.Random | None = None,
        now: Callable[[], float] = time.time,
    ) -> float | None:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry).

        A valid ``Retry-After`` on ``error`` (see :func:`parse_retry_after`) is obeyed
        exactly, without jitter, as long as it is at most :attr:`max_retry_after`; a
        longer one returns None, meaning "do not retry". Otherwise the jittered
        exponential wait described on the class, drawn from ``rng`` (the :mod:`random`
        module's generator when None). ``now`` is the wall clock used for HTTP-dates.

        Raises:
            ValueError: ``attempt`` is below 1.
        """
        if attempt < 1:
            raise ValueError(f"attempt counts retries from 1; got {attempt!r}")
        retry_after = parse_retry_after(_retry_after_header(error), now=now)
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        ceiling = min(self.backoff_base * 2.0 ** min(attempt - 1, _MAX_EXPONENT), self.backoff_max)
        draw = rng.random() if rng is not None else random.random()
        return ceiling * (1.0 - self.jitter * draw)


class RetryState:
    """The retry bookkeeping of one call; create a new one for every call.

    ``rng`` and ``now`` (the wall clock for ``Retry-After`` dates) are injectable for
    tests. Not thread-safe, and it need not be: a call runs in one thread or task.
    """

    __slots__ = ("_now", "_rng", "attempts", "deadline", "policy")

    def __init__(
        self,
        policy: RetryPolicy,
        deadline: Deadline,
        *,
        rng: random.Random | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.deadline = deadline
        #: Attempts made so far, that is, failures reported to :meth:`next_delay`.
        self.attempts = 0
        self._rng = rng
        self._now = now

    def next_delay(self, error: BaseException, *, stream_started: bool) -> float | None:
        """Record a failed attempt and say what to do next.

        Returns the seconds to sleep before the next attempt, or None to give up, in
        which case the caller re-raises ``error`` itself. It gives up when the error
        is not retryable, when :attr:`RetryPolicy.max_retries` retries have been made,
        when ``Retry-After`` asks for longer than :attr:`RetryPolicy.max_retry_after`,
        and when the sleep would reach the call's deadline. In that last case too the
        original error is raised, not an ``APITimeoutError("total")``: it says what
        actually went wrong (and carries its ``retry_after``), where a timeout would
        only say that the time ran out while waiting to find out again.
        """
        self.attempts += 1
        if not self.policy.is_retryable(error, stream_started=stream_started):
            return None
        retry = self.attempts  # the retry about to happen, counted from 1
        if retry > self.policy.max_retries:
            return None
        delay = self.policy.backoff(retry, error, rng=self._rng, now=self._now)
        if delay is None:
            return None
        remaining = self.deadline.remaining()
        if remaining is not None and delay >= remaining:
            # Waking up exactly at the deadline leaves no time for the attempt.
            return None
        return delay

    def __repr__(self) -> str:
        return f"RetryState(attempts={self.attempts}, policy={self.policy!r}, deadline={self.deadline!r})"
