"""Memory stays bounded whatever a peer sends as a response body.

A gzip bomb (the client asks for ``identity``, so a compressed body is refused before
a byte of it is inflated), a body that never ends, and a ``Content-Length`` far above
the limit, against the sync and async clients and through the gateway (whose
upstream transport enforces ``max_response_bytes`` while reading). Each test checks
the typed error, that it names the limit, that the call ended promptly and that the
server saw the client stop reading: the bytes it managed to send are bounded.
"""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest

from lorax import AsyncClient, Client, errors
from lorax.gateway import Gateway, GatewayThread
from tests.transports.http_transports._servers import (
    LAST_CHUNK,
    SSE_HEAD,
    RawServer,
    chunk,
    head,
    json_response,
    read_request,
)

from ._harness import Op, gateway_idle, run

LIMIT = 1024 * 1024
#: What the server sends at most before giving up on a client that keeps reading:
#: far above LIMIT plus any socket buffering, far below what would hurt the test run.
ENDLESS_CAP = 256 * 1024 * 1024
OK_BODY = b'{"generated_text":"fine"}'


@cache
def gzip_bomb() -> bytes:
    """256 MiB of zeros, gzipped: about 256 KiB on the wire."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    parts = [compressor.compress(block) for _ in range(256)]
    parts.append(compressor.flush())
    return b"".join(parts)


class Hostile:
    """A raw server's script: one hostile answer, then (on a new connection) a good one."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.sent = 0  # body bytes the kernel accepted from the server
        self.hostile_done = threading.Event()  # the client closed the hostile connection
        self.requests = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        while True:
            request = await read_request(reader)
            if request is None:
                return
            self.requests += 1
            if self.requests > 1:  # the next call: a fine answer
                writer.write(json_response(OK_BODY))
                await writer.drain()
                continue
            try:
                await self._hostile(reader, writer)
            finally:
                self.hostile_done.set()
            return

    async def _hostile(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.answer in ("gzip", "gzip-stream"):
            bomb = gzip_bomb()
            kind = "text/event-stream" if self.answer == "gzip-stream" else "application/json"
            writer.write(
                head(200, [("Content-Type", kind), ("Content-Encoding", "gzip"), ("Content-Length", str(len(bomb)))])
            )
            writer.write(bomb)
            await writer.drain()
            self.sent = len(bomb)
            await reader.read()  # until the client closes
            return
        if self.answer == "declared":
            writer.write(head(200, [("Content-Type", "application/json"), ("Content-Length", str(10 * 2**30))]))
            writer.write(b'{"generated_text":"')
            await writer.drain()
            await reader.read()
            return
        if self.answer == "endless-event":
            # One SSE event that never ends: its data line grows without a newline.
            writer.write(SSE_HEAD + chunk(b'data: {"token":{"id":0,"text":"'))
        else:
            assert self.answer == "endless"
            writer.write(
                head(200, [("Content-Type", "application/json")], chunked=True) + chunk(b'{"generated_text":"')
            )
        block = chunk(b"x" * 65536)
        while self.sent < ENDLESS_CAP:
            writer.write(block)
            await writer.drain()
            self.sent += len(block)
        writer.write(chunk(b'"}') + LAST_CHUNK)
        await writer.drain()


def _expected(transport: str, answer: str, outcome_error: BaseException | None) -> errors.LoraxError:
    assert isinstance(outcome_error, errors.LoraxError), repr(outcome_error)
    if transport.startswith("ws"):
        # The gateway refused the upstream body: a 502 response_too_large, as for a
        # response above its frame limit.
        assert isinstance(outcome_error, errors.ServiceUnavailableError), repr(outcome_error)
        assert (outcome_error.status_code, outcome_error.error_type) == (502, "response_too_large")
    else:
        assert isinstance(outcome_error, errors.ResponseTooLargeError), repr(outcome_error)
        assert outcome_error.limit == LIMIT
        assert outcome_error.request_sent is True  # type: ignore[attr-defined]
    return outcome_error


@pytest.mark.parametrize("answer", ["gzip", "endless", "declared"])
def test_hostile_bodies_are_refused_while_reading(
    transport: str, answer: str, raw: Callable[[Any], RawServer], record: Callable[..., None]
) -> None:
    script = Hostile(answer)
    server = raw(script)
    outcome = run(
        transport,
        server.url,
        Op(),
        retry=0,
        max_response_bytes=LIMIT,
        gateway_kwargs={"max_response_bytes": LIMIT},
    )
    record(f"hostile body: {answer}", outcome)
    error = _expected(transport, answer, outcome.error)
    text = str(error)
    if answer == "gzip":
        assert "Content-Encoding: gzip" in text, text
        assert "refused" in text
    elif answer == "declared":
        assert f"declares {10 * 2**30} bytes, above max_response_bytes={LIMIT}" in text, text
    else:
        assert f"grew past max_response_bytes={LIMIT}; reading stopped there" in text, text
    # Reading stopped: the call ended at once, the connection was closed rather than
    # read to its end, and an endless body stopped flowing soon after the limit
    # (what the kernel buffers on loopback is a few MiB).
    assert outcome.elapsed < 5.0
    assert script.hostile_done.wait(5.0), "the client kept the hostile connection open"
    assert script.sent <= (len(gzip_bomb()) if answer == "gzip" else LIMIT + 32 * 1024 * 1024), script.sent


def test_an_endless_stream_event_is_bounded_by_max_response_bytes(
    transport: str, raw: Callable[[Any], RawServer], record: Callable[..., None]
) -> None:
    script = Hostile("endless-event")
    server = raw(script)
    outcome = run(
        transport,
        server.url,
        Op(stream=True),
        retry=0,
        max_response_bytes=LIMIT,
        gateway_kwargs={"max_response_bytes": LIMIT},
    )
    record("hostile stream: endless event", outcome)
    error = outcome.error
    if transport.startswith("ws"):
        assert isinstance(error, errors.ServiceUnavailableError), repr(error)
        assert (error.status_code, error.error_type) == (502, "upstream_error")
    else:
        assert type(error) is errors.ProtocolError, repr(error)
    assert f"SSE event larger than max_event_bytes={LIMIT}" in str(error), str(error)
    assert outcome.events == []
    assert outcome.elapsed < 5.0
    assert script.hostile_done.wait(5.0), "the client kept the hostile connection open"
    assert script.sent <= LIMIT + 32 * 1024 * 1024, script.sent


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_next_call_works_after_a_refused_body(kind: str, raw: Callable[[Any], RawServer]) -> None:
    """The refused connection is dropped, not reused; the client goes on."""
    script = Hostile("endless")
    server = raw(script)
    if kind == "sync":
        with Client(server.url, max_response_bytes=LIMIT, max_retries=0) as client:
            with pytest.raises(errors.ResponseTooLargeError):
                client.generate("a")
            assert client.generate("b").generated_text == "fine"
            assert client.transport.pool_stats()["in_use"] == 0  # type: ignore[attr-defined]
    else:

        async def main() -> None:
            async with AsyncClient(server.url, max_response_bytes=LIMIT, max_retries=0) as client:
                with pytest.raises(errors.ResponseTooLargeError):
                    await client.generate("a")
                assert (await client.generate("b")).generated_text == "fine"
                assert client.transport.pool_stats()["in_use"] == 0  # type: ignore[attr-defined]

        asyncio.run(main())
    assert script.hostile_done.wait(5.0)
    assert server.connections == 2


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_compressed_stream_is_refused(kind: str, raw: Callable[[Any], RawServer]) -> None:
    script = Hostile("gzip-stream")
    server = raw(script)
    error: errors.ResponseTooLargeError
    if kind == "sync":
        with Client(server.url, max_retries=0) as client, pytest.raises(errors.ResponseTooLargeError) as info:
            for _ in client.generate_stream("a"):
                pass
        error = info.value
    else:

        async def main() -> errors.ResponseTooLargeError:
            async with AsyncClient(server.url, max_retries=0) as client:
                with pytest.raises(errors.ResponseTooLargeError) as ainfo:
                    async for _ in client.generate_stream("a"):
                        pass
                return ainfo.value

        error = asyncio.run(main())
    assert "Content-Encoding: gzip" in str(error)
    assert script.hostile_done.wait(5.0)


def test_compressed_error_body_keeps_its_status(raw: Callable[[Any], RawServer]) -> None:
    """A compressed error answer is not inflated either; its status still maps (and retries)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        if await read_request(reader) is None:
            return
        bomb = gzip_bomb()
        writer.write(
            head(
                503,
                [("Content-Type", "text/html"), ("Content-Encoding", "gzip"), ("Content-Length", str(len(bomb)))],
            )
            + bomb
        )
        await writer.drain()
        await reader.read()

    server = raw(handler)
    with Client(server.url, max_retries=0) as client, pytest.raises(errors.ServiceUnavailableError) as info:
        client.generate("a")
    assert info.value.status_code == 503
    assert info.value.body == ""

    async def main() -> errors.LoraxError:
        async with AsyncClient(server.url, max_retries=0) as client:
            try:
                await client.generate("a")
            except errors.LoraxError as exc:
                return exc
        raise AssertionError("no error")

    error = asyncio.run(main())
    assert isinstance(error, errors.ServiceUnavailableError)
    assert error.status_code == 503
    assert error.body == ""


def test_gateway_frees_an_upstream_body_when_the_call_is_cancelled(raw: Callable[[Any], RawServer]) -> None:
    """A call cancelled while the gateway reads a large upstream body: the upstream
    connection is closed (the body stops flowing) and nothing stays checked out."""
    done = threading.Event()
    sent = [0]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        if await read_request(reader) is None:
            return
        try:
            writer.write(head(200, [("Content-Type", "application/json")], chunked=True))
            block = chunk(b"x" * 4096)
            while sent[0] < ENDLESS_CAP:  # slowly: the call is cancelled long before the limit
                writer.write(block)
                await writer.drain()
                sent[0] += len(block)
                await asyncio.sleep(0.005)
        finally:
            done.set()

    server = raw(handler)
    gw = GatewayThread(upstream=server.url).start()
    try:
        from lorax import Timeout

        with Client(gw.url, timeout=Timeout(connect=5, read=5, total=0.5), max_retries=0) as client:
            start = time.monotonic()
            with pytest.raises(errors.APITimeoutError):
                client.generate("a")
            assert time.monotonic() - start < 5.0
        assert done.wait(5.0), "the gateway kept reading the upstream body"
        stopped_at = sent[0]
        time.sleep(0.2)
        assert sent[0] == stopped_at
        assert gateway_idle(gw)
    finally:
        gw.stop(grace=0)


def test_gateway_cli_takes_max_response_bytes() -> None:
    from lorax.gateway.cli import build_parser

    assert build_parser().parse_args(["--upstream", "http://x"]).max_response_bytes == 64 * 1024 * 1024
    assert build_parser().parse_args(["--upstream", "http://x", "--max-response-bytes", "5"]).max_response_bytes == 5


def test_max_response_bytes_is_checked() -> None:
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="max_response_bytes must be an int >= 1"):
            Client("http://127.0.0.1:1", max_response_bytes=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_response_bytes must be an int >= 1"):
            Gateway("http://127.0.0.1:1", max_response_bytes=bad)
