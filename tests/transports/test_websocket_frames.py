"""The lorax.v1 WebSocket protocol without sockets: parsing, ordering, error mapping."""

from __future__ import annotations

import pytest

from lorax import errors
from lorax.transports import _ws_frames as wsf
from lorax.v1 import websocket_pb2
from lorax.v1.websocket_pb2 import Frame


def test_close_codes_come_from_the_proto() -> None:
    assert (wsf.CLOSE_PROTOCOL_ERROR, wsf.CLOSE_UNSUPPORTED_DATA, wsf.CLOSE_IDLE_TIMEOUT) == (1002, 1003, 4000)
    assert websocket_pb2.CloseCode.Name(wsf.CLOSE_MESSAGE_TOO_BIG) == "CLOSE_CODE_MESSAGE_TOO_BIG"


@pytest.mark.parametrize(
    ("data", "sender", "code", "fragment"),
    [
        ("text", "client", 1003, "text messages"),
        (b"\xff\xff", "client", 1002, "not a serialized"),
        (Frame(call_id=3).SerializeToString(), "client", 1002, "no kind"),
        (Frame(call_id=0, cancel={}).SerializeToString(), "client", 1002, "call id 0"),
        (wsf.encode_end(1), "client", 1002, "a client may not send end"),
        (wsf.encode_cancel(1), "gateway", 1002, "a gateway may not send cancel"),
    ],
)
def test_parse_frame_violations(data: bytes | str, sender: str, code: int, fragment: str) -> None:
    with pytest.raises(wsf.FrameViolation) as info:
        wsf.parse_frame(data, sender=sender)  # type: ignore[arg-type]
    assert info.value.code == code
    assert fragment in info.value.reason


def test_parse_frame_accepts_each_side_kinds() -> None:
    assert wsf.parse_frame(wsf.encode_cancel(5), sender="client").call_id == 5
    call = wsf.encode_call(2, "m", b"r", {"a": "b"}, read_timeout=0.0001, deadline=1.5)
    frame = wsf.parse_frame(call, sender="client")
    assert frame.call.read_timeout_ms == 1  # rounded up, never 0
    assert frame.call.deadline_ms == 1500
    for data in (
        wsf.encode_headers(1, 200, {}),
        wsf.encode_message(1, b""),
        wsf.encode_end(1),
        wsf.encode_error(1, wsf.error_frame_fields(status=500, message="x")),
    ):
        assert wsf.parse_frame(data, sender="gateway").call_id == 1


def test_close_reason_is_cut_to_fit_a_close_frame() -> None:
    violation = wsf.FrameViolation(1002, "é" * 200)
    assert len(violation.close_reason.encode()) <= 123


@pytest.mark.parametrize(
    ("streaming", "kinds", "ok"),
    [
        (False, ["headers", "message", "end"], True),
        (False, ["error"], True),
        (False, ["headers", "error"], True),
        (False, ["headers", "message", "message"], False),
        (False, ["headers", "end"], False),
        (False, ["message"], False),
        (True, ["headers", "end"], True),
        (True, ["headers", "message", "message", "error"], True),
        (True, ["headers", "headers"], False),
        (True, ["headers", "end", "message"], False),
        (True, ["end"], False),
    ],
)
def test_call_progress(streaming: bool, kinds: list[str], ok: bool) -> None:
    progress = wsf.CallProgress(streaming=streaming)

    def feed_all() -> None:
        for kind in kinds:
            progress.feed(kind, 1)

    if ok:
        feed_all()
    else:
        with pytest.raises(wsf.FrameViolation) as info:
            feed_all()
        assert info.value.code == 1002


def _http_and_frame(status: int, headers: dict[str, str], body: bytes) -> tuple[errors.LoraxError, errors.LoraxError]:
    over_http = errors.error_from_response(status, headers, body)
    frame = wsf.error_frame_fields(
        status=over_http.status_code,
        error_type=over_http.error_type,
        message=over_http.message,
        headers=over_http.headers,
        body=over_http.body,
    )
    return over_http, wsf.error_from_frame(Frame.FromString(wsf.encode_error(1, frame)).error)


@pytest.mark.parametrize(
    ("status", "content_type", "body", "cls"),
    [
        (
            422,
            "application/json",
            b'{"error":"Input validation error: x","error_type":"validation"}',
            errors.ValidationError,
        ),
        (429, "application/json", b'{"error":"Model is overloaded","error_type":"overloaded"}', errors.OverloadedError),
        (422, "text/plain; charset=utf-8", b"Failed to deserialize the JSON body", errors.RequestDeserializationError),
        (502, "text/html", b"<html><title>502 Bad Gateway</title></html>", errors.ServiceUnavailableError),
        (413, "text/plain", b"Failed to buffer the request body: length limit exceeded", errors.PayloadTooLargeError),
        (404, "", b"", errors.NotFoundError),
        (400, "application/json", b'{"error":{"message":"bad","type":"invalid"}}', errors.BadRequestError),
    ],
)
def test_error_frames_rebuild_the_http_error(status: int, content_type: str, body: bytes, cls: type) -> None:
    headers = {"content-type": content_type, "retry-after": "2"} if content_type else {}
    over_http, over_ws = _http_and_frame(status, headers, body)
    assert type(over_http) is cls
    assert type(over_ws) is cls
    for attribute in ("status_code", "error_type", "message", "body", "headers"):
        assert getattr(over_ws, attribute) == getattr(over_http, attribute), attribute


def test_in_stream_error_frame() -> None:
    err = wsf.error_frame_fields(status=None, error_type="generation", message="Request failed during generation")
    exc = wsf.error_from_frame(err)
    assert type(exc) is errors.GenerationError
    assert exc.status_code is None
    assert exc.body is None


def test_gateway_error_types_map_to_retryable_classes() -> None:
    busy = wsf.error_from_frame(wsf.error_frame_fields(status=429, error_type="too_many_calls", message="m"))
    assert type(busy) is errors.RateLimitExceededError
    down = wsf.error_from_frame(wsf.error_frame_fields(status=503, error_type="upstream_unavailable", message="m"))
    assert type(down) is errors.ServiceUnavailableError
