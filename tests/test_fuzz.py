"""Fuzzing the decoders: whatever the bytes, only ``lorax.errors`` exceptions come out.

Three decoders read what the network hands over:

* the SSE decoder (:class:`lorax._sse.SSEDecoder`): arbitrary bytes in arbitrary
  chunkings, real LoRAX streams mutated; the events must not depend on the chunking;
* the codec's decode path (:func:`lorax.codec.from_json`) for every message type of
  the ``lorax.v1`` schemas: arbitrary bytes, arbitrary JSON values (built from the
  schemas' own keys so they reach deep into the decoder), and mutations of every
  example in ``tests/fixtures/wire-examples.json``;
* the WebSocket frames (:mod:`lorax.transports._ws_frames` and the client's frame
  handling in :mod:`lorax.transports.websocket`): arbitrary bytes and mutated valid
  frames, through the same steps the transports take.

A property fails when anything but a :class:`lorax.errors.LoraxError` escapes (for
``parse_frame`` alone: its documented :class:`FrameViolation`).

Each property runs twice: a quick variant (200 examples, derandomized) in the regular
run, and a long one marked ``slow`` with ``LORAX_FUZZ_EXAMPLES`` examples (default
100,000; ``tox -e fuzz``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorax import _routes as routes
from lorax import codec, errors
from lorax._convert import proto_class
from lorax._message import Message
from lorax._sse import SSEDecoder, SSEEvent
from lorax.gateway._errors import GatewayRefusal
from lorax.gateway._session import forward_headers
from lorax.transports import _ws_frames as wsf
from lorax.transports import websocket as ws_transport
from lorax.v1 import messages as M
from lorax.v1 import websocket_pb2

FUZZ_EXAMPLES = int(os.environ.get("LORAX_FUZZ_EXAMPLES", "100000"))

_COMMON = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}
FAST = settings(max_examples=200, derandomize=True, **_COMMON)
SLOW = settings(max_examples=FUZZ_EXAMPLES, **_COMMON)


def fuzz(*strategies: Any, **kw_strategies: Any) -> Callable[[Callable[..., None]], tuple[Any, Any]]:
    """Turn a property into (quick test, long slow test)."""

    def build(prop: Callable[..., None]) -> tuple[Any, Any]:
        quick = FAST(given(*strategies, **kw_strategies)(prop))
        long = pytest.mark.slow(SLOW(given(*strategies, **kw_strategies)(prop)))
        return quick, long

    return build


def only_lorax_errors(call: Callable[[], object]) -> None:
    try:
        call()
    except errors.LoraxError:
        pass
    except Exception as exc:  # anything else is a bug
        raise AssertionError(f"a non-lorax exception escaped: {exc!r}") from exc


# ---------------------------------------------------------------------------------
# Seeds: LoRAX's wire examples


def _wire_examples() -> dict[str, Any]:
    for path in (Path(__file__).parent / "fixtures" / "wire-examples.json",):
        if path.exists():
            data: dict[str, Any] = json.loads(path.read_text())
            data.pop("_about", None)
            return data
    return {}


WIRE = _wire_examples()
# Every generated message class (the public Structs of lorax.types).
MESSAGES: list[type[Message]] = sorted(
    (c for c in vars(M).values() if isinstance(c, type) and issubclass(c, Message) and c.__module__ == M.__name__),
    key=lambda c: c.__lorax_full_name__,
)


def _example_class(key: str, entry: dict[str, Any]) -> type[Message] | None:
    """The message an example's body is, from its route (None when no route says)."""
    parts = str(entry.get("http") or "").split()
    if len(parts) < 2 or parts[0] not in ("GET", "POST"):
        return None
    path = parts[1]
    streaming = ".stream." in key or key.startswith("generate_stream") or "stream:true" in str(entry.get("http"))
    candidates = [m for m in routes.METHODS.values() if m.path == path]
    if not candidates:
        return None
    method = next((m for m in candidates if m.server_streaming == streaming), candidates[0])
    return method.input_type if ".request" in key else method.output_type


