"""The client side of the WebSocket transports without I/O: what the sync and asyncio
transports of :mod:`lorax.transports.websocket` share.

As websockets itself shares one sans-I/O protocol between its threaded and asyncio
implementations, the two transports keep only their reading, writing, waiting and
locking; everything else is here once: the constructor's options and their checks
(:class:`_TransportCore`), the handshake's arguments and its failures, the calls of one
connection and the frames that route to them (:class:`_ConnectionCore`, :class:`_Registry`),
building a call frame, and what each received frame means for a unary call
(:class:`_Unary`) or a stream (:class:`_StreamCore`). The frames themselves are built
and parsed by :mod:`lorax.transports._ws_frames`, shared with the gateway.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final, Generic, Literal, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

from google.protobuf.message import DecodeError
from websockets.exceptions import ConnectionClosed, InvalidStatus

from lorax import errors
from lorax._message import Message
from lorax._pbwire import from_binary, to_binary
from lorax._redact import HeaderRedactingLogger, Secrets, redact_url
from lorax._routes import Method
from lorax.transports import _ws_frames as wsf
from lorax.transports.base import CallOptions, ResponseMeta, lower_headers
from lorax.v1.websocket_pb2 import Frame

DEFAULT_OPEN_TIMEOUT: Final = 10.0
DEFAULT_PING_INTERVAL: Final = 20.0
#: The flow-control window of each stream: bytes of messages the gateway may send
#: ahead of what the caller has consumed (see websocket.proto, FLOW CONTROL).
DEFAULT_STREAM_WINDOW_BYTES: Final = 1024 * 1024
# How long closing waits for the gateway's close frame before dropping the socket.
_CLOSE_TIMEOUT: Final = 5.0
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

    Used by both transports' connections, under their lock (see _ConnectionCore).
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
# One connection


class _ConnectionCore:
    """What both connections do between their reads and writes.

    The lock guards the registry: the sync connection's reader, writer and callers run
    in different threads. The asyncio connection's code between awaits runs alone; it
    takes the lock all the same (never contended, and cheaper than a null context).
    """

    def __init__(self, url: str, max_frame_bytes: int, window: int | None) -> None:
        self._url = url
        self._max_frame_bytes = max_frame_bytes
        self._window = window
        self._lock = threading.Lock()
        self._registry = _Registry()

    @property
    def usable(self) -> bool:
        return self._registry.failure is None

    def _new_call(
        self, method: Method, request: Message, options: CallOptions, frames: Any
    ) -> tuple[_Call, bytes] | None:
        """Register a call and build its call frame; None when the connection has ended."""
        payload = to_binary(request)
        with self._lock:
            if self._registry.failure is not None:
                return None
            call = _Call(self._registry.new_id(), method.server_streaming, frames, (options.headers, request))
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
        return call, data

    def _taken(self, call: _Call, item: Frame | _Failure | None) -> int:
        """Account for what a wait took from `call`'s queue: raises the error of a
        failure; returns the window bytes to grant the gateway now (0: none)."""
        if isinstance(item, _Failure):
            raise item.error_for(call.progress, call.sent)
        if item is None:
            return 0
        return call.note_consumed(item)

    def _forget(self, call: _Call) -> bool:
        """Drop `call` from the registry; False if it had already ended or gone."""
        with self._lock:
            return self._registry.calls.pop(call.id, None) is not None

    def _fail_calls(self, failure: _Failure) -> None:
        """End the connection's calls with `failure` (or the reason recorded first)."""
        with self._lock:
            calls = self._registry.fail(failure)
            failure = self._registry.failure or failure
        for call in calls:
            call.queue.put_nowait(failure)

    def _broken(self) -> _Failure:
        """Why the connection ended when its reader stopped for no reason it knows."""
        return _Failure("lost", f"the WebSocket connection to {redact_url(self._url)} failed")

    def _receive(self, data: bytes | str) -> wsf.FrameViolation | None:
        """Hand a received message to its call; a protocol violation is returned: the
        reader closes the connection with its code and fails the calls with ``_violation``."""
        try:
            frame = wsf.parse_frame(data, sender="gateway")
            with self._lock:
                call = self._registry.route(frame)
        except wsf.FrameViolation as violation:
            return violation
        if call is not None:
            _deliver(call, frame, call.queue.put_nowait, call.queue.empty)
        return None


# ---------------------------------------------------------------------------------
# The frames of one call


