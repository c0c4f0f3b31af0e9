"""Calls through the gateway end to end: WebSocket transport -> gateway -> HTTP upstream."""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

import orjson
import pytest

from lorax import _routes, errors
from lorax._timeout import Deadline, Timeout
from lorax.transports.base import CallOptions
from lorax.transports.websocket import AsyncWebSocketTransport, WebSocketTransport
from lorax.v1.generate_pb2 import GenerateRequest


def req(inputs: str) -> GenerateRequest:
    return GenerateRequest(inputs=inputs)


OPTS = CallOptions()


def test_unary_and_stream_roundtrip(gateway: Any) -> None:
    with WebSocketTransport(gateway.url) as transport:
        message, meta = transport.unary(_routes.GENERATE, req("hello"), OPTS)
        assert message.generated_text == "echo: hello"
        assert meta.status_code == 200
        assert meta.model_id == "toy-model"
        assert meta.compute_time_ms == 3
        with transport.stream(_routes.GENERATE_STREAM, req("tokens:4:0"), OPTS) as stream:
            assert stream.meta.status_code == 200
            assert stream.meta.headers["content-type"] == "text/event-stream"
            events = list(stream)
        assert [e.token.text for e in events] == [" t0", " t1", " t2", " t3"]
        assert events[-1].generated_text == " t0 t1 t2 t3"
        assert events[0].generated_text is None
        assert gateway.gateway.connections == 1


def test_async_unary_and_stream_roundtrip(gateway: Any) -> None:
    async def main() -> None:
        async with AsyncWebSocketTransport(gateway.url) as transport:
            message, meta = await transport.unary_async(_routes.GENERATE, req("hi"), OPTS)
            assert message.generated_text == "echo: hi"
            assert meta.model_id == "toy-model"
            stream = await transport.stream_async(_routes.GENERATE_STREAM, req("tokens:3:0"), OPTS)
            async with stream:
                texts = [event.token.text async for event in stream]
            assert texts == [" t0", " t1", " t2"]

    asyncio.run(main())


def test_headers_forwarded_upstream(make_gateway: Any) -> None:
    gw = make_gateway(upstream_headers={"x-upstream": "configured", "Authorization": "Bearer gateway-default"})
    options = CallOptions(headers={"Authorization": "Bearer adapter-token", "Connection": "close"})
    with WebSocketTransport(gw.url) as transport:
        with_call_auth, _ = transport.unary(_routes.GENERATE, req("headers"), options)
        without, _ = transport.unary(_routes.GENERATE, req("headers"), OPTS)
    # The call's own headers win over the configured ones; hop-by-hop ones are dropped.
    assert orjson.loads(with_call_auth.generated_text) == {
        "authorization": "Bearer adapter-token",
        "x-upstream": "configured",
    }
    assert orjson.loads(without.generated_text)["authorization"] == "Bearer gateway-default"


def test_200_concurrent_streams_on_one_connection(gateway: Any) -> None:
    async def one(transport: AsyncWebSocketTransport, i: int) -> list[str]:
        stream = await transport.stream_async(_routes.GENERATE_STREAM, req(f"tokens:{5 + i % 7}:5"), OPTS)
        async with stream:
            return [event.token.text async for event in stream]

    async def main() -> None:
        async with AsyncWebSocketTransport(gateway.url) as transport:
            results = await asyncio.gather(*(one(transport, i) for i in range(200)))
            assert gateway.gateway.connections == 1
        for i, texts in enumerate(results):
            assert texts == [f" t{k}" for k in range(5 + i % 7)]

    asyncio.run(main())


def test_sync_transport_shared_by_8_threads(gateway: Any) -> None:
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for k in range(10):
                if k % 2:
                    message, _ = transport.unary(_routes.GENERATE, req(f"t{n}-{k}"), OPTS)
                    assert message.generated_text == f"echo: t{n}-{k}"
                else:
                    with transport.stream(_routes.GENERATE_STREAM, req(f"tokens:{k + 2}:1"), OPTS) as stream:
                        assert [e.token.id for e in stream] == list(range(k + 2))
        except BaseException as exc:
            failures.append(exc)

    with WebSocketTransport(gateway.url) as transport:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert gateway.gateway.connections == 1
    assert failures == []


def test_closing_a_stream_cancels_upstream(gateway: Any, upstream: Any) -> None:
    before = upstream.disconnects
    with WebSocketTransport(gateway.url) as transport:
        stream = transport.stream(_routes.GENERATE_STREAM, req("forever"), OPTS)
        assert next(stream).token.id == 0
        assert next(stream).token.id == 1
        stream.close()
        assert upstream.wait_disconnects(before + 1)
        with pytest.raises(StopIteration):
            next(stream)
        # The connection is still good for other calls.
        assert transport.unary(_routes.GENERATE, req("after"), OPTS)[0].generated_text == "echo: after"


def test_abandoned_stream_cancels_upstream(gateway: Any, upstream: Any) -> None:
    before = upstream.disconnects
    with WebSocketTransport(gateway.url) as transport:
        stream = transport.stream(_routes.GENERATE_STREAM, req("forever"), OPTS)
        next(stream)
        del stream
        gc.collect()
        assert upstream.wait_disconnects(before + 1)


def test_async_aclose_and_abandon_cancel_upstream(gateway: Any, upstream: Any) -> None:
    before = upstream.disconnects

    async def main() -> None:
        async with AsyncWebSocketTransport(gateway.url) as transport:
            stream = await transport.stream_async(_routes.GENERATE_STREAM, req("forever"), OPTS)
            await stream.__anext__()
            await stream.aclose()
            stream = await transport.stream_async(_routes.GENERATE_STREAM, req("forever"), OPTS)
            await stream.__anext__()
            del stream
            gc.collect()
            await asyncio.sleep(0.05)  # lets the cancel frame go out
            assert await asyncio.to_thread(upstream.wait_disconnects, before + 2)

    asyncio.run(main())


def test_task_cancellation_cancels_upstream(gateway: Any, upstream: Any) -> None:
    before = upstream.disconnects

    async def main() -> None:
        async with AsyncWebSocketTransport(gateway.url) as transport:
            task = asyncio.create_task(transport.unary_async(_routes.GENERATE, req("slow"), OPTS))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await asyncio.to_thread(upstream.wait_disconnects, before + 1)

    asyncio.run(main())


def test_read_timeout_and_deadline(gateway: Any, upstream: Any) -> None:
    before = upstream.disconnects
    with WebSocketTransport(gateway.url) as transport:
        with pytest.raises(errors.APITimeoutError) as info:
            transport.unary(_routes.GENERATE, req("slow"), CallOptions(timeout=Timeout(read=0.3)))
        assert info.value.phase == "read"
        assert upstream.wait_disconnects(before + 1)
        with pytest.raises(errors.APITimeoutError) as info:
            transport.unary(_routes.GENERATE, req("slow"), CallOptions(deadline=Deadline(0.3)))
        assert info.value.phase == "total"
        # A stream's read timeout counts idle time between its frames only.
        options = CallOptions(timeout=Timeout(read=0.5))
        with transport.stream(_routes.GENERATE_STREAM, req("tokens:8:100"), options) as stream:
            assert len(list(stream)) == 8
