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
            stream = await transport.stream(_routes.GENERATE_STREAM, REQUEST, OPTS)
            assert (await stream.__anext__()).token.id == 0
            await stream.aclose()
            assert [m async for m in stream] == []
            with pytest.raises(errors.APITimeoutError):
                await transport.unary(_routes.GENERATE, REQUEST, give_up())

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
                await transport.unary(_routes.GENERATE, REQUEST, OPTS)

    with fake_gateway(handler) as url:
        asyncio.run(main(url))

    async def refused() -> None:
        async with AsyncWebSocketTransport(url) as transport:  # the fake is gone now
            with pytest.raises(errors.APIConnectionError) as info:
                await transport.unary(_routes.GENERATE, REQUEST, OPTS)
            assert info.value.request_sent is False  # type: ignore[attr-defined]

    asyncio.run(refused())


def test_bad_urls_are_refused() -> None:
    for url in ("http://host", "ws://", "host:80"):
        with pytest.raises(ValueError):
            WebSocketTransport(url)


def test_import_lorax_does_not_import_websockets() -> None:
    code = "import sys, lorax, lorax.transports; assert 'websockets' not in sys.modules, 'websockets imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
