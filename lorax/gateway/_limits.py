"""The gateway's per-call flow-control window and its memory budgets.

Both are plain counters on the gateway's event loop (no locks): see
``proto/lorax/v1/websocket.proto``, FLOW CONTROL and LIMITS AND FAIRNESS.
"""

from __future__ import annotations

import asyncio

__all__ = ["Flow", "MemoryBudget"]

# A window can grow no further: a client granting without end must not overflow it.
_MAX_WINDOW = 1 << 62


class Flow:
    """One call's flow-control window, in bytes of FrameMessage.message.

    The gateway sends a message only while the window is above zero and subtracts its
    size, so the window goes negative by at most one message and a window smaller
    than a message never deadlocks.
    """

    __slots__ = ("_open", "initial", "window")

    def __init__(self, initial: int) -> None:
        self.initial = min(initial, _MAX_WINDOW)
        self.window = self.initial
        self._open = asyncio.Event()
        self._open.set()

    async def wait_open(self) -> None:
        """Wait until the window is above zero."""
        while self.window <= 0:
            self._open.clear()
            await self._open.wait()

    def spend(self, size: int) -> None:
        """A message of `size` bytes is being sent."""
        self.window -= size

    def grant(self, size: int) -> None:
        """The client granted `size` more bytes (FrameWindowUpdate)."""
        self.window = min(self.window + size, _MAX_WINDOW)
        if self.window > 0:
            self._open.set()


class MemoryBudget:
    """Bytes held against a limit: one per connection, one for the whole gateway."""

    __slots__ = ("held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def fits(self, size: int) -> bool:
        """Whether `size` more bytes stay within the limit."""
        return self.held + size <= self.limit

    def take(self, size: int) -> None:
        self.held += size

    def give(self, size: int) -> None:
        self.held -= size
