"""``AsyncHTTPTransport``: LoRAX's REST API over aiohttp, for the asyncio client.

The async twin of :class:`lorax.transports.http.HTTPTransport`: the same URLs,
headers, TLS and proxy decisions, decoding and error mapping (all from
:mod:`lorax.transports._http_common`), the same exceptions for the same failures.
This is the only module that imports aiohttp.

One ``aiohttp.ClientSession`` per transport, created on first use inside the running
event loop and bound to it: using the transport from another loop raises
:class:`~lorax.errors.LoraxError`. Close it with ``await transport.aclose()`` (or
``async with``), which closes the session and its connections and waits for them to
go, so nothing is left for the garbage collector to warn about.

Connections. ``limit`` connections at most (``limit_per_host`` further bounds them;
0 means no limit); a call waits for a free one at most ``Timeout.pool`` seconds, then
raises ``APITimeoutError(phase="pool")``. Timeouts: ``Timeout.connect`` is aiohttp's
``sock_connect``, ``Timeout.read`` its ``sock_read`` (the longest silence between
received bytes), and a call's deadline becomes aiohttp's ``total`` for that call.

Proxies and TLS: the environment is read once, at construction, by the same code as the
sync transport (so ``HTTP(S)_PROXY`` and ``NO_PROXY`` mean the same thing to both); the
session itself runs with aiohttp's ``trust_env`` off, so nothing else (``.netrc``) is
read behind the transport's back. Cookies are not kept, as in the sync transport.

Redirects are not followed, and a request that found a kept-alive connection closed
by the server while idle (a reused connection that ends with no response byte) is
retried once on a new connection; see :mod:`lorax.transports.http` for why that, and
only that, is safe.

Streams. ``aclose()`` closes the HTTP response without reading the rest, so LoRAX sees
the disconnect and stops generating; it is safe from another task (the task iterating
then sees the end of the stream). Cancelling the task that iterates closes the
response too. Events are read with ``readany()`` and decoded by our own SSE decoder,
so one event of several MiB is fine (aiohttp's line reader stops at 128 KiB).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import errno
import functools
import logging
import ssl
import time
import weakref
from collections.abc import Mapping
from typing import Any

import aiohttp
import aiohttp.client_proto

from lorax import codec, errors
from lorax._message import Message
from lorax._route import RESPONSE_BODY_JSON
from lorax._routes import Method
from lorax._sse import DONE, SSEDecoder
from lorax.transports import _http_common as common
from lorax.transports.base import AsyncMessageStream, AsyncTransport, CallOptions, ResponseMeta

__all__ = ["AsyncHTTPTransport"]

_log = logging.getLogger(__name__)

# How long aclose() waits for connections to finish closing (a TLS shutdown) before
# aborting them.
_CLOSE_GRACE = 1.0

# Errors that end a send on a connection the peer had already closed.
_STALE_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})


class _Slots:
    """The transport's connection slots: at most `n` calls hold one at once.

    What ``asyncio.Semaphore`` does, for the one way the transport uses it, in O(1) per
    call: Python 3.10-3.12's semaphore walks its waiter list on every ``locked()`` and
    every release (the woken waiters stay in it until their tasks run), which with a few
    hundred calls queued for 100 connections cost more than the rest of our per-call
    work. A release hands the slot straight to the oldest waiter (FIFO); a waiter that
    gave up (cancelled, timed out) is skipped.
    """

    __slots__ = ("free", "waiters")

    def __init__(self, n: int) -> None:
        self.free = n
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def take(self) -> bool:
        """Take a free slot if there is one (True), without waiting."""
        if self.free > 0:
            # A free slot means no live waiter (release hands slots to those first):
            # whatever is queued gave up, and must not make this call wait.
            waiters = self.waiters
            while waiters and waiters[0].done():
                waiters.popleft()
            if not waiters:
                self.free -= 1
                return True
        return False

    async def wait(self, timeout: float | None) -> bool:
        """Wait for a slot handed over by :meth:`release`; False when `timeout` ran out."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            if timeout is None:
                await fut
            else:
                await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            if fut.done() and not fut.cancelled():
                return True  # handed over as the timeout fired: the slot is ours
            fut.cancel()
            return False
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()  # handed over as this task was cancelled: pass it on
            else:
                fut.cancel()
            raise
        return True

    def release(self) -> None:
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1


