"""WebSocket transports: every call multiplexed over one connection to ``lorax gateway``.

:class:`WebSocketTransport` (threads, on ``websockets.sync``) and
:class:`AsyncWebSocketTransport` (asyncio, on ``websockets.asyncio``) speak the
``lorax.v1`` protocol of ``proto/lorax/v1/websocket.proto``: each call is a
``FrameCall`` carrying the serialized request message, answered by ``FrameHeaders``,
``FrameMessage`` frames and a ``FrameEnd`` (or a ``FrameError``). Any number of calls
and streams share one connection; frames of different calls interleave.

How the HTTP rules (see :mod:`lorax.transports.base`) carry over:

* **connect timeout**: opening the TCP connection, TLS and the WebSocket handshake,
  bounded by the smaller of the transport's ``open_timeout`` and the call's
  ``timeout.connect``, and by the call's deadline. Failures raise
  :class:`~lorax.errors.APIConnectionError` or :class:`~lorax.errors.APITimeoutError`
  (``phase="connect"``) with ``request_sent = False``. A handshake refused with an HTTP
  status (401 without the right token, 503 when the gateway is full) raises what
  that HTTP response would raise (also with ``request_sent = False``).
* **read timeout**: enforced by the gateway on LoRAX's bytes (it answers a silent
  LoRAX with a read-timeout error). Every call asks the gateway for heartbeat frames;
  once one came, a call silent for the read timeout plus min(read timeout, 1 s)
  raises the read timeout itself (a dead gateway); until then (an older gateway
  sends none) the transport waits the read timeout plus max(read timeout, 30 s). The
  deadline caps every wait. On timeout the call is cancelled at the gateway.
* **errors**: a ``FrameError`` raises exactly the class the HTTP transport raises for
  the same upstream answer (:func:`lorax.transports._ws_frames.error_from_frame`).
* **cancellation**: closing a stream, or dropping it unclosed (garbage collection),
  sends a ``FrameCancel``; the gateway then closes its upstream request, so LoRAX
  stops generating.
* **connection loss**: every call in flight fails: a stream that had begun with
  :class:`~lorax.errors.StreamInterruptedError`, any other call with
  :class:`~lorax.errors.APIConnectionError` whose ``request_sent`` is False only if
  its call frame was never written. Nothing is ever resent by the transport; the
  next call opens a new connection.
* **protocol violations** by the gateway (a malformed frame, frames out of order) close
  the connection with code 1002 and fail its calls with
  :class:`~lorax.errors.ProtocolError`.

The sync transport is safe to share between threads: a reader thread dispatches
frames to per-call queues and a writer thread sends frames in order. The reader never
blocks on a call's queue, so the connection never stalls on one slow reader; instead
each stream is flow-controlled (``stream_window_bytes``, see websocket.proto, FLOW
CONTROL): the gateway sends no more than the window ahead of what the caller has
consumed, so a slow caller buffers at most the window plus one message.

This module holds only the two transports' I/O: sockets, threads, tasks, queues and
locks. What they share (the options, the handshake's arguments and errors, the calls of
a connection, building call frames and reading answers from frames) is written once,
without I/O, in :mod:`lorax.transports._ws_core`.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from typing import Final

from websockets.asyncio.client import ClientConnection as AsyncClientConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.protocol import State
from websockets.sync.client import ClientConnection as SyncClientConnection
from websockets.sync.client import connect as sync_connect

from lorax._message import Message
from lorax._routes import Method
from lorax.transports import _ws_frames as wsf

# Also here: the defaults of the options (in _TransportCore's signature) and the
# names tests/test_fuzz.py drives the client's frame handling with.
from lorax.transports._ws_core import (
    _ALIVE,
    _CLOSE_TIMEOUT,
    _CLOSED,
    DEFAULT_OPEN_TIMEOUT,  # noqa: F401
    DEFAULT_PING_INTERVAL,  # noqa: F401
    DEFAULT_STREAM_WINDOW_BYTES,  # noqa: F401
    _Alive,
    _Call,
    _call_error,  # noqa: F401
    _cause,
    _ConnectionCore,
    _decode,  # noqa: F401
    _Failure,
    _frame_wait,
    _lost,
    _no_subprotocol,
    _open_error,
    _read_timeout,
    _Registry,  # noqa: F401
    _stream_meta,
    _StreamCore,
    _TransportCore,
    _Unary,
    _violation,
)
from lorax.transports.base import (
    AsyncMessageStream,
    AsyncTransport,
    CallOptions,
    MessageStream,
    ResponseMeta,
    Transport,
)
from lorax.v1.websocket_pb2 import Frame

__all__ = ["AsyncWebSocketTransport", "WebSocketTransport"]

# How long close() waits for the transport's own threads to end.
_JOIN_TIMEOUT: Final = 5.0

# ---------------------------------------------------------------------------------
# Sync


_SEND = 0
_CANCEL = 1
_CREDIT = 2


class _SyncConnection(_ConnectionCore):
    """One WebSocket connection with its reader and writer threads."""

    def __init__(self, ws: SyncClientConnection, url: str, max_frame_bytes: int, window: int | None) -> None:
        super().__init__(url, max_frame_bytes, window)
        self._ws = ws
        # (op, call, data) items, or None to stop. SimpleQueue.put is reentrant, so a
        # stream's __del__ can cancel its call from any thread, at any point.
        self._out: queue.SimpleQueue[tuple[int, _Call, bytes] | None] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read_loop, name="lorax-ws-reader", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name="lorax-ws-writer", daemon=True)
        self._reader.start()
        self._writer.start()

    def start_call(self, method: Method, request: Message, options: CallOptions) -> _Call | None:
        """Register a call and queue its call frame; None when the connection has ended."""
        started = self._new_call(method, request, options, queue.SimpleQueue())
        if started is None:
            return None
        call, data = started
        self._out.put((_SEND, call, data))
        return call

    def wait(self, call: _Call, options: CallOptions) -> Frame | None:
        """The call's next frame; None once the caller closed it. Raises on failures."""
        while True:
            timeout = _frame_wait(options, call)
            try:
                item = call.queue.get(timeout=timeout)
            except queue.Empty:
                options.deadline.check()
                raise _read_timeout(timeout) from None
            if item is not _ALIVE:
                break
        grant = self._taken(call, item)
        if grant:
            self._out.put((_CREDIT, call, wsf.encode_window_update(call.id, grant)))
        return item  # type: ignore[no-any-return]

    def cancel(self, call: _Call) -> None:
        """Cancel `call` at the gateway if it is still in flight. Lock-free, any thread."""
        self._out.put((_CANCEL, call, b""))

    def close(self) -> None:
        """Close the connection (1000); calls in flight fail with ClientClosedError."""
        self._fail(_CLOSED)
        with contextlib.suppress(Exception):
            self._ws.close()
        self.join()

    def join(self) -> None:
        self._reader.join(_JOIN_TIMEOUT)
        self._writer.join(_JOIN_TIMEOUT)

    def _fail(self, failure: _Failure) -> None:
        self._fail_calls(failure)
        self._out.put(None)

    def _read_loop(self) -> None:
        failure = self._broken()
        try:
            failure = self._read_frames()
        finally:
            self._fail(failure)

    def _read_frames(self) -> _Failure:
        """Read and dispatch frames until the connection ends; why it ended."""
        while True:
            try:
                data = self._ws.recv()
            except ConnectionClosed as exc:
                return _lost(self._url, exc)
            violation = self._receive(data)
            if violation is not None:
                with contextlib.suppress(Exception):
                    self._ws.close(violation.code, violation.close_reason)
                return _violation(self._url, violation)

    def _write_loop(self) -> None:
        while True:
            item = self._out.get()
            if item is None:
                return
            op, call, data = item
            if op == _CANCEL:
                if not self._forget(call):
                    continue
                data = wsf.encode_cancel(call.id)
            elif op == _CREDIT:
                with self._lock:
                    if call.id not in self._registry.calls:
                        continue  # it ended or was cancelled: no window needed
            else:
                # As in the async transport: websockets writes nothing once the
                # connection is closing (the gateway's close frame already came in).
                call.sent = self._ws.state is State.OPEN
            try:
                self._ws.send(data)
            except Exception:
                # The reader sees the connection end and fails every call.
                continue


