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
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import queue
import ssl
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, TypeVar
from urllib.parse import unquote, urlsplit

from google.protobuf.message import DecodeError
from websockets.asyncio.client import ClientConnection as AsyncClientConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.protocol import State
from websockets.sync.client import ClientConnection as SyncClientConnection
from websockets.sync.client import connect as sync_connect

from lorax import errors
from lorax._message import Message
from lorax._pbwire import from_binary, to_binary
from lorax._redact import HeaderRedactingLogger, Secrets, redact_url
from lorax._routes import Method
from lorax.transports import _ws_frames as wsf
from lorax.transports.base import (
    AsyncMessageStream,
    AsyncTransport,
    CallOptions,
    MessageStream,
    ResponseMeta,
    Transport,
    lower_headers,
)
from lorax.v1.websocket_pb2 import Frame

__all__ = ["AsyncWebSocketTransport", "WebSocketTransport"]

DEFAULT_OPEN_TIMEOUT: Final = 10.0
DEFAULT_PING_INTERVAL: Final = 20.0
#: The flow-control window of each stream: bytes of messages the gateway may send
#: ahead of what the caller has consumed (see websocket.proto, FLOW CONTROL).
DEFAULT_STREAM_WINDOW_BYTES: Final = 1024 * 1024
# How long closing waits for the gateway's close frame before dropping the socket.
_CLOSE_TIMEOUT: Final = 5.0
# How long close() waits for the transport's own threads to end.
_JOIN_TIMEOUT: Final = 5.0
# websockets logs every handshake header at DEBUG, the gateway's token included.
_LOGGER: Final = HeaderRedactingLogger("websockets.client")


# ---------------------------------------------------------------------------------
# Shared helpers


def _check_url(url: str) -> str:
    shown = redact_url(url.split("#", 1)[0])
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"a WebSocket URL looks like ws://host:port or wss://host:port, not {shown!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise ValueError(f"the WebSocket URL has an invalid port: {shown!r}") from None
    if parts.username is not None and parts.password is None:
        raise ValueError(f"the WebSocket URL has a user name without a password: {shown!r}")
    if "#" in url:
        # RFC 6455 forbids fragments in WebSocket URIs; websockets would refuse it later
        # in an error that quotes the whole URL, password included.
        raise ValueError(f"a WebSocket URL cannot have a fragment (#...): {shown!r}")
    return url


def _cause(exc: BaseException, url: str) -> BaseException | None:
    """`exc`, to chain to the error raised for it, unless its text quotes the URL's
    credentials (websockets' InvalidURI does): tracebacks get printed and logged."""
    text = str(exc)
    return None if any(secret in text for secret in _url_secrets(url)) else exc


def _url_secrets(url: str) -> list[str]:
    """The credentials in a URL's ``user:password@`` part, as written and decoded."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    out: list[str] = []
    userinfo = parts.netloc.rpartition("@")[0]
    if userinfo:
        out.append(userinfo)
    for value in (parts.password, parts.username if parts.password is None else None):
        if value:
            out += [value, unquote(value)]
    return out


def _ssl_context(url: str, verify: bool | str | ssl.SSLContext) -> ssl.SSLContext | None:
    if urlsplit(url).scheme != "wss":
        return None
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return ssl.create_default_context()


def _min(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _supported(func: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` without the ones `func` does not take (older websockets releases).

    ``proxy`` (no system proxy, as the HTTP transports) came in websockets 15, the sync
    client's keepalive pings in 15, and ``legacy=True`` (a plain connection without the
    17.1 deprecation warning) in 17.1.
    """
    accepted = inspect.signature(func).parameters
    return {name: value for name, value in kwargs.items() if name in accepted}


_E = TypeVar("_E", bound=errors.LoraxError)


def _request_sent(err: _E, sent: bool) -> _E:
    """Mark `err` with whether the call may have reached the gateway (see base.py)."""
    err.request_sent = sent  # type: ignore[attr-defined]
    return err