# Why a connector subclass, a context variable and a wrapped ``connection_lost``, and not
# a public aiohttp API (checked against aiohttp 3.9-3.14):
#
# * The stale-connection retry must know whether an attempt got a pooled connection,
#   and its second attempt must refuse pooled ones. aiohttp's public per-request hook
#   is tracing (``TraceConfig.on_connection_reuseconn`` with ``trace_request_ctx``): it
#   answers the first question but not the second (no request option makes the
#   connector skip its pool; ``force_close`` is for the whole connector, and would
#   cost every call a new connection), and it costs every request of the session a
#   ``Trace`` and its signal coroutines (measured on the canned server: 330 -> 366
#   Python calls per request). So ``_Connector.connect`` (aiohttp's documented
#   ``BaseConnector.connect(req, traces, timeout)``) does both, and learns which attempt
#   it serves from ``_ATTEMPT``: ``session.request`` runs ``connect`` in the calling
#   task, so a context variable reaches it without any private attribute, and it is
#   per task, so concurrent calls do not see each other's attempt.
# * ``connection_lost`` (see :func:`_watch`): aiohttp offers no callback for "this
#   connection is gone" (``Connection.add_callback`` runs on release, not on loss), and
#   its own handling leaves a body reader waiting forever after a chunked framing error
#   (``ResponseHandler.data_received`` gives the parse error to the protocol, not to the
#   payload, and ``connection_lost`` drops the read timeout). The wrapper is set on
#   protocols this transport created, once per connection; a ``__slots__`` protocol
#   in a future aiohttp only loses the two fixes (the ``AttributeError`` branch).
class _Attempt:
    """What happened to one request attempt (recorded by :class:`_Connector`)."""

    __slots__ = ("connected", "fresh", "reused")

    def __init__(self, fresh: bool = False) -> None:
        self.fresh = fresh
        self.reused = False
        self.connected = False


_ATTEMPT: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar("lorax_http_attempt", default=None)


# aiohttp's read timeout (``sock_read``) cancels and re-arms a timer on every chunk
# received (``ResponseHandler._reschedule_timeout``, called by ``data_received``): one
# timer per token of a paced stream, two per unary call. `_LazyReadTimeout` keeps the
# same rule (fail the read once no byte came for ``sock_read`` seconds) with one timer
# per period: a chunk only notes the time, and the timer, when it fires, either fails
# the read or sets itself again for the last chunk's time plus the period. The three
# methods it relies on (``_reschedule_timeout``, ``_drop_timeout``, ``_on_read_timeout``
# and the ``_read_timeout_handle`` they share) are checked at import; an aiohttp without
# them keeps its own timer.
_Handler: Any = aiohttp.client_proto.ResponseHandler
_LAZY_READ_TIMEOUT = (
    all(
        callable(getattr(_Handler, name, None)) for name in ("_reschedule_timeout", "_drop_timeout", "_on_read_timeout")
    )
    and "_read_timeout_handle" in _Handler._drop_timeout.__code__.co_names
)

# A timer may run up to the clock's resolution early (asyncio's BaseEventLoop._run_once).
_CLOCK_SLACK = time.get_clock_info("monotonic").resolution


class _LazyReadTimeout(_Handler):  # type: ignore[misc]
    """aiohttp's response protocol, with a read timeout that sets one timer per period."""

    _read_timeout_handle: asyncio.TimerHandle | None  # set by aiohttp's __init__
    _lorax_last = 0.0
    _lorax_armed: float | None = None  # the timeout the armed timer was set for

    def _reschedule_timeout(self) -> None:
        timeout = self._read_timeout
        loop = self._loop
        self._lorax_last = now = loop.time()
        handle = self._read_timeout_handle
        if handle is not None and timeout == self._lorax_armed:
            return  # the common case, once per chunk: the timer looks at _lorax_last
        if not timeout:
            self._drop_timeout()
            return
        due = now + timeout
        if handle is None or handle.when() > due:  # a shorter timeout than the armed one
            if handle is not None:
                handle.cancel()
            self._read_timeout_handle = loop.call_at(due, self._lorax_check)
            self._lorax_armed = timeout

    def _lorax_check(self) -> None:
        self._read_timeout_handle = None
        timeout = self._read_timeout
        if not timeout:
            return
        loop = self._loop
        due = self._lorax_last + timeout
        if loop.time() + _CLOCK_SLACK >= due:
            self._on_read_timeout()
        else:
            self._read_timeout_handle = loop.call_at(due, self._lorax_check)
            self._lorax_armed = timeout


