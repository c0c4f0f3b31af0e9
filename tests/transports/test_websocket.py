"""The WebSocket transports against a scripted fake gateway (websockets' sync server).

Each test gives the fake a handler that plays the gateway's side frame by frame, so
the client's reaction to broken or hostile gateways is checked without lorax.gateway.
End-to-end tests through the real gateway live in tests/gateway/.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from lorax import _routes, errors
from lorax._timeout import Deadline, Timeout
from lorax.transports import _ws_frames as wsf
from lorax.transports.base import CallOptions
from lorax.transports.websocket import AsyncWebSocketTransport, WebSocketTransport
from lorax.v1.generate_pb2 import GenerateRequest, GenerateResponse, StreamResponse, Token
from lorax.v1.websocket_pb2 import Frame

OPTS = CallOptions(timeout=Timeout(connect=5, read=5))
REQUEST = GenerateRequest(inputs="hi")


@contextlib.contextmanager
def fake_gateway(handler: Callable[[ServerConnection], None], **kwargs: Any) -> Iterator[str]:
    kwargs.setdefault("subprotocols", [wsf.SUBPROTOCOL])
    server = serve(handler, "127.0.0.1", 0, **kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}"
    finally:
        server.shutdown()
        thread.join(10)


def next_call(ws: ServerConnection) -> Frame:
    while True:
        frame = Frame.FromString(ws.recv(timeout=5))
        if frame.WhichOneof("kind") == "call":
            return frame


def answer_unary(ws: ServerConnection, call_id: int, text: str = "ok") -> None:
    ws.send(wsf.encode_headers(call_id, 200, {"x-model-id": "m"}))
    ws.send(wsf.encode_message(call_id, GenerateResponse(generated_text=text).SerializeToString()))
    ws.send(wsf.encode_end(call_id))


def token(i: int) -> bytes:
    return StreamResponse(token=Token(id=i, text=f"t{i}")).SerializeToString()


def test_call_frame_carries_method_request_headers_and_timeouts() -> None:
    seen: queue.Queue[Frame] = queue.Queue()

    def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        assert ws.request.headers["Authorization"] == "Bearer handshake"
        frame = next_call(ws)
        seen.put(frame)
        answer_unary(ws, frame.call_id)
        ws.recv(timeout=5)

    options = CallOptions(headers={"authorization": "Bearer call"}, timeout=Timeout(read=2.5))
    with fake_gateway(handler) as url, WebSocketTransport(url, headers={"Authorization": "Bearer handshake"}) as t:
        message, meta = t.unary(_routes.GENERATE, REQUEST, options)
    assert message.generated_text == "ok"
    assert meta.model_id == "m"
    frame = seen.get(timeout=1)
    assert frame.call_id == 1
    assert frame.call.method == "lorax.v1.LoraxService.Generate"
    assert GenerateRequest.FromString(frame.call.request) == REQUEST
    assert dict(frame.call.headers) == {"authorization": "Bearer call"}
    assert frame.call.read_timeout_ms == 2500
    assert not frame.call.HasField("deadline_ms")


@pytest.mark.parametrize(
    ("reply", "close_code"),
    [
        (lambda ws, cid: ws.send(b"\x00garbage\xff"), wsf.CLOSE_PROTOCOL_ERROR),
        (lambda ws, cid: ws.send("text"), wsf.CLOSE_UNSUPPORTED_DATA),
        (lambda ws, cid: ws.send(wsf.encode_message(cid, b"")), wsf.CLOSE_PROTOCOL_ERROR),  # before headers
        (lambda ws, cid: ws.send(wsf.encode_headers(cid + 5, 200, {})), wsf.CLOSE_PROTOCOL_ERROR),  # unknown id
        (lambda ws, cid: ws.send(wsf.encode_cancel(cid)), wsf.CLOSE_PROTOCOL_ERROR),  # a client-only kind
    ],
    ids=["garbage", "text", "out-of-order", "never-started-id", "client-kind"],
)
def test_protocol_violations_close_with_a_code(reply: Any, close_code: int) -> None:
    codes: queue.Queue[int | None] = queue.Queue()

    def handler(ws: ServerConnection) -> None:
        frame = next_call(ws)
        reply(ws, frame.call_id)
        try:
            while True:
                ws.recv(timeout=5)
        except ConnectionClosed as exc:
            codes.put(exc.rcvd.code if exc.rcvd else None)

    with (
        fake_gateway(handler) as url,
        WebSocketTransport(url) as transport,
        pytest.raises(errors.ProtocolError, match=r"broke the lorax\.v1 protocol"),
    ):
        transport.unary(_routes.GENERATE, REQUEST, OPTS)
    assert codes.get(timeout=5) == close_code


def test_unary_must_have_exactly_one_message() -> None:
    def handler(ws: ServerConnection) -> None:
        cid = next_call(ws).call_id
        ws.send(wsf.encode_headers(cid, 200, {}))
        ws.send(wsf.encode_end(cid))
        with contextlib.suppress(ConnectionClosed):
            ws.recv(timeout=5)

    with (
        fake_gateway(handler) as url,
        WebSocketTransport(url) as transport,
        pytest.raises(errors.ProtocolError, match="end frame without the message"),
    ):
        transport.unary(_routes.GENERATE, REQUEST, OPTS)


def test_undecodable_message_is_a_decode_error_for_that_call_only() -> None:
    def handler(ws: ServerConnection) -> None:
        cid = next_call(ws).call_id
        ws.send(wsf.encode_headers(cid, 200, {}))
        ws.send(wsf.encode_message(cid, b"\xff\xff\xff"))
        ws.send(wsf.encode_end(cid))
        cid = next_call(ws).call_id
        answer_unary(ws, cid, "second")
        with contextlib.suppress(ConnectionClosed):
            ws.recv(timeout=5)

    with fake_gateway(handler) as url, WebSocketTransport(url) as transport:
        with pytest.raises(errors.ResponseDecodeError):
            transport.unary(_routes.GENERATE, REQUEST, OPTS)
        assert transport.unary(_routes.GENERATE, REQUEST, OPTS)[0].generated_text == "second"


def test_server_without_the_subprotocol_is_refused() -> None:
    with (
        fake_gateway(lambda ws: None, subprotocols=None) as url,
        WebSocketTransport(url) as transport,
        pytest.raises(errors.ProtocolError, match=r"lorax\.v1 subprotocol"),
    ):
        transport.unary(_routes.GENERATE, REQUEST, OPTS)


def test_connection_lost_before_the_answer() -> None:
    def handler(ws: ServerConnection) -> None:
        next_call(ws)
        ws.close(1011, "boom")

    with (
        fake_gateway(handler) as url,
        WebSocketTransport(url) as transport,
        pytest.raises(errors.APIConnectionError) as info,
    ):
        transport.unary(_routes.GENERATE, REQUEST, OPTS)
    assert type(info.value) is errors.APIConnectionError
    assert info.value.request_sent is True  # type: ignore[attr-defined]
    assert "1011" in str(info.value)
    assert "boom" in str(info.value)


def test_stream_interrupted_and_errors_mid_stream() -> None:
    def handler(ws: ServerConnection) -> None:
        cid = next_call(ws).call_id
        ws.send(wsf.encode_headers(cid, 200, {}))
        ws.send(wsf.encode_message(cid, token(0)))
        error = wsf.error_frame_fields(status=None, error_type="overloaded", message="Model is overloaded")
        ws.send(wsf.encode_error(cid, error))
        cid = next_call(ws).call_id
        ws.send(wsf.encode_headers(cid, 200, {}))
        ws.send(wsf.encode_message(cid, token(0)))
        ws.close(1001)

    with fake_gateway(handler) as url, WebSocketTransport(url) as transport:
        stream = transport.stream(_routes.GENERATE_STREAM, REQUEST, OPTS)
        assert next(stream).token.id == 0
        with pytest.raises(errors.OverloadedError) as overloaded:
            next(stream)
        assert overloaded.value.status_code is None
        stream = transport.stream(_routes.GENERATE_STREAM, REQUEST, OPTS)
        assert next(stream).token.id == 0
        with pytest.raises(errors.StreamInterruptedError):
            next(stream)


def _cancel_recorder() -> tuple[Callable[[ServerConnection], None], queue.Queue[int]]:
    cancels: queue.Queue[int] = queue.Queue()

    def handler(ws: ServerConnection) -> None:
        try:
            while True:
                frame = Frame.FromString(ws.recv(timeout=10))
                if frame.WhichOneof("kind") == "call":
                    ws.send(wsf.encode_headers(frame.call_id, 200, {}))
                    ws.send(wsf.encode_message(frame.call_id, token(0)))
                else:
                    cancels.put(frame.call_id)
        except (ConnectionClosed, TimeoutError):
            pass

    return handler, cancels


# Call options with which a client stops waiting 0.3 s after the call starts. The read timeout alone
# would not do: over the WebSocket the gateway enforces it on LoRAX's bytes, and the
# client's own timer is a backstop well past it.
def give_up() -> CallOptions:
    return CallOptions(timeout=Timeout(read=0.2), deadline=Deadline(0.3))


def test_close_and_garbage_collection_send_cancel_frames() -> None:
    handler, cancels = _cancel_recorder()
    with fake_gateway(handler) as url, WebSocketTransport(url) as transport:
        stream = transport.stream(_routes.GENERATE_STREAM, REQUEST, OPTS)
        next(stream)
        stream.close()
        stream.close()  # idempotent
        assert cancels.get(timeout=5) == 1
        stream = transport.stream(_routes.GENERATE_STREAM, REQUEST, OPTS)
        del stream
        gc.collect()
        assert cancels.get(timeout=5) == 2
        # A call the client gives up on (here: its deadline ran out; the gateway never
        # answered) is cancelled at the gateway.
        with pytest.raises(errors.APITimeoutError) as info:
            transport.unary(_routes.GENERATE, REQUEST, give_up())
        assert info.value.phase == "total"
        assert cancels.get(timeout=5) == 3


def test_close_from_another_thread_stops_iteration() -> None:
    handler, _ = _cancel_recorder()
    with fake_gateway(handler) as url, WebSocketTransport(url) as transport:
        stream = transport.stream(_routes.GENERATE_STREAM, REQUEST, OPTS)
        next(stream)
        timer = threading.Timer(0.1, stream.close)
        timer.start()
        assert list(stream) == []
        timer.join()


def test_async_transport_against_the_fake() -> None:
    handler, cancels = _cancel_recorder()

    async def main(url: str) -> None:
        async with AsyncWebSocketTransport(url) as transport:
            stream = await transport.stream_async(_routes.GENERATE_STREAM, REQUEST, OPTS)
            assert (await stream.__anext__()).token.id == 0
            await stream.aclose()
            assert [m async for m in stream] == []
            with pytest.raises(errors.APITimeoutError):
                await transport.unary_async(_routes.GENERATE, REQUEST, give_up())

    with fake_gateway(handler) as url:
        asyncio.run(main(url))
    assert sorted(cancels.get(timeout=5) for _ in range(2)) == [1, 2]


def test_async_protocol_violation_and_connection_loss() -> None:
    def handler(ws: ServerConnection) -> None:
        next_call(ws)
        ws.send(b"\xff")
        with contextlib.suppress(ConnectionClosed):
            ws.recv(timeout=5)

    async def main(url: str) -> None:
        async with AsyncWebSocketTransport(url) as transport:
            with pytest.raises(errors.ProtocolError):
                await transport.unary_async(_routes.GENERATE, REQUEST, OPTS)

    with fake_gateway(handler) as url:
        asyncio.run(main(url))

    async def refused() -> None:
        async with AsyncWebSocketTransport(url) as transport:  # the fake is gone now
            with pytest.raises(errors.APIConnectionError) as info:
                await transport.unary_async(_routes.GENERATE, REQUEST, OPTS)
            assert info.value.request_sent is False  # type: ignore[attr-defined]

    asyncio.run(refused())


def test_bad_urls_are_refused() -> None:
    for url in ("http://host", "ws://", "host:80"):
        with pytest.raises(ValueError):
            WebSocketTransport(url)


def test_import_lorax_does_not_import_websockets() -> None:
    code = "import sys, lorax, lorax.transports; assert 'websockets' not in sys.modules, 'websockets imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------
# Flow control and liveness (websocket.proto: FLOW CONTROL, LIVENESS)


def test_streams_ask_for_a_window_and_every_call_for_heartbeats() -> None:
    seen: queue.Queue[Frame] = queue.Queue()

    def handler(ws: ServerConnection) -> None:
        for _ in range(2):
            frame = next_call(ws)
            seen.put(frame)
            answer_unary(ws, frame.call_id) if frame.call_id == 1 else ws.send(wsf.encode_end(frame.call_id))
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            ws.recv(timeout=5)

    with fake_gateway(handler) as url, WebSocketTransport(url, stream_window_bytes=4096) as transport:
        transport.unary(_routes.GENERATE, REQUEST, OPTS)
        with contextlib.suppress(errors.ProtocolError):  # an end without headers: fine here
            transport.stream(_routes.GENERATE_STREAM, REQUEST, OPTS)
    unary, stream = seen.get(timeout=5).call, seen.get(timeout=5).call
    assert (unary.HasField("window_bytes"), unary.heartbeats) == (False, True)
    assert (stream.window_bytes, stream.heartbeats) == (4096, True)


def _window_recorder(
    granted: int | None, payloads: list[bytes]
) -> tuple[Callable[[ServerConnection], None], queue.Queue[list[int]]]:
    """A gateway that answers a stream with `payloads` and records the window updates.

    With `granted`, it keeps to the window as the protocol says (sends while it is
    above zero, then waits for an update); without, it sends everything at once.
    """
    updates: queue.Queue[list[int]] = queue.Queue()

    def handler(ws: ServerConnection) -> None:
        frame = next_call(ws)
        got: list[int] = []

        def take_update() -> None:
            update = Frame.FromString(ws.recv(timeout=5))
            assert update.WhichOneof("kind") == "window_update"
            got.append(update.window_update.bytes)

        ws.send(wsf.encode_headers(frame.call_id, 200, {}, window_bytes=granted))
        window = granted or 0
        for payload in payloads:
            while granted and window <= 0:
                take_update()
                window += got[-1]
            ws.send(wsf.encode_message(frame.call_id, payload))
            window -= len(payload)
        ws.send(wsf.encode_end(frame.call_id))
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            while True:
                take_update()
        updates.put(got)

    return handler, updates


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_window_updates_grant_what_the_caller_consumed(flavour: str) -> None:
    payloads = [token(i) for i in range(1, 10)]  # ids 1..9 serialize to equal sizes
    size = len(payloads[0])
    window = 2 * size  # a grant each time the consumed bytes reach half of it: each message
    handler, updates = _window_recorder(window, payloads)
    with fake_gateway(handler) as url:
        if flavour == "sync":
            with WebSocketTransport(url, stream_window_bytes=window) as transport:
                assert [m.token.id for m in transport.stream(_routes.GENERATE_STREAM, REQUEST, OPTS)] == list(
                    range(1, 10)
                )
        else:

            async def main() -> None:
                async with AsyncWebSocketTransport(url, stream_window_bytes=window) as transport:
                    stream = await transport.stream_async(_routes.GENERATE_STREAM, REQUEST, OPTS)
                    assert [m.token.id async for m in stream] == list(range(1, 10))

            asyncio.run(main())
        got = updates.get(timeout=10)
    assert all(len(p) == size for p in payloads)
    # Two messages fit the window; each one consumed is granted back, which lets the
    # next one through. Grants of the last messages are not sent when the end frame
    # came first (the call needs no window then).
    assert got[:7] == [size] * 7, got
    assert len(got) in (7, 8, 9), got


def test_no_window_updates_to_a_gateway_that_did_not_grant_a_window() -> None:
    """An older gateway (no window in FrameHeaders) would close on an unknown frame kind."""
    payloads = [token(i) for i in range(10)]
    handler, updates = _window_recorder(None, payloads)
    with fake_gateway(handler) as url, WebSocketTransport(url, stream_window_bytes=len(payloads[0])) as transport:
        assert len(list(transport.stream(_routes.GENERATE_STREAM, REQUEST, OPTS))) == 10
    assert updates.get(timeout=10) == []


def _heartbeats_then_silence(beats: int, answer_after: float | None) -> Callable[[ServerConnection], None]:
    """Send `beats` heartbeats 0.1 s apart, then nothing; answer after `answer_after` s if set."""

    def handler(ws: ServerConnection) -> None:
        frame = next_call(ws)
        for _ in range(beats):
            ws.send(wsf.encode_heartbeat(frame.call_id))
            time.sleep(0.1)
        if answer_after is not None:
            time.sleep(answer_after)
            answer_unary(ws, frame.call_id)
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            while True:
                ws.recv(timeout=10)

    return handler


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_gateway_that_stops_heartbeats_is_noticed_within_the_read_timeout(flavour: str) -> None:
    # WebSocket pings still get their pongs: only the heartbeats tell the call is dead.
    options = CallOptions(timeout=Timeout(connect=5, read=0.5))
    with fake_gateway(_heartbeats_then_silence(3, None)) as url:

        def sync_call() -> None:
            with WebSocketTransport(url) as transport:
                transport.unary(_routes.GENERATE, REQUEST, options)

        async def async_call() -> None:
            async with AsyncWebSocketTransport(url) as transport:
                await transport.unary_async(_routes.GENERATE, REQUEST, options)

        started = time.monotonic()
        with pytest.raises(errors.APITimeoutError) as info:
            sync_call() if flavour == "sync" else asyncio.run(async_call())
        elapsed = time.monotonic() - started
    assert info.value.phase == "read"
    # Heartbeats for 0.3 s, then the read timeout plus a margin (0.5 s + 0.5 s); an
    # older client waited the read timeout plus 30 s.
    assert 0.3 + 1.0 - 0.1 <= elapsed < 4.0


@pytest.mark.parametrize("beats", [0, 3], ids=["older-gateway", "heartbeats"])
def test_heartbeats_keep_a_call_alive_and_older_gateways_get_the_backstop(beats: int) -> None:
    # With heartbeats, a silence is measured from the last one; without (an older
    # gateway), the client allows the read timeout plus max(read timeout, 30 s).
    options = CallOptions(timeout=Timeout(connect=5, read=0.5))
    answer_after = 0.5 if beats else 1.5
    with fake_gateway(_heartbeats_then_silence(beats, answer_after)) as url, WebSocketTransport(url) as transport:
        message, _ = transport.unary(_routes.GENERATE, REQUEST, options)
    assert message.generated_text == "ok"


@pytest.mark.parametrize("cls", [WebSocketTransport, AsyncWebSocketTransport])
def test_a_window_below_one_byte_is_refused(cls: Any) -> None:
    with pytest.raises(ValueError, match=r"^stream_window_bytes must be at least 1 or None; got 0$"):
        cls("ws://127.0.0.1:1", stream_window_bytes=0)
