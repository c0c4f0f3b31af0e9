"""The sync transport's response-header parser (lorax.transports._urllib3_conn._parse_headers).

It must give exactly what http.client's own ``parse_headers`` gives (the same
``HTTPMessage`` items, defects and unparsed rest) for every header block, taking its
fast path only on plain ``Name: value`` lines, with http.client's limits; and a real
response with odd headers must read the same through the transport.
"""

from __future__ import annotations

import asyncio
import http.client
import io
from collections.abc import Callable

import pytest

from lorax import _routes as routes
from lorax.transports import _urllib3_conn
from lorax.transports._urllib3_conn import _parse_headers
from lorax.transports.base import CallOptions
from lorax.transports.http import HTTPTransport

from ._servers import RawServer, read_request

BLOCKS = [
    ("plain", b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n"),
    ("empty", b"\r\n"),
    ("duplicates", b"Set-Cookie: a=1\r\nset-cookie: b=2\r\nX: 1\r\n\r\n"),
    ("empty-value", b"X-Empty:\r\nX-Blank: \r\n\r\n"),
    ("blanks", b"X-A:   spaced  \r\nX-B:\t\ttab\t\r\n\r\n"),
    ("colon-in-value", b"Location: http://h:1/a?b=c:d\r\n\r\n"),
    ("latin-1", b"X-Name: caf\xe9 \xff\r\n\r\n"),
    ("folded", b"X-A: one\r\n two\r\nX-B: 3\r\n\r\n"),
    ("no-colon", b"X-A: 1\r\nbroken line\r\nX-B: 2\r\n\r\n"),
    ("space-in-name", b"X A: 1\r\nX-B: 2\r\n\r\n"),
    ("space-before-colon", b"X-A : 1\r\n\r\n"),
    ("empty-name", b": 1\r\nX-B: 2\r\n\r\n"),
    ("bare-lf", b"X-A: 1\nX-B: 2\n\n"),
    ("lone-cr", b"X-A: 1\rX-C: 3\r\nX-B: 2\r\n\r\n"),
    ("from-line", b"From nobody\r\nX-A: 1\r\n\r\n"),
    ("eof", b"X-A: 1\r\n"),
    ("control-in-name", b"X\x01A: 1\r\n\r\n"),
    ("nul-in-value", b"X-A: a\x00b\r\n\r\n"),
    ("utf-8-name", b"X-\xc3\xa9: 1\r\n\r\n"),
]


def reference(block: bytes) -> http.client.HTTPMessage:
    return http.client.parse_headers(io.BytesIO(block))


@pytest.mark.parametrize("block", [b[1] for b in BLOCKS], ids=[b[0] for b in BLOCKS])
def test_same_message_as_http_client(block: bytes) -> None:
    want = reference(block)
    got = _parse_headers(io.BytesIO(block))
    assert type(got) is http.client.HTTPMessage
    assert got.items() == want.items()
    assert [type(d) for d in got.defects] == [type(d) for d in want.defects]
    assert got.get_payload() == want.get_payload()
    assert got.get_content_type() == want.get_content_type()


def test_stops_at_the_blank_line() -> None:
    fp = io.BytesIO(b"X-A: 1\r\n\r\nbody bytes")
    assert _parse_headers(fp).items() == [("X-A", "1")]
    assert fp.read() == b"body bytes"


def test_plain_blocks_skip_the_email_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the email parser was used")

    monkeypatch.setattr(_urllib3_conn.email.parser.Parser, "parsestr", refuse)
    for name in ("plain", "duplicates", "empty-value", "blanks", "colon-in-value", "latin-1", "empty"):
        _parse_headers(io.BytesIO(dict(BLOCKS)[name]))
    with pytest.raises(AssertionError, match="email parser"):
        _parse_headers(io.BytesIO(dict(BLOCKS)["folded"]))


def test_http_client_limits_hold() -> None:
    with pytest.raises(http.client.LineTooLong, match="header line"):
        _parse_headers(io.BytesIO(b"X-A: " + b"a" * 70000 + b"\r\n\r\n"))
    with pytest.raises(http.client.HTTPException, match="got more than 100 headers"):
        _parse_headers(io.BytesIO(b"X-A: 1\r\n" * 101 + b"\r\n"))


def test_odd_headers_read_the_same_through_the_transport(raw: Callable[..., RawServer]) -> None:
    body = b'{"generated_text":"ok"}'
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nX-Folded: one\r\n two\r\n"
        b"X-Spaced:   v  \r\nX-Dup: 1\r\nX-Dup: 2\r\ncontent-length: %d\r\n\r\n" % len(body)
    )

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        for _ in range(2):
            await read_request(reader)
            writer.write(head + body if server.requests == 0 else b"HTTP/1.1 200 OK\r\n" + head[17:] + body)
            server.requests += 1
            await writer.drain()

    server = raw(handler)
    transport = HTTPTransport(server.url)
    try:
        for _ in range(2):
            message, meta = transport.unary(routes.GENERATE, routes.GENERATE.input_type(inputs="Hi"), CallOptions())
            assert message.generated_text == "ok"
            assert meta.status_code == 200
            assert meta.headers["x-folded"] == "one two"
            assert meta.headers["x-spaced"] == "v  "
            assert meta.headers["x-dup"] == "1, 2"
        assert server.connections == 1  # the length was read right: the connection was reused
    finally:
        transport.close()


def test_begin_is_the_standard_librarys_own_code() -> None:
    """Only the header parser is ours: every other line of reading a response head (and any
    fix a Python release makes to it) is http.client's."""
    ours = _urllib3_conn._HTTPResponse.begin
    assert ours.__code__ is http.client.HTTPResponse.begin.__code__
    assert ours.__globals__["parse_headers"] is _parse_headers
    assert http.client.parse_headers is not _parse_headers
