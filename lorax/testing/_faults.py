"""Fault injection for the fake server: per server, for the next N requests, or per request.

A fault is a :class:`FaultSpec`. Three sources are merged for every inference request (the
POST routes that take LoRAX's concurrency permit: generation, embed and classify), later
ones winning field by field:

1. the server's standing faults, ``server.faults.set(...)`` (until ``clear()``);
2. the oldest queued one-shot fault, ``server.faults.push("...", times=N)``;
3. the request's own ``x-lorax-fake-fault`` header.

The header (and ``push``) syntax is a ``;``- or ``,``-separated list of directives, each
``name`` or ``name=value``; durations take ``ms`` or ``s`` (``250ms``, ``1.5s``)::

    token-latency=20ms      wait this long before each token (streams and non-streams)
    ttfb=1s                 wait this long before sending the response head
    overloaded              answer 429 {"error":"Model is overloaded","error_type":"overloaded"}
    retry-after=2           with `overloaded`: also send `Retry-After: 2`
    error-after=3           fail after 3 tokens: an error event in a stream, 424 otherwise
    error-type=generation   error_type of that failure: generation (default) or incomplete_generation
    drop-after=2            abort the TCP connection after 2 tokens (no chunked terminator)
    bad-gateway             answer 502 with an HTML body, as a proxy in front of LoRAX would
    stall=headers           send the response head, then nothing (streams: not even keep-alives)
    stall=all               send nothing at all until the client gives up
    keep-alive=100ms        SSE keep-alive comment interval (LoRAX: 15s)

An unknown directive or a malformed value is answered with 400 text/plain
``invalid x-lorax-fake-fault: ...`` so a typo cannot silently test nothing.

Where LoRAX itself decides the shape, the fake follows it: on stream routes an overload is
an SSE error event under 200 (no ``Retry-After``), like every failure after the stream
head. ``ttfb``, ``stall`` and ``bad-gateway`` act before the body is even parsed, as a slow
network or a proxy in front of LoRAX would. Faults never apply to the GET routes or to
``/tokenize`` (which take no concurrency permit).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields, replace

__all__ = ["FAULT_HEADER", "FaultError", "FaultSpec", "Faults", "parse_faults"]

FAULT_HEADER = "x-lorax-fake-fault"


class FaultError(ValueError):
    """A malformed fault specification."""


@dataclass(frozen=True)
class FaultSpec:
    """The faults to apply to one request. None means "not set" (nothing injected)."""

    token_latency: float | None = None
    time_to_first_byte: float | None = None
    overloaded: bool | None = None
    retry_after: int | None = None
    error_after: int | None = None
    error_type: str | None = None
    drop_after: int | None = None
    bad_gateway: bool | None = None
    stall: str | None = None
    keep_alive: float | None = None

    def merged(self, other: FaultSpec) -> FaultSpec:
        """This spec overridden by every field `other` sets."""
        changes = {f.name: getattr(other, f.name) for f in fields(other) if getattr(other, f.name) is not None}
        return replace(self, **changes)


def _duration(name: str, value: str) -> float:
    text = value.strip().lower()
    try:
        if text.endswith("ms"):
            seconds = float(text[:-2]) / 1000.0
        elif text.endswith("s"):
            seconds = float(text[:-1])
        else:
            raise ValueError(text)
    except ValueError:
        raise FaultError(f"{name}: expected a duration such as 250ms or 1.5s, got {value!r}") from None
    if seconds < 0:
        raise FaultError(f"{name}: a duration cannot be negative")
    return seconds


def _count(name: str, value: str) -> int:
    try:
        count = int(value.strip())
    except ValueError:
        raise FaultError(f"{name}: expected a whole number, got {value!r}") from None
    if count < 0:
        raise FaultError(f"{name}: cannot be negative")
    return count


def parse_faults(text: str) -> FaultSpec:
    """Parse the header syntax described in the module docs."""
    spec: dict[str, object] = {}
    for raw in text.replace(",", ";").split(";"):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if name == "token-latency" and sep:
            spec["token_latency"] = _duration(name, value)
        elif name == "ttfb" and sep:
            spec["time_to_first_byte"] = _duration(name, value)
        elif name == "keep-alive" and sep:
            spec["keep_alive"] = _duration(name, value)
            if spec["keep_alive"] == 0:
                raise FaultError("keep-alive: must be positive")
        elif name == "overloaded" and not sep:
            spec["overloaded"] = True
        elif name == "retry-after" and sep:
            spec["retry_after"] = _count(name, value)
        elif name == "error-after" and sep:
            spec["error_after"] = _count(name, value)
        elif name == "error-type" and sep:
            kind = value.strip()
            if kind not in ("generation", "incomplete_generation"):
                raise FaultError("error-type: expected generation or incomplete_generation")
            spec["error_type"] = kind
        elif name == "drop-after" and sep:
            spec["drop_after"] = _count(name, value)
        elif name == "bad-gateway" and not sep:
            spec["bad_gateway"] = True
        elif name == "stall" and sep:
            mode = value.strip().lower()
            if mode not in ("headers", "all"):
                raise FaultError("stall: expected headers or all")
            spec["stall"] = mode
        else:
            raise FaultError(f"unknown directive {item!r}")
    return FaultSpec(**spec)  # type: ignore[arg-type]


@dataclass
class _Queued:
    spec: FaultSpec
    remaining: int


class Faults:
    """A server's fault switches. Thread-safe: tests change them while the server runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._standing = FaultSpec()
        self._queue: list[_Queued] = []

    def set(
        self,
        spec: str | FaultSpec | None = None,
        *,
        token_latency: float | None = None,
        time_to_first_byte: float | None = None,
        keep_alive: float | None = None,
        error_after: int | None = None,
        drop_after: int | None = None,
    ) -> None:
        """Add standing faults (for every request until :meth:`clear`), from a spec and/or keywords.

        Durations in keywords are seconds.
        """
        parsed = parse_faults(spec) if isinstance(spec, str) else (spec or FaultSpec())
        parsed = parsed.merged(
            FaultSpec(
                token_latency=token_latency,
                time_to_first_byte=time_to_first_byte,
                keep_alive=keep_alive,
                error_after=error_after,
                drop_after=drop_after,
            )
        )
        with self._lock:
            self._standing = self._standing.merged(parsed)

    def push(self, spec: str | FaultSpec, times: int = 1) -> None:
        """Apply `spec` to the next `times` inference requests only."""
        parsed = parse_faults(spec) if isinstance(spec, str) else spec
        with self._lock:
            self._queue.append(_Queued(parsed, times))

    def overload_next(self, times: int = 1, retry_after: int | None = None) -> None:
        """Answer the next `times` inference requests with 429 overloaded."""
        self.push(FaultSpec(overloaded=True, retry_after=retry_after), times)

    def clear(self) -> None:
        """Remove standing and queued faults."""
        with self._lock:
            self._standing = FaultSpec()
            self._queue.clear()

    @property
    def standing(self) -> FaultSpec:
        """The standing faults."""
        with self._lock:
            return self._standing

    def take(self, header: str | None) -> FaultSpec:
        """The effective faults for one inference request (consumes one queued use)."""
        own = parse_faults(header) if header else FaultSpec()
        with self._lock:
            spec = self._standing
            if self._queue:
                entry = self._queue[0]
                spec = spec.merged(entry.spec)
                entry.remaining -= 1
                if entry.remaining <= 0:
                    self._queue.pop(0)
        return spec.merged(own)
