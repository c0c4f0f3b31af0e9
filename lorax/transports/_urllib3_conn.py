"""urllib3, adapted for :class:`~lorax.transports.http.HTTPTransport`: connections that
record what happened to each request attempt (sent? on a reused connection? stale?),
pools that can insist on a fresh connection, and the reading of response bodies
(chunked SSE bodies decoded by :class:`lorax._sse_chunked.ChunkedEventDecoder`).

The attempt is handed to the connection classes through a thread-local: urllib3's
``urlopen`` picks the connection and calls it, and offers no parameter to carry it.
"""

from __future__ import annotations

import contextlib
import email.parser
import functools
import http.client
import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from http.client import IncompleteRead
from types import FunctionType, GeneratorType
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection, _ResponseOptions
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import BaseHTTPResponse, HTTPResponse
from urllib3.util.retry import Retry

from lorax._sse import SSEDecoder
from lorax._sse_chunked import ChunkedEventDecoder
from lorax.transports import _http_common as common

_log = logging.getLogger("lorax.transports.http")


# urllib3 must never retry or redirect on its own: retries belong to the client's
# policy (and to the one stale-connection retry below).
_NO_RETRY = Retry(total=False, redirect=False)

_local = threading.local()


class _Attempt:
    """What happened to one request attempt, recorded by the connection classes.

    ``sent``: the request started to go out on a connected socket. ``reused``: that
    connection had carried an earlier request. ``stale``: it failed with a
    connection error before any response byte. ``fresh``: this attempt must not
    reuse a pooled connection.
    """

    __slots__ = ("fresh", "head", "reused", "sent", "stale")

    def __init__(self, head: _RequestHead | None, fresh: bool = False) -> None:
        self.head = head
        self.fresh = fresh
        self.reused = False
        self.sent = False
        self.stale = False


def _attempt() -> _Attempt | None:
    attempt: _Attempt | None = getattr(_local, "attempt", None)
    return attempt


# Header-name bytes: RFC 9110 tokens are a subset; the email parser that http.client
# uses takes any of these before the colon (email.feedparser.headerRE).
_NAME_BYTES = bytes(b for b in range(0x21, 0x7F) if b != 0x3A)
# http.client's reading of the header lines (its line-length and count limits).
_read_headers: Callable[[Any], list[bytes]] = http.client._read_headers  # type: ignore[attr-defined]


def _parse_headers(fp: Any) -> http.client.HTTPMessage:
    """http.client's ``parse_headers``, about ten times faster on ordinary headers.

    http.client hands the header block to the ``email`` package's parser, which costs
    more than all the rest of reading a small response. A block of plain
    ``Name: value`` lines (CRLF-terminated, no folding, no stray CR or LF, a name of
    visible characters) is read here into the same ``HTTPMessage`` (the email parser
    strips leading blanks and the line end from each value, nothing else); any other
    block goes to that parser, which decides as it always did.
    """
    lines = _read_headers(fp)
    block = b"".join(lines)
    n = len(lines) - 1
    if lines[-1] == b"\r\n" and block.count(b"\r") == n + 1 and block.count(b"\n") == n + 1:
        msg = http.client.HTTPMessage()
        for line in lines[:n]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name.translate(None, _NAME_BYTES):
                break
            msg[name.decode("iso-8859-1")] = value[:-2].lstrip(b" \t").decode("iso-8859-1")
        else:
            msg.set_payload("")  # what the email parser leaves: nothing after the blank line
            return msg
    return email.parser.Parser(_class=http.client.HTTPMessage).parsestr(block.decode("iso-8859-1"))


class _HTTPResponse(http.client.HTTPResponse):
    """http.client's response with :func:`_parse_headers`.

    ``begin`` is http.client's own function, run with a namespace in which
    ``parse_headers`` is ours: the rest of it (and any fix a Python release makes to
    it) stays the standard library's, and nothing else reaches that call.
    """

    begin = FunctionType(
        http.client.HTTPResponse.begin.__code__,
        {**vars(http.client), "parse_headers": _parse_headers},
        "begin",
        http.client.HTTPResponse.begin.__defaults__,
        http.client.HTTPResponse.begin.__closure__,
    )


_illegal_value: Callable[[bytes], Any] = http.client._is_illegal_header_value  # type: ignore[attr-defined]
_legal_name: Callable[[bytes], Any] = http.client._is_legal_header_name  # type: ignore[attr-defined]
_bad_path: Any = http.client._contains_disallowed_url_pchar_re  # type: ignore[attr-defined]
_bad_method: Any = http.client._contains_disallowed_method_pchar_re  # type: ignore[attr-defined]
# Headers whose presence changes what urllib3 and http.client write themselves (the
# Host line, the body's framing): a request with one of them is written by them.
_FRAMING = frozenset({"host", "content-length", "transfer-encoding"})


