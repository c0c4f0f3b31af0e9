"""``HTTPTransport``: LoRAX's REST API over urllib3, for the synchronous client.

Requests are the JSON of the request message (:func:`lorax.codec.to_json`); answers
are decoded with :func:`lorax.codec.from_json`, streams with
:class:`lorax._sse_chunked.ChunkedEventDecoder`. What is not I/O (URLs, headers, TLS and
proxy settings, decoding, error mapping) is in :mod:`lorax.transports._http_common`,
shared with the aiohttp transport. The other rooms: :mod:`lorax.transports._urllib3_conn`
(urllib3's connections and pools, adapted to record each attempt; reading headers and
bodies), :mod:`lorax.transports._urllib3_errors` (how urllib3's exceptions read),
:mod:`lorax.transports._http_stream` (the stream and its per-token loop) and
:mod:`lorax._sse_chunked` (the sans-I/O chunked SSE decoder). This module sends
requests, reads unary answers and maps failures to :mod:`lorax.errors`.

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

import logging
import ssl
import threading
import time
import weakref
from collections.abc import Mapping
from http.client import HTTPException, IncompleteRead, RemoteDisconnected
from typing import Any

import urllib3
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    DecodeError,
    EmptyPoolError,
    NameResolutionError,
    NewConnectionError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.exceptions import ProtocolError as U3ProtocolError
from urllib3.exceptions import TimeoutError as U3TimeoutError
from urllib3.response import BaseHTTPResponse
from urllib3.util.timeout import Timeout as U3Timeout

from lorax import codec, errors
from lorax._message import Message
from lorax._routes import Method
from lorax._timeout import Deadline
from lorax.transports import _http_common as common
from lorax.transports._http_stream import _HTTPMessageStream
from lorax.transports._urllib3_conn import (
    _NO_RETRY,
    _POOL_CLASSES,
    _Attempt,
    _finish,
    _local,
    _RequestHead,
    _socket,
    header_lines,
)
from lorax.transports._urllib3_errors import _broken_reason, _cause, _failed, _total
from lorax.transports.base import CallOptions, MessageStream, ResponseMeta, Transport

__all__ = ["HTTPTransport"]

_log = logging.getLogger(__name__)


class HTTPTransport(common.DescribedByBaseURL, Transport):
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
        header_lines(self._defaults, "headers")  # what http.client would refuse, refused now
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
        self._at = common.Where(
            self._where, base.where, self._proxy.where if self._proxy else self._where, base.host, pool_maxsize
        )
        secrets = common.header_secrets(self._defaults)
        for value in (base.password, self._proxy.password if self._proxy else None):
            if value:
                secrets.append(value)
        self._secret_values = tuple(secrets)
        self._own_secrets = common.Secrets(self._secret_values)
        self._routes: dict[str, common.Route] = {}
        # The request heads of the routes' own header dicts, by the dict's id (the head
        # holds the dict, so the id stays its own).
        self._heads: dict[int, _RequestHead | None] = {}
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
            common.log_answer(_log, route, status, started, " (stream)")
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
        try:
            head = self._heads[id(headers)]
        except KeyError:
            head = self._head(route, headers)
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
        attempt = _Attempt(head)
        try:
            while True:
                _local.attempt = attempt
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
                    if not attempt.stale or attempt.fresh:
                        raise _failed(route, self._send_error(exc, attempt, options, request)) from exc
                    # The reused connection had been closed by the server before it
                    # read the request (see the module docstring): once more, on a
                    # new connection.
                    common.log_stale(_log, route, exc)
                attempt = _Attempt(head, fresh=True)
                if deadline.total is not None:
                    timeout = U3Timeout(
                        connect=deadline.cap(timeout_opts.connect), read=deadline.cap(timeout_opts.read)
                    )
        finally:
            _local.attempt = None

    def _route(self, method: Method) -> common.Route:
        route = common.Route.build(method, self._base, self._defaults, self._proxy)
        self._routes[method.full_name] = route
        return route

    def _head(self, route: common.Route, headers: dict[str, str]) -> _RequestHead | None:
        if headers is route.headers or headers is route.json_headers:
            head = _RequestHead.build(route.method, route.target, headers, "headers")
            if len(self._heads) > 256:
                self._heads.clear()
            self._heads[id(headers)] = head
            return head
        # A call's own headers: checked (by merge_headers) and written for this call.
        return _RequestHead.build(route.method, route.target, headers, "CallOptions.headers")

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
        return common.response_meta(status, headers, options.headers, self._own_secrets)

    # ----------------------------------------------------------------------------
    # Reading

    def _read_body(self, resp: BaseHTTPResponse, deadline: Deadline, read: float | None) -> bytes:
        """A 2xx body, at most ``max_response_bytes`` of it; compressed bodies are refused.

        A declared ``Content-Length`` above the limit is refused before reading; any
        other body is counted as it arrives and reading stops at the limit (the
        connection is then closed, not reused).
        """
        limit = self._max_response_bytes
        length = common.checked_length(resp.headers, limit, self._where)
        if length is not None and deadline.total is None:
            return resp.read()  # exactly Content-Length bytes, in one go
        # With a total deadline, each read's socket timeout is capped by the time left,
        # so a trickling body cannot outlast the deadline.
        sock = _socket(resp) if deadline.total is not None else None
        body = common.BoundedBody(limit, self._where)
        while True:
            if sock is not None:
                sock.settimeout(deadline.cap(read))
            chunk = resp.read1(common.READ_CHUNK)
            if not chunk:
                return body.value()
            body.add(chunk)

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
            return common.read_timeout(where, options.timeout.read)
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
        """Map what ``urlopen`` raised (sending, waiting for the status line): the kind of
        failure is read here, its error comes from :data:`common.SEND_FAILURES`."""
        if isinstance(exc, errors.LoraxError):
            return exc
        sent = attempt.sent
        deadline = options.deadline
        timeout = options.timeout
        if isinstance(exc, ClosedPoolError):
            return errors.ClientClosedError(f"{self.describe()} is closed")
        if deadline.expired() and isinstance(exc, (EmptyPoolError, U3TimeoutError, TimeoutError, ProxyError)):
            return _total(deadline, sent=sent and not isinstance(exc, EmptyPoolError))
        at = self._at
        if isinstance(exc, EmptyPoolError):
            return common.send_failure("pool", at, timeout)
        if isinstance(exc, ProxyError):
            original = getattr(exc, "original_error", None) or exc
            if isinstance(original, ConnectTimeoutError) and not isinstance(original, NewConnectionError):
                return common.send_failure("proxy_timeout", at, timeout)
            return common.send_failure("proxy", at, timeout, common.os_reason(exc))
        if isinstance(exc, NameResolutionError):
            return common.send_failure("dns", at, timeout, common.os_reason(exc))
        if isinstance(exc, NewConnectionError):
            return common.send_failure("connect", at, timeout, common.os_reason(exc))
        if isinstance(exc, ConnectTimeoutError):
            return common.send_failure("connect_timeout", at, timeout)
        if isinstance(exc, ReadTimeoutError):
            # Before the request was sent, only the TLS handshake reads.
            return common.send_failure("read_timeout" if sent else "tls_handshake_timeout", at, timeout)
        if isinstance(exc, SSLError):
            return common.send_failure("tls" if sent else "tls_handshake", at, timeout, common.os_reason(exc))
        cause = _cause(exc)
        if not sent:
            return common.send_failure("connect", at, timeout, common.os_reason(exc))
        if isinstance(cause, RemoteDisconnected):
            return common.send_failure("no_response", at, timeout)
        if isinstance(cause, HTTPException) and not isinstance(cause, IncompleteRead):
            error = errors.ProtocolError(
                self._secrets(options, request).scrub(
                    f"malformed response from {self._where}: {type(cause).__name__}: {cause}"
                )
            )
            error.request_sent = True  # type: ignore[attr-defined]
            return error
        if isinstance(exc, (U3ProtocolError, OSError, HTTPException)):
            return common.send_failure("broken", at, timeout, common.os_reason(exc))
        return common.connection_error(
            self._secrets(options, request).scrub(
                f"unexpected error talking to {self._where}: {type(exc).__name__}: {exc}"
            ),
            request_sent=True,
        )
