"""The ``lorax.v1`` WebSocket protocol without I/O: frames in, frames out, checks.

``proto/lorax/v1/websocket.proto`` is the specification; this module is the part of
it that both ends share. The client transports (:mod:`lorax.transports.websocket`)
and the gateway (:mod:`lorax.gateway`) only move the bytes these functions build and
act on what they return.

* :func:`parse_frame` turns one received WebSocket message into a :class:`Frame`, or
  raises :class:`FrameViolation` carrying the close code the receiver must use.
* ``encode_*`` build the bytes of each frame kind.
* :class:`CallProgress` checks, on the client side, that the frames of one call come
  in an order the protocol allows.
* :func:`error_from_frame` rebuilds, from a :class:`FrameError`, the exception the
  HTTP transport would raise for the same failure; :func:`error_frame_fields` is the
  gateway's reverse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from google.protobuf.message import DecodeError

from lorax import errors
from lorax.v1 import websocket_pb2
from lorax.v1.websocket_pb2 import Frame, FrameError

__all__ = [
    "CLIENT_KINDS",
    "CLOSE_GOING_AWAY",
    "CLOSE_IDLE_TIMEOUT",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_NORMAL",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_UNSUPPORTED_DATA",
    "DEFAULT_MAX_FRAME_BYTES",
    "GATEWAY_KINDS",
    "SUBPROTOCOL",
    "CallProgress",
    "FrameViolation",
    "close_description",
    "encode_call",
    "encode_cancel",
    "encode_end",
    "encode_error",
    "encode_headers",
    "encode_heartbeat",
    "encode_message",
    "encode_window_update",
    "error_frame_fields",
    "DEADLINE_EXCEEDED",
    "READ_TIMEOUT",
    "error_from_frame",
    "parse_frame",
]

#: The WebSocket subprotocol both ends must agree on (Sec-WebSocket-Protocol).
SUBPROTOCOL: Final = "lorax.v1"

#: The default largest WebSocket message either end accepts and sends.
DEFAULT_MAX_FRAME_BYTES: Final = 64 * 1024 * 1024

CLOSE_NORMAL: Final = int(websocket_pb2.CLOSE_CODE_NORMAL_CLOSURE)
CLOSE_GOING_AWAY: Final = int(websocket_pb2.CLOSE_CODE_GOING_AWAY)
CLOSE_PROTOCOL_ERROR: Final = int(websocket_pb2.CLOSE_CODE_PROTOCOL_ERROR)
CLOSE_UNSUPPORTED_DATA: Final = int(websocket_pb2.CLOSE_CODE_UNSUPPORTED_DATA)
CLOSE_MESSAGE_TOO_BIG: Final = int(websocket_pb2.CLOSE_CODE_MESSAGE_TOO_BIG)
CLOSE_INTERNAL_ERROR: Final = int(websocket_pb2.CLOSE_CODE_INTERNAL_ERROR)
CLOSE_IDLE_TIMEOUT: Final = int(websocket_pb2.CLOSE_CODE_IDLE_TIMEOUT)

#: Frame kinds (members of ``Frame.kind``) each side may send.
CLIENT_KINDS: Final = frozenset({"call", "cancel", "window_update"})
GATEWAY_KINDS: Final = frozenset({"headers", "message", "end", "error", "heartbeat"})

_CLOSE_NAMES = {
    1000: "normal closure",
    1001: "going away",
    1002: "protocol error",
    1003: "unsupported data",
    1006: "connection lost",
    1009: "message too big",
    1011: "internal error",
    1012: "service restart",
    1013: "try again later",
    CLOSE_IDLE_TIMEOUT: "idle timeout",
}

# A WebSocket close reason must fit in a control frame: 123 bytes of UTF-8.
_MAX_REASON_BYTES = 123


class FrameViolation(Exception):
    """The peer broke the protocol; close the connection with :attr:`code`.

    Internal to the transports and the gateway: the client turns it into a
    :class:`lorax.errors.ProtocolError` for its calls.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    @property
    def close_reason(self) -> str:
        """:attr:`reason`, cut to what fits in a close frame."""
        return _cut_reason(self.reason)


def _cut_reason(reason: str) -> str:
    data = reason.encode("utf-8")
    if len(data) <= _MAX_REASON_BYTES:
        return reason
    return data[: _MAX_REASON_BYTES - 3].decode("utf-8", "ignore") + "..."