def _open_error(
    exc: BaseException, url: str, timeout: float | None, headers: Mapping[str, str] | None = None
) -> errors.LoraxError:
    """The error for a failed connection attempt; nothing reached the gateway.

    `headers` are the handshake's: a refusal that quotes them has their credentials
    scrubbed out.
    """
    err: errors.LoraxError
    where = redact_url(url)
    # websockets' own messages can quote the URL whole (InvalidURI), credentials and all.
    secrets = Secrets.of(_url_secrets(url), headers)
    if isinstance(exc, InvalidStatus):
        response = exc.response
        err = errors.error_from_response(
            response.status_code,
            lower_headers(response.headers.raw_items()),
            bytes(response.body or b""),
            request_method="GET",
            request_url=where,
        )
        if response.status_code in (401, 403):
            # The gateway's own token (``lorax gateway --auth-token``) goes in the
            # handshake only; the client's headers are forwarded to LoRAX with each call.
            sent = any(name.lower() == "authorization" for name in (headers or {}))
            err.hint = (
                "the lorax gateway refused the token in gateway_headers (lorax CLI: --gateway-token)"
                if sent
                else "the lorax gateway wants a token: pass gateway_headers={'Authorization': 'Bearer ...'} "
                "(lorax CLI: --gateway-token or LORAX_GATEWAY_TOKEN)"
            )
        secrets.scrub_error(err)
    elif isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        limit = f" after {timeout:g} s" if timeout is not None else ""
        err = errors.APITimeoutError(f"opening the WebSocket connection to {where} timed out{limit}", phase="connect")
    else:
        err = errors.APIConnectionError(secrets.scrub(f"could not open a WebSocket connection to {where}: {exc}"))
    return _request_sent(err, False)


def _no_subprotocol(url: str) -> errors.ProtocolError:
    return errors.ProtocolError(
        f"the server at {redact_url(url)} did not accept the {wsf.SUBPROTOCOL} subprotocol: is it a lorax gateway?"
    )


def _closed_description(exc: ConnectionClosed) -> str:
    close = exc.rcvd if exc.rcvd is not None else exc.sent
    if close is None:
        return wsf.close_description(None, None)
    return wsf.close_description(close.code, close.reason)


class _Failure:
    """Why a connection ended, turned into the exception of each call it had."""

    __slots__ = ("kind", "message")

    def __init__(self, kind: Literal["closed", "lost", "protocol"], message: str) -> None:
        self.kind = kind
        self.message = message

    def error_for(self, progress: wsf.CallProgress, sent: bool) -> errors.LoraxError:
        if self.kind == "closed":
            return errors.ClientClosedError(self.message)
        if self.kind == "protocol":
            return errors.ProtocolError(self.message)
        if progress.started and progress.streaming:
            return errors.StreamInterruptedError(self.message)
        return _request_sent(errors.APIConnectionError(self.message), sent or progress.started)


_CLOSED = _Failure("closed", "the WebSocket transport was closed")


def _lost(url: str, exc: ConnectionClosed) -> _Failure:
    return _Failure("lost", f"the WebSocket connection to {redact_url(url)} closed {_closed_description(exc)}")


def _violation(url: str, violation: wsf.FrameViolation) -> _Failure:
    return _Failure("protocol", f"the gateway at {redact_url(url)} broke the lorax.v1 protocol: {violation.reason}")


def _meta(frame: Frame) -> ResponseMeta:
    return ResponseMeta(status_code=frame.headers.status, headers=dict(frame.headers.headers))


def _decode(method: Method, frame: Frame) -> Message:
    try:
        message: Message = from_binary(method.output_type, frame.message.message)
    except (DecodeError, UnicodeDecodeError):  # protobuf < 4 raises the latter for bad UTF-8
        raise errors.ResponseDecodeError(
            f"{method.name}: a message frame does not hold a {method.output_type.__lorax_full_name__}"
        ) from None
    except errors.InvalidRequestError as exc:
        raise errors.ResponseDecodeError(f"{method.name}: {exc}") from None
    return message


def _too_big(size: int, limit: int) -> errors.InvalidRequestError:
    return errors.InvalidRequestError(
        f"the request frame is {size} bytes, above the WebSocket frame limit of {limit} bytes (max_frame_bytes)"
    )


def _call_error(call: _Call, frame: Frame) -> errors.LoraxError:
    """The exception for `call`'s FrameError, the call's credentials scrubbed out of it.

    An upstream error can quote the request (its headers, its ``api_token``); a gateway
    is expected to scrub those, but the client does not count on it.
    """
    err = wsf.error_from_frame(frame.error)
    Secrets.of((), *call.origin).scrub_error(err)
    return err