class _Connector(aiohttp.TCPConnector):
    """aiohttp's TCP connector, telling the current attempt whether its connection was
    reused, and able to refuse pooled connections for the stale-connection retry."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lorax_seen: weakref.WeakSet[Any] = weakref.WeakSet()
        factory = getattr(self, "_factory", None)
        if _LAZY_READ_TIMEOUT and isinstance(factory, functools.partial) and factory.func is _Handler:
            self._factory = functools.partial(_LazyReadTimeout, *factory.args, **factory.keywords)  # type: ignore[assignment]

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        conn = await super().connect(req, traces, timeout)
        attempt = _ATTEMPT.get()
        if attempt is None:
            return conn
        seen = self._lorax_seen
        proto = conn.protocol
        # A protocol seen before carries the watch's `lorax_lost` (one attribute look-up
        # per call; the WeakSet is asked only where the watch could not be set).
        while attempt.fresh and proto is not None and (hasattr(proto, "lorax_lost") or proto in seen):
            conn.close()
            conn = await super().connect(req, traces, timeout)
            proto = conn.protocol
        attempt.reused = proto is not None and (hasattr(proto, "lorax_lost") or proto in seen)
        if proto is not None and not attempt.reused:
            seen.add(proto)
            _watch(proto)
        attempt.connected = True
        return conn


def _watch(proto: Any) -> None:
    """Hook a new connection's ``connection_lost``, for two things aiohttp does not do.

    * It wakes the reader of a body when the connection goes away under it. aiohttp
      hands a malformed chunk (a bad chunk size) to the protocol, not to the body being
      read, and drops the read timeout: that reader would wait forever. The body being
      read is the protocol's ``lorax_reader`` (:func:`_reading`).
    * It resolves ``lorax_lost``, which :meth:`AsyncHTTPTransport.aclose` waits for, so
      that no connection is still closing when it returns (aiohttp < 3.12 returns from
      ``close()`` while TLS connections are still shutting down).
    """
    lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    original = proto.connection_lost

    def connection_lost(exc: BaseException | None) -> None:
        try:
            original(exc)
        finally:
            reader = getattr(proto, "lorax_reader", None)
            if reader is not None and not reader.is_eof() and reader.exception() is None:
                reader.set_exception(aiohttp.ClientPayloadError("the connection closed before the end of the body"))
            if not lost.done():
                lost.set_result(None)

    try:
        proto.connection_lost = connection_lost
        proto.lorax_lost = lost
    except AttributeError:  # pragma: no cover - a future aiohttp with __slots__
        lost.cancel()


def _reading(resp: aiohttp.ClientResponse, reader: aiohttp.StreamReader | None) -> None:
    """Tell the watch of `resp`'s connection which body is being read (None: done)."""
    conn = resp.connection
    proto = conn.protocol if conn is not None else None
    if proto is not None:
        with contextlib.suppress(AttributeError):
            proto.lorax_reader = reader  # type: ignore[attr-defined]


