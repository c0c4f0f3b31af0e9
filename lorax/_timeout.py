"""How long a call may wait: the :class:`Timeout` value and the per-call :class:`Deadline`.

Nothing here touches a socket or sleeps. The transports read a :class:`Timeout` and
translate it into their library's settings; the clients create one :class:`Deadline`
per call and use it to bound every connect, read and backoff sleep of that call,
retries included. Sync and async share this module, so ``timeout=60`` means the same
thing on both.
"""

from __future__ import annotations

import enum
import math
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, NoReturn

from lorax.errors import APITimeoutError

__all__ = [
    "DEFAULT_TIMEOUT",
    "NOT_GIVEN",
    "Deadline",
    "NotGiven",
    "Timeout",
]


class NotGiven(enum.Enum):
    """Type of :data:`NOT_GIVEN`, the default of arguments where ``None`` means something.

    ``timeout=None`` switches every timeout off, so "the caller did not pass a timeout"
    needs a value of its own. It is an enum member so that ``if value is NOT_GIVEN``
    narrows the type for mypy, and so that it stays a singleton through ``copy`` and
    ``pickle``.
    """

    NOT_GIVEN = "NOT_GIVEN"

    def __repr__(self) -> str:
        return "NOT_GIVEN"

    def __str__(self) -> str:
        return "NOT_GIVEN"

    def __bool__(self) -> Literal[False]:
        return False


#: Default value of arguments that must tell "not passed" apart from ``None``. Falsy.
NOT_GIVEN: Final = NotGiven.NOT_GIVEN