def _frame_wait(options: CallOptions, call: _Call) -> float | None:
    """How long to wait for a call's next frame.

    The read timeout is idle time between bytes from LoRAX, which only the gateway
    sees: it enforces the timeout upstream (the call frame carries it) and answers a
    silent LoRAX with a read_timeout error frame. Bytes that complete no event (a slow
    trickle, LoRAX's keep-alive comments) send no frame, but a gateway that knows
    heartbeats sends one at least every quarter of the read timeout while the call is
    alive: once the call has seen one, a silence of the read timeout (plus a margin
    for the network) means the gateway is gone. Before that (an older gateway sends
    none), the client's timer is only a backstop, with room beyond the read timeout.
    """
    read = options.timeout.read
    if read is None:
        return options.deadline.cap(None)
    if call.alive:
        return options.deadline.cap(read + min(read, _LIVE_MARGIN))
    return options.deadline.cap(read + max(read, _BACKSTOP_MIN))


# Seconds added at least to the read timeout before the client gives up on a call's
# next frame by itself while the gateway has sent no heartbeat (see _frame_wait).
_BACKSTOP_MIN = 30.0
# Seconds added at most to the read timeout once heartbeats came (see _frame_wait).
_LIVE_MARGIN = 1.0


class _Alive:
    """Put in a call's queue for a heartbeat: wakes its waiter, which waits afresh."""


_ALIVE: Final = _Alive()


def _read_timeout(timeout: float | None) -> errors.APITimeoutError:
    return errors.APITimeoutError(f"no answer from the gateway for {timeout:g} s (read timeout)", phase="read")


class _Call:
    """One call in flight: its frames' queue, how far it got, its flow control."""

    __slots__ = ("alive", "consumed", "id", "origin", "progress", "queue", "sent", "window")

    def __init__(self, call_id: int, streaming: bool, frames: Any, origin: tuple[Mapping[str, str], Message]) -> None:
        self.id = call_id
        # The call's headers and request: the credentials to scrub out of its errors.
        self.origin = origin
        self.progress = wsf.CallProgress(streaming=streaming)
        # Frames of the call; a _Failure when the connection ended; None when the
        # caller closed the stream (from another thread or task).
        self.queue = frames
        # The call frame was handed to the socket (it may have reached the gateway).
        self.sent = False
        # A FrameHeartbeat came: the gateway sends them (see _frame_wait).
        self.alive = False
        # The flow-control window the gateway granted in FrameHeaders (0: none), and
        # the message bytes consumed since the last FrameWindowUpdate.
        self.window = 0
        self.consumed = 0

    def note_consumed(self, frame: Frame) -> int:
        """Count a message frame the caller took; the bytes to grant now, or 0."""
        if not self.window or frame.WhichOneof("kind") != "message":
            return 0
        self.consumed += len(frame.message.message)
        # Granted in halves of the window, as HTTP/2 implementations do: few updates,
        # and the gateway never waits while the caller keeps up.
        if self.consumed < (self.window + 1) // 2:
            return 0
        grant, self.consumed = self.consumed, 0
        return grant


def _deliver(call: _Call, frame: Frame, put: Callable[[Any], None], empty: Callable[[], bool]) -> None:
    """Hand a routed frame to its call's queue (a heartbeat only as a wake-up)."""
    kind = frame.WhichOneof("kind")
    if kind == "heartbeat":
        call.alive = True
        if empty():  # a waiter, if any, restarts its timer; a backlog needs no wake-up
            put(_ALIVE)
        return
    if kind == "headers":
        call.window = frame.headers.window_bytes
    put(frame)


class _Registry:
    """The calls of one connection: id allocation, dispatch and the order checks.

    Used by both shells; the sync one calls it under its lock.
    """

    __slots__ = ("calls", "failure", "next_id")

    def __init__(self) -> None:
        self.calls: dict[int, _Call] = {}
        self.next_id = 1
        self.failure: _Failure | None = None

    def new_id(self) -> int:
        call_id = self.next_id
        self.next_id += 1
        return call_id

    def route(self, frame: Frame) -> _Call | None:
        """The call `frame` is for, after checking its order; None for a late frame.

        Frames of a call the client cancelled keep arriving for a moment and are
        dropped. Raises FrameViolation for a call id never started, and for frames
        out of order.
        """
        call = self.calls.get(frame.call_id)
        if call is None:
            if frame.call_id >= self.next_id:
                raise wsf.FrameViolation(wsf.CLOSE_PROTOCOL_ERROR, f"frame for call {frame.call_id}, never started")
            return None
        call.progress.feed(frame.WhichOneof("kind") or "", frame.call_id)
        if call.progress.done:
            del self.calls[frame.call_id]
        return call

    def fail(self, failure: _Failure) -> list[_Call]:
        """Record why the connection ended (the first reason wins); return its calls."""
        if self.failure is None:
            self.failure = failure
        calls = list(self.calls.values())
        self.calls.clear()
        return calls