class AsyncHTTPTransport(common.DescribedByBaseURL, AsyncTransport):
    """LoRAX's REST API over aiohttp, bound to the event loop it is first used on.

    Args:
        base_url: as for :class:`~lorax.transports.http.HTTPTransport`.
        headers: sent with every request; a call's own headers win.
        limit: the most connections open at once (0: no limit).
        limit_per_host: a further bound for the one host (0: none).
        verify, cert, proxy, trust_env, user_agent, max_response_bytes: as for
            :class:`~lorax.transports.http.HTTPTransport`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        limit: int = 100,
        limit_per_host: int = 0,
        verify: bool | str | ssl.SSLContext = True,
        cert: str | tuple[str, str] | None = None,
        proxy: str | None = None,
        trust_env: bool = True,
        user_agent: str | None = None,
        max_response_bytes: int = common.DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        base = common.BaseURL.parse(base_url)
        self._max_response_bytes = common.check_max_response_bytes(max_response_bytes)
        for name, value in (("limit", limit), ("limit_per_host", limit_per_host)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        self._base = base
        self._defaults = common.default_headers(headers, user_agent, base)
        self._proxy = common.resolve_proxy(base, proxy, trust_env=trust_env)
        self._limit = limit
        self._limit_per_host = limit_per_host
        bounds = [n for n in (limit, limit_per_host) if n > 0]
        self._slots = min(bounds) if bounds else 0
        self._ssl: ssl.SSLContext | None = None
        if base.scheme == "https" or (self._proxy is not None and self._proxy.url.startswith("https:")):
            self._ssl = common.ssl_context(verify, cert, trust_env=trust_env)
            if self._ssl.verify_mode == ssl.CERT_NONE:
                common.warn_insecure(base.display)
        self._where = base.where if self._proxy is None else f"{base.where} (via proxy {self._proxy.where})"
        self._at = common.Where(
            self._where, base.where, self._proxy.where if self._proxy else self._where, base.host, limit
        )
        self._proxy_url: Any = None
        self._proxy_headers: dict[str, str] | None = None
        if self._proxy is not None:
            from yarl import URL

            self._proxy_url = URL(self._proxy.url)
            if base.scheme == "https" and self._proxy.auth_header:
                # Sent on the CONNECT request; a forwarding proxy reads it from the request itself.
                self._proxy_headers = self._proxy.headers
        secrets = common.header_secrets(self._defaults)
        for secret in (base.password, self._proxy.password if self._proxy else None):
            if secret:
                secrets.append(secret)
        self._secret_values = tuple(secrets)
        self._own_secrets = common.Secrets(self._secret_values)
        self._routes: dict[str, tuple[common.Route, Any]] = {}
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}
        self._session: aiohttp.ClientSession | None = None
        self._connector: _Connector | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slot: _Slots | None = None
        self._streams: weakref.WeakSet[_AsyncHTTPMessageStream] = weakref.WeakSet()
        self._closed = False

    # ----------------------------------------------------------------------------
    # Transport

    async def unary_async(self, method: Method, request: Message, options: CallOptions) -> tuple[Message, ResponseMeta]:
        resp, route, slot, started = await self._send(method, request, options)
        status = resp.status
        headers = resp.headers
        try:
            if not 200 <= status < 300:
                data = await self._error_body(resp, options, request)
                raise common.status_error(status, headers, data, self._secrets(options, request), route)
            complete = False
            try:
                data = await self._read_body(resp, headers)
                complete = True
            except Exception as exc:
                raise self._body_error(exc, options, request) from exc
            finally:
                if complete:
                    resp.release()
                else:
                    resp.close()
        finally:
            if slot is not None:
                slot.release()
        if started is not None:
            common.log_answer(_log, route, status, started)
        if method.response_body == RESPONSE_BODY_JSON:
            message: Message = codec.decoder(method.output_type)(data)
        else:
            message = common.decode_response(method, status, headers, data)
        return message, common.response_meta(status, headers, options.headers, self._own_secrets)

    async def stream_async(self, method: Method, request: Message, options: CallOptions) -> AsyncMessageStream:
        resp, route, slot, started = await self._send(method, request, options)
        try:
            status = resp.status
            if started is not None:
                common.log_answer(_log, route, status, started, " (stream)")
            if not (200 <= status < 300 and common.is_event_stream(resp.headers)):
                data = await self._error_body(resp, options, request)
                secrets = self._secrets(options, request)
                if 200 <= status < 300:
                    raise common.not_a_stream(status, resp.headers, data, secrets, route)
                raise common.status_error(status, resp.headers, data, secrets, route)
            encoding = common.compressed(resp.headers)
            if encoding is not None:
                raise common.too_large(self._where, self._max_response_bytes, encoding=encoding)
            _reading(resp, resp.content)
            meta = common.response_meta(status, resp.headers, options.headers, self._own_secrets)
            stream = _AsyncHTTPMessageStream(self, method, resp, meta, slot, options, request)
        except BaseException:
            resp.close()
            if slot is not None:
                slot.release()
            raise
        self._streams.add(stream)
        return stream

    async def aclose(self) -> None:
        """Close every open stream, the session and its connections. Idempotent."""
        if self._closed:
            return
        session = self._session
        if session is not None and self._loop is not None and not self._loop.is_closed():
            self._check_loop()
        self._closed = True
        for stream in list(self._streams):
            stream._release(reuse=False)
        self._session = None
        if session is None or session.closed:
            return
        closing: dict[asyncio.Future[Any], Any] = {}
        connector = self._connector
        if connector is not None:
            for proto in list(connector._lorax_seen):
                lost = getattr(proto, "lorax_lost", None)
                if isinstance(lost, asyncio.Future) and not lost.done():
                    closing[lost] = proto
        await session.close()
        # Wait until every connection is really gone, so that nothing is left for the
        # garbage collector to call unclosed. aiohttp >= 3.12 waits inside close();
        # older versions return while TLS connections are still shutting down (their
        # docs suggest sleeping). A TLS shutdown the peer never answers is aborted.
        await asyncio.sleep(0)
        pending = [fut for fut in closing if not fut.done()]
        if pending:
            _, stuck = await asyncio.wait(pending, timeout=_CLOSE_GRACE)
            for fut in stuck:
                with contextlib.suppress(Exception):
                    closing[fut].abort()
            if stuck:
                await asyncio.wait(stuck, timeout=_CLOSE_GRACE)

    def pool_stats(self) -> dict[str, int]:
        """A snapshot of the connection pool, for leak tests and diagnostics.

        Keys:
            ``in_use``: connections acquired (calls in flight, open streams);
            ``idle``: open connections kept alive for reuse;
            ``limit``, ``limit_per_host``: the configured bounds (0: none);
            ``streams``: streams not yet finished or closed.

        Read from aiohttp's connector; all zero before the first call.
        """
        connector = self._connector
        in_use = idle = 0
        if connector is not None and not connector.closed:
            in_use = len(getattr(connector, "_acquired", ()))
            conns = getattr(connector, "_conns", {})
            idle = sum(1 for items in conns.values() for proto, _ in items if proto.is_connected())
        return {
            "in_use": in_use,
            "idle": idle,
            "limit": self._limit,
            "limit_per_host": self._limit_per_host,
            "streams": len(self._streams),
        }

    # ----------------------------------------------------------------------------
    # Sending

    def _check_loop(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._closed:
            raise errors.ClientClosedError(f"{self.describe()} is closed")
        if self._session is not None:
            if loop is self._loop:
                return self._session
            raise errors.LoraxError(
                f"{self.describe()} is bound to the event loop it was first used on and cannot be used from "
                "another one; create one transport (one client) per event loop"
            )
        connector_kw: dict[str, Any] = {"limit": self._limit, "limit_per_host": self._limit_per_host}
        if self._ssl is not None:
            connector_kw["ssl"] = self._ssl
        connector = _Connector(**connector_kw)
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
            # Compressed bodies are refused, never inflated (see _http_common.compressed).
            auto_decompress=False,
            trust_env=False,
        )
        self._connector = connector
        self._loop = loop
        self._slot = _Slots(self._slots) if self._slots else None
        return self._session

    async def _send(
        self, method: Method, request: Message, options: CallOptions
    ) -> tuple[aiohttp.ClientResponse, common.Route, _Slots | None, float | None]:
        session = self._session
        if session is None or self._loop is not asyncio.get_running_loop() or self._closed:
            session = self._check_loop()
        cached = self._routes.get(method.full_name)
        if cached is None or cached[0].path != method.path or cached[0].method != method.http_method:
            cached = self._route(method)
        route, url = cached
        body = codec.to_json(request) if route.has_body else None
        headers = route.headers_for(request, options.headers)
        timeout_opts = options.timeout
        deadline = options.deadline
        if deadline.total is None:
            key = (timeout_opts.connect, timeout_opts.read)
            timeout = self._timeouts.get(key)
            if timeout is None:
                timeout = self._timeout(key)
        else:
            timeout = aiohttp.ClientTimeout(
                total=deadline.cap(None),
                sock_connect=deadline.cap(timeout_opts.connect),
                sock_read=deadline.cap(timeout_opts.read),
            )
        started = time.perf_counter() if _log.isEnabledFor(logging.DEBUG) else None

        slot = self._slot
        if slot is not None:
            if slot.free > 0 and not slot.waiters:
                slot.free -= 1
            else:
                await self._acquire(slot, options)
        attempt = _Attempt()
        token = _ATTEMPT.set(attempt)
        try:
            while True:
                try:
                    resp = await session.request(
                        route.method,
                        url,
                        data=body,
                        headers=headers,
                        timeout=timeout,
                        allow_redirects=False,
                        proxy=self._proxy_url,
                        proxy_headers=self._proxy_headers,
                    )
                    return resp, route, slot, started
                except Exception as exc:
                    if attempt.fresh or not _is_stale(exc, attempt):
                        raise common.failed(_log, route, self._send_error(exc, attempt, options, request)) from exc
                    # The reused connection had been closed by the server before it
                    # read the request (see the module docstring): once more, on a
                    # new connection.
                    common.log_stale(_log, route, exc)
                attempt = _Attempt(fresh=True)
                _ATTEMPT.set(attempt)
        except BaseException:
            if slot is not None:
                slot.release()
            raise
        finally:
            _ATTEMPT.reset(token)

    async def _acquire(self, slot: _Slots, options: CallOptions) -> None:
        """Wait for a free connection slot, at most ``Timeout.pool`` (and the deadline)."""
        if slot.take():
            return
        deadline = options.deadline
        if await slot.wait(deadline.cap(options.timeout.pool)):
            return
        if deadline.expired():
            raise _total(deadline, sent=False)
        raise common.timeout_error(
            f"no free connection to {self._where} within {common.seconds(options.timeout.pool)}: "
            f"all {self._slots} connections are in use (limit)",
            phase="pool",
            request_sent=False,
        )

    def _route(self, method: Method) -> tuple[common.Route, Any]:
        from yarl import URL

        route = common.Route.build(method, self._base, self._defaults, self._proxy)
        cached = (route, URL(route.url, encoded=True))
        self._routes[method.full_name] = cached
        return cached

    def _timeout(self, key: tuple[float | None, float | None]) -> aiohttp.ClientTimeout:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=key[0], sock_read=key[1])
        if len(self._timeouts) > 64:
            self._timeouts.clear()
        self._timeouts[key] = timeout
        return timeout

    async def _read_body(self, resp: aiohttp.ClientResponse, headers: Any) -> bytes:
        """A 2xx body, at most ``max_response_bytes`` of it; compressed bodies are refused.

        As :meth:`HTTPTransport._read_body <lorax.transports.http.HTTPTransport>`: a
        declared length above the limit is refused before reading, any other body is
        counted as it arrives. A cancelled read drops what it had read (and the caller
        closes the connection).
        """
        limit = self._max_response_bytes
        length = common.checked_length(headers, limit, self._where)
        if length is not None:
            # Exactly Content-Length bytes. No _reading() here: a connection lost
            # before the last byte fails the body in aiohttp itself (its parser's
            # feed_eof); only chunked framing errors need the watch.
            return await resp.read()
        content = resp.content
        _reading(resp, content)
        try:
            body = common.BoundedBody(limit, self._where)
            while chunk := await content.read(common.READ_CHUNK):
                body.add(chunk)
            return body.value()
        finally:
            _reading(resp, None)

    async def _error_body(self, resp: aiohttp.ClientResponse, options: CallOptions, request: Message) -> bytes:
        """Up to ``MAX_ERROR_BODY`` bytes of a non-2xx (or not-a-stream) body, and the
        connection released when that was all of it, closed when not."""
        complete = False
        _reading(resp, resp.content)
        try:
            data, complete = await _read_error_body(resp)
        except Exception as exc:
            raise self._body_error(exc, options, request) from exc
        finally:
            _reading(resp, None)
            if complete:
                resp.release()
            else:
                resp.close()
        return data

    def _forget(self, stream: _AsyncHTTPMessageStream) -> None:
        self._streams.discard(stream)

    def _secrets(self, options: CallOptions, request: Message | None) -> common.Secrets:
        return common.Secrets.of(self._secret_values, options.headers, request)

    # ----------------------------------------------------------------------------
    # Errors

    def _send_error(
        self, exc: Exception, attempt: _Attempt, options: CallOptions, request: Message
    ) -> errors.LoraxError:
        """Map what ``session.request`` raised (connecting, sending, the status line): the
        kind of failure is read here, its error comes from :data:`common.SEND_FAILURES`."""
        if isinstance(exc, errors.LoraxError):
            return exc
        sent = attempt.connected
        deadline = options.deadline
        timeout = options.timeout
        at = self._at
        if isinstance(exc, RuntimeError) and "closed" in str(exc).lower():
            return errors.ClientClosedError(f"{self.describe()} is closed")
        if deadline.expired() and isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
            return _total(deadline, sent=sent)
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            reason = f"certificate verification failed: {common.os_reason(exc.certificate_error)}"
            return common.send_failure("tls_handshake", at, timeout, reason)
        if isinstance(exc, aiohttp.ClientConnectorSSLError):
            return common.send_failure("tls_handshake", at, timeout, common.os_reason(exc))
        if isinstance(exc, aiohttp.ClientProxyConnectionError):
            return common.send_failure("proxy", at, timeout, common.os_reason(exc))
        if isinstance(exc, aiohttp.ClientHttpProxyError):
            return common.send_failure("proxy", at, timeout, f"the proxy answered {exc.status} {exc.message}")
        if isinstance(exc, aiohttp.ClientConnectorError):
            os_error = getattr(exc, "os_error", None)
            kind = "dns" if _is_dns_error(exc, os_error) else "connect"
            return common.send_failure(kind, at, timeout, common.os_reason(os_error or exc))
        if isinstance(exc, asyncio.TimeoutError):  # aiohttp's ServerTimeoutError and its subclasses too
            # aiohttp < 3.10 has one class for both; whether a connection was made says which.
            return common.send_failure("read_timeout" if sent else "connect_timeout", at, timeout)
        if not sent:
            return common.send_failure("connect", at, timeout, common.os_reason(exc))
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return common.send_failure("no_response", at, timeout)
        if isinstance(exc, aiohttp.ClientResponseError):
            error = errors.ProtocolError(
                self._secrets(options, request).scrub(f"malformed response from {self._where}: {exc.message}")
            )
            error.request_sent = True  # type: ignore[attr-defined]
            return error
        if isinstance(exc, (aiohttp.ClientError, OSError)):
            return common.send_failure("broken", at, timeout, common.os_reason(exc))
        return common.connection_error(
            self._secrets(options, request).scrub(
                f"unexpected error talking to {self._where}: {type(exc).__name__}: {exc}"
            ),
            request_sent=True,
        )

    def _body_error(self, exc: Exception, options: CallOptions, request: Message) -> errors.LoraxError:
        """A failure while reading a response body (the request was sent)."""
        if isinstance(exc, errors.LoraxError):
            return exc
        where = self._where
        if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
            if options.deadline.expired():
                return _total(options.deadline, sent=True)
            return common.read_timeout(where, options.timeout.read)
        return common.connection_error(
            self._secrets(options, request).scrub(f"the response from {where} broke off: {_broken_reason(exc)}"),
            request_sent=True,
        )


def _is_stale(exc: BaseException, attempt: _Attempt) -> bool:
    """A reused connection that ended before any response byte (see the module docstring)."""
    if not attempt.reused or attempt.fresh:
        return False
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        # With a partial response aiohttp passes the parsed head; with nothing, a str.
        return isinstance(exc.message, str)
    if isinstance(exc, aiohttp.ClientConnectorError) or not isinstance(exc, aiohttp.ClientConnectionError):
        return False
    # ECONNRESET/EPIPE while sending or before the status line, or aiohttp's "Cannot
    # write to closing transport" (the peer's FIN arrived before our write).
    current: BaseException | None = exc
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return True
        if isinstance(current, OSError) and current.errno in _STALE_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_dns_error(exc: BaseException, os_error: BaseException | None) -> bool:
    dns_cls = getattr(aiohttp, "ClientConnectorDNSError", None)
    if dns_cls is not None and isinstance(exc, dns_cls):
        return True
    import socket

    return isinstance(os_error, socket.gaierror)


_total = common.total_timeout


def _broken_reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the body ended before it was complete (connection closed)"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    return common.os_reason(exc)


async def _read_error_body(resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """Up to ``MAX_ERROR_BODY`` bytes of an error body, and whether that was all of it.

    A compressed one is not read (the session does not decompress): the status alone
    says what happened.
    """
    if common.compressed(resp.headers) is not None:
        return b"", False
    return await _read_limited(resp.content, common.MAX_ERROR_BODY)


async def _read_limited(content: aiohttp.StreamReader, limit: int) -> tuple[bytes, bool]:
    """Up to `limit` bytes of a body, and whether that was all of it."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            return b"".join(parts), True
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts), content.at_eof()


