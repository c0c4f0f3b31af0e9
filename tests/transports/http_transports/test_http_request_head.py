"""The request head the sync transport writes itself (lorax.transports._urllib3_conn).

The exact bytes on the wire, read by a raw loopback server: the same head urllib3 and
http.client wrote (request line, Host, Content-Length, the route's headers in order),
the body after it; and header values that would corrupt a request refused with an
error naming the header, before anything is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from lorax import _routes as routes
from lorax.transports import _http_common as common
from lorax.transports.base import CallOptions
from lorax.transports.http import HTTPTransport

from ._servers import RawServer, read_request

UA = common.USER_AGENT.encode()


def recording_server(raw: Callable[..., RawServer], seen: list[bytes]) -> RawServer:
    body = b'{"generated_text":"ok"}'
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        while True:
            request = await read_request(reader)
            if request is None:
                return
            seen.append(request[0] + request[1])
            server.requests += 1
            writer.write(answer)
            await writer.drain()

    return raw(handler)


def test_exact_request_bytes(raw: Callable[..., RawServer]) -> None:
    seen: list[bytes] = []
    server = recording_server(raw, seen)
    transport = HTTPTransport(server.url, headers={"X-Team": "a"})
    host = b"127.0.0.1:%d" % server.port
    try:
        transport.unary(routes.GENERATE, routes.GENERATE.input_type(inputs="Hi"), CallOptions())
        transport.unary(routes.GENERATE, routes.GENERATE.input_type(inputs="Hi"), CallOptions(headers={"X-Call": "1"}))
        transport.unary(routes.HEALTH, routes.HEALTH.input_type(), CallOptions())
        # Twice: the second head comes from what the first call built.
        transport.unary(routes.GENERATE, routes.GENERATE.input_type(inputs="é"), CallOptions())
    finally:
        transport.close()
    body = b'{"inputs":"Hi"}'
    common_headers = b"accept: application/json\r\ncontent-type: application/json\r\naccept-encoding: identity\r\n"
    assert seen == [
        b"POST /generate HTTP/1.1\r\nHost: "
        + host
        + b"\r\nContent-Length: %d\r\n" % len(body)
        + common_headers
        + b"user-agent: "
        + UA
        + b"\r\nx-team: a\r\n\r\n"
        + body,
        b"POST /generate HTTP/1.1\r\nHost: "
        + host
        + b"\r\nContent-Length: %d\r\n" % len(body)
        + common_headers
        + b"user-agent: "
        + UA
        + b"\r\nx-team: a\r\nx-call: 1\r\n\r\n"
        + body,
        b"GET /health HTTP/1.1\r\nHost: " + host + b"\r\naccept: application/json\r\naccept-encoding: identity\r\n"
        b"user-agent: " + UA + b"\r\nx-team: a\r\n\r\n",
        b"POST /generate HTTP/1.1\r\nHost: "
        + host
        + b"\r\nContent-Length: 15\r\n"
        + common_headers
        + b"user-agent: "
        + UA
        + b"\r\nx-team: a\r\n\r\n"
        + '{"inputs":"é"}'.encode(),
    ]
    assert server.connections == 1


def test_prefix_and_default_port_in_the_head(raw: Callable[..., RawServer]) -> None:
    seen: list[bytes] = []
    server = recording_server(raw, seen)
    transport = HTTPTransport(server.url + "/v1/lorax", user_agent="ua/1")
    try:
        transport.unary(routes.HEALTH, routes.HEALTH.input_type(), CallOptions())
    finally:
        transport.close()
    assert seen == [
        b"GET /v1/lorax/health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\naccept: application/json\r\n"
        b"accept-encoding: identity\r\nuser-agent: ua/1\r\n\r\n" % server.port
    ]


@pytest.mark.parametrize(
    ("value", "what"),
    [("a\r\nInjected: 1", "CR, LF or NUL"), ("a\nInjected: 1", "CR, LF or NUL"), ("a\x00b", "CR, LF or NUL")],
)
def test_bad_header_values_are_never_sent(raw: Callable[..., RawServer], value: str, what: str) -> None:
    seen: list[bytes] = []
    server = recording_server(raw, seen)
    with pytest.raises(ValueError, match="X-Bad") as info:
        HTTPTransport(server.url, headers={"X-Bad": value})
    assert what in str(info.value)
    assert "Injected" not in str(info.value)
    transport = HTTPTransport(server.url)
    try:
        with pytest.raises(ValueError, match="X-Bad") as info:
            transport.unary(
                routes.GENERATE, routes.GENERATE.input_type(inputs="x"), CallOptions(headers={"X-Bad": value})
            )
        assert "Injected" not in str(info.value)
    finally:
        transport.close()
    assert seen == []
    assert server.connections == 0


def test_header_value_outside_latin_1_is_refused(raw: Callable[..., RawServer]) -> None:
    seen: list[bytes] = []
    server = recording_server(raw, seen)
    transport = HTTPTransport(server.url)
    try:
        with pytest.raises(ValueError, match=r"(?i)x-name") as info:
            transport.unary(
                routes.GENERATE, routes.GENERATE.input_type(inputs="x"), CallOptions(headers={"X-Name": "café ✓"})
            )
        assert "café" not in str(info.value)
        # The transport still works.
        transport.unary(routes.GENERATE, routes.GENERATE.input_type(inputs="x"), CallOptions())
    finally:
        transport.close()
    assert len(seen) == 1


def test_routes_heads_skip_http_clients_header_writer(
    raw: Callable[..., RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path is taken: http.client's putheader never runs for a route's own headers,
    and does for a request with a Host header of its own (written by urllib3, as before)."""
    import http.client

    calls: list[str] = []
    original = http.client.HTTPConnection.putheader

    def putheader(self: http.client.HTTPConnection, header: str, *values: str) -> None:
        calls.append(header)
        original(self, header, *values)

    monkeypatch.setattr(http.client.HTTPConnection, "putheader", putheader)
    seen: list[bytes] = []
    server = recording_server(raw, seen)
    transport = HTTPTransport(server.url, user_agent="ua/1")
    try:
        transport.unary(routes.HEALTH, routes.HEALTH.input_type(), CallOptions())
        transport.unary(routes.HEALTH, routes.HEALTH.input_type(), CallOptions(headers={"X-Call": "1"}))
        assert calls == []
        transport.unary(routes.HEALTH, routes.HEALTH.input_type(), CallOptions(headers={"Host": "example.test"}))
        assert calls == ["accept", "accept-encoding", "user-agent", "host"]
    finally:
        transport.close()
    assert seen[2] == (
        b"GET /health HTTP/1.1\r\naccept: application/json\r\naccept-encoding: identity\r\nuser-agent: ua/1\r\n"
        b"host: example.test\r\n\r\n"
    )
    assert server.connections == 1