# ---------------------------------------------------------------------------------
# Sync


_SEND = 0
_CANCEL = 1
_CREDIT = 2


class _SyncConnection:
    """One WebSocket connection with its reader and writer threads."""

    def __init__(self, ws: SyncClientConnection, url: str, max_frame_bytes: int, window: int | None) -> None:
        self._ws = ws
        self._url = url
        self._max_frame_bytes = max_frame_bytes
        self._window = window
        self._lock = threading.Lock()
        self._registry = _Registry()
        # (op, call, data) items, or None to stop. SimpleQueue.put is reentrant, so a
        # stream's __del__ can cancel its call from any thread, at any point.
        self._out: queue.SimpleQueue[tuple[int, _Call, bytes] | None] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read_loop, name="lorax-ws-reader", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name="lorax-ws-writer", daemon=True)
        self._reader.start()
        self._writer.start()

    @property
    def usable(self) -> bool:
        return self._registry.failure is None

    def start_call(self, method: Method, request: Message, options: CallOptions) -> _Call | None:
        """Register a call and queue its call frame; None when the connection has ended."""
        payload = to_binary(request)
        with self._lock:
            if self._registry.failure is not None:
                return None
            call = _Call(
                self._registry.new_id(), method.server_streaming, queue.SimpleQueue(), (options.headers, request)
            )
            self._registry.calls[call.id] = call
        data = wsf.encode_call(
            call.id,
            method.full_name,
            payload,
            options.headers,
            read_timeout=options.timeout.read,
            deadline=options.deadline.remaining(),
            window_bytes=self._window if method.server_streaming else None,
            heartbeats=True,
        )
        if len(data) > self._max_frame_bytes:
            self._forget(call)
            raise _too_big(len(data), self._max_frame_bytes)
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
        if isinstance(item, _Failure):
            raise item.error_for(call.progress, call.sent)
        if item is not None:
            grant = call.note_consumed(item)
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

    def _forget(self, call: _Call) -> bool:
        with self._lock:
            return self._registry.calls.pop(call.id, None) is not None

    def _fail(self, failure: _Failure) -> None:
        with self._lock:
            calls = self._registry.fail(failure)
            failure = self._registry.failure or failure
        for call in calls:
            call.queue.put(failure)
        self._out.put(None)

    def _read_loop(self) -> None:
        failure = _Failure("lost", f"the WebSocket connection to {redact_url(self._url)} failed")
        try:
            while True:
                try:
                    data = self._ws.recv()
                except ConnectionClosed as exc:
                    failure = _lost(self._url, exc)
                    return
                try:
                    frame = wsf.parse_frame(data, sender="gateway")
                    with self._lock:
                        call = self._registry.route(frame)
                except wsf.FrameViolation as violation:
                    failure = _violation(self._url, violation)
                    with contextlib.suppress(Exception):
                        self._ws.close(violation.code, violation.close_reason)
                    return
                if call is not None:
                    _deliver(call, frame, call.queue.put, call.queue.empty)
        finally:
            self._fail(failure)

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
                call.sent = True
            try:
                self._ws.send(data)
            except Exception:
                # The reader sees the connection end and fails every call.
                continue


class _SyncStream(MessageStream):
    def __init__(
        self, conn: _SyncConnection, call: _Call, method: Method, options: CallOptions, meta: ResponseMeta
    ) -> None:
        self.meta = meta
        self._conn = conn
        self._call = call
        self._method = method
        self._options = options
        self._done = False

    def __next__(self) -> Message:
        if self._done:
            raise StopIteration
        try:
            frame = self._conn.wait(self._call, self._options)
            if frame is None:
                raise StopIteration
            kind = frame.WhichOneof("kind")
            if kind == "message":
                return _decode(self._method, frame)
        except BaseException:
            self._finish(cancel=True)
            raise
        self._finish(cancel=False)
        if kind == "end":
            raise StopIteration
        raise _call_error(self._call, frame)

    def _finish(self, *, cancel: bool) -> None:
        if not self._done:
            self._done = True
            if cancel:
                self._conn.cancel(self._call)

    def close(self) -> None:
        if not self._done:
            self._finish(cancel=True)
            self._call.queue.put(None)  # wakes a thread blocked in __next__

    def __del__(self) -> None:
        # Only lock-free work here: this may run in any thread, inside any code.
        if not getattr(self, "_done", True):
            self._conn.cancel(self._call)


