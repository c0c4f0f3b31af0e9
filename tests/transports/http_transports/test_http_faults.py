"""Network faults, byte for byte, against both HTTP transports.

Each server here is a bare TCP handler, so the faults are exact: refused connections,
resets before and during a response, truncated chunked bodies, stalls, trickles,
kept-alive connections the server closes, TLS handshakes that never finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from collections.abc import Callable

import pytest

from lorax import _routes as routes
from lorax import errors
from lorax._timeout import Deadline, Timeout
from lorax.transports.base import CallOptions
from lorax.transports.http import HTTPTransport

from ._servers import (
    LAST_CHUNK,
    SSE_HEAD,
    AppServer,
    RawServer,
    chunk,
    eventually,
    free_port,
    head,
    json_response,
    read_request,
    reset,
)
from .conftest import Driver
from .test_http_streams import final, token

GENERATE = routes.GENERATE
STREAM = routes.GENERATE_STREAM
OK = b'{"generated_text":"ok"}'


def req() -> object:
    return GENERATE.input_type(inputs="Hi")


def sent(error: BaseException) -> object:
    return getattr(error, "request_sent", "unset")


def test_connection_refused_is_not_sent(driver: Callable[..., Driver]) -> None:
    port = free_port()
    d = driver(f"http://127.0.0.1:{port}")
    for call in (lambda: d.unary(GENERATE, req()), lambda: d.stream(STREAM, req())):
        with pytest.raises(errors.APIConnectionError) as info:
            call()
        assert type(info.value) is errors.APIConnectionError
        assert sent(info.value) is False
        assert f"127.0.0.1:{port}" in str(info.value)
        assert "refused" in str(info.value)


def test_unresolvable_host_is_not_sent(driver: Callable[..., Driver]) -> None:
    d = driver("http://nosuchhost.invalid:9")
    with pytest.raises(errors.APIConnectionError) as info:
        d.unary(GENERATE, req(), CallOptions(timeout=Timeout(connect=5, read=5)))
    assert sent(info.value) is False
    assert "nosuchhost.invalid" in str(info.value)


def test_reset_before_headers(raw: Callable[..., RawServer], driver: Callable[..., Driver]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        server.requests += 1
        reset(writer)

    server = raw(handler)
    d = driver(server.url)
    with pytest.raises(errors.APIConnectionError) as info:
        d.unary(GENERATE, req())
    # A fresh connection: the server may have started on it, so nothing is retried.
    assert sent(info.value) is True
    assert server.connections == 1
    assert server.requests == 1


def test_closed_without_response_on_fresh_connection(
    raw: Callable[..., RawServer], driver: Callable[..., Driver]
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        server.requests += 1

    server = raw(handler)
    d = driver(server.url)
    with pytest.raises(errors.APIConnectionError, match="closed the connection without a response") as info:
        d.unary(GENERATE, req())
    assert sent(info.value) is True
    assert server.requests == 1


def test_reset_mid_stream(raw: Callable[..., RawServer], driver: Callable[..., Driver]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(token(1)) + chunk(token(2)))
        await writer.drain()
        await asyncio.sleep(0.1)
        reset(writer)

    d = driver(raw(handler).url)
    messages, error = d.collect(STREAM, req())
    assert len(messages) == 2
    assert isinstance(error, errors.StreamInterruptedError)
    assert isinstance(error, errors.IncompleteGenerationError)
    assert "after 2 events" in str(error)
    assert d.stats()["in_use"] == 0


@pytest.mark.parametrize(
    "tail",
    [b"", b"4\r\nda", b"zz\r\n"],
    ids=["no-last-chunk", "mid-chunk", "bad-chunk-size"],
)
def test_truncated_chunked_body(raw: Callable[..., RawServer], driver: Callable[..., Driver], tail: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(token(1)))
        await writer.drain()
        await asyncio.sleep(0.05)  # the client has parsed the head and the event
        writer.write(tail)
        await writer.drain()

    d = driver(raw(handler).url)
    messages, error = d.collect(STREAM, req())
    assert len(messages) == 1
    assert isinstance(error, errors.StreamInterruptedError)
    assert "after 1 event" in str(error)
    assert d.stats()["in_use"] == 0


def test_truncated_unary_body(raw: Callable[..., RawServer], driver: Callable[..., Driver]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        writer.write(head(200, [("Content-Type", "application/json"), ("Content-Length", "100")]) + OK)
        await writer.drain()

    d = driver(raw(handler).url)
    with pytest.raises(errors.APIConnectionError) as info:
        d.unary(GENERATE, req())
    assert sent(info.value) is True
    assert "broke off" in str(info.value)


def test_malformed_status_line(raw: Callable[..., RawServer], driver: Callable[..., Driver]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        writer.write(b"SPDY/9 banana\r\n\r\n")
        await writer.drain()

    d = driver(raw(handler).url)
    with pytest.raises(errors.ProtocolError) as info:
        d.unary(GENERATE, req())
    assert "malformed response" in str(info.value)


def stall(before: bytes = b"") -> Callable[..., object]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        if before:
            writer.write(before)
            await writer.drain()
        await reader.read()  # until the client goes away
        server.requests += 1  # counts disconnects seen

    return handler


def test_read_timeout_before_headers(raw: Callable[..., RawServer], driver: Callable[..., Driver]) -> None:
    d = driver(raw(stall()).url)
    start = time.monotonic()
    with pytest.raises(errors.APITimeoutError) as info:
        d.unary(GENERATE, req(), CallOptions(timeout=Timeout(connect=5, read=0.3)))
    assert time.monotonic() - start < 2
    assert info.value.phase == "read"
    assert sent(info.value) is True
    assert not isinstance(info.value, errors.StreamInterruptedError)


def test_read_timeout_mid_stream(raw: Callable[..., RawServer], driver: Callable[..., Driver]) -> None:
    server = raw(stall(SSE_HEAD + chunk(token(1))))
    d = driver(server.url, pool=1)
    messages, error = d.collect(STREAM, req(), CallOptions(timeout=Timeout(connect=5, read=0.3)))
    assert len(messages) == 1
    assert isinstance(error, errors.APITimeoutError)
    assert error.phase == "read"
    assert not isinstance(error, errors.StreamInterruptedError)
    assert d.stats()["in_use"] == 0
    assert eventually(lambda: server.requests == 1)  # the stream was closed


def test_total_deadline(raw: Callable[..., RawServer], driver: Callable[..., Driver]) -> None:
    d = driver(raw(stall(SSE_HEAD + chunk(token(1)))).url)
    for call in ("unary", "stream"):
        options = CallOptions(timeout=Timeout(connect=5, read=5), deadline=Deadline(0.4))
        start = time.monotonic()
        if call == "unary":
            with pytest.raises(errors.APITimeoutError) as info:
                d.unary(GENERATE, req(), options)
            error: errors.LoraxError | None = info.value
        else:
            messages, error = d.collect(STREAM, req(), options)
            assert len(messages) == 1
        assert time.monotonic() - start < 2
        assert isinstance(error, errors.APITimeoutError)
        assert error.phase == "total"


def trickle(prefix: bytes, rest: bytes) -> Callable[..., object]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        writer.write(prefix)
        await writer.drain()
        for i in range(len(rest)):
            await asyncio.sleep(0.2)
            writer.write(rest[i : i + 1])
            await writer.drain()

    return handler


def test_trickle_does_not_time_out(raw: Callable[..., RawServer], driver: Callable[..., Driver]) -> None:
    # One byte every 0.2 s for 1.2 s with a read (idle) timeout of 0.5 s: no timeout.
    options = CallOptions(timeout=Timeout(connect=5, read=0.5))
    event = token(1)
    body = chunk(event) + LAST_CHUNK
    d = driver(raw(trickle(SSE_HEAD + body[:-6], body[-6:])).url)
    messages, error = d.collect(STREAM, req(), options)
    assert error is None
    assert len(messages) == 1
    response = json_response(OK)
    d = driver(raw(trickle(response[:-6], response[-6:])).url)
    message, _ = d.unary(GENERATE, req(), options)
    assert message.generated_text == "ok"  # type: ignore[attr-defined]


def test_async_read_timeout_sets_one_timer_per_period(raw: Callable[..., RawServer]) -> None:
    # 20 events 10 ms apart under a 5 s read timeout. aiohttp alone cancels and sets a
    # timer per chunk received; the transport's protocol sets one for the whole call
    # (when the request is sent) and only notes the time of each chunk.
    from lorax.transports.aiohttp import AsyncHTTPTransport

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD)
        for i in range(20):
            await asyncio.sleep(0.01)
            writer.write(chunk(token(i)))
            await writer.drain()
        writer.write(LAST_CHUNK)
        await writer.drain()

    url = raw(handler).url

    async def main() -> tuple[int, list[str]]:
        loop = asyncio.get_running_loop()
        armed: list[str] = []
        call_at = loop.call_at

        def counting_call_at(when: float, callback: Callable[..., object], *args: object, **kw: object) -> object:
            armed.append(getattr(callback, "__name__", "?"))
            return call_at(when, callback, *args, **kw)  # type: ignore[arg-type]

        loop.call_at = counting_call_at  # type: ignore[method-assign,assignment]
        transport = AsyncHTTPTransport(url)
        try:
            options = CallOptions(timeout=Timeout(connect=5, read=5))
            stream = await transport.stream_async(STREAM, req(), options)  # type: ignore[arg-type]
            got = [message async for message in stream]
        finally:
            await transport.aclose()
            del loop.call_at  # type: ignore[method-assign]
        return len(got), armed

    count, armed = asyncio.run(main())
    assert count == 20
    assert armed.count("_lorax_check") == 1
    assert "_on_read_timeout" not in armed


def test_tls_handshake_timeout_is_a_connect_timeout(
    raw: Callable[..., RawServer], driver: Callable[..., Driver]
) -> None:
    server = raw(stall())  # accepts TCP, never answers the ClientHello
    d = driver(f"https://127.0.0.1:{server.port}")
    start = time.monotonic()
    with pytest.raises(errors.APITimeoutError) as info:
        d.unary(GENERATE, req(), CallOptions(timeout=Timeout(connect=0.3, read=5)))
    assert time.monotonic() - start < 2
    assert info.value.phase == "connect"
    assert sent(info.value) is False


def keep_alive_server(*, close_after: float | None = None, drop_second: str | None = None) -> Callable[..., object]:
    """Answers requests on a kept-alive connection. `close_after`: close an idle
    connection after that long. `drop_second`: on the second request of a connection,
    close ("fin") or reset ("rst") instead of answering, as a server that closed it
    while idle just as the request arrived."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        n = 0
        while True:
            try:
                request = await asyncio.wait_for(read_request(reader), close_after)
            except asyncio.TimeoutError:
                return
            if request is None:
                return
            n += 1
            if n == 2 and drop_second is not None:
                if drop_second == "rst":
                    reset(writer)
                return
            server.requests += 1
            writer.write(json_response(OK))
            await writer.drain()

    return handler