def header_lines(headers: Mapping[str, str], what: str) -> bytes:
    """``name: value\r\n`` for each header, as http.client's ``putheader`` writes them.

    What ``putheader`` refuses is refused here, with a ValueError that names the header
    and never quotes its value (values may be credentials): a name that is not a token,
    a value http.client finds illegal (CR or LF not followed by a blank) or that is
    not Latin-1 (``putheader`` would fail with a UnicodeEncodeError mid-request).
    """
    out = []
    for name, value in headers.items():
        try:
            name_b = name.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(f"{what}: invalid header name {name!r}") from None
        if not _legal_name(name_b):
            raise ValueError(f"{what}: invalid header name {name!r}")
        try:
            value_b = value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(
                f"{what}: the value of header {name!r} is not Latin-1 (encode it, e.g. RFC 8187)"
            ) from None
        if _illegal_value(value_b) or b"\0" in value_b:
            raise ValueError(f"{what}: the value of header {name!r} contains CR, LF or NUL")
        out.append(b"%s: %s\r\n" % (name_b, value_b))
    return b"".join(out)


class _RequestHead:
    """One request's head, but for Host and Content-Length, written once per route.

    ``headers`` is the dict the head was made from: :meth:`_TrackedHTTPConnection.request`
    writes the head itself only when urllib3 hands it equal headers (it copies them and
    adds a forwarding proxy's own), else urllib3 and http.client write the request.
    """

    __slots__ = ("block", "headers", "line", "method", "target")

    def __init__(self, method: str, target: str, headers: Mapping[str, str], block: bytes) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        # The checks of http.client's putrequest, once.
        self.line = b"%s %s HTTP/1.1\r\n" % (method.encode("ascii"), target.encode("ascii"))
        self.block = block

    @classmethod
    def build(cls, method: str, target: str, headers: Mapping[str, str], what: str) -> _RequestHead | None:
        """The head of `method` `target` with `headers`; None where urllib3 must write it."""
        block = header_lines(headers, what)
        if (
            not target.startswith("/")
            or _bad_path.search(target)
            or _bad_method.search(method)
            or not target.isascii()
            or not _FRAMING.isdisjoint(name.lower() for name in headers)
        ):
            return None
        return cls(method, target, headers, block)


def _host_line(conn: HTTPConnection) -> bytes:
    # http.client's putrequest, for a request line that holds a path (not a URL).
    tunnel_host: str | None = conn._tunnel_host
    if tunnel_host:
        host, port = tunnel_host, conn._tunnel_port
    else:
        host, port = conn.host, conn.port
    try:
        host_b = host.encode("ascii")
    except UnicodeEncodeError:
        host_b = host.encode("idna")
    if ":" in host:
        host_b = http.client._strip_ipv6_iface(b"[" + host_b + b"]")  # type: ignore[attr-defined]
    if port != conn.default_port:
        host_b = b"%s:%s" % (host_b, str(port).encode("ascii"))
    if _illegal_value(host_b):
        raise ValueError(f"invalid host {host!r}")
    return b"Host: %s\r\n" % host_b


# http.client's connection states (a request may start only when idle; getresponse
# only after the request went out).
_CS_IDLE: str = http.client._CS_IDLE  # type: ignore[attr-defined]
_CS_REQ_SENT: str = http.client._CS_REQ_SENT  # type: ignore[attr-defined]