class _SyncStream(_StreamCore[_SyncConnection], MessageStream):
    def __next__(self) -> Message:
        if self._done:
            raise StopIteration
        try:
            frame = self._conn.wait(self._call, self._options)
        except BaseException:
            self._finish(cancel=True)
            raise
        return self._message_of(frame, StopIteration)

    def close(self) -> None:
        self._stop()  # wakes a thread blocked in __next__

    def __del__(self) -> None:
        # Only lock-free work here: this may run in any thread, inside any code.
        if not getattr(self, "_done", True):
            self._conn.cancel(self._call)


class WebSocketTransport(_TransportCore[_SyncConnection], Transport):
    """A thread-safe transport to ``lorax gateway`` over one multiplexed WebSocket.

    Args:
        url: ``ws://host:port[/path]`` or ``wss://host:port[/path]``.
        headers: headers of the WebSocket handshake, for example the gateway's
            ``Authorization: Bearer <token>``. (Per-call headers travel in each call
            frame and are forwarded to LoRAX.)
        verify: for ``wss://``: True checks the certificate against the system CAs, a
            path names a CA bundle, an ``ssl.SSLContext`` is used as it is, and False
            switches verification off.
        open_timeout: the longest time to open the connection (TCP, TLS, handshake);
            a call's connect timeout and deadline can only shorten it.
        max_frame_bytes: the largest frame accepted from the gateway or sent to it.
        ping_interval: seconds between keepalive pings (the connection is dropped when
            a pong takes as long); None switches them off.
        stream_window_bytes: each stream's flow-control window: bytes of messages the
            gateway may send ahead of what the caller consumed (so what a slow caller
            buffers, plus one message); None switches flow control off.

    Raises:
        ValueError: `url` is not a ws:// or wss:// URL, its port is invalid, or it has
            a fragment.
    """

    def _init_lock(self) -> None:
        self._lock = threading.Lock()

    def unary(self, method: Method, request: Message, options: CallOptions) -> tuple[Message, ResponseMeta]:
        conn, call = self._start(method, request, options)
        answer = _Unary(method, call)
        try:
            while not answer.feed(conn.wait(call, options)):
                pass
        except BaseException:
            conn.cancel(call)
            raise
        return answer.result()

    def stream(self, method: Method, request: Message, options: CallOptions) -> MessageStream:
        conn, call = self._start(method, request, options)
        try:
            meta = _stream_meta(call, conn.wait(call, options))
        except BaseException:
            conn.cancel(call)
            raise
        return _SyncStream(conn, call, method, options, meta)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _start(self, method: Method, request: Message, options: CallOptions) -> tuple[_SyncConnection, _Call]:
        # A connection that ends between the check and the call is replaced once;
        # nothing was sent on it, so this is not a resend.
        for _ in range(2):
            conn = self._connection(options)
            call = conn.start_call(method, request, options)
            if call is not None:
                return conn, call
        raise self._keeps_closing()

    def _connection(self, options: CallOptions) -> _SyncConnection:
        conn = self._live()
        if conn is not None:
            return conn
        timeout = self._connect_timeout(options)
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            raise _open_error(TimeoutError(), self._url, timeout)
        try:
            self._check_open()
            conn = self._live()
            if conn is not None:
                return conn
            if self._conn is not None:
                self._conn.join()  # it ended on its own; its threads are on their way out
            self._conn = None
            self._conn = conn = self._open(timeout)
            return conn
        finally:
            self._lock.release()

    def _open(self, timeout: float | None) -> _SyncConnection:
        kwargs = self._connect_kwargs(sync_connect, timeout, legacy=True)
        try:
            ws = sync_connect(self._url, **kwargs)
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise self._open_failed(exc, timeout) from _cause(exc, self._url)
        if ws.subprotocol != wsf.SUBPROTOCOL:
            ws.close()
            raise _no_subprotocol(self._url)
        return _SyncConnection(ws, self._url, self._max_frame_bytes, self._window)


