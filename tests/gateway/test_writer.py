"""FrameWriter: the frames of one loop iteration leave in one socket write, in order.

A real websockets server on loopback with a real websockets client; the server's
transport.write is counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from lorax.gateway._writer import FrameWriter, _binary_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_binary_frame_is_what_websockets_writes(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert _binary_frame(data) == Frame(Opcode.BINARY, data).serialize(mask=False, extensions=[])


async def _run(
    handler: Callable[[ServerConnection, FrameWriter, list[int]], Awaitable[None]], expect: int
) -> list[Any]:
    writes: list[int] = []
    seen: list[int] = []  # the writes until the handler returned (not the close frame after)
    done = asyncio.get_running_loop().create_future()

    async def serve_one(ws: ServerConnection) -> None:
        transport: Any = ws.transport
        write = transport.write

        def counting_write(data: bytes) -> None:
            writes.append(len(data))
            write(data)

        transport.write = counting_write
        try:
            await handler(ws, FrameWriter(ws), writes)
            seen.extend(writes)
        finally:
            await done

    async with serve(serve_one, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        try:
            async with connect(f"ws://127.0.0.1:{port}", compression=None) as client:
                got = [await asyncio.wait_for(client.recv(), 10) for _ in range(expect)]
        finally:
            done.set_result(None)  # also when the client failed: the handler must not wait forever
    return [got, seen]


def test_frames_of_one_iteration_go_out_in_one_write() -> None:
    asyncio.run(_test_frames_of_one_iteration_go_out_in_one_write())


async def _test_frames_of_one_iteration_go_out_in_one_write() -> None:
    async def handler(ws: ServerConnection, writer: FrameWriter, writes: list[int]) -> None:
        if not writer._fast:
            # An older websockets (Python 3.10 gets 16.x) lacks the internals the batching
            # uses: the writer sends each frame with ws.send(), as the library does.
            await writer.send(b"one")
            await writer.send(b"two")
            await writer.send(b"x" * 300)
            return
        # Nothing is paused, so no send yields: all three in this iteration.
        await writer.send(b"one")
        await writer.send(b"two")
        await writer.send(b"x" * 300)
        assert writes == []  # queued, not written yet
        await asyncio.sleep(0)
        assert writes == [2 + 3 + 2 + 3 + 4 + 300]

    got, writes = await _run(handler, 3)
    assert got == [b"one", b"two", b"x" * 300]
    if writes != [314]:
        import websockets

        assert int(websockets.__version__.split(".")[0]) < 17, writes  # the batching applies from 17 on
        assert len(writes) == 3


def test_order_is_kept_with_the_librarys_own_sends() -> None:
    asyncio.run(_test_order_is_kept_with_the_librarys_own_sends())


async def _test_order_is_kept_with_the_librarys_own_sends() -> None:
    async def handler(ws: ServerConnection, writer: FrameWriter, writes: list[int]) -> None:
        await writer.send(b"first")
        await ws.send(b"second")  # its write takes the queued frame along, in order
        await writer.send(b"third")
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    got, writes = await _run(handler, 3)
    assert got == [b"first", b"second", b"third"]
    assert writes == [2 + 5, 2 + 6, 2 + 5]


def test_a_closed_connection_raises_connection_closed() -> None:
    asyncio.run(_test_a_closed_connection_raises_connection_closed())


async def _test_a_closed_connection_raises_connection_closed() -> None:
    async def handler(ws: ServerConnection, writer: FrameWriter, writes: list[int]) -> None:
        await writer.send(b"only")
        await ws.close()
        with pytest.raises(ConnectionClosed):
            await writer.send(b"after the close")

    got, _ = await _run(handler, 1)
    assert got == [b"only"]


def test_a_sender_waiting_for_a_reader_that_vanishes_gets_connection_closed() -> None:
    asyncio.run(_test_a_sender_waiting_for_a_reader_that_vanishes_gets_connection_closed())


async def _test_a_sender_waiting_for_a_reader_that_vanishes_gets_connection_closed() -> None:
    outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    paused = asyncio.Event()

    async def serve_one(ws: ServerConnection) -> None:
        writer = FrameWriter(ws)

        async def watch() -> None:
            while not ws.paused:
                await asyncio.sleep(0.01)
            paused.set()

        watcher = asyncio.create_task(watch())
        try:
            for _ in range(10_000):  # 640 MiB at most: far more than the socket buffers hold
                await writer.send(b"x" * 65536)
        except BaseException as exc:
            outcome.set_result(exc)
            return
        finally:
            watcher.cancel()
        outcome.set_result(None)

    async with serve(serve_one, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        client = await connect(f"ws://127.0.0.1:{port}", compression=None, max_queue=1)
        await asyncio.wait_for(paused.wait(), 30)  # the gateway side waits on the full socket
        client.transport.abort()  # no close frame: the connection is lost
        exc = await asyncio.wait_for(outcome, 30)
    assert isinstance(exc, ConnectionClosed)