class _TrackedHTTPConnection(HTTPConnection):
    """urllib3's connection, counting the requests it carried.

    It tells the attempt whether the request was sent and whether the connection was
    reused, and it lets a stream shut its socket down from another thread only while
    the stream still owns the connection (``lorax_gen`` changes with every request).
    """

    response_class = _HTTPResponse

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lorax_uses = 0
        self.lorax_gen = 0
        self.lorax_guard = threading.Lock()
        self.lorax_host: bytes | None = None

    def connect(self) -> None:
        super().connect()
        self.lorax_uses = 0

    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        chunked: bool = False,
        preload_content: bool = True,
        decode_content: bool = True,
        enforce_content_length: bool = True,
    ) -> None:
        if self.sock is None:
            # http.client would connect lazily while sending; connecting first means
            # that a failure here is known not to have sent anything.
            self.connect()
        reused = self.lorax_uses > 0
        self.lorax_uses += 1
        with self.lorax_guard:
            self.lorax_gen += 1
        attempt = _attempt()
        head = None
        if attempt is not None:
            attempt.reused = reused
            attempt.sent = True
            head = attempt.head
        try:
            if (
                head is not None
                and url == head.target
                and method == head.method
                and not chunked
                and (headers is head.headers or headers == head.headers)
                and (body is None or isinstance(body, bytes))
            ):
                self._lorax_send(head, body, preload_content, decode_content, enforce_content_length)
                return
            super().request(
                method,
                url,
                body=body,
                headers=headers,
                chunked=chunked,
                preload_content=preload_content,
                decode_content=decode_content,
                enforce_content_length=enforce_content_length,
            )
        except ConnectionError:
            # EPIPE/ECONNRESET while sending: urllib3 goes on to read a response anyway.
            if reused and attempt is not None:
                attempt.stale = True
            raise

    def _lorax_send(
        self,
        head: _RequestHead,
        body: bytes | None,
        preload_content: bool,
        decode_content: bool,
        enforce_content_length: bool,
    ) -> None:
        """What urllib3's ``request`` and http.client's ``putrequest``/``putheader``/
        ``endheaders`` do for this request, with the head written once per route: the
        same bytes (request line, Host, Content-Length, the headers in order), sent
        with one ``sendall`` with the body."""
        sock = self.sock
        assert sock is not None
        sock.settimeout(self.timeout)
        self._response_options = _ResponseOptions(
            request_method=head.method,
            request_url=head.target,
            preload_content=preload_content,
            decode_content=decode_content,
            enforce_content_length=enforce_content_length,
        )
        previous = self._HTTPConnection__response  # type: ignore[has-type]
        if previous and previous.isclosed():
            self._HTTPConnection__response = None
        state = self._HTTPConnection__state  # type: ignore[has-type]
        if state != _CS_IDLE:
            raise http.client.CannotSendRequest(state)
        self._method = head.method
        host = self.lorax_host
        if host is None:
            host = self.lorax_host = _host_line(self)
        if body is None:
            data = b"%s%s%s\r\n" % (head.line, host, head.block)
        else:
            data = b"%s%sContent-Length: %d\r\n%s\r\n%s" % (head.line, host, len(body), head.block, body)
        # As endheaders: sent, as far as getresponse is concerned, even if sending fails
        # (urllib3 then reads whatever response came).
        self._HTTPConnection__state = _CS_REQ_SENT
        sys.audit("http.client.send", self, data)
        sock.sendall(data)

    def getresponse(self) -> HTTPResponse:  # type: ignore[override]
        try:
            return super().getresponse()
        except ConnectionError:
            # RemoteDisconnected (EOF before the status line) or ECONNRESET: nothing of
            # a response arrived.
            attempt = _attempt()
            if attempt is not None and attempt.reused:
                attempt.stale = True
            raise

    def lorax_shutdown(self, gen: int, sock: socket.socket) -> None:
        """Shut `sock` down if this connection still carries request number `gen`."""
        with self.lorax_guard:
            if self.lorax_gen != gen:
                return
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _TrackedHTTPSConnection(_TrackedHTTPConnection, HTTPSConnection):
    pass


def _fresh_only(conn: Any) -> Any:
    attempt = _attempt()
    if attempt is not None and attempt.fresh and not conn.is_closed:
        conn.close()
    return conn


class _HTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        return _fresh_only(super()._get_conn(timeout))


class _HTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        return _fresh_only(super()._get_conn(timeout))

    def _validate_conn(self, conn: Any) -> None:
        # HTTPSConnectionPool._validate_conn connects early, so that TLS errors surface
        # before the request, then warns (InsecureRequestWarning) on every request of an
        # unverified connection. The transport logs that once when it is built instead.
        if conn.is_closed:
            conn.connect()


_POOL_CLASSES = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}


def _socket(resp: BaseHTTPResponse) -> socket.socket | None:
    conn = resp.connection
    sock = getattr(conn, "sock", None) if conn is not None else None
    return sock if isinstance(sock, socket.socket) else None


def _body_chunks(resp: BaseHTTPResponse) -> Iterator[bytes]:
    """The body's bytes as they arrive, for a body :func:`_raw_reader` cannot read.

    A chunked body is read a chunk at a time with urllib3's ``read_chunked``; anything
    else (a proxy that removed the chunking) with ``read1``.
    """
    if isinstance(resp, HTTPResponse) and resp.chunked and resp.supports_chunked_reads():
        return resp.read_chunked(common.READ_CHUNK, decode_content=True)
    return iter(functools.partial(resp.read1, common.READ_CHUNK), b"")


