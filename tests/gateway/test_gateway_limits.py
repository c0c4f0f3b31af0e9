"""The gateway's limits, its handshake checks, and what it does with broken frames."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from lorax import _routes, errors
from lorax.transports import _ws_frames as wsf
from lorax.transports.base import CallOptions
from lorax.transports.websocket import WebSocketTransport
from lorax.v1.generate_pb2 import GenerateRequest
from lorax.v1.websocket_pb2 import Frame

OPTS = CallOptions()


def req(inputs: str) -> GenerateRequest:
    return GenerateRequest(inputs=inputs)


def raw(url: str, **kwargs: Any) -> ClientConnection:
    kwargs.setdefault("subprotocols", [wsf.SUBPROTOCOL])
    return connect(url, open_timeout=5, **kwargs)


def call_frame(call_id: int, inputs: str = "x", method: str = _routes.GENERATE.full_name, **kwargs: Any) -> bytes:
    return wsf.encode_call(
        call_id, method, req(inputs).SerializeToString(), {}, read_timeout=None, deadline=None, **kwargs
    )


def frames_of(ws: ClientConnection, call_id: int) -> list[Frame]:
    """Every frame of `call_id` up to its end or error."""
    out = []
    while True:
        frame = Frame.FromString(ws.recv(timeout=5))
        if frame.call_id != call_id:
            continue
        out.append(frame)
        if frame.WhichOneof("kind") in ("end", "error"):
            return out


def closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    """The close code and reason the gateway closed `ws` with (frames before are skipped)."""
    try:
        while True:
            ws.recv(timeout=5)
    except ConnectionClosed as exc:
        close = exc.rcvd
    return (close.code, close.reason) if close is not None else (None, None)


def still_serves(url: str) -> None:
    with WebSocketTransport(url) as transport:
        assert transport.unary(_routes.GENERATE, req("ok"), OPTS)[0].generated_text == "echo: ok"


# ---------------------------------------------------------------------------------
# Handshake


def test_health_check(gateway: Any) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{gateway.port}/health", timeout=5) as response:
        assert response.status == 200
        assert response.read() == b"ok\n"


def test_subprotocol_is_required(gateway: Any) -> None:
    with pytest.raises(InvalidStatus) as info:
        raw(gateway.url, subprotocols=None)
    assert info.value.response.status_code == 400


def test_auth_token(make_gateway: Any) -> None:
    gw = make_gateway(auth_token="s3cret-token")
    for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
        with WebSocketTransport(gw.url, headers=headers) as transport, pytest.raises(errors.APIStatusError) as info:
            transport.unary(_routes.GENERATE, req("x"), OPTS)
        assert info.value.status_code == 401
        assert info.value.request_sent is False  # type: ignore[attr-defined]
        assert "s3cret" not in str(info.value)
    with WebSocketTransport(gw.url, headers={"Authorization": "Bearer s3cret-token"}) as transport:
        assert transport.unary(_routes.GENERATE, req("in"), OPTS)[0].generated_text == "echo: in"
    # The health check needs no token.
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.port}/health", timeout=5) as response:
        assert response.status == 200


def test_too_many_connections(make_gateway: Any) -> None:
    gw = make_gateway(max_connections=2)
    with raw(gw.url), raw(gw.url):
        with WebSocketTransport(gw.url) as transport, pytest.raises(errors.ServiceUnavailableError) as info:
            transport.unary(_routes.GENERATE, req("x"), OPTS)
        assert info.value.status_code == 503
        assert info.value.retry_after == "1"
        assert info.value.request_sent is False  # type: ignore[attr-defined]
    # Slots come back when connections close.
    deadline = time.monotonic() + 5
    while gw.gateway.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    still_serves(gw.url)


# ---------------------------------------------------------------------------------
# Per-connection limits


def test_too_many_calls(make_gateway: Any) -> None:
    gw = make_gateway(max_calls_per_connection=2)
    with WebSocketTransport(gw.url) as transport:
        first = transport.stream(_routes.GENERATE_STREAM, req("forever"), OPTS)
        second = transport.stream(_routes.GENERATE_STREAM, req("forever"), OPTS)
        with pytest.raises(errors.RateLimitExceededError) as info:
            transport.unary(_routes.GENERATE, req("x"), OPTS)
        assert (info.value.status_code, info.value.error_type) == (429, "too_many_calls")
        next(first)
        first.close()
        second.close()
        # Once the gateway has finished the cancelled calls, there is room again.
        deadline = time.monotonic() + 5
        while True:
            try:
                assert transport.unary(_routes.GENERATE, req("y"), OPTS)[0].generated_text == "echo: y"
                break
            except errors.RateLimitExceededError:
                assert time.monotonic() < deadline
                time.sleep(0.02)


def test_frame_too_big(make_gateway: Any) -> None:
    gw = make_gateway(max_frame_bytes=2048)
    with WebSocketTransport(gw.url) as transport:
        with pytest.raises(errors.APIConnectionError) as info:
            transport.unary(_routes.GENERATE, req("x" * 4096), OPTS)
        assert "1009" in str(info.value)
        assert info.value.request_sent is True  # type: ignore[attr-defined]
        # The next call gets a new connection.
        assert transport.unary(_routes.GENERATE, req("small"), OPTS)[0].generated_text == "echo: small"
    # The client refuses to send a frame above its own limit.
    with WebSocketTransport(gw.url, max_frame_bytes=1024) as transport, pytest.raises(errors.InvalidRequestError):
        transport.unary(_routes.GENERATE, req("x" * 4096), OPTS)


def test_response_too_large(make_gateway: Any) -> None:
    gw = make_gateway(max_frame_bytes=4096)
    with WebSocketTransport(gw.url) as transport, pytest.raises(errors.ServiceUnavailableError) as info:
        transport.unary(_routes.GENERATE, req("big"), OPTS)
    assert (info.value.status_code, info.value.error_type) == (502, "response_too_large")


def test_idle_timeout(make_gateway: Any) -> None:
    gw = make_gateway(idle_timeout=0.3)
    with raw(gw.url) as ws:
        assert closed_with(ws) == (wsf.CLOSE_IDLE_TIMEOUT, "idle timeout")
    with WebSocketTransport(gw.url) as transport:
        # A call in flight keeps the connection open past the idle timeout.
        with transport.stream(_routes.GENERATE_STREAM, req("tokens:6:100"), OPTS) as stream:
            assert len(list(stream)) == 6
        time.sleep(0.5)  # closed for idleness; the next call reconnects
        assert transport.unary(_routes.GENERATE, req("again"), OPTS)[0].generated_text == "echo: again"


# ---------------------------------------------------------------------------------
# Broken frames


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\xff\xff\xff\xff", wsf.CLOSE_PROTOCOL_ERROR),
        ("a text message", wsf.CLOSE_UNSUPPORTED_DATA),
        (Frame(call_id=0, cancel={}).SerializeToString(), wsf.CLOSE_PROTOCOL_ERROR),
        (Frame(call_id=1).SerializeToString(), wsf.CLOSE_PROTOCOL_ERROR),
        (wsf.encode_end(1), wsf.CLOSE_PROTOCOL_ERROR),
    ],
    ids=["garbage", "text", "call-id-0", "no-kind", "client-sends-end"],
)
def test_malformed_frames_close_the_connection(gateway: Any, data: Any, code: int) -> None:
    with raw(gateway.url) as ws:
        ws.send(data)
        got, reason = closed_with(ws)
    assert got == code
    assert reason
    still_serves(gateway.url)


def test_call_id_reuse_closes_the_connection(gateway: Any, upstream: Any) -> None:
    before = upstream.disconnects
    with raw(gateway.url) as ws:
        ws.send(call_frame(7, "forever", _routes.GENERATE_STREAM.full_name))
        assert Frame.FromString(ws.recv(timeout=5)).WhichOneof("kind") == "headers"
        ws.send(call_frame(7, "again"))
        code, reason = closed_with(ws)
    assert code == wsf.CLOSE_PROTOCOL_ERROR
    assert "call id 7" in (reason or "")
    assert upstream.wait_disconnects(before + 1)  # the connection's calls were cancelled
    still_serves(gateway.url)


def test_bad_calls_get_error_frames_and_the_connection_lives_on(gateway: Any) -> None:
    with raw(gateway.url) as ws:
        ws.send(call_frame(1, method="lorax.v1.LoraxService.Nope"))
        (error,) = frames_of(ws, 1)
        assert (error.error.status, error.error.error_type) == (404, "unknown_method")
        ws.send(wsf.encode_call(2, _routes.GENERATE.full_name, b"\xff\xff", {}, read_timeout=None, deadline=None))
        (error,) = frames_of(ws, 2)
        assert (error.error.status, error.error.error_type) == (400, "invalid_request")
        bad_header = {"bad header": "x"}
        ws.send(wsf.encode_call(3, _routes.GENERATE.full_name, b"", bad_header, read_timeout=None, deadline=None))
        (error,) = frames_of(ws, 3)
        assert (error.error.status, error.error.error_type) == (400, "invalid_request")
        ws.send(wsf.encode_cancel(99))  # cancelling an unknown call is not an error
        ws.send(call_frame(4, "fine"))
        kinds = [f.WhichOneof("kind") for f in frames_of(ws, 4)]
        assert kinds == ["headers", "message", "end"]


def test_gateway_enforces_the_call_deadline(gateway: Any, upstream: Any) -> None:
    before = upstream.disconnects
    with raw(gateway.url) as ws:
        ws.send(
            wsf.encode_call(
                1, _routes.GENERATE.full_name, req("slow").SerializeToString(), {}, read_timeout=None, deadline=0.3
            )
        )
        (error,) = frames_of(ws, 1)
    assert (error.error.status, error.error.error_type) == (0, "deadline_exceeded")
    assert upstream.wait_disconnects(before + 1)


def test_slow_reader_backpressure(gateway: Any, upstream: Any) -> None:
    # A client that stops reading makes its upstream stream stall (TCP backpressure
    # through the gateway) instead of making the gateway buffer without bound: 32 kB
    # events from loopback would otherwise pile up at hundreds of MB per second.
    start = upstream.produced
    with raw(gateway.url, max_queue=1, close_timeout=1) as ws:
        ws.send(call_frame(1, "firehose", _routes.GENERATE_STREAM.full_name))
        assert Frame.FromString(ws.recv(timeout=5)).WhichOneof("kind") == "headers"
        time.sleep(1.0)
        stalled_at = upstream.produced
        time.sleep(0.5)
        assert upstream.produced - stalled_at < 50
        assert stalled_at - start < 3000  # socket buffers only: tens of MB at most
        ws.send(wsf.encode_cancel(1))
    still_serves(gateway.url)


def test_many_connections_in_threads(gateway: Any) -> None:
    failures: list[BaseException] = []

    def work() -> None:
        try:
            still_serves(gateway.url)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert failures == []
