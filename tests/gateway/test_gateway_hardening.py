"""The gateway against hostile or careless peers: duplicate credentials in the
handshake, tokens in the query string, an upstream that echoes the upstream token in
its success headers; and ``lorax gateway --log-level`` printing the gateway's events.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from lorax import AsyncClient, Client, codec, errors
from lorax.gateway import GatewayThread
from lorax.transports.aiohttp import AsyncHTTPTransport
from lorax.transports.base import ResponseMeta
from lorax.types import GenerateResponse, StreamResponse, Token
from tests.transports.http_transports._servers import AppServer, LoopThread

UPSTREAM_TOKEN = "canary-upstream-token-8d2f4a6c"
CLIENT_TOKEN = "canary-client-token-1b3d5f7e"
QUERY_TOKEN = "canary-query-token-5e7a9c1b"


def handshake(port: int, *extra: str) -> bytes:
    """A raw WebSocket handshake with `extra` header lines; the gateway's whole answer."""
    lines = [
        "GET / HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: lorax.v1",
        *extra,
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"\n"):
            more = sock.recv(65536)
            if not more:
                break
            data += more
        return data


# ---------------------------------------------------------------------------------
# Item: two Authorization headers


def test_two_authorization_headers_get_400_and_one_log_line(
    make_gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gw = make_gateway(auth_token=CLIENT_TOKEN)
    answer = handshake(gw.port, f"Authorization: Bearer {CLIENT_TOKEN}", "Authorization: Bearer other")
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert answer.endswith(b"exactly one Authorization header is allowed\n"), answer
    # Both orders, and the real token twice: never a way in.
    answer = handshake(gw.port, "Authorization: Bearer other", f"Authorization: Bearer {CLIENT_TOKEN}")
    assert answer.startswith(b"HTTP/1.1 400 ")
    answer = handshake(gw.port, f"Authorization: Bearer {CLIENT_TOKEN}", f"Authorization: Bearer {CLIENT_TOKEN}")
    assert answer.startswith(b"HTTP/1.1 400 ")
    gw.stop()
    refused = [r.getMessage() for r in caplog.records if "duplicate_authorization" in r.getMessage()]
    assert len(refused) == 3
    assert all(line.startswith("event=handshake_refused reason=duplicate_authorization peer=") for line in refused)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert CLIENT_TOKEN not in caplog.text
    assert all(r.exc_info is None for r in caplog.records if "duplicate" in r.getMessage())


def test_one_authorization_header_still_works(make_gateway: Any) -> None:
    gw = make_gateway(auth_token=CLIENT_TOKEN)
    assert handshake(gw.port, f"Authorization: Bearer {CLIENT_TOKEN}").startswith(b"HTTP/1.1 101 ")
    assert handshake(gw.port).startswith(b"HTTP/1.1 401 ")


# ---------------------------------------------------------------------------------
# Item: a token in the query string


def test_query_string_token_is_refused_and_never_logged(make_gateway: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, websockets' handshake lines included
    gw = make_gateway(auth_token=CLIENT_TOKEN)
    url = f"{gw.url}/?token={QUERY_TOKEN}&access_token={QUERY_TOKEN}"
    with Client(url, max_retries=0) as client, pytest.raises(errors.APIStatusError) as info:
        client.generate("x")
    assert info.value.status_code == 401
    gw.stop()
    assert "event=handshake_refused reason=unauthorized" in caplog.text
    # The request line was logged (both ends), without its query.
    lines = [r.getMessage() for r in caplog.records]
    assert any(line == "< GET /?<redacted> HTTP/1.1" for line in lines), lines
    assert any(line == "> GET /?<redacted> HTTP/1.1" for line in lines), lines
    assert QUERY_TOKEN not in caplog.text
    for record in caplog.records:
        assert QUERY_TOKEN not in record.getMessage()


# ---------------------------------------------------------------------------------
# Item: an upstream that echoes the upstream token in its success headers


@pytest.fixture(scope="module")
def echo_lt() -> Iterator[LoopThread]:
    loop_thread = LoopThread()
    yield loop_thread
    loop_thread.close()


@pytest.fixture
def echoing(echo_lt: LoopThread) -> Iterator[AppServer]:
    """An upstream that answers 200 and echoes the upstream token (whether or not it
    was sent: it knows it) in custom headers, as a debug middleware might."""
    server = AppServer(echo_lt).start()
    leaks = {
        "x-echo-authorization": f"Bearer {UPSTREAM_TOKEN}",
        "x-debug": f"upstream-token={UPSTREAM_TOKEN}; model=toy",
        "x-model-id": "toy-model",
    }

    async def generate(request: web.Request, _: bytes) -> web.StreamResponse:
        body = codec.to_json(GenerateResponse(generated_text="fine"))
        return web.Response(body=body, headers={**leaks, "Content-Type": "application/json"})

    server.on("POST", "/generate", generate)
    final = codec.to_json(StreamResponse(token=Token(id=0, text="x"), generated_text="x"))
    server.sse("POST", "/generate_stream", [b"data: " + final + b"\n\n"], headers=leaks)
    yield server
    server.stop()


def _check_meta(metas: list[ResponseMeta], expected: int) -> None:
    assert len(metas) == expected
    for meta in metas:
        assert meta.headers["x-model-id"] == "toy-model"
        assert meta.headers["x-echo-authorization"] == "<redacted>"
        assert meta.headers["x-debug"] == "upstream-token=<redacted>; model=toy"
        assert UPSTREAM_TOKEN not in repr(meta.headers)


@pytest.mark.parametrize("given_transport", [False, True])
def test_upstream_token_echoed_in_success_headers_is_scrubbed(echoing: AppServer, given_transport: bool) -> None:
    upstream_headers = {"Authorization": f"Bearer {UPSTREAM_TOKEN}"}
    kwargs: dict[str, Any] = {"upstream_headers": upstream_headers}
    given: AsyncHTTPTransport | None = None
    if given_transport:
        # A transport of the embedder's that knows nothing of the token: the gateway
        # scrubs what it forwards by itself.
        given = AsyncHTTPTransport(echoing.url)
        kwargs["upstream_transport"] = given
    with GatewayThread(upstream=echoing.url, **kwargs) as gw:
        metas: list[ResponseMeta] = []
        with Client(gw.url, on_response=metas.append, max_retries=0) as client:
            assert client.generate("x").generated_text == "fine"
            with client.generate_stream("x") as stream:
                assert [r.token.text for r in stream] == ["x"]
        _check_meta(metas, 2)

        async def main() -> list[ResponseMeta]:
            seen: list[ResponseMeta] = []
            async with AsyncClient(gw.url, on_response=seen.append, max_retries=0) as aclient:
                assert (await aclient.generate("x")).generated_text == "fine"
            return seen

        _check_meta(asyncio.run(main()), 1)
        if given is not None:
            # The gateway does not close a transport it was given: close it on its loop.
            assert gw._loop is not None
            asyncio.run_coroutine_threadsafe(given.aclose(), gw._loop).result(10)


def test_http_clients_scrub_their_own_token_from_success_headers(echoing: AppServer) -> None:
    metas: list[ResponseMeta] = []
    headers = {"Authorization": f"Bearer {UPSTREAM_TOKEN}"}
    with Client(echoing.url, headers=headers, on_response=metas.append, max_retries=0) as client:
        client.generate("x")
        with client.generate_stream("x") as stream:
            list(stream)
    _check_meta(metas, 2)


# ---------------------------------------------------------------------------------
# Item: `lorax gateway --log-level` prints the gateway's events


@pytest.mark.parametrize(
    "args",
    [
        ["gateway", "--log-level", "info"],
        ["gateway", "--log-level=debug"],
        ["--debug", "gateway"],
    ],
    ids=["info", "debug", "top-level-debug"],
)
def test_lorax_gateway_cli_logs_its_events(upstream: Any, args: list[str]) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "lorax.cli", *args, "--upstream", upstream.url, "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        assert process.stderr is not None
        lines: list[str] = []
        while True:
            line = process.stderr.readline()
            assert line, f"the gateway exited: {''.join(lines)}"
            lines.append(line)
            if "lorax gateway on " in line:
                break
        url = line.split("lorax gateway on ", 1)[1].split(" ", 1)[0]
        with Client(url, max_retries=0) as client:
            assert client.generate("cli").generated_text == "echo: cli"
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=15)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    text = "".join(lines) + rest
    assert " INFO lorax.gateway event=listening " in text, text
    assert " INFO lorax.gateway event=connection_open conn=1 " in text, text
    assert " INFO lorax.gateway event=call_end conn=1 call=1 method=Generate outcome=ok status=200 " in text, text
    assert " INFO lorax.gateway event=stopped" in text, text
    if "debug" in " ".join(args):
        assert " DEBUG websockets.server " in text, text
    else:
        assert " DEBUG " not in text, text