def close_description(code: int | None, reason: str | None) -> str:
    """A human description of a close code and reason, for error messages and logs."""
    if code is None:
        return "without a close frame"
    text = f"with code {code} ({_CLOSE_NAMES.get(code, 'unknown')})"
    if reason:
        text += f": {reason}"
    return text


def parse_frame(data: bytes | bytearray | memoryview | str, *, sender: Literal["client", "gateway"]) -> Frame:
    """Parse one received WebSocket message sent by `sender`.

    Raises:
        FrameViolation: a text message (1003), bytes that are not a ``Frame``, call id
            0, no kind, or a kind `sender` may not send (all 1002).
    """
    if isinstance(data, str):
        raise FrameViolation(CLOSE_UNSUPPORTED_DATA, "text messages are not part of the lorax.v1 protocol")
    try:
        frame = Frame.FromString(bytes(data))
    except (DecodeError, UnicodeDecodeError):  # protobuf < 4 raises the latter for bad UTF-8
        raise FrameViolation(CLOSE_PROTOCOL_ERROR, "malformed frame: not a serialized lorax.v1.Frame") from None
    kind = frame.WhichOneof("kind")
    if kind is None:
        raise FrameViolation(CLOSE_PROTOCOL_ERROR, "malformed frame: no kind set")
    if frame.call_id == 0:
        raise FrameViolation(CLOSE_PROTOCOL_ERROR, f"malformed frame: {kind} frame with call id 0")
    allowed = CLIENT_KINDS if sender == "client" else GATEWAY_KINDS
    if kind not in allowed:
        raise FrameViolation(CLOSE_PROTOCOL_ERROR, f"a {sender} may not send {kind} frames (call {frame.call_id})")
    return frame


# ---------------------------------------------------------------------------------
# Encoding


def _ms(seconds: float | None) -> int | None:
    if seconds is None:
        return None
    # Rounded up: a 0.4 ms budget must not become "0", which means "no limit".
    return max(1, int(seconds * 1000 + 0.999))


def encode_call(
    call_id: int,
    method: str,
    request: bytes,
    headers: Mapping[str, str],
    *,
    read_timeout: float | None,
    deadline: float | None,
    window_bytes: int | None = None,
    heartbeats: bool = False,
) -> bytes:
    """A FrameCall for `method` (full name) with a serialized `request`.

    `read_timeout` and `deadline` are in seconds (None: unset). `window_bytes` opts the
    call in to flow control, `heartbeats` to FrameHeartbeat frames.
    """
    call = websocket_pb2.FrameCall(method=method, request=request, headers=dict(headers), heartbeats=heartbeats)
    if window_bytes:
        call.window_bytes = window_bytes
    read_ms = _ms(read_timeout)
    if read_ms is not None:
        call.read_timeout_ms = read_ms
    deadline_ms = _ms(deadline)
    if deadline_ms is not None:
        call.deadline_ms = deadline_ms
    return Frame(call_id=call_id, call=call).SerializeToString()


def encode_cancel(call_id: int) -> bytes:
    """A FrameCancel."""
    return Frame(call_id=call_id, cancel=websocket_pb2.FrameCancel()).SerializeToString()


def encode_window_update(call_id: int, size: int) -> bytes:
    """A FrameWindowUpdate adding `size` bytes to the call's window."""
    return Frame(call_id=call_id, window_update=websocket_pb2.FrameWindowUpdate(bytes=size)).SerializeToString()


def encode_headers(call_id: int, status: int, headers: Mapping[str, str], *, window_bytes: int | None = None) -> bytes:
    """A FrameHeaders; `window_bytes` says the call's flow control is on (the granted window)."""
    frame = websocket_pb2.FrameHeaders(status=status, headers=dict(headers))
    if window_bytes:
        frame.window_bytes = window_bytes
    return Frame(call_id=call_id, headers=frame).SerializeToString()


def encode_heartbeat(call_id: int) -> bytes:
    """A FrameHeartbeat."""
    return Frame(call_id=call_id, heartbeat=websocket_pb2.FrameHeartbeat()).SerializeToString()


def encode_message(call_id: int, message: bytes) -> bytes:
    """A FrameMessage holding a serialized output message."""
    return Frame(call_id=call_id, message=websocket_pb2.FrameMessage(message=message)).SerializeToString()


def encode_end(call_id: int) -> bytes:
    """A FrameEnd."""
    return Frame(call_id=call_id, end=websocket_pb2.FrameEnd()).SerializeToString()


def encode_error(call_id: int, error: FrameError) -> bytes:
    """A FrameError."""
    return Frame(call_id=call_id, error=error).SerializeToString()


