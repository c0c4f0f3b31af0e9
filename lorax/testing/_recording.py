"""What the fake server saw: recorded requests and event counters, both thread-safe."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

__all__ = ["RecordedRequest", "Recorder", "Stats"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received: method, path, query string, headers (in order) and raw body."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    time: float = field(default_factory=time.time)

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        lower = name.lower()
        for key, value in self.headers:
            if key.lower() == lower:
                return value
        return None


class Recorder:
    """The list of requests a server received, oldest first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[RecordedRequest] = []

    def add(self, item: RecordedRequest) -> None:
        """Record a request."""
        with self._lock:
            self._items.append(item)

    def all(self) -> list[RecordedRequest]:
        """A snapshot of every recorded request."""
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        """Forget recorded requests."""
        with self._lock:
            self._items.clear()


class Stats:
    """Counters of what happened to requests.

    * ``requests``: every request received;
    * ``cancelled``: generations stopped because the client went away mid-way;
    * ``dropped``: connections aborted by a ``drop-after`` fault;
    * ``crashes``: requests that would have aborted the real router (docs/wire.md, "Inputs that crash LoRAX");
    * ``overloaded``: requests answered "Model is overloaded";
    * ``in_flight``: inference requests running now.
    """

    _NAMES = ("requests", "cancelled", "dropped", "crashes", "overloaded", "in_flight")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(self._NAMES, 0)

    def add(self, name: str, by: int = 1) -> int:
        """Add to a counter; return its new value."""
        with self._lock:
            self._values[name] += by
            return self._values[name]

    def reset(self) -> None:
        """Zero every counter except ``in_flight``."""
        with self._lock:
            for name in self._NAMES:
                if name != "in_flight":
                    self._values[name] = 0

    @property
    def requests(self) -> int:
        """Requests received."""
        return self._values["requests"]

    @property
    def cancelled(self) -> int:
        """Generations cancelled by a client disconnect."""
        return self._values["cancelled"]

    @property
    def dropped(self) -> int:
        """Connections dropped by an injected fault."""
        return self._values["dropped"]

    @property
    def crashes(self) -> int:
        """Requests that would have crashed the real router."""
        return self._values["crashes"]

    @property
    def overloaded(self) -> int:
        """Requests refused as overloaded."""
        return self._values["overloaded"]

    @property
    def in_flight(self) -> int:
        """Inference requests being served now."""
        return self._values["in_flight"]

    def __repr__(self) -> str:
        with self._lock:
            inner = ", ".join(f"{k}={v}" for k, v in self._values.items())
        return f"Stats({inner})"
