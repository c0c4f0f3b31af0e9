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
import threading
from collections.abc import Callable, Iterator, Mapping
from http.client import IncompleteRead
from types import FunctionType, GeneratorType
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
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

    __slots__ = ("fresh", "reused", "sent", "stale")

    def __init__(self, fresh: bool = False) -> None:
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
        if attempt is not None:
            attempt.reused = reused
            attempt.sent = True
        try:
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