# ---------------------------------------------------------------------------------
# Errors


def error_frame_fields(
    *,
    status: int | None,
    message: str,
    error_type: str | None = None,
    headers: Mapping[str, str] | None = None,
    body: str | None = None,
) -> FrameError:
    """A FrameError from the fields of an HTTP error (None for the absent ones)."""
    err = FrameError(status=status or 0, message=message, headers=dict(headers or {}))
    if error_type is not None:
        err.error_type = error_type
    if body is not None:
        err.body = body
    return err


# The error_type of a FrameError for a call whose upstream went silent for the call's
# read timeout; the client raises APITimeoutError(phase="read") for it, as over HTTP.
READ_TIMEOUT = "read_timeout"
# Likewise for a call whose deadline ran out at the gateway: APITimeoutError("total").
DEADLINE_EXCEEDED = "deadline_exceeded"
_TIMEOUT_PHASES = {READ_TIMEOUT: "read", DEADLINE_EXCEEDED: "total"}


def error_from_frame(err: FrameError) -> errors.LoraxError:
    """The exception the HTTP transport would raise for the error in `err`.

    With a raw ``body`` (an HTTP error response without LoRAX's ``error_type``: axum's
    text/plain rejections, a proxy's HTML page), the error is rebuilt from status,
    headers and body by :func:`lorax.errors.error_from_response`, as the HTTP
    transport does. Otherwise :func:`lorax.errors.error_from_payload` picks the class
    by ``error_type``, then by status.
    """
    status = err.status or None
    headers = dict(err.headers)
    error_type = err.error_type if err.HasField("error_type") else None
    if error_type in _TIMEOUT_PHASES and status is None:
        timeout = errors.APITimeoutError(err.message, phase=_TIMEOUT_PHASES[error_type], headers=headers)
        timeout.request_sent = True
        return timeout
    body = err.body if err.HasField("body") else None
    if body is not None and status is not None and error_type is None:
        rebuilt = errors.error_from_response(status, headers, body.encode("utf-8"))
        if not rebuilt.message and err.message:
            # An empty body (a redirect the gateway did not follow, say): the
            # gateway's message is all there is to say.
            rebuilt.message = err.message
            rebuilt.args = (err.message,)
        return rebuilt
    exc = errors.error_from_payload(status, err.message, error_type, headers)
    if body is not None:
        exc.body = body[: errors.MAX_BODY_CHARS]
    return exc


# ---------------------------------------------------------------------------------
# Client-side order of the frames of one call


class CallProgress:
    """Checks that the frames of one call arrive in an order the protocol allows.

    ``headers`` first; then ``message`` frames (exactly one for a unary call); then
    ``end``. ``error`` is allowed at any point, ``heartbeat`` at any point before the
    end. Anything else is a violation (1002).
    """

    __slots__ = ("_messages", "_state", "streaming")

    _WAIT_HEADERS = 0
    _OPEN = 1
    _DONE = 2

    def __init__(self, *, streaming: bool) -> None:
        self.streaming = streaming
        self._state = self._WAIT_HEADERS
        self._messages = 0

    @property
    def started(self) -> bool:
        """Whether the call's headers arrived (the answer began)."""
        return self._state != self._WAIT_HEADERS

    @property
    def done(self) -> bool:
        """Whether the call's last frame (end or error) arrived."""
        return self._state == self._DONE

    def feed(self, kind: str, call_id: int) -> None:
        """Record a received frame of kind `kind`; raise FrameViolation when out of order."""
        state = self._state
        if state == self._DONE:
            raise self._bad(call_id, f"{kind} frame after the call ended")
        if kind == "heartbeat":
            return
        if kind == "error":
            self._state = self._DONE
        elif state == self._WAIT_HEADERS:
            if kind != "headers":
                raise self._bad(call_id, f"{kind} frame before the headers frame")
            self._state = self._OPEN
        elif kind == "message":
            if not self.streaming and self._messages:
                raise self._bad(call_id, "second message frame for a unary call")
            self._messages += 1
        elif kind == "end":
            if not self.streaming and not self._messages:
                raise self._bad(call_id, "end frame without the message of a unary call")
            self._state = self._DONE
        else:
            raise self._bad(call_id, f"second {kind} frame")

    @staticmethod
    def _bad(call_id: int, what: str) -> FrameViolation:
        return FrameViolation(CLOSE_PROTOCOL_ERROR, f"call {call_id}: {what}")