def test_idle_connection_closed_by_server_between_calls(
    raw: Callable[..., RawServer], driver: Callable[..., Driver]
) -> None:
    server = raw(keep_alive_server(close_after=0.05))
    d = driver(server.url)
    for _ in range(3):
        d.unary(GENERATE, req())
        time.sleep(0.2)
    assert server.requests == 3
    assert server.connections == 3


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_stale_connection_race_is_retried_once(
    raw: Callable[..., RawServer], driver: Callable[..., Driver], how: str
) -> None:
    server = raw(keep_alive_server(drop_second=how))
    d = driver(server.url)
    for _ in range(3):
        message, _ = d.unary(GENERATE, req())
        assert message.generated_text == "ok"  # type: ignore[attr-defined]
    # Calls 2 and 3 each met a connection the server had closed, and went again on a
    # new one. The server answered (processed) exactly one request per call.
    assert server.requests == 3
    assert server.connections == 3


def test_pool_timeout(app: AppServer, driver: Callable[..., Driver]) -> None:
    app.sse("POST", "/generate_stream", [token(1)], forever=token(2))
    app.reply("POST", "/generate", OK)
    d = driver(app.url, pool=1)
    stream = d.stream(STREAM, req())
    next(stream)
    with pytest.raises(errors.APITimeoutError) as info:
        d.unary(GENERATE, req(), CallOptions(timeout=Timeout(connect=5, read=5, pool=0.2)))
    assert info.value.phase == "pool"
    assert sent(info.value) is False
    stream.close()
    assert d.unary(GENERATE, req())[0].generated_text == "ok"  # type: ignore[attr-defined]