# (message class, JSON body) pairs from the examples; classes for bodies with no
# route are drawn from every message.
JSON_SEEDS: list[tuple[type[Message] | None, Any]] = [
    (_example_class(key, entry), entry["body"]) for key, entry in WIRE.items() if "body" in entry
]
SSE_SEEDS: list[bytes] = [
    entry["raw"].encode() for entry in WIRE.values() if entry.get("sse") or "event-stream" in str(entry)
] or [b'data: {"token":{"id":1,"text":"a"}}\n\n']

# Every JSON key the schemas know, so that generated objects hit real fields.
KEYS = sorted({spec.key for cls in MESSAGES for spec in cls.__lorax_fields__} | {"error", "error_type"})


# ---------------------------------------------------------------------------------
# Strategies

TEXT = st.text(max_size=12)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["NaN", "Infinity", "-Infinity", "", "length", "eos_token", "json_object"])
    | TEXT
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.sampled_from(KEYS) | TEXT, children, max_size=6)
    ),
    max_leaves=30,
)


@st.composite
def mutated_json(draw: st.DrawFn, value: Any) -> Any:
    """`value` with a few structural edits: values replaced, keys dropped or added."""
    for _ in range(draw(st.integers(1, 4))):
        value = _edit(draw, value, depth=0)
    return value


def _edit(draw: st.DrawFn, value: Any, depth: int) -> Any:
    descend = depth < 8 and isinstance(value, (dict, list)) and value and draw(st.booleans())
    if descend:
        if isinstance(value, dict):
            copy = dict(value)
            key = draw(st.sampled_from(sorted(copy)))
            choice = draw(st.integers(0, 3))
            if choice == 0:
                del copy[key]
            elif choice == 1:
                copy[draw(st.sampled_from(KEYS) | TEXT)] = draw(JSON_VALUES)
            else:
                copy[key] = _edit(draw, copy[key], depth + 1)
            return copy
        items = list(value)
        index = draw(st.integers(0, len(items) - 1))
        choice = draw(st.integers(0, 3))
        if choice == 0:
            del items[index]
        elif choice == 1:
            items.insert(index, draw(JSON_VALUES))
        else:
            items[index] = _edit(draw, items[index], depth + 1)
        return items
    return draw(JSON_VALUES)


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with byte-level edits: flips, insertions, deletions, truncation, splices."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 5))
        pos = draw(st.integers(0, len(buf)))
        if op == 0 and pos < len(buf):
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == 2:
            del buf[pos : pos + draw(st.integers(1, 16))]
        elif op == 3:
            del buf[pos:]
        elif op == 4 and buf:
            start = draw(st.integers(0, len(buf) - 1))
            buf[pos:pos] = buf[start : start + draw(st.integers(1, 32))]
        else:
            buf[pos:pos] = draw(st.sampled_from([b"\n", b"\r", b"\r\n", b":", b"data:", b"\x00", b"\xff", b'"', b"{"]))
    return bytes(buf)


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """`data` cut at arbitrary places."""
    if not data:
        return [data]
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=12))))
    pieces, last = [], 0
    for cut in [*cuts, len(data)]:
        pieces.append(data[last:cut])
        last = cut
    return pieces


# ---------------------------------------------------------------------------------
# SSE decoder


def _decode_sse(chunks: list[bytes], max_event_bytes: int = 64 * 2**20) -> list[SSEEvent]:
    decoder = SSEDecoder(max_event_bytes=max_event_bytes)
    events: list[SSEEvent] = []
    for piece in chunks:
        events += decoder.feed(piece)
    events += decoder.close()
    return events


SSE_BYTES = st.one_of(
    st.binary(max_size=400),
    st.sampled_from(SSE_SEEDS).flatmap(mutated_bytes),
    st.lists(
        st.sampled_from([b"data: ", b"data:", b"event: x", b"id: 1", b"retry: 10", b":", b"\n", b"\r", b"\r\n", b"{}"])
        | st.binary(max_size=6),
        max_size=30,
    ).map(b"".join),
)


def _sse_chunking(data: st.DataObject, raw: bytes) -> None:
    chunks = data.draw(chunked(raw))
    try:
        whole = _decode_sse([raw])
        pieces = _decode_sse(chunks)
    except errors.LoraxError:
        return
    except Exception as exc:
        raise AssertionError(f"the SSE decoder raised {exc!r}") from exc
    assert pieces == whole, "the events depend on how the bytes were chunked"


