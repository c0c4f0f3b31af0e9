"""FrameWriter: the frames of one loop iteration leave in one socket write, in order.

A real websockets server on loopback with a real websockets client; the server's
transport.write is counted.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from lorax.gateway._wire import end_frame, headers_frame, message_prefix, message_wire, message_wires
from lorax.gateway._writer import FrameWriter, _binary_frame, _payload
from lorax.transports import _ws_frames as wsf
from lorax.v1.websocket_pb2 import Frame as WireFrame
from tests.gateway._stalled import StalledClient

# The batched path uses websockets 17's connection internals; with an older release
# (Python 3.10 gets 16.x) every frame goes through the library's own send(), which
# waits until the transport's buffer is empty, so the memory budgets hold there too
# (tests/gateway/test_gateway_flow.py's stalled-socket tests run on every release).
batching = pytest.mark.skipif(
    int(websockets.__version__.split(".")[0]) < 17,
    reason="FrameWriter batches only with websockets >= 17; older releases send each frame with send()",
)


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
            await handler(ws, FrameWriter(ws, lambda n: None), writes)
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


@batching
def test_frames_of_one_iteration_go_out_in_one_write() -> None:
    asyncio.run(_test_frames_of_one_iteration_go_out_in_one_write())


async def _test_frames_of_one_iteration_go_out_in_one_write() -> None:
    async def handler(ws: ServerConnection, writer: FrameWriter, writes: list[int]) -> None:
        # Nothing is paused, so no send yields: all three in this iteration.
        await writer.send(b"one")
        await writer.send(b"two")
        await writer.send(b"x" * 300)
        assert writes == []  # queued, not written yet
        await asyncio.sleep(0)
        assert writes == [2 + 3 + 2 + 3 + 4 + 300]

    got, writes = await _run(handler, 3)
    assert got == [b"one", b"two", b"x" * 300]
    assert writes == [314]


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
        writer = FrameWriter(ws, lambda n: None)

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


# ---------------------------------------------------------------------------------
# Counted bytes: held against the memory budget until the kernel took them


async def _stalled_writer(
    frames: int, size: int
) -> tuple[StalledClient, FrameWriter, ServerConnection, list[int], list[int], asyncio.Task[None], Any, Any]:
    """A server whose handler sends `frames` counted frames of `size` bytes to a
    StalledClient; returned once a send waits for the transport to drain."""
    released: list[int] = []
    handed = [0]  # frames handed to the writer
    outcome: asyncio.Future[ConnectionClosed | None] = asyncio.get_running_loop().create_future()
    started: asyncio.Future[tuple[FrameWriter, ServerConnection, asyncio.Task[None]]] = (
        asyncio.get_running_loop().create_future()
    )

    async def serve_one(ws: ServerConnection) -> None:
        # A small fixed send buffer: the kernel does not grow it while the frames go out.
        ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        writer = FrameWriter(ws, released.append)
        task = asyncio.current_task()
        assert task is not None
        started.set_result((writer, ws, task))
        try:
            for _ in range(frames):
                handed[0] += 1
                await writer.send(b"x" * size, size)
        except ConnectionClosed as exc:
            outcome.set_result(exc)
            return
        outcome.set_result(None)
        await asyncio.sleep(3600)  # the test ends the connection

    server = await serve(serve_one, "127.0.0.1", 0, compression=None)
    port = server.sockets[0].getsockname()[1]
    client = await asyncio.to_thread(StalledClient, f"ws://127.0.0.1:{port}", subprotocol=None)
    writer, ws, task = await asyncio.wait_for(started, 10)
    for _ in range(1000):
        if writer.waiting:
            break
        await asyncio.sleep(0.01)
    assert writer.waiting == 1
    return client, writer, ws, released, handed, task, server, outcome


@batching
def test_counted_bytes_stay_counted_in_the_transports_buffer_until_the_kernel_took_them() -> None:
    asyncio.run(_test_counted_bytes_stay_counted_in_the_transports_buffer_until_the_kernel_took_them())


async def _test_counted_bytes_stay_counted_in_the_transports_buffer_until_the_kernel_took_them() -> None:
    frames, size = 40, 10_000
    client, writer, ws, released, handed, task, server, _ = await _stalled_writer(frames, size)
    try:
        transport: Any = ws.transport
        buffered = transport.get_write_buffer_size()
        assert buffered > 0  # the sender waits because the transport holds bytes
        assert 0 < handed[0] < frames  # and the socket stopped it before the end
        # Nothing lost, nothing given back twice.
        assert writer.counted + sum(released) == handed[0] * size
        # Every message byte in the transport's buffer is still counted (the buffer
        # also holds the frames' 4-byte WebSocket headers, which are not).
        assert writer.counted >= buffered - 4 * (buffered // size + 1)
        # The client reads everything: every counted byte comes back.
        received = await asyncio.to_thread(lambda: [m for _, m in zip(range(frames), client.messages(), strict=False)])
        assert [len(m) for m in received] == [size] * frames
        for _ in range(1000):
            if sum(released) == frames * size:
                break
            await asyncio.sleep(0.01)
        assert sum(released) == frames * size
        assert writer.counted == 0
    finally:
        task.cancel()
        client.close()
        server.close()
        await server.wait_closed()


@batching
def test_close_gives_back_what_a_lost_connection_never_sent() -> None:
    asyncio.run(_test_close_gives_back_what_a_lost_connection_never_sent())


async def _test_close_gives_back_what_a_lost_connection_never_sent() -> None:
    frames, size = 40, 10_000
    client, writer, _ws, released, handed, task, server, outcome = await _stalled_writer(frames, size)
    try:
        assert writer.counted > 0
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset: the connection is lost with bytes unsent
        # The waiting sender learns it as send() would tell it.
        assert isinstance(await asyncio.wait_for(outcome, 10), ConnectionClosed)
        writer.close()  # as the session does when its connection ends
        assert writer.counted == 0
        assert sum(released) == handed[0] * size
        writer.close()
        assert sum(released) == handed[0] * size  # once
    finally:
        task.cancel()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("call_id", [1, 127, 128, 16383, 16384, 1 << 40, (1 << 64) - 1])
@pytest.mark.parametrize("size", [0, 1, 100, 112, 113, 127, 128, 16383, 16384, 65500, 65536, 200_000])
def test_message_wire_is_the_frame_websockets_would_write(call_id: int, size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + b"p" * (size % 256)
    frame = wsf.encode_message(call_id, payload)
    assert message_wire(message_prefix(call_id), payload) == (
        Frame(Opcode.BINARY, frame).serialize(mask=False, extensions=[]),
        len(frame),
    )


@pytest.mark.parametrize("call_id", [0, -1, 1 << 64])
def test_message_prefix_refuses_call_ids_out_of_range(call_id: int) -> None:
    with pytest.raises(ValueError, match=f"call id {call_id} is out of range"):
        message_prefix(call_id)


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70_000])
def test_payload_is_the_message_of_a_wire_frame(size: int) -> None:
    data = b"d" * size
    assert _payload(_binary_frame(data)) == data


def test_put_after_the_close_drops_the_frame_and_wait_raises_connection_closed() -> None:
    asyncio.run(_test_put_after_the_close_drops_the_frame_and_wait_raises_connection_closed())


async def _test_put_after_the_close_drops_the_frame_and_wait_raises_connection_closed() -> None:
    released: list[int] = []

    async def handler(ws: ServerConnection, writer: FrameWriter, writes: list[int]) -> None:
        writer = FrameWriter(ws, released.append)
        assert writer.put(_binary_frame(b"before"), 6) is True
        await asyncio.sleep(0)
        await ws.close()
        assert writer.put(_binary_frame(b"after the close"), 15) is False
        assert released[-1] == 15  # never sent: given back at once
        with pytest.raises(ConnectionClosed):
            await writer.wait()
        assert writer.counted == 0

    got, _ = await _run(handler, 1)
    assert got == [b"before"]
    assert sum(released) == 6 + 15


def test_put_many_queues_a_read_in_one_write_and_counts_each_frame() -> None:
    asyncio.run(_test_put_many_queues_a_read_in_one_write_and_counts_each_frame())


async def _test_put_many_queues_a_read_in_one_write_and_counts_each_frame() -> None:
    payloads = [b"a", b"bb", b"c" * 300]
    prefix = message_prefix(3)
    built = [message_wire(prefix, p) for p in payloads]

    async def handler(ws: ServerConnection, writer: FrameWriter, writes: list[int]) -> None:
        assert writer.put_many([w for w, _ in built], [s for _, s in built]) == -1
        assert writes == []  # queued, not written yet
        assert writer.counted == sum(s for _, s in built)
        await asyncio.sleep(0)
        assert writes == [sum(len(w) for w, _ in built)]

    got, seen = await _run(handler, 3)
    assert got == [wsf.encode_message(3, p) for p in payloads]
    assert seen == [sum(len(w) for w, _ in built)]


def test_put_many_after_the_close_says_to_wait_after_the_first_frame() -> None:
    asyncio.run(_test_put_many_after_the_close_says_to_wait_after_the_first_frame())


async def _test_put_many_after_the_close_says_to_wait_after_the_first_frame() -> None:
    released: list[int] = []

    async def serve_one(ws: ServerConnection) -> None:
        writer = FrameWriter(ws, released.append)
        await ws.close()
        wires = [message_wire(message_prefix(1), b"x")[0]] * 2
        # The first frame is dropped (its bytes given back); the caller must wait, which raises.
        assert writer.put_many(wires, [5, 6]) == 1
        assert released == [5]
        with pytest.raises(ConnectionClosed):
            await writer.wait()

    async with serve(serve_one, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=None) as client:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(client.recv(), 10)


@pytest.mark.parametrize(
    ("call_id", "status", "headers", "window"),
    [
        (1, 200, {}, None),
        (5, 0, {}, None),
        (7, 200, {"x-request-id": "r1"}, 1 << 20),
        (1 << 40, 404, {"a": "", "": "b", "c": "d"}, 7),
        ((1 << 64) - 1, 503, {"k" * 200: "é" * 20000}, (1 << 64) - 1),
    ],
)
def test_headers_frame_is_the_frame_encode_headers_writes(
    call_id: int, status: int, headers: dict[str, str], window: int | None
) -> None:
    ours = headers_frame(call_id, status, headers, window)
    theirs = wsf.encode_headers(call_id, status, headers, window_bytes=window)
    assert WireFrame.FromString(ours) == WireFrame.FromString(theirs)
    if len(headers) <= 1:  # one order only: the same bytes
        assert ours == theirs


@pytest.mark.parametrize(("call_id", "status"), [(0, 200), (1 << 64, 200), (1, -1), (1, 1 << 32)])
def test_headers_frame_refuses_values_out_of_range(call_id: int, status: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        headers_frame(call_id, status, {})


@pytest.mark.parametrize("call_id", [1, 127, 128, 16383, 16384, 1 << 40, (1 << 64) - 1])
def test_end_frame_is_the_bytes_of_encode_end(call_id: int) -> None:
    assert end_frame(call_id) == wsf.encode_end(call_id)


@pytest.mark.parametrize("call_id", [0, -1, 1 << 64])
def test_end_frame_refuses_call_ids_out_of_range(call_id: int) -> None:
    with pytest.raises(ValueError, match=f"call id {call_id} is out of range"):
        end_frame(call_id)


@pytest.mark.parametrize("call_id", [1, 16384, (1 << 64) - 1])
def test_message_wires_are_message_wire_of_each(call_id: int) -> None:
    sizes = [0, 1, 100, 112, 113, 114, 127, 128, 15_990, 15_999, 16_000, 16_380, 16_384, 65_536, 200_000]
    payloads = [bytes(range(256)) * (n // 256) + b"q" * (n % 256) for n in sizes]
    prefix = message_prefix(call_id)
    built = [message_wire(prefix, p) for p in payloads]
    assert message_wires(prefix, payloads) == ([w for w, _ in built], [s for _, s in built])
