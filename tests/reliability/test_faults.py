"""Fault injection over real sockets, for every transport: HTTP sync and async, and the
WebSocket transports (sync and async) through a ``lorax gateway`` in front of the
faulty server.

Every scenario is one client call (or a few) that must end, within a time bound, in
the right answer or the right :mod:`lorax.errors` exception, leaving no connection
checked out, no call in flight at the gateway and no unclosed socket behind (see
``_harness``). Byte-exact faults come from bare asyncio TCP servers
(``tests/transports/http_transports/_servers.py``); the others from the fake LoRAX
server's fault injection (``x-lorax-fake-fault``, ``server.faults.push``).

Over the WebSocket the gateway is the HTTP client of the faulty server, so a failure
reaches the client as the gateway reports it: an upstream that broke before
answering becomes a 502 (``ServiceUnavailableError``), one that broke mid-stream an
``IncompleteGenerationError``, one that cannot be reached a 503 (retried), the way an
HTTP proxy would report them.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import signal
import time
from collections.abc import Callable

import pytest

from lorax import errors
from lorax.testing import FAULT_HEADER, FakeLorax
from tests.transports.http_transports._servers import (
    LAST_CHUNK,
    SSE_HEAD,
    RawServer,
    chunk,
    free_port,
    head,
    json_response,
    read_request,
    reset,
)
from tests.transports.http_transports.test_http_streams import final, token

from ._harness import (
    Op,
    Outcome,
    eventually,
    fake_server_process,
    gateway_idle,
    gateway_process,
    run,
)

UNARY = Op()
STREAM = Op(stream=True)
OK_BODY = b'{"generated_text":"ok"}'
Raw = Callable[..., RawServer]


def is_ws(transport: str) -> bool:
    return transport.startswith("ws")


def path_of(request_head: bytes) -> bytes:
    return request_head.split(b" ", 2)[1]


def sse_body(*events: bytes, end: bool = True) -> bytes:
    return SSE_HEAD + b"".join(chunk(e) for e in events) + (LAST_CHUNK if end else b"")


GOOD_STREAM = (token(1, " a"), token(2, " b"), final(" a b"))


def answer(body_unary: bytes = OK_BODY, events: tuple[bytes, ...] = GOOD_STREAM) -> Callable[[bytes], bytes]:
    """The bytes of a good answer to a request, by route."""

    def respond(request_head: bytes) -> bytes:
        if path_of(request_head).endswith(b"_stream"):
            return sse_body(*events)
        return json_response(body_unary)

    return respond


def serve_forever(respond: Callable[[bytes], bytes]) -> Callable[..., object]:
    """A keep-alive server answering every request with `respond(head)`; counts them."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        while (request := await read_request(reader)) is not None:
            server.requests += 1
            writer.write(respond(request[0]))
            await writer.drain()

    return handler


def check_ok(outcome: Outcome, op: Op) -> None:
    assert outcome.error is None, repr(outcome.error)
    assert outcome.value is not None
    assert outcome.value.generated_text


# ---------------------------------------------------------------------------------
# Connections that fail


@pytest.mark.parametrize("op", [UNARY, STREAM], ids=["unary", "stream"])
def test_connection_refused(transport: str, op: Op, record: Callable[..., None]) -> None:
    # Nothing listens upstream. Over the WebSocket the gateway cannot reach LoRAX: 503,
    # retried like any 503, since nothing was sent.
    url = f"http://127.0.0.1:{free_port()}"
    outcome = run(transport, url, op)
    record(f"connection refused ({'stream' if op.stream else 'unary'})", outcome)
    assert outcome.elapsed < 3
    if is_ws(transport):
        assert isinstance(outcome.error, errors.ServiceUnavailableError)
        assert outcome.error.status_code == 503
        assert outcome.error.error_type == "upstream_unavailable"
    else:
        assert type(outcome.error) is errors.APIConnectionError
        assert outcome.error.request_sent is False
        assert "refused" in str(outcome.error)


@pytest.mark.parametrize("transport", ["ws", "ws-async"])
def test_gateway_unreachable(transport: str, record: Callable[..., None]) -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    outcome = run(transport, "http://unused", STREAM, ws_url=url)
    record("gateway unreachable (ws)", outcome)
    assert outcome.elapsed < 3
    assert type(outcome.error) is errors.APIConnectionError
    assert outcome.error.request_sent is False