def _seconds(name: str, value: object) -> float | None:
    """Validate one duration: ``None`` (no limit) or a finite number of seconds above 0.

    Raises TypeError for a value that is not a real number (``bool`` included: ``True``
    seconds is a bug, not a duration) and ValueError for NaN, infinities, zero and
    negative numbers. Zero is refused because the I/O libraries disagree on it: for
    ``socket`` it means non-blocking, for aiohttp it means no limit at all. ``None``
    is the one spelling of "no limit".
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(value).__name__}")
    seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a finite number of seconds above 0, or None for no limit; got {value!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class Timeout:
    """The timeouts of a call, in seconds; ``None`` switches one off.

    Attributes:
        connect: time to establish a connection: the TCP connect and the TLS handshake
            (and the WebSocket handshake on the WebSocket transport). A DNS lookup in
            the sync client happens in ``getaddrinfo``, which no timeout can interrupt.
        read: the longest *idle* time between two received bytes (it also bounds each
            send of the request body). It is not a limit on the whole response: a
            stream that keeps delivering tokens, or keep-alive comments, never times
            out however long it runs.
        total: a deadline for the whole call, counted from its start: every attempt,
            every backoff sleep between retries, and reading the response or the
            stream to its end. ``None`` (the default) sets no deadline. Leave it off
            for long streams, or set it to the longest you are willing to wait.
        pool: the longest wait for a free connection when the pool is at its limit.
            ``None`` (the default) waits for as long as it takes, bounded only by
            ``total``.

    Invalid values raise TypeError (not a number) or ValueError (NaN, infinite, zero
    or negative): they are mistakes in the caller's configuration, not failures of a
    request, so they are not :class:`lorax.errors.LoraxError`.

    ``Timeout()`` is the default: 60 s to connect and 60 s of silence, as in the
    official client. Build the others with :meth:`coerce` or
    ``dataclasses.replace(timeout, total=120)``.
    """

    connect: float | None = 60.0
    read: float | None = 60.0
    total: float | None = None
    pool: float | None = None

    def __post_init__(self) -> None:
        # Stored as float so that Timeout(60) and Timeout(60.0) look and behave the same
        # everywhere they end up (reprs, logs, the libraries' own timeout objects).
        for name in ("connect", "read", "total", "pool"):
            object.__setattr__(self, name, _seconds(f"Timeout.{name}", getattr(self, name)))

    @classmethod
    def coerce(cls, value: Timeout | float | tuple[float | None, float | None] | NotGiven | None) -> Timeout:
        """Turn what a user may pass as ``timeout=`` into a :class:`Timeout`.

        - a :class:`Timeout` is returned as it is;
        - :data:`NOT_GIVEN` gives the default, :data:`DEFAULT_TIMEOUT` (same as ``60``);
        - a number ``n`` gives ``Timeout(connect=n, read=n)``, exactly what ``timeout=n``
          means to ``requests`` and so to the official client: ``read`` is the idle time
          between bytes, not a limit on the whole call, and there is no total deadline;
        - a ``(connect, read)`` tuple, as in ``requests``; either item may be ``None``;
        - ``None`` switches every timeout off. Nothing warns about it: it is a legitimate
          choice (a batch job with its own watchdog), but a call can then hang forever on
          a server that stops answering.

        Raises:
            TypeError: ``value`` is of none of these types (a list, a string, a bool).
            ValueError: a tuple whose length is not 2, or a number that is NaN,
                infinite, zero or negative.
        """
        if isinstance(value, Timeout):
            return value
        if value is NOT_GIVEN:
            return DEFAULT_TIMEOUT
        if value is None:
            return cls(connect=None, read=None, total=None, pool=None)
        if isinstance(value, tuple):
            if len(value) != 2:
                raise ValueError(f"a timeout tuple must be (connect, read); got {len(value)} items: {value!r}")
            connect, read = value
            return cls(connect=connect, read=read)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(
                "timeout must be a Timeout, a number of seconds, a (connect, read) tuple or None, "
                f"not {type(value).__name__}"
            )
        return cls(connect=value, read=value)


#: What ``timeout=`` means when it is not passed: 60 s to connect, 60 s of silence.
DEFAULT_TIMEOUT: Final = Timeout()


class Deadline:
    """The optional total deadline of one call, measured on a monotonic clock.

    Create one when a call starts, before its first attempt, and consult it before each
    attempt, each connect and read, and each backoff sleep. A ``Deadline(None)`` never
    expires and leaves every bound as it is, so callers need no special case.

    ``clock`` is injectable for tests; it must be monotonic (wall-clock jumps would
    stretch or cut the deadline) and is :func:`time.monotonic` by default, the same
    clock asyncio's loop uses.
    """

    __slots__ = ("_clock", "_expires_at", "_total")

    def __init__(self, total: float | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._total = _seconds("total", total)
        self._clock = clock
        self._expires_at = None if self._total is None else clock() + self._total

    @property
    def total(self) -> float | None:
        """The configured total, in seconds, or None when there is no deadline."""
        return self._total

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never below 0.0), or None when there is none."""
        if self._expires_at is None:
            return None
        return max(0.0, self._expires_at - self._clock())

    def expired(self) -> bool:
        """Whether the deadline has passed. Always False without a deadline."""
        return self._expires_at is not None and self._clock() >= self._expires_at

    def check(self) -> None:
        """Raise :class:`~lorax.errors.APITimeoutError` with ``phase="total"`` once expired.

        A transport whose read or connect timed out should call this first: when the
        deadline is what cut the wait, the error should say "total", not "read".
        """
        if self.expired():
            self._raise()

    def _raise(self) -> NoReturn:
        raise APITimeoutError(f"the total timeout of {self._total:g} s ran out", phase="total")

    def cap(self, seconds: float | None) -> float | None:
        """Bound a connect or read timeout, or a sleep, by the time left.

        Returns ``min(seconds, remaining)``, where a None on either side is no bound, so
        the result is None only when both are. The result is never 0: once the deadline
        has passed this raises the ``phase="total"`` error of :meth:`check` instead,
        because a timeout of 0 would make a socket non-blocking and would switch an
        aiohttp timeout off, rather than time out at once.
        """
        if self._expires_at is None:
            return seconds
        # One clock reading for both the test and the subtraction: two readings could
        # pass the test and still compute a remaining time of 0.
        remaining = self._expires_at - self._clock()
        if remaining <= 0:
            self._raise()
        if seconds is None:
            return remaining
        return min(seconds, remaining)

    def __repr__(self) -> str:
        if self._total is None:
            return "Deadline(None)"
        return f"Deadline(total={self._total:g}, remaining={self.remaining()})"