class _EventBatches:
    """The data of a response's SSE events, one batch per read of the socket.

    ``next()`` reads once and returns the data of the events that read completed
    (maybe none); StopIteration after the end of the body, once the connection is
    back in the pool. ``received`` counts the body bytes read.

    A chunked body (what LoRAX sends) is read from the socket's buffered reader with
    one ``read1`` per batch, de-chunked and split into events by
    :class:`lorax._sse_chunked.ChunkedEventDecoder` in one pass: under a backlog a read
    holds many events, where urllib3's ``read_chunked`` costs a ``readline`` and two
    reads per chunk (LoRAX sends one event per chunk). Anything else goes through
    :func:`_body_chunks` and :meth:`lorax._sse.SSEDecoder.feed_data`.
    """

    __slots__ = ("_chunks", "_decoder", "_ended", "_feed", "_read1", "_resp", "_sse", "received")

    def __init__(self, resp: BaseHTTPResponse, *, max_event_bytes: int) -> None:
        self._resp = resp
        self._ended = False
        self.received = 0
        fp = _raw_reader(resp)
        self._read1: Any = None
        self._chunks: Iterator[bytes] | None = None
        if fp is not None:
            self._read1 = fp.read1
            self._decoder: ChunkedEventDecoder | None = ChunkedEventDecoder(
                max_event_bytes=max_event_bytes, max_trailer_bytes=common.DRAIN_LIMIT
            )
            self._sse = self._decoder.sse
            self._feed: Callable[[bytes], list[bytes]] = self._decoder.feed
        else:
            self._decoder = None
            self._chunks = _body_chunks(resp)
            self._sse = SSEDecoder(max_event_bytes=max_event_bytes)
            self._feed = self._sse.feed_data

    def __iter__(self) -> _EventBatches:
        return self

    def __next__(self) -> list[bytes]:
        if self._ended:
            self._end()
            raise StopIteration
        decoder = self._decoder
        if decoder is None:
            assert self._chunks is not None
            try:
                data = next(self._chunks)
            except StopIteration:
                self._ended = True
                self._sse.close()
                raise
            self.received += len(data)
            return self._feed(data)
        data = self._read1(common.READ_CHUNK)
        if not data:
            raise IncompleteRead(b"")
        self.received += len(data)
        out: list[bytes] = self._feed(data)
        if decoder.done:
            # As urllib3's read_chunked: the end of the body gives the connection back,
            # on the call after the last events (the stream reads on to see the end).
            self._ended = True
            if not out:
                self._end()
                raise StopIteration
        return out

    def _end(self) -> None:
        if self._decoder is not None:
            resp = self._resp
            if resp.connection is not None:
                assert isinstance(resp, HTTPResponse)
                _body_done(resp)

    def close(self) -> None:
        """Stop reading: drop what is buffered (the caller closes the response)."""
        chunks = self._chunks
        if isinstance(chunks, GeneratorType):
            with contextlib.suppress(Exception):
                chunks.close()
        if self._decoder is not None:
            self._decoder.close()


def _raw_reader(resp: BaseHTTPResponse) -> Any:
    """The buffered socket reader under a chunked urllib3 response, or None.

    urllib3 2.x has no public API for a chunked body's raw bytes: its own
    ``read_chunked`` reads ``resp._fp.fp`` (the ``http.client`` response's reader), and
    ``read1`` stops at every chunk boundary. This is the one place that reaches in.
    """
    if not (isinstance(resp, HTTPResponse) and resp.chunked and resp.supports_chunked_reads()):
        return None
    if resp.chunk_left is not None or resp.headers.get("content-encoding"):
        return None
    return getattr(getattr(resp, "_fp", None), "fp", None)


def _body_done(resp: HTTPResponse) -> None:
    # As urllib3's read_chunked does at the end: mark the http.client response closed
    # (so the connection can carry the next request) and give the connection back.
    original = getattr(resp, "_original_response", None)
    if original is not None:
        original.close()
    resp.release_conn()


def _finish(resp: BaseHTTPResponse) -> None:
    """Give the connection back: reusable if its body was read to the end, else closed."""
    if resp.connection is None:
        return  # read to the end: urllib3 has already returned it to the pool
    try:
        resp.close()
    except Exception:
        pass
    try:
        resp.release_conn()
    except Exception:
        pass