def test_async_pool_waiters_first_come_first_served_and_quitters_pass_it_on(app: AppServer) -> None:
    from lorax.transports.aiohttp import AsyncHTTPTransport

    app.sse("POST", "/generate_stream", [token(1)], forever=token(2))
    app.reply("POST", "/generate", OK)

    async def main() -> None:
        async with AsyncHTTPTransport(app.url, limit=1) as transport:
            stream = await transport.stream_async(STREAM, req(), CallOptions())  # holds the one slot
            await stream.__anext__()
            done: list[str] = []

            async def call(name: str) -> None:
                message, _ = await transport.unary_async(GENERATE, req(), CallOptions())
                assert message.generated_text == "ok"  # type: ignore[attr-defined]
                done.append(name)

            tasks = {name: asyncio.ensure_future(call(name)) for name in ("a", "b", "c", "d")}
            await asyncio.sleep(0)  # each task runs up to its wait for the slot
            tasks["b"].cancel()  # gives up while waiting
            await asyncio.sleep(0)
            await stream.aclose()  # hands the slot to "a" (no await inside: "a" has not run yet)
            tasks["a"].cancel()  # cancelled holding a slot it never used: "c" gets it
            results = await asyncio.wait_for(asyncio.gather(*tasks.values(), return_exceptions=True), 10)
            assert [type(r).__name__ for r in results] == ["CancelledError", "CancelledError", "NoneType", "NoneType"]
            assert done == ["c", "d"]
            assert transport.pool_stats()["in_use"] == 0
            # The slot is free again: a call neither waits nor times out.
            options = CallOptions(timeout=Timeout(connect=5, read=5, pool=0.5))
            assert (await transport.unary_async(GENERATE, req(), options))[0].generated_text == "ok"  # type: ignore[attr-defined]

    asyncio.run(main())