class _Unary:
    """The answer of a unary call, built from its frames in the order CallProgress checked."""

    __slots__ = ("_call", "_message", "_meta", "_method")

    def __init__(self, method: Method, call: _Call) -> None:
        self._method = method
        self._call = call
        self._meta = ResponseMeta()
        self._message: Message | None = None

    def feed(self, frame: Frame | None) -> bool:
        """Take the call's next frame; True once the answer is complete."""
        assert frame is not None  # None only ends a stream closed by its caller
        kind = frame.WhichOneof("kind")
        if kind == "headers":
            self._meta = _meta(frame)
        elif kind == "message":
            self._message = _decode(self._method, frame)
        elif kind == "end":
            return True
        else:
            raise _call_error(self._call, frame)
        return False

    def result(self) -> tuple[Message, ResponseMeta]:
        assert self._message is not None  # CallProgress saw the one message
        return self._message, self._meta


def _stream_meta(call: _Call, frame: Frame | None) -> ResponseMeta:
    """The metadata of a stream's first frame, its headers; raises the call's error."""
    assert frame is not None
    if frame.WhichOneof("kind") != "headers":
        raise _call_error(call, frame)
    return _meta(frame)


class _Canceller(Protocol):
    def cancel(self, call: _Call) -> None: ...


_Conn = TypeVar("_Conn", bound=_Canceller)


class _StreamCore(Generic[_Conn]):
    """What the sync and async streams share: their state, how they end, what a frame means."""

    def __init__(self, conn: _Conn, call: _Call, method: Method, options: CallOptions, meta: ResponseMeta) -> None:
        self.meta = meta
        self._conn = conn
        self._call = call
        self._method = method
        self._options = options
        self._done = False

    def _finish(self, *, cancel: bool) -> None:
        if not self._done:
            self._done = True
            if cancel:
                self._conn.cancel(self._call)

    def _stop(self) -> None:
        """Close the stream: cancel the call and wake whoever waits for its next frame."""
        if not self._done:
            self._finish(cancel=True)
            self._call.queue.put_nowait(None)

    def _message_of(self, frame: Frame | None, stop: type[Exception]) -> Message:
        """The message `frame` holds; raises `stop` at the stream's end, the call's
        error for an error frame. Anything but a message ends the stream."""
        try:
            if frame is None:  # the caller closed the stream
                raise stop
            kind = frame.WhichOneof("kind")
            if kind == "message":
                return _decode(self._method, frame)
        except BaseException:
            self._finish(cancel=True)
            raise
        self._finish(cancel=False)
        if kind == "end":
            raise stop
        raise _call_error(self._call, frame)


# ---------------------------------------------------------------------------------
# The transport


class _Usable(Protocol):
    @property
    def usable(self) -> bool: ...


_C = TypeVar("_C", bound=_Usable)


class _TransportCore(Generic[_C]):
    """The options of both WebSocket transports, checked once (see WebSocketTransport's Args)."""

    _conn: _C | None

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
        self._init_lock()
        self._conn = None
        self._closed = False

    def _init_lock(self) -> None:
        """Set up the lock that serialises opening connections (the shells' own kind)."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{type(self).__name__}({redact_url(self._url)})"

    def _live(self) -> _C | None:
        """The current connection, if it can take calls."""
        conn = self._conn
        return conn if conn is not None and conn.usable else None

    def _check_open(self) -> None:
        if self._closed:
            raise errors.ClientClosedError("the WebSocket transport was closed")

    def _connect_timeout(self, options: CallOptions) -> float | None:
        return options.deadline.cap(_min(self._open_timeout, options.timeout.connect))

    def _connect_kwargs(self, connect: Callable[..., Any], timeout: float | None, **extra: Any) -> dict[str, Any]:
        """The arguments of websockets' `connect` for a new connection."""
        kwargs = _supported(
            connect,
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
                **extra,
                "logger": _LOGGER,
            },
        )
        if self._ssl is not None:
            kwargs["ssl"] = self._ssl
        return kwargs

    def _open_failed(self, exc: BaseException, timeout: float | None) -> errors.LoraxError:
        """The error for a failed handshake (chain it to ``_cause(exc, self._url)``)."""
        return _open_error(exc, self._url, timeout, self._headers)

    def _keeps_closing(self) -> errors.APIConnectionError:
        return _request_sent(
            errors.APIConnectionError(f"the WebSocket connection to {redact_url(self._url)} keeps closing"), False
        )
