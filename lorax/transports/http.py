"""``HTTPTransport``: LoRAX's REST API over urllib3, for the synchronous client.

Requests are the JSON of the request message (:func:`lorax.codec.to_json`); answers
are decoded with :func:`lorax.codec.from_json`, streams with :class:`lorax._sse.SSEDecoder`.
What is not I/O (URLs, headers, TLS and proxy settings, decoding, error mapping) is in
:mod:`lorax.transports._http_common`, shared with the aiohttp transport.

Connections. One urllib3 pool per transport (a ``ProxyManager`` pool when a proxy is
configured or found in the environment), thread-safe: share one transport between
threads. ``pool_maxsize`` connections at most; with ``pool_block=True`` (the default) a
call waits for a free one, at most ``Timeout.pool`` seconds, then raises
``APITimeoutError(phase="pool")``. Connections are kept alive between calls.

Timeouts. ``Timeout.connect`` bounds the TCP connect and the TLS handshake;
``Timeout.read`` is set on the socket, so it is the longest silence between two
received bytes: a stream that keeps sending tokens never times out. The call's
``Deadline`` caps every wait; when it is what ran out, the error says
``phase="total"``.

Response size. A 2xx body is read up to ``max_response_bytes`` (64 MiB by default),
counted while it arrives: a larger one raises
:class:`~lorax.errors.ResponseTooLargeError` and its connection is closed unread.
Compressed bodies are refused the same way: requests say ``Accept-Encoding: identity``,
and a size can only be checked after inflating.

Redirects are never followed: LoRAX never sends one, and following one would carry the
Authorization header elsewhere. A 3xx raises an :class:`~lorax.errors.APIStatusError`
that says where it pointed.

Stale connections. A server may close a kept-alive connection while it sits in the
pool. urllib3 checks each pooled connection before reusing it (a closed one is readable)
and reconnects. What that check cannot see is the race where the server closes the
connection just as the request leaves: then the send fails with EPIPE/ECONNRESET, or
the connection ends with no response byte at all. On a *reused* connection that can
only mean the server closed it while idle, before reading the request (LoRAX answers
every request it has read, error or not, and a server that dies drops everything), so
such a call is retried once, on a connection opened for it, as browsers and Go's
net/http do for requests that were not written to a live connection. Nothing else is
ever retried here: a failure on a fresh connection, a timeout, or anything after the
first response byte is raised, with ``request_sent=True``, for the client's retry
policy to judge (it never replays those, so a generation never runs twice).

Streams. ``close()`` on a stream shuts its socket down without reading the rest, so
LoRAX sees the disconnect and stops generating; it is safe from another thread (the
reading thread then sees the end of the stream). A stream that reaches its end, or
``[DONE]``, returns its connection to the pool for reuse.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from http.client import HTTPException, IncompleteRead, RemoteDisconnected
from types import GeneratorType
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    DecodeError,
    EmptyPoolError,
    InvalidChunkLength,
    NameResolutionError,
    NewConnectionError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.exceptions import ProtocolError as U3ProtocolError
from urllib3.exceptions import TimeoutError as U3TimeoutError
from urllib3.response import BaseHTTPResponse, HTTPResponse
from urllib3.util.retry import Retry
from urllib3.util.timeout import Timeout as U3Timeout

from lorax import codec, errors
from lorax._chunked import ChunkedBodyError, ChunkedDecoder
from lorax._message import Message
from lorax._routes import Method
from lorax._sse import DONE, SSEDecoder
from lorax._timeout import Deadline
from lorax.transports import _http_common as common
from lorax.transports.base import CallOptions, MessageStream, ResponseMeta, Transport, lower_headers

__all__ = ["HTTPTransport"]

_log = logging.getLogger(__name__)

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


class _TrackedHTTPConnection(HTTPConnection):
    """urllib3's connection, counting the requests it carried.

    It tells the attempt whether the request was sent and whether the connection was
    reused, and it lets a stream shut its socket down from another thread only while
    the stream still owns the connection (``lorax_gen`` changes with every request).
    """

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


class HTTPTransport(Transport):
    """LoRAX's REST API over urllib3. Thread-safe: one transport serves many threads.

    Args:
        base_url: ``http(s)://host[:port][/prefix]``. Routes are joined under the
            prefix (``/generate`` → ``/prefix/generate``); LoRAX's ``/`` route is the
            prefix itself. ``user:password@`` becomes a Basic Authorization header. A
            query string or fragment is refused (ValueError).
        headers: sent with every request (an ``Authorization`` for Predibase, say).
            A call's own headers win over these, names compared case-insensitively.
        pool_maxsize: the most connections kept, and with ``pool_block`` the most open.
        pool_block: wait (up to ``Timeout.pool``) for a free connection when all are
            in use. With False, extra connections are opened and discarded after use.
        verify: True (the system's CA store; ``REQUESTS_CA_BUNDLE`` with
            ``trust_env``), False (no TLS checks, logged once as a warning), the path
            of a CA bundle, or an ``ssl.SSLContext``.
        cert: a client certificate: a PEM file with key and certificate, or a
            ``(certfile, keyfile)`` pair.
        proxy: an ``http://`` or ``https://`` proxy URL (credentials allowed).
        trust_env: read ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` (when ``proxy`` is
            not given) and ``REQUESTS_CA_BUNDLE``, once, when the transport is built.
        user_agent: the User-Agent; ``lorax-client/<version>`` by default.
        max_response_bytes: the largest response body read (64 MiB by default): a
            larger one raises :class:`~lorax.errors.ResponseTooLargeError` and reading
            stops there. Compressed bodies (the client asks for ``identity``) raise it
            too. It also bounds each event of a stream (a larger one raises
            :class:`~lorax.errors.ProtocolError`).
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        pool_maxsize: int = 10,
        pool_block: bool = True,
        verify: bool | str | ssl.SSLContext = True,
        cert: str | tuple[str, str] | None = None,
        proxy: str | None = None,
        trust_env: bool = True,
        user_agent: str | None = None,
        max_response_bytes: int = common.DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        base = common.BaseURL.parse(base_url)
        self._max_response_bytes = common.check_max_response_bytes(max_response_bytes)
        if isinstance(pool_maxsize, bool) or not isinstance(pool_maxsize, int) or pool_maxsize < 1:
            raise ValueError(f"pool_maxsize must be an int >= 1, got {pool_maxsize!r}")
        self._base = base
        self._defaults = common.default_headers(headers, user_agent, base)
        self._proxy = common.resolve_proxy(base, proxy, trust_env=trust_env)
        self._maxsize = pool_maxsize
        pool_kw: dict[str, Any] = {"maxsize": pool_maxsize, "block": pool_block, "retries": _NO_RETRY}
        proxy_tls = self._proxy is not None and self._proxy.url.startswith("https:")
        if base.scheme == "https" or proxy_tls:
            ctx = common.ssl_context(verify, cert, trust_env=trust_env)
            if ctx.verify_mode == ssl.CERT_NONE:
                common.warn_insecure(base.display)
            if base.scheme == "https":
                pool_kw["ssl_context"] = ctx
        manager: urllib3.PoolManager
        if self._proxy is not None:
            proxy_kw: dict[str, Any] = {}
            if proxy_tls:
                proxy_kw["proxy_ssl_context"] = ctx
            manager = urllib3.ProxyManager(
                self._proxy.url, num_pools=1, proxy_headers=self._proxy.headers or None, **proxy_kw, **pool_kw
            )
        else:
            manager = urllib3.PoolManager(num_pools=1, **pool_kw)
        manager.pool_classes_by_scheme = _POOL_CLASSES
        self._manager = manager
        self._pool: HTTPConnectionPool = manager.connection_from_url(base.origin)
        self._where = base.where if self._proxy is None else f"{base.where} (via proxy {self._proxy.where})"
        secrets = common.header_secrets(self._defaults)
        for value in (base.password, self._proxy.password if self._proxy else None):
            if value:
                secrets.append(value)
        self._secret_values = tuple(secrets)
        self._own_secrets = common.Secrets(self._secret_values)
        self._routes: dict[str, common.Route] = {}
        self._timeouts: dict[tuple[float | None, float | None], U3Timeout] = {}
        self._lock = threading.Lock()
        self._streams: weakref.WeakSet[_HTTPMessageStream] = weakref.WeakSet()
        self._orphans: list[BaseHTTPResponse] = []
        self._closed = False
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "HTTPTransport(%s): pool_maxsize=%d, proxy=%s",
                base.display,
                pool_maxsize,
                self._proxy.url if self._proxy else None,
            )

    # ----------------------------------------------------------------------------
    # Transport

    def unary(self, method: Method, request: Message, options: CallOptions) -> tuple[Message, ResponseMeta]:
        resp, route, read, started = self._send(method, request, options)
        status = resp.status
        try:
            ok = 200 <= status < 300
            data = self._read_body(resp, options.deadline, read) if ok else self._read_error_body(resp)
        except Exception as exc:
            raise self._body_error(exc, options, request) from exc
        finally:
            _finish(resp)
        if started is not None:
            _log.debug(
                "%s %s -> %d in %.1f ms",
                route.method,
                route.url,
                status,
                (time.perf_counter() - started) * 1000,
            )
        if not 200 <= status < 300:
            raise common.status_error(status, resp.headers, data, self._secrets(options, request), route)
        message = common.decode_response(method, status, resp.headers, data)
        return message, self._meta(status, resp.headers, options, request)

    def stream(self, method: Method, request: Message, options: CallOptions) -> MessageStream:
        resp, route, read, started = self._send(method, request, options)
        status = resp.status
        if started is not None:
            _log.debug(
                "%s %s -> %d (stream) in %.1f ms",
                route.method,
                route.url,
                status,
                (time.perf_counter() - started) * 1000,
            )
        if not (200 <= status < 300 and common.is_event_stream(resp.headers)):
            try:
                data = self._read_error_body(resp)
            except Exception as exc:
                raise self._body_error(exc, options, request) from exc
            finally:
                _finish(resp)
            secrets = self._secrets(options, request)
            if 200 <= status < 300:
                raise common.not_a_stream(status, resp.headers, data, secrets, route)
            raise common.status_error(status, resp.headers, data, secrets, route)
        encoding = common.compressed(resp.headers)
        if encoding is not None:
            _finish(resp)
            raise common.too_large(self._where, self._max_response_bytes, encoding=encoding)
        meta = self._meta(status, resp.headers, options, request)
        stream = _HTTPMessageStream(self, method, resp, meta, read, options.deadline, (options, request))
        with self._lock:
            self._streams.add(stream)
        return stream

    def close(self) -> None:
        """Close every stream still open and every pooled connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.close()
        self._reap()
        # Since urllib3 2.0, PoolManager.clear() forgets its pools without closing them,
        # and this transport holds on to its pool: close it (its idle connections now,
        # the ones still checked out when they come back).
        self._pool.close()
        self._manager.clear()

    def describe(self) -> str:
        return f"HTTPTransport({self._base.display})"

    def __repr__(self) -> str:
        return self.describe()

    def pool_stats(self) -> dict[str, int]:
        """A snapshot of the connection pool, for leak tests and diagnostics.

        Keys:
            ``in_use``: connections checked out (calls in flight, open streams);
            ``idle``: open connections waiting in the pool for reuse;
            ``maxsize``: ``pool_maxsize``;
            ``opened``: connections opened since the transport was built;
            ``streams``: streams not yet finished or closed.
        """
        self._reap()
        pool = self._pool
        queue = pool.pool
        in_use = idle = 0
        if queue is not None:
            with queue.mutex:
                items = list(queue.queue)
            in_use = max(0, self._maxsize - len(items))
            idle = sum(1 for conn in items if conn is not None and not conn.is_closed)
        with self._lock:
            streams = len(self._streams)
        return {
            "in_use": in_use,
            "idle": idle,
            "maxsize": self._maxsize,
            "opened": pool.num_connections,
            "streams": streams,
        }

    # ----------------------------------------------------------------------------
    # Sending

    def _send(
        self, method: Method, request: Message, options: CallOptions
    ) -> tuple[BaseHTTPResponse, common.Route, float | None, float | None]:
        if self._closed:
            raise errors.ClientClosedError(f"{self.describe()} is closed")
        if self._orphans:
            self._reap()
        route = self._routes.get(method.full_name)
        if route is None or route.path != method.path or route.method != method.http_method:
            route = self._route(method)
        body = codec.to_json(request) if route.has_body else None
        headers = route.headers_for(request, options.headers)
        timeout_opts = options.timeout
        deadline = options.deadline
        if deadline.total is None:
            read = timeout_opts.read
            pool_timeout = timeout_opts.pool
            key = (timeout_opts.connect, read)
            timeout = self._timeouts.get(key)
            if timeout is None:
                timeout = self._timeout(key)
        else:
            read = deadline.cap(timeout_opts.read)
            pool_timeout = deadline.cap(timeout_opts.pool)
            timeout = U3Timeout(connect=deadline.cap(timeout_opts.connect), read=read)
        started = time.perf_counter() if _log.isEnabledFor(logging.DEBUG) else None

        pool = self._pool
        attempt = _Attempt()
        _local.attempt = attempt
        try:
            try:
                resp = pool.urlopen(
                    route.method,
                    route.target,
                    body=body,
                    headers=headers,
                    retries=_NO_RETRY,
                    redirect=False,
                    assert_same_host=False,
                    timeout=timeout,
                    pool_timeout=pool_timeout,  # type: ignore[arg-type]
                    release_conn=False,
                    preload_content=False,
                )
                return resp, route, read, started
            except Exception as exc:
                if not attempt.stale:
                    raise _failed(route, self._send_error(exc, attempt, options, request)) from exc
                first = exc
            # The reused connection had been closed by the server before it read the
            # request (see the module docstring): once more, on a new connection.
            _log.debug(
                "%s %s: the pooled connection was stale (%r); retrying on a new one", route.method, route.url, first
            )
            attempt = _Attempt(fresh=True)
            _local.attempt = attempt
            try:
                if deadline.total is not None:
                    timeout = U3Timeout(
                        connect=deadline.cap(timeout_opts.connect), read=deadline.cap(timeout_opts.read)
                    )
                resp = pool.urlopen(
                    route.method,
                    route.target,
                    body=body,
                    headers=headers,
                    retries=_NO_RETRY,
                    redirect=False,
                    assert_same_host=False,
                    timeout=timeout,
                    pool_timeout=pool_timeout,  # type: ignore[arg-type]
                    release_conn=False,
                    preload_content=False,
                )
                return resp, route, read, started
            except Exception as exc:
                raise _failed(route, self._send_error(exc, attempt, options, request)) from exc
        finally:
            _local.attempt = None

    def _route(self, method: Method) -> common.Route:
        route = common.Route.build(method, self._base, self._defaults, self._proxy)
        self._routes[method.full_name] = route
        return route

    def _timeout(self, key: tuple[float | None, float | None]) -> U3Timeout:
        timeout = U3Timeout(connect=key[0], read=key[1])
        if len(self._timeouts) > 64:
            self._timeouts.clear()
        self._timeouts[key] = timeout
        return timeout

    def _reap(self) -> None:
        # Streams dropped without close(): their sockets were closed when they were
        # collected; their pool slots are returned here, outside of the collector.
        while self._orphans:
            try:
                resp = self._orphans.pop()
            except IndexError:
                return
            try:
                resp.release_conn()
            except Exception:
                pass

    def _forget(self, stream: _HTTPMessageStream) -> None:
        with self._lock:
            self._streams.discard(stream)

    def _secrets(self, options: CallOptions, request: Message | None) -> common.Secrets:
        return common.Secrets.of(self._secret_values, options.headers, request)

    def _meta(self, status: int, headers: Any, options: CallOptions, request: Message) -> ResponseMeta:
        """A success's status and headers: credentials redacted by name and, wherever the
        server echoed one of the transport's or the call's headers (a debug header, a
        misconfigured proxy), by value. (The request's ``api_token`` is left to error
        texts: walking the message on every call costs more than the rest.)"""
        secrets = common.Secrets.of(self._secret_values, options.headers) if options.headers else self._own_secrets
        return ResponseMeta(status, secrets.scrub_headers(lower_headers(headers)))

    # ----------------------------------------------------------------------------
    # Reading

    def _read_body(self, resp: BaseHTTPResponse, deadline: Deadline, read: float | None) -> bytes:
        """A 2xx body, at most ``max_response_bytes`` of it; compressed bodies are refused.

        A declared ``Content-Length`` above the limit is refused before reading; any
        other body is counted as it arrives and reading stops at the limit (the
        connection is then closed, not reused).
        """
        limit = self._max_response_bytes
        headers = resp.headers
        encoding = common.compressed(headers)
        if encoding is not None:
            raise common.too_large(self._where, limit, encoding=encoding)
        length = common.declared_length(headers)
        if length is not None and length > limit:
            raise common.too_large(self._where, limit, size=length)
        if length is not None and deadline.total is None:
            return resp.read()  # exactly Content-Length bytes, in one go
        # With a total deadline, each read's socket timeout is capped by the time left,
        # so a trickling body cannot outlast the deadline.
        sock = _socket(resp) if deadline.total is not None else None
        parts: list[bytes] = []
        size = 0
        while True:
            if sock is not None:
                sock.settimeout(deadline.cap(read))
            chunk = resp.read1(common.READ_CHUNK)
            if not chunk:
                return b"".join(parts)
            size += len(chunk)
            if size > limit:
                raise common.too_large(self._where, limit)
            parts.append(chunk)

    def _read_error_body(self, resp: BaseHTTPResponse) -> bytes:
        if common.compressed(resp.headers) is not None:
            # Not decompressed (see _read_body): the status alone says what happened.
            return b""
        return resp.read(common.MAX_ERROR_BODY)

    def _body_error(self, exc: Exception, options: CallOptions, request: Message) -> errors.LoraxError:
        """A failure while reading a response body (the request was sent)."""
        if isinstance(exc, errors.LoraxError):
            return exc
        where = self._where
        if isinstance(exc, (ReadTimeoutError, TimeoutError, U3TimeoutError)):
            if options.deadline.expired():
                return _total(options.deadline, sent=True)
            return common.timeout_error(
                f"{where} stopped sending the response for {common.seconds(options.timeout.read)} (read timeout)",
                phase="read",
                request_sent=True,
            )
        if isinstance(exc, DecodeError):
            return errors.ResponseDecodeError(f"the response from {where} could not be decompressed: {exc}")
        reason = _broken_reason(exc)
        return common.connection_error(
            self._secrets(options, request).scrub(f"the response from {where} broke off: {reason}"),
            request_sent=True,
        )

    def _send_error(
        self, exc: Exception, attempt: _Attempt, options: CallOptions, request: Message
    ) -> errors.LoraxError:
        """Map what ``urlopen`` raised (sending, waiting for the status line)."""
        if isinstance(exc, errors.LoraxError):
            return exc
        sent = attempt.sent
        where = self._where
        deadline = options.deadline
        timeout = options.timeout
        if isinstance(exc, EmptyPoolError):
            if deadline.expired():
                return _total(deadline, sent=False)
            return common.timeout_error(
                f"no free connection to {where} within {common.seconds(timeout.pool)}: "
                f"all {self._maxsize} connections of the pool are in use (pool_maxsize)",
                phase="pool",
                request_sent=False,
            )
        if isinstance(exc, ClosedPoolError):
            return errors.ClientClosedError(f"{self.describe()} is closed")
        if deadline.expired() and isinstance(exc, (U3TimeoutError, TimeoutError, ProxyError)):
            return _total(deadline, sent=sent)
        if isinstance(exc, ProxyError):
            proxy_where = self._proxy.where if self._proxy else where
            original = getattr(exc, "original_error", None) or exc
            if isinstance(original, ConnectTimeoutError) and not isinstance(original, NewConnectionError):
                return common.timeout_error(
                    f"connecting to the proxy {proxy_where} timed out after {common.seconds(timeout.connect)}",
                    phase="connect",
                    request_sent=False,
                )
            return common.connection_error(
                f"could not reach {self._base.where} through the proxy {proxy_where}: {common.os_reason(exc)}",
                request_sent=False,
            )
        if isinstance(exc, NameResolutionError):
            return common.connection_error(
                f"could not resolve the host {self._base.host!r}: {common.os_reason(exc)}", request_sent=False
            )
        if isinstance(exc, NewConnectionError):
            return common.connection_error(f"could not connect to {where}: {common.os_reason(exc)}", request_sent=False)
        if isinstance(exc, ConnectTimeoutError):
            return common.timeout_error(
                f"connecting to {where} timed out after {common.seconds(timeout.connect)}",
                phase="connect",
                request_sent=False,
            )
        if isinstance(exc, ReadTimeoutError):
            if not sent:  # the TLS handshake timed out
                return common.timeout_error(
                    f"the TLS handshake with {where} timed out after {common.seconds(timeout.connect)}",
                    phase="connect",
                    request_sent=False,
                )
            return common.timeout_error(
                f"{where} sent no response within {common.seconds(timeout.read)} (read timeout)",
                phase="read",
                request_sent=True,
            )
        if isinstance(exc, SSLError):
            if not sent:
                return common.connection_error(
                    f"the TLS handshake with {where} failed: {common.os_reason(exc)}", request_sent=False
                )
            return common.connection_error(f"TLS error talking to {where}: {common.os_reason(exc)}", request_sent=True)
        cause = _cause(exc)
        if not sent:
            return common.connection_error(f"could not connect to {where}: {common.os_reason(exc)}", request_sent=False)
        if isinstance(cause, RemoteDisconnected):
            return common.connection_error(f"{where} closed the connection without a response", request_sent=True)
        if isinstance(cause, HTTPException) and not isinstance(cause, IncompleteRead):
            error = errors.ProtocolError(
                self._secrets(options, request).scrub(
                    f"malformed response from {where}: {type(cause).__name__}: {cause}"
                )
            )
            error.request_sent = True  # type: ignore[attr-defined]
            return error
        if isinstance(exc, (U3ProtocolError, OSError, HTTPException)):
            return common.connection_error(
                f"the connection to {where} failed before a response: {common.os_reason(exc)}", request_sent=True
            )
        return common.connection_error(
            self._secrets(options, request).scrub(f"unexpected error talking to {where}: {type(exc).__name__}: {exc}"),
            request_sent=True,
        )


def _failed(route: common.Route, error: errors.LoraxError) -> errors.LoraxError:
    if _log.isEnabledFor(logging.DEBUG):
        _log.debug("%s %s failed: %s: %s", route.method, route.url, type(error).__name__, error)
    return error


def _total(deadline: Deadline, *, sent: bool) -> errors.APITimeoutError:
    total = deadline.total
    message = f"the total timeout of {total:g} s ran out" if total is not None else "the total timeout ran out"
    return common.timeout_error(message, phase="total", request_sent=sent)


def _cause(exc: BaseException) -> BaseException | None:
    # urllib3's ProtocolError("Connection aborted.", err) carries the cause as args[1].
    args: tuple[Any, ...] = exc.args
    if len(args) > 1 and isinstance(args[1], BaseException):
        return args[1]
    return exc.__cause__ or exc.__context__


def _broken_reason(exc: BaseException) -> str:
    current: BaseException | None = exc
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, InvalidChunkLength):
            return "invalid chunked framing (the body was cut off)"
        if isinstance(current, ChunkedBodyError):
            return f"invalid chunked framing: {current}"
        if isinstance(current, IncompleteRead):
            return "the body ended before it was complete (connection closed)"
        if isinstance(current, OSError) and current.strerror:
            return str(current.strerror).lower()
        current = _cause(current) if current is exc or isinstance(current, U3ProtocolError) else current.__context__
    return common.os_reason(exc)


def _socket(resp: BaseHTTPResponse) -> socket.socket | None:
    conn = resp.connection
    sock = getattr(conn, "sock", None) if conn is not None else None
    return sock if isinstance(sock, socket.socket) else None


def _body_chunks(resp: BaseHTTPResponse) -> Iterator[bytes]:
    """The body's bytes as they arrive.

    A chunked body (what LoRAX sends) is read a chunk at a time with urllib3's
    ``read_chunked``: one event per chunk, at a fraction of ``read1``'s cost per call.
    Anything else (a proxy that removed the chunking) is read with ``read1``.
    """
    fp = _raw_reader(resp)
    if fp is not None:
        assert isinstance(resp, HTTPResponse)
        return _dechunk(resp, fp)
    if isinstance(resp, HTTPResponse) and resp.chunked and resp.supports_chunked_reads():
        return resp.read_chunked(common.READ_CHUNK, decode_content=True)
    return iter(functools.partial(resp.read1, common.READ_CHUNK), b"")


def _dechunk(resp: HTTPResponse, fp: Any) -> Iterator[bytes]:
    """The data of a chunked body, de-chunked by :class:`lorax._chunked.ChunkedDecoder`.

    Each ``read1`` of the socket's buffered reader returns what has arrived (up to
    ``READ_CHUNK``), and the data of every chunk in it comes out as one piece: under a
    backlog one SSE feed gets many events, where ``read_chunked`` costs a readline and
    two reads per chunk (LoRAX sends one event per chunk). At the end of the body the
    response is closed and the connection goes back to the pool, as urllib3 does.
    """
    read1 = fp.read1
    decoder = ChunkedDecoder(max_trailer_bytes=common.DRAIN_LIMIT)
    feed = decoder.feed
    while True:
        data = read1(common.READ_CHUNK)
        if not data:
            raise IncompleteRead(b"")
        out = feed(data)
        if decoder.done:
            if out:
                yield out
            _body_done(resp)
            return
        if out:
            yield out


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


class _HTTPMessageStream(MessageStream):
    """The SSE stream of one call, decoded into messages."""

    def __init__(
        self,
        transport: HTTPTransport,
        method: Method,
        resp: BaseHTTPResponse,
        meta: ResponseMeta,
        read: float | None,
        deadline: Deadline,
        call: tuple[CallOptions, Message],
    ) -> None:
        self._active = False
        self.meta = meta
        self._transport = transport
        self._resp = resp
        conn = resp.connection
        self._conn: _TrackedHTTPConnection | None = conn if isinstance(conn, _TrackedHTTPConnection) else None
        self._sock = _socket(resp)
        self._gen = self._conn.lorax_gen if self._conn is not None else 0
        self._cls = method.output_type
        self._decode = codec.decoder(method.output_type)
        self._done_marker = method.done_marker
        self._decoder = SSEDecoder(max_event_bytes=transport._max_response_bytes)
        self._chunks = _body_chunks(resp)
        self._next_chunk = self._chunks.__next__
        self._batch: list[Message] = []
        self._pos = 0
        self._failed: BaseException | None = None
        self._ended = False
        self._count = 0
        self._read = read
        self._deadline = deadline if deadline.total is not None else None
        self._lock = threading.Lock()
        self._closing = False
        self._call = call  # where the secrets to scrub out of error events are
        self._active = True

    def __next__(self) -> Message:
        pos = self._pos
        batch = self._batch
        if pos < len(batch) and not self._closing:
            self._pos = pos + 1
            return batch[pos]
        batch = self._batch = self._fill()
        self._pos = 1
        return batch[0]

    def next_batch(self) -> list[Message]:
        pos = self._pos
        batch = self._batch
        if pos < len(batch) and not self._closing:
            self._batch = []
            self._pos = 0
            return batch[pos:] if pos else batch
        self._batch = []
        self._pos = 0
        return self._fill()

    def _fill(self) -> list[Message]:
        """The messages of the next read(s), at least one; StopIteration at the end.

        The hot path, one loop per read: the de-chunked bytes of everything that has
        arrived are split into events' data (no event objects) and each is decoded
        straight into its message. An error event (or one that does not decode) after
        some messages ends the batch; it is raised by the next call.
        """
        error = self._failed
        if error is not None:
            self._failed = None
            raise error
        if self._ended:
            raise StopIteration
        decode = self._decode
        feed = self._decoder.feed_data
        lock = self._lock
        while True:
            lock.acquire()
            try:
                if not self._active or self._closing:
                    self._release()
                    raise StopIteration
                if self._deadline is not None and self._sock is not None:
                    self._sock.settimeout(self._deadline.cap(self._read))
                datas = feed(self._next_chunk())
            except StopIteration:
                # The end of the body: urllib3 has returned the connection to the pool.
                self._decoder.close()
                self._release()
                raise
            except BaseException as exc:
                closing = self._closing
                self._release()
                if not isinstance(exc, Exception):
                    raise
                if closing:
                    raise StopIteration from None
                raise self._error(exc) from exc
            finally:
                lock.release()
            if not datas:
                continue
            out: list[Message] = []
            try:
                if self._done_marker:
                    for data in datas:
                        if data == DONE:
                            self._ended = True
                            self._after_done()
                            break
                        out.append(decode(data))
                else:
                    for data in datas:
                        out.append(decode(data))
            except BaseException as exc:
                # An error event (the server's error, mapped), or an event that does
                # not decode: the stream ends here, without reading on. The server's
                # text may quote the request: scrub its credentials.
                self._ended = True
                self._abandon()
                if isinstance(exc, errors.LoraxError):
                    self._transport._secrets(*self._call).scrub_error(exc)
                if not out or not isinstance(exc, Exception):
                    raise
                self._failed = exc
            self._count += len(out)
            if out:
                return out
            if self._ended:
                raise StopIteration

    def _after_done(self) -> None:
        # [DONE] is the last event; the end of the chunked body follows at once. Read
        # it (briefly, boundedly) so that the connection can be reused.
        with self._lock:
            if not self._active:
                return
            try:
                timeout = common.DRAIN_TIMEOUT
                if self._deadline is not None:
                    remaining = self._deadline.remaining()
                    timeout = min(timeout, remaining) if remaining else 0.0
                if timeout > 0 and not self._closing:
                    if self._sock is not None:
                        self._sock.settimeout(timeout)
                    drained = 0
                    for chunk in self._chunks:
                        drained += len(chunk)
                        if drained > common.DRAIN_LIMIT:
                            break
            except Exception:
                pass
            self._release()

    def _abandon(self) -> None:
        with self._lock:
            self._release()

    def _release(self) -> None:
        # Called with the lock held.
        if not self._active:
            return
        self._active = False
        self._sock = None
        chunks = self._chunks
        if isinstance(chunks, GeneratorType):
            with contextlib.suppress(Exception):
                chunks.close()
        _finish(self._resp)
        self._transport._forget(self)

    def _error(self, exc: Exception) -> errors.LoraxError:
        if isinstance(exc, errors.LoraxError):
            return exc
        where = self._transport._where
        if isinstance(exc, (ReadTimeoutError, TimeoutError, U3TimeoutError)):
            if self._deadline is not None and self._deadline.expired():
                return _total(self._deadline, sent=True)
            return common.timeout_error(
                f"{where} sent nothing for {common.seconds(self._read)} after {self._count} events (read timeout)",
                phase="read",
                request_sent=True,
            )
        if isinstance(exc, DecodeError):
            return errors.ResponseDecodeError(f"the stream from {where} could not be decompressed: {exc}")
        return common.interrupted(self._count, where, _broken_reason(exc))

    def close(self) -> None:
        """Stop the stream now, without reading the rest. Idempotent, thread-safe."""
        if not getattr(self, "_active", False):
            return
        self._closing = True
        if self._lock.acquire(blocking=False):
            try:
                self._release()
            finally:
                self._lock.release()
            return
        # Another thread is reading, most likely blocked in recv(): shut the socket
        # down to wake it (it then ends the stream), as long as the connection is
        # still this stream's.
        conn, sock = self._conn, self._sock
        if conn is not None and sock is not None and self._resp.connection is not None:
            conn.lorax_shutdown(self._gen, sock)
        with self._lock:
            self._release()

    def __del__(self) -> None:
        # Dropped without close(): close the socket now (the server stops generating)
        # and let the transport return the pool slot on its next call; the pool's
        # locks must not be taken from the garbage collector.
        if getattr(self, "_active", False):
            self._active = False
            resp = self._resp
            try:
                if resp.connection is not None:
                    resp.close()
                    self._transport._orphans.append(resp)
            except Exception:
                pass

    def __repr__(self) -> str:
        state = "open" if self._active else "closed"
        name = self._cls.__name__
        return f"<HTTP stream {name} from {self._transport.describe()}: {state}, {self._count} events>"
