"""Frames of one connection written to the socket together, once per loop iteration.

With many calls on one connection, many frames become ready in the same event-loop
iteration (the upstream reads of a batch of streams complete together). ``websockets``
writes each message to the transport on its own (one ``send()`` syscall each on an
idle socket) behind an async context manager and a drain check. :class:`FrameWriter`
instead queues each frame in the connection's Sans-I/O protocol object (the queue the
library's own writes go through, so ordering with its pings, pongs and close frames
is kept) and writes everything queued in one ``transport.write`` at the start of the
next iteration. Backpressure is the library's: a sender waits while the transport is
paused above its high-water mark, as ``send()`` does.

Anything unusual (the connection not open, a fragmented send in progress, a
``websockets`` release without the attributes used here) goes through the regular
``send()``, which raises :class:`~websockets.exceptions.ConnectionClosed` as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import SERVER, State

__all__ = ["FrameWriter"]


def _supported(ws: ServerConnection) -> bool:
    # close_exc is a property that is only valid once closed: look it up on the class.
    attributes = ("protocol", "transport", "paused", "drain", "send_in_progress", "connection_lost_waiter")
    protocol = ("send_binary", "data_to_send", "state", "writes", "extensions", "side")
    return (
        all(hasattr(ws, name) for name in attributes)
        and hasattr(type(ws), "close_exc")
        and all(hasattr(ws.protocol, name) for name in protocol)
    )


# Queued bytes that are written at once rather than at the end of the iteration.
_FLUSH_BYTES = 64 * 1024

_LEN16 = struct.Struct("!BBH").pack
_LEN64 = struct.Struct("!BBQ").pack


def _binary_frame(data: bytes) -> bytes:
    """An unfragmented, unmasked binary WebSocket frame (RFC 6455 5.2) holding `data`:
    what websockets' Frame.serialize() writes for a server without extensions."""
    size = len(data)
    if size < 126:
        return bytes((0x82, size)) + data
    if size < 1 << 16:
        return _LEN16(0x82, 126, size) + data
    return _LEN64(0x82, 127, size) + data


class FrameWriter:
    """Sends binary messages on `ws`, batching the writes of one loop iteration."""

    __slots__ = ("_fast", "_loop", "_pending", "_raw", "_scheduled", "_tasks", "_ws")

    def __init__(self, ws: ServerConnection) -> None:
        self._ws = ws
        self._loop = asyncio.get_running_loop()
        self._scheduled = False
        self._pending = 0  # bytes queued since the last write
        self._tasks: set[asyncio.Task[None]] = set()
        self._fast = _supported(ws)
        # Frames written here without the library's Frame.serialize(): only when no
        # extension (compression) transforms them and no mask applies (server side).
        self._raw = self._fast and not ws.protocol.extensions and ws.protocol.side is SERVER

    async def send(self, data: bytes) -> None:
        """Send one binary message; raises ConnectionClosed when the connection is gone."""
        ws: Any = self._ws
        if not self._fast or ws.protocol.state is not State.OPEN or ws.send_in_progress is not None:
            await ws.send(data)
            return
        self._queue(ws.protocol, data)
        if ws.paused:
            try:
                await ws.drain()
            except Exception:
                # Only connection_lost() fails a drain: report it as send() does.
                await asyncio.shield(ws.connection_lost_waiter)
                raise ws.close_exc from None

    def queue(self, data: bytes) -> None:
        """Send one small binary message without waiting (no backpressure: for heartbeats).

        Dropped when the connection is no longer open.
        """
        ws: Any = self._ws
        if self._fast and ws.send_in_progress is None:
            if ws.protocol.state is State.OPEN:
                self._queue(ws.protocol, data)
            return
        task = self._loop.create_task(self._send_quietly(data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_quietly(self, data: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(data)

    def _queue(self, protocol: Any, data: bytes) -> None:
        if self._raw:
            # What send_binary() queues, without its Frame object and checks (done by the caller).
            protocol.writes.append(_binary_frame(data))
        else:
            protocol.send_binary(data)
        self._pending += len(data)
        if self._pending >= _FLUSH_BYTES:
            # Enough for one write: write now, so that the transport's flow control
            # (pause_writing) sees the bytes and a sender that never yields waits in drain().
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        self._pending = 0
        ws: Any = self._ws
        writes = ws.protocol.data_to_send()
        if not writes:
            return  # the library's own send_data() wrote them already
        if all(writes):
            data = writes[0] if len(writes) == 1 else b"".join(writes)
            try:
                ws.transport.write(data)
            except Exception as exc:
                # As websockets does when a write fails: record it and drop the connection;
                # the calls see ConnectionClosed on their next send or receive.
                ws.set_connection_exc(exc)
                ws.transport.abort()
            return
        # An empty chunk is the library's half-close marker (after a close frame):
        # let its own writer handle the sequence.
        protocol = ws.protocol
        protocol.writes = list(writes)
        ws.send_data()