class WebSocketTransport(Transport):
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

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        verify: bool | str | ssl.SSLContext = True,
        open_timeout: float = DEFAULT_OPEN_TIMEOUT,
        max_frame_bytes: int = wsf.DEFAULT_MAX_FRAME_BYTES,
        ping_interval: float | None = DEFAULT_PING_INTERVAL,
        stream_window_bytes: int | None = DEFAULT_STREAM_WINDOW_BYTES,
    ) -> None:
        self._url = _check_url(url)
        self._headers = dict(headers or {})
        self._ssl = _ssl_context(url, verify)
        self._open_timeout = open_timeout
        self._max_frame_bytes = max_frame_bytes
        self._ping_interval = ping_interval
        if stream_window_bytes is not None and stream_window_bytes < 1:
            raise ValueError(f"stream_window_bytes must be at least 1 or None; got {stream_window_bytes!r}")
        self._window = stream_window_bytes
        self._lock = threading.Lock()
        self._conn: _SyncConnection | None = None
        self._closed = False

    def describe(self) -> str:
        return f"WebSocketTransport({redact_url(self._url)})"

    def unary(self, method: Method, request: Message, options: CallOptions) -> tuple[Message, ResponseMeta]:
        conn, call = self._start(method, request, options)
        meta = ResponseMeta()
        message: Message | None = None
        try:
            while True:
                frame = conn.wait(call, options)
                assert frame is not None  # None only ends a stream closed by its caller
                kind = frame.WhichOneof("kind")
                if kind == "headers":
                    meta = _meta(frame)
                elif kind == "message":
                    message = _decode(method, frame)
                elif kind == "end":
                    assert message is not None  # CallProgress saw the one message
                    return message, meta
                else:
                    raise _call_error(call, frame)
        except BaseException:
            conn.cancel(call)
            raise

    def stream(self, method: Method, request: Message, options: CallOptions) -> MessageStream:
        conn, call = self._start(method, request, options)
        try:
            frame = conn.wait(call, options)
            assert frame is not None
            if frame.WhichOneof("kind") != "headers":
                raise _call_error(call, frame)
        except BaseException:
            conn.cancel(call)
            raise
        return _SyncStream(conn, call, method, options, _meta(frame))

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
        raise _request_sent(
            errors.APIConnectionError(f"the WebSocket connection to {redact_url(self._url)} keeps closing"), False
        )

    def _connection(self, options: CallOptions) -> _SyncConnection:
        conn = self._conn
        if conn is not None and conn.usable:
            return conn
        timeout = options.deadline.cap(_min(self._open_timeout, options.timeout.connect))
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            raise _open_error(TimeoutError(), self._url, timeout)
        try:
            if self._closed:
                raise errors.ClientClosedError("the WebSocket transport was closed")
            conn = self._conn
            if conn is not None and conn.usable:
                return conn
            if conn is not None:
                conn.join()  # it ended on its own; its threads are on their way out
            self._conn = None
            self._conn = conn = self._open(timeout)
            return conn
        finally:
            self._lock.release()

    def _open(self, timeout: float | None) -> _SyncConnection:
        kwargs = _supported(
            sync_connect,
            {
                "additional_headers": self._headers,
                "subprotocols": [wsf.SUBPROTOCOL],
                "compression": None,
                "open_timeout": timeout,
                "ping_interval": self._ping_interval,
                "ping_timeout": self._ping_interval,
                "close_timeout": _CLOSE_TIMEOUT,
                "max_size": self._max_frame_bytes,
                "proxy": None,
                "legacy": True,
                "logger": _LOGGER,
            },
        )
        if self._ssl is not None:
            kwargs["ssl"] = self._ssl
        try:
            ws = sync_connect(self._url, **kwargs)
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise _open_error(exc, self._url, timeout, self._headers) from _cause(exc, self._url)
        if ws.subprotocol != wsf.SUBPROTOCOL:
            ws.close()
            raise _no_subprotocol(self._url)
        return _SyncConnection(ws, self._url, self._max_frame_bytes, self._window)