def _sse_limits(data: st.DataObject, raw: bytes, limit: int) -> None:
    chunks = data.draw(chunked(raw))
    only_lorax_errors(lambda: _decode_sse(chunks, max_event_bytes=limit))


test_sse_any_bytes_any_chunking, test_sse_any_bytes_any_chunking_slow = fuzz(data=st.data(), raw=SSE_BYTES)(
    _sse_chunking
)
test_sse_event_limit, test_sse_event_limit_slow = fuzz(data=st.data(), raw=SSE_BYTES, limit=st.integers(1, 128))(
    _sse_limits
)


# ---------------------------------------------------------------------------------
# Codec: from_json for every message type

MESSAGE_CLASSES = st.sampled_from(MESSAGES)


def _codec_bytes(cls: type[Message], raw: bytes) -> None:
    only_lorax_errors(lambda: codec.from_json(cls, raw))


def _codec_text(cls: type[Message], text: str) -> None:
    only_lorax_errors(lambda: codec.from_json(cls, text))


def _codec_json(cls: type[Message], value: Any) -> None:
    raw = orjson.dumps(value)
    only_lorax_errors(lambda: codec.from_json(cls, raw))
    only_lorax_errors(lambda: codec.from_obj(cls, orjson.loads(raw)))


@st.composite
def json_seed(draw: st.DrawFn) -> tuple[type[Message], Any]:
    cls, body = draw(st.sampled_from(JSON_SEEDS))
    if cls is None or draw(st.integers(0, 9)) == 0:  # sometimes the wrong class on purpose
        cls = draw(MESSAGE_CLASSES)
    return cls, body


def _codec_mutated(seed: tuple[type[Message], Any], data: st.DataObject) -> None:
    cls, body = seed
    if data.draw(st.booleans()):
        raw = orjson.dumps(data.draw(mutated_json(body)))
    else:
        raw = data.draw(mutated_bytes(orjson.dumps(body)))
    only_lorax_errors(lambda: codec.from_json(cls, raw))


test_codec_any_bytes, test_codec_any_bytes_slow = fuzz(cls=MESSAGE_CLASSES, raw=st.binary(max_size=300))(_codec_bytes)
test_codec_any_text, test_codec_any_text_slow = fuzz(cls=MESSAGE_CLASSES, text=st.text(max_size=100))(_codec_text)
test_codec_any_json, test_codec_any_json_slow = fuzz(cls=MESSAGE_CLASSES, value=JSON_VALUES)(_codec_json)
test_codec_mutated_examples, test_codec_mutated_examples_slow = fuzz(seed=json_seed(), data=st.data())(_codec_mutated)


def test_every_wire_example_is_a_seed() -> None:
    assert len(JSON_SEEDS) >= 60, len(JSON_SEEDS)
    assert sum(1 for cls, _ in JSON_SEEDS if cls is not None) >= 50
    assert len(SSE_SEEDS) >= 10
    # The unmutated seeds decode, or raise the error they are.
    for cls, body in JSON_SEEDS:
        if cls is not None:
            only_lorax_errors(lambda cls=cls, body=body: codec.from_json(cls, orjson.dumps(body)))


# ---------------------------------------------------------------------------------
# WebSocket frames


def _valid_frames() -> list[bytes]:
    stream_event = codec.from_json(M.StreamResponse, orjson.dumps(WIRE["generate_stream.event.token"]["body"]))
    request = M.GenerateRequest(inputs="Hi", parameters=M.GenerateParameters(max_new_tokens=5)).to_proto()
    error = wsf.error_frame_fields(
        status=422, message="Input validation error", error_type="validation", headers={"x": "1"}, body="{}"
    )
    return [
        wsf.encode_call(
            1, routes.GENERATE_STREAM.full_name, request.SerializeToString(), {"a": "b"}, read_timeout=1.5, deadline=3.0
        ),
        wsf.encode_cancel(1),
        wsf.encode_headers(1, 200, {"content-type": "text/event-stream", "x-model-id": "m"}),
        wsf.encode_message(1, stream_event.to_proto().SerializeToString()),
        wsf.encode_end(1),
        wsf.encode_error(1, error),
        wsf.encode_error(1, wsf.error_frame_fields(status=502, message="bad", body="<html>")),
    ]