@pytest.mark.parametrize("op", [UNARY, STREAM], ids=["unary", "stream"])
def test_reset_before_headers(transport: str, op: Op, raw: Raw, record: Callable[..., None]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        server.requests += 1
        reset(writer)

    server = raw(handler)
    outcome = run(transport, server.url, op)
    record(f"reset before headers ({'stream' if op.stream else 'unary'})", outcome)
    assert outcome.elapsed < 3
    # The request reached the server: never retried (a generation must not run twice).
    assert server.requests == 1
    if is_ws(transport):
        assert isinstance(outcome.error, errors.ServiceUnavailableError)
        assert (outcome.error.status_code, outcome.error.error_type) == (502, "upstream_error")
    else:
        assert type(outcome.error) is errors.APIConnectionError
        assert outcome.error.request_sent is True


def test_reset_after_headers(transport: str, raw: Raw, record: Callable[..., None]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        server.requests += 1
        writer.write(SSE_HEAD)
        await writer.drain()
        await asyncio.sleep(0.1)
        reset(writer)

    server = raw(handler)
    outcome = run(transport, server.url, STREAM)
    record("reset after headers (stream)", outcome)
    assert outcome.elapsed < 3
    assert server.requests == 1
    assert outcome.events == []
    assert isinstance(outcome.error, errors.IncompleteGenerationError)
    if not is_ws(transport):
        assert isinstance(outcome.error, errors.StreamInterruptedError)
        assert "after 0 events" in str(outcome.error)


def test_reset_after_headers_unary(transport: str, raw: Raw, record: Callable[..., None]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        server.requests += 1
        writer.write(head(200, [("Content-Type", "application/json"), ("Content-Length", "100")]) + b'{"gene')
        await writer.drain()
        await asyncio.sleep(0.1)
        reset(writer)

    server = raw(handler)
    outcome = run(transport, server.url, UNARY)
    record("reset after headers (unary)", outcome)
    assert outcome.elapsed < 3
    assert server.requests == 1
    if is_ws(transport):
        assert isinstance(outcome.error, errors.ServiceUnavailableError)
        assert outcome.error.status_code == 502
    else:
        assert type(outcome.error) is errors.APIConnectionError
        assert "broke off" in str(outcome.error)


def test_reset_mid_stream(transport: str, fake_server: FakeLorax, record: Callable[..., None]) -> None:
    # The fake server aborts the TCP connection after 3 tokens (no chunked terminator).
    before = fake_server.stats.dropped
    op = Op(stream=True, max_new_tokens=10, headers={FAULT_HEADER: "drop-after=3"})
    outcome = run(transport, fake_server.url, op)
    record("reset mid-stream after 3 tokens", outcome)
    assert outcome.elapsed < 3
    assert len(outcome.events) == 3
    assert fake_server.stats.dropped == before + 1
    assert isinstance(outcome.error, errors.IncompleteGenerationError)
    if not is_ws(transport):
        assert isinstance(outcome.error, errors.StreamInterruptedError)
        assert "after 3 events" in str(outcome.error)


TAILS = {"no last chunk": b"", "cut inside a chunk": b"4\r\nda", "bad chunk size": b"zz\r\n"}


@pytest.mark.parametrize("tail", sorted(TAILS))
def test_truncated_chunked_body(transport: str, tail: str, raw: Raw, record: Callable[..., None]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(token(1)))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(TAILS[tail])
        await writer.drain()  # then FIN

    outcome = run(transport, raw(handler).url, STREAM)
    record(f"truncated chunked body: {tail}", outcome)
    assert outcome.elapsed < 3
    assert len(outcome.events) == 1
    assert isinstance(outcome.error, errors.IncompleteGenerationError)
    if not is_ws(transport):
        assert isinstance(outcome.error, errors.StreamInterruptedError)


# ---------------------------------------------------------------------------------
# Silence: stalls and trickles


def stall(before: bytes = b"") -> Callable[..., object]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        if before:
            writer.write(before)
            await writer.drain()
        await reader.read()  # until the client goes away
        server.requests += 1  # counts the disconnects seen

    return handler


@pytest.mark.parametrize(
    ("op", "before"),
    [(UNARY, b""), (STREAM, b""), (STREAM, SSE_HEAD + chunk(token(1)))],
    ids=["unary", "stream-before-headers", "stream-after-1-token"],
)
def test_stall_read_timeout(transport: str, op: Op, before: bytes, raw: Raw, record: Callable[..., None]) -> None:
    server = raw(stall(before))
    outcome = run(transport, server.url, op, read=0.6)
    name = "stream" if op.stream else "unary"
    record(f"server stalls ({name}{', after 1 token' if before else ''})", outcome)
    assert 0.5 < outcome.elapsed < 2.5
    assert len(outcome.events) == (1 if before else 0)
    # Over the WebSocket the client's own wait and the gateway's upstream read timeout
    # run out together; either may report it.
    if is_ws(transport):
        assert isinstance(outcome.error, (errors.APITimeoutError, errors.ShardTimeoutError))
    else:
        assert isinstance(outcome.error, errors.APITimeoutError)
        assert outcome.error.phase == "read"
    # The server saw the client (or the gateway) go away.
    assert eventually(lambda: server.requests == 1)


def trickle_server(
    prefix: bytes, pieces: list[bytes], *, then: bytes | None, interval: float = 0.2
) -> Callable[..., object]:
    """Send `prefix`, then one of `pieces` every `interval`; then `then`, or stall."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        writer.write(prefix)
        await writer.drain()
        for piece in pieces:
            await asyncio.sleep(interval)
            writer.write(piece)
            await writer.drain()
        if then is not None:
            writer.write(then)
            await writer.drain()
            return
        await reader.read()
        server.requests += 1

    return handler


# A keep-alive comment that takes 10 x 0.2 s = 2 s to arrive: one byte of it (in an
# HTTP chunk of its own) every 0.2 s.
TRICKLE = [chunk(bytes([c])) for c in b":trickle\n\n"]


def test_trickle_keeps_the_call_alive(
    transport: str, raw: Raw, record: Callable[..., None], request: pytest.FixtureRequest
) -> None:
    # One byte every 0.2 s for 2 s, read timeout 0.6 s: bytes flow, so no timeout.
    server = raw(trickle_server(SSE_HEAD + chunk(token(1)), TRICKLE, then=chunk(final(" a")) + LAST_CHUNK))
    outcome = run(transport, server.url, STREAM, read=0.6)
    record("trickle 1 B/0.2 s, read timeout 0.6 s", outcome.label())
    check_ok(outcome, STREAM)
    assert 2.0 <= outcome.elapsed < 3.5


def test_trickle_then_stop(
    transport: str, raw: Raw, record: Callable[..., None], request: pytest.FixtureRequest
) -> None:
    server = raw(trickle_server(SSE_HEAD + chunk(token(1)), TRICKLE, then=None))
    outcome = run(transport, server.url, STREAM, read=0.6)
    record("trickle, then silence", outcome.label())
    assert isinstance(outcome.error, errors.APITimeoutError)
    assert outcome.error.phase == "read"
    # No timeout while the bytes flowed (2 s), one read timeout (0.6 s) after they stopped.
    assert 2.0 + 0.5 <= outcome.elapsed < 2.0 + 1.5
    assert len(outcome.events) == 1
    assert eventually(lambda: server.requests == 1)


def test_slow_tokens_keep_the_call_alive(transport: str, raw: Raw, record: Callable[..., None]) -> None:
    # A token every 0.2 s for 2 s, read timeout 0.6 s: every transport sees events flow.
    events = [token(i) for i in range(10)]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD)
        for event in events:
            await asyncio.sleep(0.2)
            writer.write(chunk(event))
            await writer.drain()
        writer.write(chunk(final(" a")) + LAST_CHUNK)
        await writer.drain()

    outcome = run(transport, raw(handler).url, STREAM, read=0.6)
    record("a token every 0.2 s, read timeout 0.6 s", outcome)
    check_ok(outcome, STREAM)
    assert len(outcome.events) == 11
    assert 2.0 <= outcome.elapsed < 4.0


# ---------------------------------------------------------------------------------
# Retryable answers, then success


def failing_then_ok(
    status: int, headers: list[tuple[str, object]], body: bytes, content_type: str, times: int = 1
) -> Callable[..., object]:
    """Answer the first `times` requests with `status` (header values may be callables),
    then answer well; counts every request."""
    respond_ok = answer()

    def respond(request_head: bytes, n: int) -> bytes:
        if n <= times:
            extra = [(k, str(v() if callable(v) else v)) for k, v in headers]
            return head(status, [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra]) + body
        return respond_ok(request_head)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        while (request := await read_request(reader)) is not None:
            server.requests += 1
            writer.write(respond(request[0], server.requests))
            await writer.drain()

    return handler


OVERLOADED = b'{"error":"Model is overloaded","error_type":"overloaded"}'
PROXY_503 = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"


def http_date_in(seconds: float) -> Callable[[], str]:
    return lambda: email.utils.formatdate(time.time() + seconds, usegmt=True)


RETRY_CASES = {
    # id: (status, Retry-After, least wait, most wait)
    "429": (429, None, 0.0, 1.0),
    "429-ra1": (429, "1", 1.0, 2.5),
    "429-date": (429, "http-date", 1.0, 3.0),
    "429-garbage": (429, "soon", 0.0, 1.0),
    "503": (503, None, 0.0, 1.0),
    "503-ra1": (503, "1", 1.0, 2.5),
    "503-date": (503, "http-date", 1.0, 3.0),
    "503-garbage": (503, "-1", 0.0, 1.0),
}


@pytest.mark.parametrize(
    ("op", "case"),
    [(UNARY, case) for case in RETRY_CASES]
    + [(STREAM, case) for case in ("429-ra1", "429-garbage", "503", "503-date")],
    ids=[f"unary-{case}" for case in RETRY_CASES]
    + [f"stream-{c}" for c in ("429-ra1", "429-garbage", "503", "503-date")],
)
def test_retryable_status_then_success(
    transport: str,
    op: Op,
    case: str,
    raw: Raw,
    record: Callable[..., None],
) -> None:
    status, retry_after, min_wait, max_wait = RETRY_CASES[case]
    headers: list[tuple[str, object]] = []
    if retry_after == "http-date":
        headers.append(("Retry-After", http_date_in(2)))
    elif retry_after is not None:
        headers.append(("Retry-After", retry_after))
    body, content_type = (OVERLOADED, "application/json") if status == 429 else (PROXY_503, "text/plain")
    server = raw(failing_then_ok(status, headers, body, content_type))
    outcome = run(transport, server.url, op)
    record(f"{status} Retry-After: {retry_after or '-'} then ok ({'stream' if op.stream else 'unary'})", outcome)
    check_ok(outcome, op)
    assert server.requests == 2  # one refusal, one answer: nothing twice
    assert min_wait <= outcome.elapsed < max_wait


def test_in_stream_overloaded_then_success(transport: str, fake_server: FakeLorax, record: Callable[..., None]) -> None:
    # What LoRAX really does on a stream route: 200, then an overloaded error event.
    fake_server.faults.push("overloaded", times=2)
    before = fake_server.stats.overloaded
    outcome = run(transport, fake_server.url, Op(stream=True))
    record("in-stream overloaded x2, then ok", outcome)
    check_ok(outcome, STREAM)
    assert fake_server.stats.overloaded == before + 2
    assert outcome.elapsed < 2


def test_retry_after_beyond_the_cap_is_not_waited(transport: str, raw: Raw, record: Callable[..., None]) -> None:
    server = raw(failing_then_ok(429, [("Retry-After", "3600")], OVERLOADED, "application/json"))
    outcome = run(transport, server.url, UNARY)
    record("429 Retry-After: 3600 (over max_retry_after)", outcome)
    assert isinstance(outcome.error, errors.OverloadedError)
    assert outcome.error.retry_after == "3600"
    assert server.requests == 1
    assert outcome.elapsed < 1


# ---------------------------------------------------------------------------------
# Kept-alive connections the server closes


def keep_alive_server(
    respond: Callable[[bytes], bytes], *, close_idle_after: float | None, drop_second: bool
) -> Callable[..., object]:
    """Answers requests on kept-alive connections; counts answered requests only.

    `close_idle_after`: close (FIN) a connection idle that long. `drop_second`: read the
    second request of a connection and close it without answering, as a server that
    closed it while idle just as the request arrived (it never processes it).
    """

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        n = 0
        while True:
            try:
                request = await asyncio.wait_for(read_request(reader), close_idle_after)
            except asyncio.TimeoutError:
                return
            if request is None:
                return
            n += 1
            if n == 2 and drop_second:
                return
            server.requests += 1
            writer.write(respond(request[0]))
            await writer.drain()

    return handler


@pytest.mark.parametrize("how", ["closed-while-idle", "closed-as-request-arrives"])
@pytest.mark.parametrize("op", [UNARY, STREAM], ids=["unary", "stream"])
def test_stale_keep_alive_connection(transport: str, op: Op, how: str, raw: Raw, record: Callable[..., None]) -> None:
    if how == "closed-while-idle":
        server = raw(keep_alive_server(answer(), close_idle_after=0.05, drop_second=False))
    else:
        server = raw(keep_alive_server(answer(), close_idle_after=None, drop_second=True))
    outcome = run(transport, server.url, op, calls=3, pause=0.2)
    record(f"stale keep-alive, {how} ({'stream' if op.stream else 'unary'})", outcome)
    check_ok(outcome, op)
    # Three calls, three generations: a retried call never ran twice.
    assert server.requests == 3
    assert outcome.elapsed < 2


@pytest.mark.parametrize("transport", ["ws", "ws-async"])
def test_gateway_closes_idle_connection_between_calls(
    transport: str, fake_server: FakeLorax, record: Callable[..., None]
) -> None:
    # The gateway closes a connection idle for 0.1 s (code 4000); the next call opens a
    # new one and runs once.
    before = fake_server.stats.requests
    outcome = run(transport, fake_server.url, STREAM, calls=3, pause=0.4, gateway_kwargs={"idle_timeout": 0.1})
    record("gateway closed the idle WebSocket between calls", outcome)
    check_ok(outcome, STREAM)
    assert fake_server.stats.requests == before + 3


# ---------------------------------------------------------------------------------
# Error answers


def test_html_502_from_a_proxy(transport: str, fake_server: FakeLorax, record: Callable[..., None]) -> None:
    before = fake_server.stats.requests
    for op in (UNARY, STREAM):
        outcome = run(transport, fake_server.url, Op(stream=op.stream, headers={FAULT_HEADER: "bad-gateway"}))
        assert isinstance(outcome.error, errors.ServiceUnavailableError)
        assert outcome.error.status_code == 502
        assert outcome.error.message == "502 Bad Gateway"
        assert "<html>" in (outcome.error.body or "")
        assert outcome.elapsed < 2
    record("HTML 502 from a proxy", outcome)
    assert fake_server.stats.requests == before + 2  # 502 is not retried


AXUM_TEXTS = {
    400: (b"Failed to parse the request body as JSON: trailing comma at line 1 column 15", errors.BadRequestError),
    413: (b"Failed to buffer the request body: length limit exceeded", errors.PayloadTooLargeError),
    415: (b"Expected request with `Content-Type: application/json`", errors.UnsupportedMediaTypeError),
    422: (
        b"Failed to deserialize the JSON body into the target type: missing field `inputs` at line 1 column 17",
        errors.RequestDeserializationError,
    ),
}


@pytest.mark.parametrize("status", sorted(AXUM_TEXTS))
def test_text_plain_4xx(transport: str, status: int, raw: Raw, record: Callable[..., None]) -> None:
    text, cls = AXUM_TEXTS[status]
    response = head(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(text)))]) + text
    server = raw(serve_forever(lambda _: response))
    for op in (UNARY, STREAM):
        outcome = run(transport, server.url, op)
        assert type(outcome.error) is cls, repr(outcome.error)
        assert outcome.error.status_code == status
        assert outcome.error.message == text.decode()
        assert outcome.error.error_type is None
        assert outcome.elapsed < 2
    record(f"text/plain {status} (axum)", outcome)
    assert server.requests == 2


# ---------------------------------------------------------------------------------
# What is inside the stream


def test_invalid_utf8_in_a_token(transport: str, raw: Raw, record: Callable[..., None]) -> None:
    bad = token(1).replace(b'" a"', b'"\xff\xfe"')
    server = raw(serve_forever(answer(body_unary=b'{"generated_text":"\xc3\x28"}', events=(bad, final(" a")))))
    for op in (UNARY, STREAM):
        outcome = run(transport, server.url, op)
        if is_ws(transport):
            # The gateway could not read the upstream's answer: 502, as a proxy says it.
            assert isinstance(outcome.error, errors.ServiceUnavailableError), repr(outcome.error)
            assert (outcome.error.status_code, outcome.error.error_type) == (502, "upstream_error")
            assert "invalid JSON" in str(outcome.error)
        else:
            assert isinstance(outcome.error, errors.ResponseDecodeError), repr(outcome.error)
        assert outcome.events == []
        assert outcome.elapsed < 2
    record("invalid UTF-8 in a token", outcome)


def test_8_mib_event(transport: str, raw: Raw, record: Callable[..., None]) -> None:
    text = "x" * (8 * 2**20)
    server = raw(serve_forever(answer(events=(token(1), final(text)))))
    outcome = run(transport, server.url, STREAM)
    record("one 8 MiB SSE event", outcome)
    check_ok(outcome, STREAM)
    assert outcome.value.generated_text == text
    assert outcome.elapsed < 10


GARBAGE = (
    b"garbage without a colon\n",
    b"event: surprise\nid: 7\nretry: soon\n\n",
    b": a comment\n\n",
    b"\x00\x01\x02 binary junk\xff\n\n",
    b"\r\n\r\n",
    b"field-with-no-value\n\n",
)


def test_garbage_between_events(transport: str, raw: Raw, record: Callable[..., None]) -> None:
    events = (GARBAGE[0], token(1, " a"), *GARBAGE[1:3], token(2, " b"), *GARBAGE[3:], final(" a b"))
    server = raw(serve_forever(answer(events=events)))
    outcome = run(transport, server.url, STREAM)
    record("garbage between events", outcome)
    check_ok(outcome, STREAM)
    assert [e.token.text for e in outcome.events] == [" a", " b", "</s>"]


def test_unknown_fields_and_enum_values(transport: str, raw: Raw, record: Callable[..., None]) -> None:
    tok = (
        b'data: {"index":0,"token":{"id":1,"text":" a","logprob":-0.1,"special":false,"skipped":false,'
        b'"future":{"x":[1,2]}},"generated_text":null,"details":null,"usage":{"tokens":1}}\n\n'
    )
    last = (
        b'data: {"token":{"id":2,"text":"</s>","logprob":-0.01,"special":true,"skipped":false,"shiny":true},'
        b'"generated_text":" a","details":{"finish_reason":"brand_new_reason","prompt_tokens":1,'
        b'"generated_tokens":2,"seed":null,"new_counter":3},"new_top_level":"hello"}\n\n'
    )
    body = b'{"generated_text":"ok","details":{"finish_reason":"brand_new_reason","generated_tokens":1,"x":1},"y":[]}'
    server = raw(serve_forever(answer(body_unary=body, events=(tok, last))))
    for op in (UNARY, STREAM):
        outcome = run(transport, server.url, op)
        check_ok(outcome, op)
    record("unknown fields and enum values", outcome)
    assert outcome.value.generated_text == " a"
    assert len(outcome.events) == 2


def test_second_final_event(transport: str, raw: Raw, record: Callable[..., None]) -> None:
    server = raw(serve_forever(answer(events=(token(1, " a"), final(" a"), final(" a again")))))
    outcome = run(transport, server.url, STREAM)
    record("a second final event", outcome)
    check_ok(outcome, STREAM)
    assert outcome.value.generated_text == " a"  # the first final event wins
    assert len(outcome.events) == 2  # the second one is not delivered


def test_stream_without_final_event(transport: str, raw: Raw, record: Callable[..., None]) -> None:
    server = raw(serve_forever(answer(events=(token(1), token(2)))))
    outcome = run(transport, server.url, STREAM)
    record("stream ends without a final event", outcome)
    assert type(outcome.error) is errors.IncompleteGenerationError
    assert len(outcome.events) == 2
    assert outcome.elapsed < 2


def test_error_event_mid_stream(transport: str, fake_server: FakeLorax, record: Callable[..., None]) -> None:
    op = Op(stream=True, max_new_tokens=10, headers={FAULT_HEADER: "error-after=3"})
    outcome = run(transport, fake_server.url, op)
    record("generation error event after 3 tokens", outcome)
    assert type(outcome.error) is errors.GenerationError
    assert len(outcome.events) == 3
    assert outcome.elapsed < 2


# ---------------------------------------------------------------------------------
# Processes that die


def test_server_killed_mid_stream(transport: str, record: Callable[..., None]) -> None:
    # The LoRAX (fake) process dies after 3 tokens: straight to the client over HTTP,
    # behind the gateway over the WebSocket.
    with fake_server_process("--token-latency-ms", "50") as (proc, url):

        def kill_after(n: int) -> None:
            if n == 3:
                os.kill(proc.pid, signal.SIGKILL)

        outcome = run(transport, url, Op(stream=True, max_new_tokens=100, on_event=kill_after))
    record("server process killed mid-stream", outcome)
    assert outcome.elapsed < 5
    assert len(outcome.events) == 3
    assert isinstance(outcome.error, errors.IncompleteGenerationError)
    if not is_ws(transport):
        assert isinstance(outcome.error, errors.StreamInterruptedError)


@pytest.mark.parametrize("transport", ["ws", "ws-async"])
def test_gateway_killed_mid_stream(transport: str, record: Callable[..., None]) -> None:
    with FakeLorax(token_latency=0.05) as upstream, gateway_process(upstream.url) as (proc, ws_url):

        def kill_after(n: int) -> None:
            if n == 3:
                os.kill(proc.pid, signal.SIGKILL)

        outcome = run(transport, upstream.url, Op(stream=True, max_new_tokens=100, on_event=kill_after), ws_url=ws_url)
        # The gateway's upstream connection died with it: LoRAX stopped generating.
        assert eventually(lambda: upstream.stats.cancelled == 1 and upstream.stats.in_flight == 0)
    record("gateway process killed mid-stream", outcome)
    assert outcome.elapsed < 5
    assert len(outcome.events) == 3
    assert type(outcome.error) is errors.StreamInterruptedError


@pytest.mark.parametrize("transport", ["ws", "ws-async"])
def test_gateway_stopped_mid_stream(transport: str, record: Callable[..., None]) -> None:
    # The in-process gateway shuts down (1001, going away) under a stream.
    from lorax.gateway import GatewayThread

    with FakeLorax(token_latency=0.05) as upstream:
        gw = GatewayThread(upstream=upstream.url).start()
        try:

            def stop_after(n: int) -> None:
                if n == 3:
                    # stop() waits for the loop; run it off the client's thread.
                    import threading

                    threading.Thread(target=gw.stop, kwargs={"grace": 0}).start()

            outcome = run(
                transport, upstream.url, Op(stream=True, max_new_tokens=100, on_event=stop_after), ws_url=gw.url
            )
        finally:
            gw.stop(grace=0)
        assert eventually(lambda: upstream.stats.in_flight == 0)
    record("gateway shut down mid-stream", outcome)
    assert outcome.elapsed < 5
    assert type(outcome.error) is errors.StreamInterruptedError
    assert 3 <= len(outcome.events) < 100


def test_http_leak_check_is_live(fake_server: FakeLorax) -> None:
    # The harness's pool check must be able to fail: an open stream holds a connection.
    from lorax import Client

    with Client(fake_server.url) as client:
        stream = client.generate_stream("Hi", max_new_tokens=5)
        next(stream)
        stats = client.transport.pool_stats()  # type: ignore[attr-defined]
        assert (stats["in_use"], stats["streams"]) == (1, 1)
        stream.close()
        stats = client.transport.pool_stats()  # type: ignore[attr-defined]
        assert (stats["in_use"], stats["streams"]) == (0, 0)


def test_gateway_leak_check_is_live() -> None:
    # The harness's gateway check must be able to fail: a stream held open is a call.
    from lorax import Client
    from lorax.gateway import GatewayThread

    with (
        FakeLorax(token_latency=0.05) as upstream,
        GatewayThread(upstream=upstream.url) as gw,
        Client(gw.url) as client,
    ):
        stream = client.generate_stream("Hi", max_new_tokens=100)
        next(stream)
        assert not gateway_idle(gw)
        stream.close()
        assert eventually(lambda: gateway_idle(gw))
