"""Upstream errors raise the same exception over the WebSocket as over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lorax import _routes, errors
from lorax._routes import Method
from lorax.transports.base import CallOptions, Transport
from lorax.transports.http import HTTPTransport
from lorax.transports.websocket import AsyncWebSocketTransport, WebSocketTransport
from lorax.v1.generate_pb2 import GenerateRequest

OPTS = CallOptions()

CASES = [
    # (method, inputs, expected class)
    (_routes.GENERATE, "validation", errors.ValidationError),
    (_routes.GENERATE_STREAM, "validation", errors.ValidationError),
    (_routes.GENERATE_STREAM, "stream-error", errors.GenerationError),
    (_routes.GENERATE, "text-422", errors.RequestDeserializationError),
    (_routes.GENERATE_STREAM, "text-422", errors.RequestDeserializationError),
    (_routes.GENERATE, "html-502", errors.ServiceUnavailableError),
]


async def _consume_async(transport: Any, method: Method, inputs: str) -> errors.LoraxError:
    try:
        if method.server_streaming:
            stream = await transport.stream_async(method, GenerateRequest(inputs=inputs), OPTS)
            async with stream:
                async for _ in stream:
                    pass
        else:
            await transport.unary_async(method, GenerateRequest(inputs=inputs), OPTS)
    except errors.LoraxError as exc:
        return exc
    raise AssertionError("no error")


def _consume_sync(transport: Transport, method: Method, inputs: str) -> errors.LoraxError:
    try:
        if method.server_streaming:
            with transport.stream(method, GenerateRequest(inputs=inputs), OPTS) as stream:
                for _ in stream:
                    pass
        else:
            transport.unary(method, GenerateRequest(inputs=inputs), OPTS)
    except errors.LoraxError as exc:
        return exc
    raise AssertionError("no error")


def _same(a: errors.LoraxError, b: errors.LoraxError) -> None:
    assert type(a) is type(b)
    assert (a.status_code, a.error_type, a.message, a.body) == (b.status_code, b.error_type, b.message, b.body)
    assert a.headers.get("content-type") == b.headers.get("content-type")


@pytest.mark.parametrize(("method", "inputs", "expected"), CASES, ids=[f"{m.name}-{i}" for m, i, _ in CASES])
def test_same_error_over_websocket_and_http(
    gateway: Any, upstream: Any, method: Method, inputs: str, expected: type
) -> None:
    from lorax.transports.aiohttp import AsyncHTTPTransport

    async def main() -> tuple[errors.LoraxError, errors.LoraxError]:
        http = AsyncHTTPTransport(upstream.url)
        try:
            over_http = await _consume_async(http, method, inputs)
        finally:
            await http.aclose()
        async with AsyncWebSocketTransport(gateway.url) as ws:
            over_ws = await _consume_async(ws, method, inputs)
        return over_http, over_ws

    over_http, over_ws_async = asyncio.run(main())
    with WebSocketTransport(gateway.url) as transport:
        over_ws_sync = _consume_sync(transport, method, inputs)
    with HTTPTransport(upstream.url) as http:
        over_http_sync = _consume_sync(http, method, inputs)
    assert isinstance(over_http, expected)
    _same(over_http, over_http_sync)
    _same(over_http, over_ws_async)
    _same(over_http, over_ws_sync)
    if inputs == "stream-error":
        assert over_ws_sync.status_code is None  # an in-stream error, as over HTTP


def test_upstream_down_is_a_retryable_503(make_gateway: Any) -> None:
    gw = make_gateway(upstream="http://127.0.0.1:9")  # nothing listens on the discard port
    with WebSocketTransport(gw.url) as transport, pytest.raises(errors.ServiceUnavailableError) as info:
        transport.unary(_routes.GENERATE, GenerateRequest(inputs="x"), OPTS)
    assert info.value.status_code == 503
    assert info.value.error_type == "upstream_unavailable"


def _not_sent(exc: errors.LoraxError) -> errors.LoraxError:
    exc.request_sent = False  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(
    ("exc", "begun", "status", "error_type", "cls"),
    [
        (errors.StreamInterruptedError("reset"), True, 0, "incomplete_generation", errors.IncompleteGenerationError),
        (errors.APIConnectionError("reset"), True, 0, "incomplete_generation", errors.IncompleteGenerationError),
        (errors.APIConnectionError("reset"), False, 502, "upstream_error", errors.ServiceUnavailableError),
        (
            _not_sent(errors.APIConnectionError("refused")),
            False,
            503,
            "upstream_unavailable",
            errors.ServiceUnavailableError,
        ),
        (
            _not_sent(errors.APITimeoutError("t", phase="connect")),
            False,
            503,
            "upstream_unavailable",
            errors.ServiceUnavailableError,
        ),
        (errors.APITimeoutError("t", phase="read"), True, 0, "read_timeout", errors.APITimeoutError),
        (errors.APITimeoutError("t", phase="total"), False, 0, "deadline_exceeded", errors.APITimeoutError),
        (errors.ResponseDecodeError("bad json"), True, 502, "upstream_error", errors.ServiceUnavailableError),
        (errors.ClientClosedError("closed"), False, 503, "shutting_down", errors.ServiceUnavailableError),
    ],
)
def test_upstream_failures_without_an_http_answer(
    exc: errors.LoraxError, begun: bool, status: int, error_type: str, cls: type
) -> None:
    from lorax.gateway._errors import upstream_error_frame
    from lorax.transports._ws_frames import error_from_frame

    frame = upstream_error_frame(exc, begun=begun)
    assert (frame.status, frame.error_type) == (status, error_type)
    assert type(error_from_frame(frame)) is cls