# ---------------------------------------------------------------------------------
# Async


class _AsyncConnection:
    """One WebSocket connection with its reader task."""

    def __init__(self, ws: AsyncClientConnection, url: str, max_frame_bytes: int, window: int | None) -> None:
        self._ws = ws
        self._url = url
        self._max_frame_bytes = max_frame_bytes
        self._window = window
        self._loop = asyncio.get_running_loop()
        self._registry = _Registry()
        self._cancels: set[asyncio.Task[None]] = set()
        self._reader = self._loop.create_task(self._read_loop())

    @property
    def usable(self) -> bool:
        return self._registry.failure is None

    async def start_call(self, method: Method, request: Message, options: CallOptions) -> _Call | None:
        """Register a call and send its call frame; None when the connection has ended."""
        if self._registry.failure is not None:
            return None
        call = _Call(self._registry.new_id(), method.server_streaming, asyncio.Queue(), (options.headers, request))
        data = wsf.encode_call(
            call.id,
            method.full_name,
            to_binary(request),
            options.headers,
            read_timeout=options.timeout.read,
            deadline=options.deadline.remaining(),
            window_bytes=self._window if method.server_streaming else None,
            heartbeats=True,
        )
        if len(data) > self._max_frame_bytes:
            raise _too_big(len(data), self._max_frame_bytes)
        self._registry.calls[call.id] = call
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
        if isinstance(item, _Failure):
            raise item.error_for(call.progress, call.sent)
        if item is not None:
            grant = call.note_consumed(item)
            if grant and call.id in self._registry.calls:
                await self._send_quietly(wsf.encode_window_update(call.id, grant))
        return item

    def cancel(self, call: _Call) -> None:
        """Cancel `call` at the gateway if it is still in flight (from the loop)."""
        if self._registry.calls.pop(call.id, None) is None or self._registry.failure is not None:
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
        self._fail(_CLOSED)
        with contextlib.suppress(Exception):
            await self._ws.close()
        with contextlib.suppress(BaseException):
            await self._reader
        for task in list(self._cancels):
            task.cancel()

    async def _send_quietly(self, data: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(data)

    def _fail(self, failure: _Failure) -> None:
        calls = self._registry.fail(failure)
        failure = self._registry.failure or failure
        for call in calls:
            call.queue.put_nowait(failure)

    async def _read_loop(self) -> None:
        failure = _Failure("lost", f"the WebSocket connection to {redact_url(self._url)} failed")
        try:
            while True:
                try:
                    data = await self._ws.recv()
                except ConnectionClosed as exc:
                    failure = _lost(self._url, exc)
                    return
                try:
                    frame = wsf.parse_frame(data, sender="gateway")
                    call = self._registry.route(frame)
                except wsf.FrameViolation as violation:
                    failure = _violation(self._url, violation)
                    with contextlib.suppress(Exception):
                        await self._ws.close(violation.code, violation.close_reason)
                    return
                if call is not None:
                    _deliver(call, frame, call.queue.put_nowait, call.queue.empty)
        finally:
            self._fail(failure)


class _AsyncStream(AsyncMessageStream):
    def __init__(
        self, conn: _AsyncConnection, call: _Call, method: Method, options: CallOptions, meta: ResponseMeta
    ) -> None:
        self.meta = meta
        self._conn = conn
        self._call = call
        self._method = method
        self._options = options
        self._done = False

    async def __anext__(self) -> Message:
        if self._done:
            raise StopAsyncIteration
        try:
            frame = await self._conn.wait(self._call, self._options)
            if frame is None:
                raise StopAsyncIteration
            kind = frame.WhichOneof("kind")
            if kind == "message":
                return _decode(self._method, frame)
        except BaseException:
            self._finish(cancel=True)
            raise
        self._finish(cancel=False)
        if kind == "end":
            raise StopAsyncIteration
        raise _call_error(self._call, frame)

    def _finish(self, *, cancel: bool) -> None:
        if not self._done:
            self._done = True
            if cancel:
                self._conn.cancel(self._call)

    async def aclose(self) -> None:
        if not self._done:
            self._finish(cancel=True)
            self._call.queue.put_nowait(None)  # wakes a task blocked in __anext__

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self._conn.cancel_threadsafe(self._call)


class AsyncWebSocketTransport(AsyncTransport):
    """The asyncio twin of :class:`WebSocketTransport`, with the same arguments.

    Bound to the event loop it is first used on.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        verify: bool | str | ssl.SSLContext = True,
        open_timeout: float = DEFAULT_OPEN_TIMEOUT,
        max_frame_bytes: int = wsf.DEFAULT_MAX_FRAME_BYTES,
        ping_interval: float | None = DEFAULT_PING_INTERVAL,
        stream_window_bytes: int | None = DEFAULT_STREAM_WINDOW_BYTES,
    ) -> None:
        self._url = _check_url(url)
        self._headers = dict(headers or {})
        self._ssl = _ssl_context(url, verify)
        self._open_timeout = open_timeout
        self._max_frame_bytes = max_frame_bytes
        self._ping_interval = ping_interval
        if stream_window_bytes is not None and stream_window_bytes < 1:
            raise ValueError(f"stream_window_bytes must be at least 1 or None; got {stream_window_bytes!r}")
        self._window = stream_window_bytes
        self._lock: asyncio.Lock | None = None
        self._conn: _AsyncConnection | None = None
        self._closed = False

    def describe(self) -> str:
        return f"AsyncWebSocketTransport({redact_url(self._url)})"

    async def unary_async(self, method: Method, request: Message, options: CallOptions) -> tuple[Message, ResponseMeta]:
        conn, call = await self._start(method, request, options)
        meta = ResponseMeta()
        message: Message | None = None
        try:
            while True:
                frame = await conn.wait(call, options)
                assert frame is not None  # None only ends a stream closed by its caller
                kind = frame.WhichOneof("kind")
                if kind == "headers":
                    meta = _meta(frame)
                elif kind == "message":
                    message = _decode(method, frame)
                elif kind == "end":
                    assert message is not None  # CallProgress saw the one message
                    return message, meta
                else:
                    raise _call_error(call, frame)
        except BaseException:
            conn.cancel(call)
            raise

    async def stream_async(self, method: Method, request: Message, options: CallOptions) -> AsyncMessageStream:
        conn, call = await self._start(method, request, options)
        try:
            frame = await conn.wait(call, options)
            assert frame is not None
            if frame.WhichOneof("kind") != "headers":
                raise _call_error(call, frame)
        except BaseException:
            conn.cancel(call)
            raise
        return _AsyncStream(conn, call, method, options, _meta(frame))

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
        raise _request_sent(
            errors.APIConnectionError(f"the WebSocket connection to {redact_url(self._url)} keeps closing"), False
        )

    async def _connection(self, options: CallOptions) -> _AsyncConnection:
        conn = self._conn
        if conn is not None and conn.usable:
            return conn
        if self._closed:
            raise errors.ClientClosedError("the WebSocket transport was closed")
        timeout = options.deadline.cap(_min(self._open_timeout, options.timeout.connect))
        if self._lock is None:
            self._lock = asyncio.Lock()
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout)
        except asyncio.TimeoutError:
            raise _open_error(TimeoutError(), self._url, timeout) from None
        try:
            if self._closed:
                raise errors.ClientClosedError("the WebSocket transport was closed")
            conn = self._conn
            if conn is not None and conn.usable:
                return conn
            self._conn = None
            self._conn = conn = await self._open(timeout)
            return conn
        finally:
            self._lock.release()

    async def _open(self, timeout: float | None) -> _AsyncConnection:
        kwargs = _supported(
            async_connect.__init__,
            {
                "additional_headers": self._headers,
                "subprotocols": [wsf.SUBPROTOCOL],
                "compression": None,
                "open_timeout": timeout,
                "ping_interval": self._ping_interval,
                "ping_timeout": self._ping_interval,
                "close_timeout": _CLOSE_TIMEOUT,
                "max_size": self._max_frame_bytes,
                "proxy": None,
                "logger": _LOGGER,
            },
        )
        if self._ssl is not None:
            kwargs["ssl"] = self._ssl
        try:
            ws = await async_connect(self._url, **kwargs)
        except (OSError, asyncio.TimeoutError, TimeoutError, WebSocketException) as exc:
            raise _open_error(exc, self._url, timeout, self._headers) from _cause(exc, self._url)
        if ws.subprotocol != wsf.SUBPROTOCOL:
            await ws.close()
            raise _no_subprotocol(self._url)
        return _AsyncConnection(ws, self._url, self._max_frame_bytes, self._window)