# An empty batch shared by all streams (never changed: a stream replaces its lists and
# only reads them), so that an idle stream holds two lists fewer for the collector.
_NOTHING: list[Any] = []


class _AsyncHTTPMessageStream(AsyncMessageStream):
    """The SSE stream of one call, decoded into messages."""

    def __init__(
        self,
        transport: AsyncHTTPTransport,
        method: Method,
        resp: aiohttp.ClientResponse,
        meta: ResponseMeta,
        slot: _Slots | None,
        options: CallOptions,
        request: Message,
    ) -> None:
        self._active = False
        self.meta = meta
        self._transport = transport
        self._resp = resp
        self._content = resp.content
        self._slot = slot
        self._cls = method.output_type
        self._decode = codec.decoder(method.output_type)
        self._done_marker = method.done_marker
        self._decoder = SSEDecoder(max_event_bytes=transport._max_response_bytes)
        self._events: list[bytes] = _NOTHING  # the data of the events of the last read
        self._idx = 0
        self._ready: list[Message] = _NOTHING  # what __anext__ decoded and has not handed out
        self._ready_pos = 0
        self._fast = common.fast_decoder(method.output_type)
        self._count = 0
        self._options = options
        self._failure: Exception | None = None
        self._closing = False
        self._request = request  # for the secrets to scrub out of error events
        self._active = True

    async def __anext__(self) -> Message:
        ready = self._ready
        pos = self._ready_pos
        if pos < len(ready) and not self._closing:
            self._ready_pos = pos + 1
            return ready[pos]
        batch = await self.next_batch()
        self._ready = batch
        self._ready_pos = 1
        return batch[0]

    async def next_batch(self) -> list[Message]:
        """Every message of the last read, decoded in one loop; at least one.

        An event the fast decoder does not take (an error event, an odd one) is decoded
        on its own and ends the batch when it is not the first: an error event raises
        on the call after the messages before it were handed out. ``[DONE]`` ends the
        stream (StopAsyncIteration) once what came before it was handed out.
        """
        pos = self._ready_pos
        if pos < len(self._ready):  # what __anext__ decoded and did not hand out yet
            out = self._ready[pos:]
            self._ready = _NOTHING
            self._ready_pos = 0
            if not self._closing:
                return out
        while True:
            idx = self._idx
            events = self._events
            end = len(events)
            if idx < end and not self._closing:
                out = []
                fast = self._fast
                while idx < end:
                    data = events[idx]
                    if fast is not None and b'"error"' not in data:
                        try:
                            out.append(fast(data))
                            idx += 1
                            continue
                        except common.FAST_DECODE_ERRORS:
                            pass  # [DONE], or an odd event: below
                    if out:
                        break  # decoded alone, by the next call
                    idx += 1
                    self._idx = idx
                    if data == DONE and self._done_marker:
                        await self._after_done()
                        raise StopAsyncIteration
                    try:
                        out.append(self._decode(data))  # names what is wrong, or decodes the odd case
                    except errors.LoraxError as exc:
                        # An error event (mapped to its class) or an event that does not
                        # decode: the stream ends here, without reading on. The server's
                        # text may quote the request: scrub its credentials.
                        self._release(reuse=False)
                        self._transport._secrets(self._options, self._request).scrub_error(exc)
                        raise
                    except BaseException:
                        self._release(reuse=False)
                        raise
                if idx == end:  # all handed out: an idle stream keeps no list
                    self._events = _NOTHING
                    idx = 0
                self._idx = idx
                self._count += len(out)
                return out
            failure = self._failure
            if failure is not None:
                self._failure = None
                raise self._error(failure) from failure
            if not self._active or self._closing:
                self._release(reuse=False)
                raise StopAsyncIteration
            try:
                chunk = await self._content.readany()
                if chunk:
                    self._events = self._decoder.feed_data(chunk)
                    self._idx = 0
                    continue
            except BaseException as exc:
                closing = self._closing
                if isinstance(exc, Exception) and not closing and not isinstance(exc, errors.LoraxError):
                    # aiohttp raises a broken connection before handing out what it had
                    # already received; decode that first, as the sync transport does.
                    self._events = self._salvage()
                    self._idx = 0
                    self._failure = exc
                self._release(reuse=False)
                if not isinstance(exc, Exception):
                    raise  # CancelledError: the response is closed, the server sees it
                if closing:
                    raise StopAsyncIteration from None
                if self._failure is None:
                    raise
                continue
            self._decoder.close()
            self._release(reuse=True)
            raise StopAsyncIteration

    async def _after_done(self) -> None:
        # [DONE] is the last event and the end of the chunked body follows at once:
        # read it (briefly, boundedly) so that the connection can be reused.
        self._events = _NOTHING
        if not self._active:
            return
        content = self._content
        if not content.at_eof() and not self._closing:
            timeout = common.DRAIN_TIMEOUT
            deadline = self._options.deadline
            if deadline.total is not None:
                remaining = deadline.remaining()
                timeout = min(timeout, remaining) if remaining else 0.0
            if timeout > 0:
                try:
                    await asyncio.wait_for(_drain(content), timeout)
                except Exception:
                    pass
        self._release(reuse=content.at_eof())

    def _salvage(self) -> list[bytes]:
        buffered = getattr(self._content, "_buffer", None)  # aiohttp's StreamReader buffer (a deque)
        if not buffered:
            return []
        try:
            data = b"".join(buffered)
            buffered.clear()
            return self._decoder.feed_data(data)
        except Exception:
            return []

    def _release(self, *, reuse: bool) -> None:
        if not self._active:
            return
        self._active = False
        resp = self._resp
        try:
            _reading(resp, None)
            if reuse:
                resp.release()
            else:
                resp.close()
        except Exception:
            pass
        slot = self._slot
        if slot is not None:
            self._slot = None
            slot.release()
        self._transport._forget(self)

    def _error(self, exc: Exception) -> errors.LoraxError:
        if isinstance(exc, errors.LoraxError):
            return exc
        where = self._transport._where
        deadline = self._options.deadline
        if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
            if deadline.expired():
                return _total(deadline, sent=True)
            return common.timeout_error(
                f"{where} sent nothing for {common.seconds(self._options.timeout.read)} after {self._count} events "
                "(read timeout)",
                phase="read",
                request_sent=True,
            )
        return common.interrupted(self._count, where, _broken_reason(exc))

    async def aclose(self) -> None:
        """Stop the stream now, without reading the rest. Idempotent; safe from another task."""
        self._closing = True
        self._release(reuse=False)

    def __del__(self) -> None:
        # Dropped without aclose(): close the response (the server stops generating)
        # and give the slot back, if the loop is still there to do it on.
        if not getattr(self, "_active", False):
            return
        self._active = False
        loop = self._transport._loop
        if loop is None or loop.is_closed():
            return
        try:
            self._resp.close()
            slot = self._slot
            if slot is not None:
                self._slot = None
                slot.release()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "open" if self._active else "closed"
        return (
            f"<async HTTP stream {self._cls.__name__} from {self._transport.describe()}: {state}, {self._count} events>"
        )


async def _drain(content: aiohttp.StreamReader) -> None:
    drained = 0
    while drained <= common.DRAIN_LIMIT:
        chunk = await content.readany()
        if not chunk:
            return
        drained += len(chunk)