VALID_FRAMES = _valid_frames()
FRAME_BYTES = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(VALID_FRAMES).flatmap(mutated_bytes),
    st.sampled_from(VALID_FRAMES),
)
FRAME_ERRORS = st.builds(
    websocket_pb2.FrameError,
    status=st.integers(0, 2**32 - 1),
    message=st.text(max_size=40),
    headers=st.dictionaries(st.text(max_size=8), st.text(max_size=16), max_size=3),
) | st.builds(
    websocket_pb2.FrameError,
    status=st.integers(0, 600),
    message=st.text(max_size=40),
    error_type=st.sampled_from(["validation", "overloaded", "generation", "", "no fast tokenizer", "x"]) | st.text(),
    body=st.text(max_size=60) | st.sampled_from(["", "{}", '{"error":"x","error_type":"y"}', "<html>"]),
)


def _client_frames(datas: list[bytes], streaming: bool) -> None:
    """The client's handling of a call's frames, as the transports do it."""
    method = routes.GENERATE_STREAM if streaming else routes.GENERATE
    registry = ws_transport._Registry()
    call = ws_transport._Call(
        registry.new_id(), streaming, None, ({"authorization": "Bearer t0ken"}, method.input_type(inputs=""))
    )
    registry.calls[call.id] = call
    for data in datas:
        try:
            frame = wsf.parse_frame(data, sender="gateway")
            routed = registry.route(frame)
        except wsf.FrameViolation as violation:
            raise ws_transport._violation("ws://fuzz", violation).error_for(call.progress, call.sent) from None
        if routed is None:
            continue
        kind = frame.WhichOneof("kind")
        if kind == "message":
            ws_transport._decode(method, frame)
        elif kind == "error":
            raise ws_transport._call_error(routed, frame)
        elif kind == "end":
            return


def _ws_client(datas: list[bytes], streaming: bool) -> None:
    only_lorax_errors(lambda: _client_frames(datas, streaming))


def _ws_parse(data: bytes, sender: str) -> None:
    try:
        frame = wsf.parse_frame(data, sender=sender)  # type: ignore[arg-type]
    except wsf.FrameViolation as violation:
        bad = violation
    except Exception as exc:
        raise AssertionError(f"parse_frame raised {exc!r}") from exc
    else:
        bad = None
    if bad is not None:
        # A close code and a reason that fits in a close frame.
        assert 1000 <= bad.code < 5000
        assert len(bad.close_reason.encode()) <= 123
        return
    if sender == "client" and frame.WhichOneof("kind") == "call":
        # What the gateway does next with a call frame: its own refusals only.
        try:
            method = routes.BY_FULL_NAME.get(frame.call.method)
            if method is not None:
                try:
                    proto_class(method.input_type).FromString(frame.call.request)
                except DecodeError:
                    pass
            forward_headers(frame.call.headers)
        except GatewayRefusal:
            pass


def _ws_error_frame(error: websocket_pb2.FrameError) -> None:
    frame = websocket_pb2.Frame(call_id=1, error=error)
    result: list[BaseException] = []
    try:
        raise wsf.error_from_frame(frame.error)
    except errors.APIStatusError as exc:
        result.append(exc)
    except Exception as exc:
        raise AssertionError(f"error_from_frame raised {exc!r}") from exc
    assert str(result[0]) is not None


test_ws_client_frames, test_ws_client_frames_slow = fuzz(
    datas=st.lists(FRAME_BYTES, min_size=1, max_size=6), streaming=st.booleans()
)(_ws_client)
test_ws_parse_frame, test_ws_parse_frame_slow = fuzz(data=FRAME_BYTES, sender=st.sampled_from(["client", "gateway"]))(
    _ws_parse
)
test_ws_error_frames, test_ws_error_frames_slow = fuzz(error=FRAME_ERRORS)(_ws_error_frame)