def test_sync_close_from_another_thread(raw: Callable[..., RawServer]) -> None:
    server = raw(stall(SSE_HEAD + chunk(token(1))))
    with HTTPTransport(server.url) as transport:
        stream = transport.stream(STREAM, req(), CallOptions(timeout=Timeout(connect=5, read=30)))
        assert next(stream).token.id == 1  # type: ignore[attr-defined]
        result: list[object] = []

        def reader() -> None:
            try:
                result.append(next(stream))
            except StopIteration:
                result.append("end")
            except BaseException as exc:  # pragma: no cover - reported below
                result.append(exc)

        thread = threading.Thread(target=reader)
        thread.start()
        time.sleep(0.2)  # the reader is blocked in recv()
        start = time.monotonic()
        stream.close()
        thread.join(5)
        assert not thread.is_alive()
        assert time.monotonic() - start < 2
        assert result == ["end"]
        assert eventually(lambda: server.requests == 1)  # the server saw the disconnect
        assert transport.pool_stats()["in_use"] == 0


def test_sync_transport_close_stops_open_streams(app: AppServer) -> None:
    app.sse("POST", "/generate_stream", [token(1)], forever=token(2))
    transport = HTTPTransport(app.url)
    stream = transport.stream(STREAM, req(), CallOptions())
    next(stream)
    transport.close()
    assert list(stream) == []
    with pytest.raises(errors.ClientClosedError):
        transport.unary(GENERATE, req(), CallOptions())
    assert eventually(lambda: len(app.disconnects) == 1)


