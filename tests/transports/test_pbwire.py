"""lorax/_pbwire.py writes exactly the bytes upb writes, for every class it supports.

The property builds random Structs of every message class (values of every kind,
edge cases included: zero values, -0.0, NaN, infinities, non-ASCII text, int bounds,
empty and non-empty lists, nested messages) and compares the direct encoding with
``to_proto(message).SerializeToString()``. Values the fast path does not take (out of
range, wrong types) must give upb's answer too: its bytes or its exception.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from google.protobuf.internal import api_implementation
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorax import _convert, _pbwire, errors
from lorax._message import KIND_ENUM, KIND_MESSAGE, KIND_ONEOF, KIND_RAW, Message
from lorax.transports import _ws_frames as wsf
from lorax.v1 import messages as M

ALL = sorted(_convert._STRUCTS.values(), key=lambda c: c.__name__)
SUPPORTED = [cls for cls in ALL if _pbwire.encoder(cls) is not None]

# protobuf's pure-Python implementation (what protobuf 3.x runs without its C extension,
# e.g. tox's `floor` env) differs from upb in two ways of its own, not ours: it leaves
# -0.0 out of a field without presence (it tests the value for truth), and it parses every
# NaN as the canonical one (its decoder's special case). On it, the properties below draw
# 0.0 and the canonical NaN in their place; on upb they draw every float.
PURE_PYTHON_PROTOBUF = api_implementation.Type() == "python"


def _pure_python_float(x: float) -> float:
    return math.nan if math.isnan(x) else x


def _pure_python_implicit_float(x: float) -> float:
    return math.nan if math.isnan(x) else 0.0 if x == 0 else x


_INT_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1), "uint32": (0, 2**32 - 1)}
_INT_BOUNDS["uint64"] = (0, 2**64 - 1)


def _int(spec: Any) -> st.SearchStrategy[int]:
    lo, hi = _INT_BOUNDS.get(spec.proto_type or "", (0, 2**32 - 1))
    return st.one_of(st.sampled_from([0, 1, 127, 128, 300, lo, hi]), st.integers(lo, hi))


def _value(spec: Any, depth: int) -> st.SearchStrategy[Any]:
    if spec.kind == KIND_MESSAGE:
        return _struct(_convert._BY_SHORT[spec.target], depth + 1)
    if spec.kind == KIND_ENUM:
        return st.sampled_from(list(getattr(M, spec.target)))
    if spec.kind == "int":
        return _int(spec)
    if spec.kind == "float":
        special = st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 1e-320, 5e-324])
        floats = st.one_of(special, st.floats(width=32) if spec.proto_type == "float" else st.floats())
        if PURE_PYTHON_PROTOBUF:
            implicit = not spec.presence and spec.label != "list"
            return floats.map(_pure_python_implicit_float if implicit else _pure_python_float)
        return floats
    if spec.kind == "bool":
        return st.booleans()
    return st.one_of(st.sampled_from(["", "a", "é", "\U0001f600"]), st.text())


def _field(spec: Any, depth: int) -> st.SearchStrategy[Any]:
    value = _value(spec, depth)
    if spec.label == "list":
        return st.lists(value, max_size=3 if depth < 3 else 0)
    if spec.presence:
        if spec.kind == KIND_MESSAGE and depth >= 3:
            return st.none()
        return st.one_of(st.none(), value)
    return value


def _struct(cls: type[Message], depth: int = 0) -> st.SearchStrategy[Any]:
    kwargs = {
        spec.name: _field(spec, depth)
        for spec in cls.__lorax_fields__
        if spec.kind not in (KIND_ONEOF, KIND_RAW) and spec.label != "map" and not spec.unwrap
    }
    return st.fixed_dictionaries(kwargs).map(lambda kw: cls(**kw))


def _upb(message: Message) -> bytes:
    data: bytes = _convert.to_proto(message).SerializeToString()
    return data


def test_the_hot_classes_have_a_direct_encoder() -> None:
    names = {cls.__name__ for cls in SUPPORTED}
    for hot in ("StreamResponse", "Token", "StreamDetails", "GenerateResponse", "Details", "BestOfSequence"):
        assert hot in names
    for hot in ("PrefillToken", "AlternativeToken", "ChatCompletionStreamResponse", "EmbedResponse"):
        assert hot in names


@pytest.mark.parametrize("cls", SUPPORTED, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_direct_encoding_is_upbs_bytes(cls: type[Message], data: st.DataObject) -> None:
    try:
        message = data.draw(_struct(cls))
    except errors.InvalidRequestError:
        return  # a request class refused the drawn values: nothing to encode
    assert _pbwire.to_binary(message) == _upb(message)


def test_a_stream_event_byte_for_byte() -> None:
    event = M.StreamResponse(token=M.Token(id=5, text=" hi", logprob=-0.25, special=False))
    assert _pbwire.to_binary(event) == b"\n\x10\x08\x05\x12\x03 hi\x19\x00\x00\x00\x00\x00\x00\xd0\xbf"
    assert _pbwire.to_binary(event) == _upb(event)


def test_zero_values_are_left_out_but_negative_zero_and_optional_zeros_are_written() -> None:
    assert _pbwire.to_binary(M.Token()) == b""
    assert _pbwire.to_binary(M.Token(logprob=0.0)) == b"\x19" + b"\x00" * 8  # optional: present
    assert _pbwire.to_binary(M.AlternativeToken(logprob=-0.0)) == _upb(M.AlternativeToken(logprob=-0.0))


@pytest.mark.parametrize(
    "message",
    [
        M.Token(id=-1),  # uint32 below its range
        M.Token(id=2**32),  # above it
        M.Token(id=True),  # a bool where an int belongs
        M.Token(text=b"x"),  # bytes where text belongs
        M.Token(text="\ud800"),  # a lone surrogate: not UTF-8
        M.Token(logprob="1"),  # text where a float belongs
        M.Token(alternative_tokens=(M.AlternativeToken(),)),  # a tuple where a list belongs
        M.StreamResponse(token=M.StreamDetails()),  # the wrong message class
        M.StreamDetails(finish_reason=M.FinishReason.LENGTH),  # an enum member in an open enum field
    ],
    ids=repr,
)
def test_values_the_fast_path_does_not_take_get_upbs_answer(message: Message) -> None:
    try:
        expected: bytes | type[BaseException] = _upb(message)
    except Exception as exc:
        expected = type(exc)
    if isinstance(expected, bytes):
        assert _pbwire.to_binary(message) == expected
    else:
        with pytest.raises(expected):
            _pbwire.to_binary(message)


def test_classes_outside_the_fast_path_fall_back_to_upb() -> None:
    unsupported = [cls for cls in ALL if cls not in SUPPORTED]
    assert M.GenerateRequest in unsupported  # a free-form JSON schema inside
    request = M.GenerateRequest(inputs="hi", parameters={"max_new_tokens": 3})
    assert _pbwire.to_binary(request) == _upb(request)


DECODED = [cls for cls in ALL if _pbwire._builder(cls) is not None]


def test_the_hot_response_classes_have_a_direct_builder() -> None:
    names = {cls.__name__ for cls in DECODED}
    for hot in (
        "StreamResponse",
        "Token",
        "StreamDetails",
        "GenerateResponse",
        "Details",
        "ChatCompletionStreamResponse",
    ):
        assert hot in names
    assert not any(cls.__lorax_request__ for cls in DECODED)


@pytest.mark.parametrize("cls", DECODED, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_direct_decoding_is_the_general_paths_struct(cls: type[Message], data: st.DataObject) -> None:
    message = data.draw(_struct(cls))
    encoded = _upb(message)
    fast = _pbwire.from_binary(cls, encoded)
    slow = _convert.from_binary(cls, encoded)
    assert type(fast) is cls
    # NaN != NaN: compare the bytes each re-encodes to, then the structure without them.
    assert _upb(fast) == _upb(slow) == encoded
    assert repr(fast) == repr(slow)


def test_direct_decoding_of_bytes_that_are_not_the_message_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        _pbwire.from_binary(M.StreamResponse, b"\x0a\x05\x08")  # a length past the end
    with pytest.raises(DecodeError):
        _pbwire.from_binary(M.Token, b"\x12\x01\xff")  # text that is not UTF-8
    with pytest.raises(DecodeError):
        _convert.from_binary(M.Token, b"\x12\x01\xff")  # the general path too, on every runtime


def test_unknown_enum_numbers_and_unknown_fields_read_as_the_general_path_reads_them() -> None:
    data = b"\x08\x63" + b"\xa0\x06\x01"  # StreamDetails.finish_reason = 99, then field 100
    assert _pbwire.from_binary(M.StreamDetails, data) == _convert.from_binary(M.StreamDetails, data)


@pytest.mark.parametrize("call_id", [1, 127, 128, 2**32, 2**64 - 1])
@pytest.mark.parametrize("payload", [b"", b"\n\x00", b"x" * 127, b"y" * 128, b"z" * 70000])
def test_frame_message_is_encode_message(call_id: int, payload: bytes) -> None:
    assert _pbwire.frame_message(call_id, payload) == wsf.encode_message(call_id, payload)


@pytest.mark.parametrize("call_id", [0, -1, 2**64])
def test_frame_message_refuses_a_call_id_out_of_range(call_id: int) -> None:
    with pytest.raises(ValueError, match=f"call id {call_id} is out of range"):
        _pbwire.frame_message(call_id, b"")
