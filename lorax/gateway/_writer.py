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

Memory: a frame handed to :meth:`FrameWriter.send` with ``counted`` bytes stays
counted against the memory budgets (through the ``release`` callback) until the
kernel took its bytes: while it waits here for the end of the iteration, and while it
waits in the transport's buffer behind a client that does not read. For that the
transport's write buffer limits are set to zero: the transport pauses the connection
as soon as it holds a byte, and resumes it (which lets the writer give the bytes back)
once it holds none. Senders wait while it is paused (the backpressure), so what the
transport holds beyond the kernel's buffers is at most one frame per sender, all
counted.

Anything unusual (the connection not open, a fragmented send in progress, a
``websockets`` release without the attributes used here) goes through the regular
``send()``, which raises :class:`~websockets.exceptions.ConnectionClosed` as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable
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


def _payload(wire: bytes) -> bytes:
    """The message in an unmasked binary WebSocket frame (as written by _binary_frame)."""
    size = wire[1]
    return wire[2 + (size == 126) * 2 + (size == 127) * 8 :]


class FrameWriter:
    """Sends binary messages on `ws`, batching the writes of one loop iteration.

    `release(n)` gives `n` counted bytes back to the memory budgets once the kernel
    took them (see :meth:`send`).
    """

    __slots__ = (
        "_counted",
        "_fast",
        "_loop",
        "_pending",
        "_raw",
        "_release",
        "_scheduled",
        "_tasks",
        "_watcher",
        "_ws",
        "waiting",
    )

    def __init__(self, ws: ServerConnection, release: Callable[[int], None]) -> None:
        self._ws = ws
        self._release = release
        self._loop = asyncio.get_running_loop()
        self._scheduled = False
        self._pending = 0  # bytes queued since the last write
        # Budget bytes of frames handed in whose bytes the kernel may not have taken yet.
        self._counted = 0
        # Waits for the transport to drain when counted bytes are left in its buffer.
        self._watcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Senders waiting for the transport to drain (a client reading slowly, or not at all).
        self.waiting = 0
        self._fast = _supported(ws)
        # Frames written here without the library's Frame.serialize(): only when no
        # extension (compression) transforms them and no mask applies (server side).
        self._raw = self._fast and not ws.protocol.extensions and ws.protocol.side is SERVER
        transport: Any = getattr(ws, "transport", None)
        if transport is not None and hasattr(transport, "set_write_buffer_limits"):
            # Paused while the transport holds any byte (see the module docstring).
            transport.set_write_buffer_limits(0, 0)

    @property
    def counted(self) -> int:
        """Counted bytes not given back yet (queued here or in the transport's buffer)."""
        return self._counted

    async def send(self, data: bytes, counted: int = 0) -> None:
        """Send one binary message; raises ConnectionClosed when the connection is gone.

        `counted` bytes of it are held against the memory budgets (the caller counted
        them): they are given back through `release` once the kernel took the
        message, or when the connection is gone (:meth:`close`), whatever happens here.
        """
        ws: Any = self._ws
        if not self._fast or ws.protocol.state is not State.OPEN or ws.send_in_progress is not None:
            try:
                if self._tasks:
                    # Heartbeats queued before this frame go out before it (a call's
                    # last frame must be its last).
                    await asyncio.wait(tuple(self._tasks))
                # Returns once the transport's buffer is empty (its limits are zero).
                await ws.send(data)
            finally:
                if counted:
                    self._release(counted)
            return
        self._counted += counted
        self._queue(ws.protocol, data)
        if ws.paused:
            await self.wait()

    def put(self, wire: bytes, counted: int) -> bool:
        """Queue `wire`, a complete unmasked binary WebSocket frame (see
        lorax/gateway/_wire.py), with `counted` bytes held as :meth:`send` does.

        The per-token path: no coroutine. Returns False when the caller must ``await
        wait()`` before it sends more: the transport is paused (the backpressure), or
        the connection is no longer open (then wait() raises ConnectionClosed and the
        frame is dropped, its bytes given back).
        """
        ws: Any = self._ws
        protocol = ws.protocol
        if protocol.state is not State.OPEN or ws.send_in_progress is not None:
            if counted:
                self._release(counted)
            if protocol.state is not State.OPEN:
                return False
            # A fragmented send in progress (never one of the gateway's): after it.
            task = self._loop.create_task(self._send_quietly(_payload(wire)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return False
        self._counted += counted
        if self._raw:
            protocol.writes.append(wire)
        else:
            protocol.send_binary(_payload(wire))
        self._pending += len(wire)
        if self._pending >= _FLUSH_BYTES:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)
        return not self._ws.paused

    def put_many(self, wires: list[bytes], sizes: list[int]) -> int:
        """Queue `wires` as :meth:`put` would, one by one, with ``sizes[i]`` bytes
        counted for ``wires[i]``; the per-read path of an upstream stream.

        Returns -1 when all were queued and the caller may go on, else the number of
        wires queued (every one up to and including the one after which :meth:`put`
        said to wait): the caller must ``await wait()`` and then hand in the rest.
        The common case (an open connection, no write due before the end of the
        iteration) is one list extend: no write can happen in it, so the transport's
        pause state is what it was before.
        """
        ws: Any = self._ws
        protocol = ws.protocol
        if self._raw and protocol.state is State.OPEN and ws.send_in_progress is None and not ws.paused:
            added = sum(map(len, wires))
            if self._pending + added < _FLUSH_BYTES:
                protocol.writes.extend(wires)
                self._counted += sum(sizes)
                self._pending += added
                if not self._scheduled:
                    self._scheduled = True
                    self._loop.call_soon(self._flush)
                return -1
        put = self.put
        for i, wire in enumerate(wires):
            if not put(wire, sizes[i]):
                return i + 1
        return -1

    async def wait(self) -> None:
        """Wait while the transport is paused; raises ConnectionClosed when the connection is lost."""
        ws: Any = self._ws
        if ws.protocol.state is not State.OPEN:
            await asyncio.shield(ws.connection_lost_waiter)
            raise ws.close_exc
        if not ws.paused:
            return
        self.waiting += 1
        try:
            await ws.drain()
        except Exception:
            # Only connection_lost() fails a drain: report it as send() does.
            await asyncio.shield(ws.connection_lost_waiter)
            raise ws.close_exc from None
        finally:
            self.waiting -= 1

    def queue(self, data: bytes) -> None:
        """Send one small binary message without waiting (no backpressure: for heartbeats).

        Dropped when the connection is no longer open, and while the transport is
        paused: the client has frames to read then, and a client that stopped reading
        must not make them pile up.
        """
        ws: Any = self._ws
        if self._fast and ws.send_in_progress is None:
            if ws.protocol.state is State.OPEN and not ws.paused:
                self._queue(ws.protocol, data)
            return
        task = self._loop.create_task(self._send_quietly(data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        """The connection is gone: give back every counted byte."""
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        counted, self._counted = self._counted, 0
        if counted:
            self._release(counted)

    async def _send_quietly(self, data: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(data)

    def _queue(self, protocol: Any, data: bytes) -> None:
        if self._raw:
            # What send_binary() queues, without its Frame object and checks (done by the caller).
            frame = _binary_frame(data)
            protocol.writes.append(frame)
            self._pending += len(frame)
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
            # The library's own send_data() wrote them already.
            self._settle()
            return
        if all(writes):
            data = writes[0] if len(writes) == 1 else b"".join(writes)
            try:
                ws.transport.write(data)
            except Exception as exc:
                # As websockets does when a write fails: record it and drop the connection;
                # the calls see ConnectionClosed on their next send or receive.
                ws.set_connection_exc(exc)
                ws.transport.abort()
            self._settle()
            return
        # An empty chunk is the library's half-close marker (after a close frame):
        # let its own writer handle the sequence.
        protocol = ws.protocol
        protocol.writes = list(writes)
        ws.send_data()
        self._settle()

    def _settle(self) -> None:
        """Give back the counted bytes the kernel took.

        The bytes not written yet are the tail of what was handed in: at most
        min(counted, unwritten) counted ones among them, which stay counted.
        """
        counted = self._counted
        if not counted:
            return
        ws: Any = self._ws
        unwritten = ws.transport.get_write_buffer_size() + self._pending
        keep = min(counted, unwritten)
        if keep < counted:
            self._counted = keep
            self._release(counted - keep)
        if keep and self._watcher is None and ws.paused:
            # Some are in the transport's buffer: give them back when it drains.
            self._watcher = self._loop.create_task(self._watch())

    async def _watch(self) -> None:
        try:
            await self._ws.drain()
        except Exception:
            pass  # the connection is lost: its buffer is gone (close() gives back the rest)
        finally:
            self._watcher = None
        self._settle()