def test_sync_dropped_stream_gives_its_slot_back(app: AppServer) -> None:
    app.sse("POST", "/generate_stream", [token(1)], forever=token(2))
    app.reply("POST", "/generate", OK)
    with HTTPTransport(app.url, pool_maxsize=1) as transport:
        stream = transport.stream(STREAM, req(), CallOptions())
        next(stream)
        del stream
        gc.collect()
        options = CallOptions(timeout=Timeout(connect=5, read=5, pool=1))
        assert transport.unary(GENERATE, req(), options)[0].generated_text == "ok"  # type: ignore[attr-defined]
        assert eventually(lambda: len(app.disconnects) == 1)


def test_async_cancel_closes_the_response(app: AppServer) -> None:
    from lorax.transports.aiohttp import AsyncHTTPTransport

    app.sse("POST", "/generate_stream", [token(1)], forever=token(2))

    async def main() -> None:
        async with AsyncHTTPTransport(app.url) as transport:
            stream = await transport.stream_async(STREAM, req(), CallOptions())
            started = asyncio.Event()

            async def consume() -> None:
                async for _ in stream:
                    started.set()

            task = asyncio.create_task(consume())
            await started.wait()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert transport.pool_stats()["in_use"] == 0
            for _ in range(200):
                if app.disconnects:
                    break
                await asyncio.sleep(0.01)
            assert app.disconnects == ["/generate_stream"]

            # aclose() from another task ends the iteration of the first.
            stream = await transport.stream_async(STREAM, req(), CallOptions())
            seen: list[object] = []

            async def consume_all() -> None:
                async for message in stream:
                    seen.append(message)

            task = asyncio.create_task(consume_all())
            while not seen:
                await asyncio.sleep(0.01)
            await stream.aclose()
            await asyncio.wait_for(task, 2)  # ended normally, no exception
            assert transport.pool_stats()["in_use"] == 0

    asyncio.run(main())
    assert eventually(lambda: len(app.disconnects) == 2)


def test_async_transport_is_bound_to_its_loop(app: AppServer) -> None:
    from lorax.transports.aiohttp import AsyncHTTPTransport

    app.reply("POST", "/generate", OK)
    transport = AsyncHTTPTransport(app.url)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(transport.unary_async(GENERATE, req(), CallOptions()))

        async def elsewhere() -> None:
            with pytest.raises(errors.LoraxError, match="event loop"):
                await transport.unary_async(GENERATE, req(), CallOptions())

        asyncio.run(elsewhere())
        loop.run_until_complete(transport.aclose())
        loop.run_until_complete(transport.aclose())  # idempotent
        with pytest.raises(errors.ClientClosedError):
            loop.run_until_complete(transport.unary_async(GENERATE, req(), CallOptions()))
    finally:
        loop.close()


def test_stream_after_final_event_with_body_error(raw: Callable[..., RawServer], driver: Callable[..., Driver]) -> None:
    # A final event, then the connection breaks before the last chunk: the events all
    # arrived, the end did not.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(token(1)) + chunk(final("a")))
        await writer.drain()
        await asyncio.sleep(0.05)
        reset(writer)

    d = driver(raw(handler).url)
    messages, error = d.collect(STREAM, req())
    assert len(messages) == 2
    assert isinstance(error, errors.StreamInterruptedError)


def test_events_that_arrived_with_the_break_are_delivered(
    raw: Callable[..., RawServer], driver: Callable[..., Driver]
) -> None:
    # The last events and the end of the connection arrive together: they are still
    # handed out, then the stream reports the break (the same sync and async).
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(chunk(token(1)) + chunk(token(2)) + chunk(final("a"))[:-3])

    d = driver(raw(handler).url)
    stream = d.stream(STREAM, req())
    time.sleep(0.2)  # everything, and the close, has arrived before the first read
    messages = [next(stream), next(stream)]
    with pytest.raises(errors.StreamInterruptedError, match="after 2 events"):
        next(stream)
    assert len(messages) == 2
    stream.close()