# ---------------------------------------------------------------------------------
# Async


class _AsyncConnection(_ConnectionCore):
    """One WebSocket connection with its reader task."""

    def __init__(self, ws: AsyncClientConnection, url: str, max_frame_bytes: int, window: int | None) -> None:
        super().__init__(url, max_frame_bytes, window)
        self._ws = ws
        self._loop = asyncio.get_running_loop()
        self._cancels: set[asyncio.Task[None]] = set()
        self._reader = self._loop.create_task(self._read_loop())

    async def start_call(self, method: Method, request: Message, options: CallOptions) -> _Call | None:
        """Register a call and send its call frame; None when the connection has ended."""
        started = self._new_call(method, request, options, asyncio.Queue())
        if started is None:
            return None
        call, data = started
        # websockets writes the frame before send() first yields, unless the
        # connection is no longer open, in which case it writes nothing.
        call.sent = self._ws.state is State.OPEN
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(data)  # the reader fails the call if this failed
        return call

    async def wait(self, call: _Call, options: CallOptions) -> Frame | None:
        """The call's next frame; None once the caller closed it. Raises on failures."""
        frames: asyncio.Queue[Frame | _Failure | _Alive | None] = call.queue
        while True:
            if frames.empty():
                timeout = _frame_wait(options, call)
                try:
                    item = await asyncio.wait_for(frames.get(), timeout)
                except asyncio.TimeoutError:
                    options.deadline.check()
                    raise _read_timeout(timeout) from None
            else:
                item = frames.get_nowait()
            if not isinstance(item, _Alive):
                break
        grant = self._taken(call, item)
        if grant and call.id in self._registry.calls:
            await self._send_quietly(wsf.encode_window_update(call.id, grant))
        return item  # type: ignore[return-value]

    def cancel(self, call: _Call) -> None:
        """Cancel `call` at the gateway if it is still in flight (from the loop)."""
        if not self._forget(call) or self._registry.failure is not None:
            return
        task = self._loop.create_task(self._send_quietly(wsf.encode_cancel(call.id)))
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    def cancel_threadsafe(self, call: _Call) -> None:
        """:meth:`cancel` from any thread, or from ``__del__``."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to cancel
            self._loop.call_soon_threadsafe(self.cancel, call)

    async def aclose(self) -> None:
        if self._cancels:  # cancel frames on their way go out first
            await asyncio.wait(list(self._cancels), timeout=_CLOSE_TIMEOUT)
        self._fail_calls(_CLOSED)
        with contextlib.suppress(Exception):
            await self._ws.close()
        with contextlib.suppress(BaseException):
            await self._reader
        for task in list(self._cancels):
            task.cancel()

    async def _send_quietly(self, data: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(data)

    async def _read_loop(self) -> None:
        failure = self._broken()
        try:
            failure = await self._read_frames()
        finally:
            self._fail_calls(failure)

    async def _read_frames(self) -> _Failure:
        """Read and dispatch frames until the connection ends; why it ended."""
        while True:
            try:
                data = await self._ws.recv()
            except ConnectionClosed as exc:
                return _lost(self._url, exc)
            violation = self._receive(data)
            if violation is not None:
                with contextlib.suppress(Exception):
                    await self._ws.close(violation.code, violation.close_reason)
                return _violation(self._url, violation)


class _AsyncStream(_StreamCore[_AsyncConnection], AsyncMessageStream):
    async def __anext__(self) -> Message:
        if self._done:
            raise StopAsyncIteration
        try:
            frame = await self._conn.wait(self._call, self._options)
        except BaseException:
            self._finish(cancel=True)
            raise
        return self._message_of(frame, StopAsyncIteration)

    async def aclose(self) -> None:
        self._stop()  # wakes a task blocked in __anext__

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self._conn.cancel_threadsafe(self._call)


class AsyncWebSocketTransport(_TransportCore[_AsyncConnection], AsyncTransport):
    """The asyncio twin of :class:`WebSocketTransport`, with the same arguments.

    Bound to the event loop it is first used on.
    """

    def _init_lock(self) -> None:
        self._lock: asyncio.Lock | None = None

    async def unary_async(self, method: Method, request: Message, options: CallOptions) -> tuple[Message, ResponseMeta]:
        conn, call = await self._start(method, request, options)
        answer = _Unary(method, call)
        try:
            while not answer.feed(await conn.wait(call, options)):
                pass
        except BaseException:
            conn.cancel(call)
            raise
        return answer.result()

    async def stream_async(self, method: Method, request: Message, options: CallOptions) -> AsyncMessageStream:
        conn, call = await self._start(method, request, options)
        try:
            meta = _stream_meta(call, await conn.wait(call, options))
        except BaseException:
            conn.cancel(call)
            raise
        return _AsyncStream(conn, call, method, options, meta)

    async def aclose(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.aclose()

    async def _start(self, method: Method, request: Message, options: CallOptions) -> tuple[_AsyncConnection, _Call]:
        for _ in range(2):
            conn = await self._connection(options)
            call = await conn.start_call(method, request, options)
            if call is not None:
                return conn, call
        raise self._keeps_closing()

    async def _connection(self, options: CallOptions) -> _AsyncConnection:
        conn = self._live()
        if conn is not None:
            return conn
        self._check_open()
        timeout = self._connect_timeout(options)
        if self._lock is None:
            self._lock = asyncio.Lock()
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout)
        except asyncio.TimeoutError:
            raise _open_error(TimeoutError(), self._url, timeout) from None
        try:
            self._check_open()
            conn = self._live()
            if conn is not None:
                return conn
            self._conn = None
            self._conn = conn = await self._open(timeout)
            return conn
        finally:
            self._lock.release()

    async def _open(self, timeout: float | None) -> _AsyncConnection:
        kwargs = self._connect_kwargs(async_connect.__init__, timeout)
        try:
            ws = await async_connect(self._url, **kwargs)
        except (OSError, asyncio.TimeoutError, TimeoutError, WebSocketException) as exc:
            raise self._open_failed(exc, timeout) from _cause(exc, self._url)
        if ws.subprotocol != wsf.SUBPROTOCOL:
            await ws.close()
            raise _no_subprotocol(self._url)
        return _AsyncConnection(ws, self._url, self._max_frame_bytes, self._window)
