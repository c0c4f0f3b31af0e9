"""What the gateway sends in a FrameError, for upstream failures and its own refusals.

Upstream HTTP errors and in-stream error events pass through unchanged: status,
``error_type``, message, headers and raw body, so the client raises the class it
would raise talking HTTP to LoRAX. Failures that have no HTTP answer (LoRAX
unreachable, a timeout, a broken stream) get the status an HTTP proxy would give and
one of the gateway's ``error_type`` values listed in ``websocket.proto``.
"""

from __future__ import annotations

from lorax import errors
from lorax.transports._ws_frames import DEADLINE_EXCEEDED, READ_TIMEOUT, error_frame_fields
from lorax.v1.websocket_pb2 import FrameError

__all__ = ["GatewayRefusal", "refusal_frame", "upstream_error_frame"]


class GatewayRefusal(Exception):
    """A call the gateway itself refuses or fails (not an upstream answer)."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def refusal_frame(refusal: GatewayRefusal) -> FrameError:
    """The FrameError for one of the gateway's own refusals."""
    return error_frame_fields(status=refusal.status, error_type=refusal.error_type, message=refusal.message)


def upstream_error_frame(exc: errors.LoraxError, *, begun: bool) -> FrameError:
    """The FrameError for an exception of the upstream transport.

    `begun` says whether FrameHeaders was already sent for the call (the stream had
    started).
    """
    if isinstance(exc, errors.StreamInterruptedError) or (
        begun and type(exc) is errors.APIConnectionError  # a broken stream, not a timeout
    ):
        return error_frame_fields(
            status=None,
            error_type="incomplete_generation",
            message=f"the upstream stream was interrupted: {exc.message}",
        )
    if isinstance(exc, errors.APIStatusError):
        return error_frame_fields(
            status=exc.status_code,
            error_type=exc.error_type,
            message=exc.message,
            headers=exc.headers,
            body=exc.body,
        )
    not_sent = getattr(exc, "request_sent", True) is False
    if isinstance(exc, errors.APITimeoutError) and exc.phase in ("read", "total"):
        # LoRAX went silent for the call's read timeout (idle time between bytes, which
        # only the gateway can see), or the call's deadline ran out here first: the
        # client raises the timeout it would have raised over HTTP.
        kind = READ_TIMEOUT if exc.phase == "read" else DEADLINE_EXCEEDED
        return error_frame_fields(status=None, error_type=kind, message=exc.message)
    if isinstance(exc, errors.APITimeoutError) and not (exc.phase == "connect" and not_sent):
        return error_frame_fields(status=504, error_type="upstream_timeout", message=f"upstream: {exc.message}")
    if isinstance(exc, errors.APIConnectionError):
        if not_sent:
            return error_frame_fields(
                status=503, error_type="upstream_unavailable", message=f"LoRAX is unreachable: {exc.message}"
            )
        return error_frame_fields(status=502, error_type="upstream_error", message=f"upstream: {exc.message}")
    if isinstance(exc, errors.ResponseTooLargeError):
        # The upstream body went past the gateway's max_response_bytes (or came
        # compressed): reading stopped there, as for a frame above the frame limit.
        return error_frame_fields(status=502, error_type="response_too_large", message=f"upstream: {exc.message}")
    if isinstance(exc, errors.ProtocolError):
        return error_frame_fields(status=502, error_type="upstream_error", message=f"upstream: {exc.message}")
    if isinstance(exc, errors.ClientClosedError):
        return error_frame_fields(status=503, error_type="shutting_down", message="the gateway is shutting down")
    return error_frame_fields(status=500, error_type="internal_error", message="internal gateway error")
