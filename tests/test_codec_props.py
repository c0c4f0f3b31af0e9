"""Property tests of lorax.codec: generated messages of every type round-trip through JSON.

The strategies are built from the descriptors, field by field, so a field added to a .proto is
covered without touching this file:

* f32 fields hold f32 values (``st.floats(width=32)``), other doubles any finite double;
* integers span their proto type's whole range (seeds up to 2**64 - 1);
* strings are arbitrary Unicode (no lone surrogates, which UTF-8 cannot carry);
* raw_json fields hold the JSON text of a generated JSON value, in serde_json's form (the form
  the decoder re-prints free-form JSON in);
* enums take the values that have a LoRAX spelling;
* oneofs take one member or none.

Two things cannot round-trip by design and are not generated: a oneof wrapper set as a field
with no member chosen (it prints as ``null``, which reads as unset), and the text ``null`` in a
raw_json field that also prints ``null`` when unset (``CompletionChoice.logprobs``).

``google.protobuf.json_format`` serves as an oracle where it agrees with LoRAX; see
``test_json_format_agrees_on_plain_types`` for the documented differences.

The default run is quick; set LORAX_HYPOTHESIS_EXAMPLES to run more examples per test.
"""

from __future__ import annotations

import os
import struct
from fractions import Fraction
from typing import Any

import orjson
import pytest
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lorax import codec
from lorax._f32 import format_f32, to_f32
from lorax._jsonmap import (
    KIND_BOOL,
    KIND_ENUM,
    KIND_FLOAT,
    KIND_INT,
    KIND_MESSAGE,
    KIND_STRING,
    FieldMap,
    message_map,
)
from lorax.v1 import embed_pb2, generate_pb2, openai_pb2, server_pb2, service_pb2, tokenize_pb2

# The hot types (stream events, the generate bodies, the chat request) get EXAMPLES examples
# per test; the other route types a fifth; nested types a tenth; the secondary properties
# (unknown keys, the json_format oracle) a twentieth.
EXAMPLES = int(os.environ.get("LORAX_HYPOTHESIS_EXAMPLES", "200"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SETTINGS_SOME = settings(SETTINGS, max_examples=max(EXAMPLES // 5, 10))
SETTINGS_FEW = settings(SETTINGS, max_examples=max(EXAMPLES // 10, 10))
SETTINGS_FEWER = settings(SETTINGS, max_examples=max(EXAMPLES // 20, 10))
HOT = {
    "lorax.v1.StreamResponse",
    "lorax.v1.GenerateResponse",
    "lorax.v1.GenerateRequest",
    "lorax.v1.ChatCompletionRequest",
    "lorax.v1.ChatCompletionStreamResponse",
}

MODULES = (generate_pb2, embed_pb2, openai_pb2, server_pb2, tokenize_pb2)
ALL_MESSAGES: list[Descriptor] = sorted(
    (d for module in MODULES for d in module.DESCRIPTOR.message_types_by_name.values()),
    key=lambda d: d.full_name,
)


def _route_messages() -> list[Descriptor]:
    found: dict[str, Descriptor] = {}
    for service in service_pb2.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            found[method.input_type.full_name] = method.input_type
            found[method.output_type.full_name] = method.output_type
    return [found[name] for name in sorted(found)]


ROUTE_MESSAGES = _route_messages()
OTHER_MESSAGES = [d for d in ALL_MESSAGES if d not in ROUTE_MESSAGES]


def cls_of(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


# ---------------------------------------------------------------------------------------------
# Strategies from descriptors.

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
F32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
F64 = st.floats(allow_nan=False, allow_infinity=False)

INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}

JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | F64 | TEXT
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=10,
)


def serde_float_text(value: float) -> bytes:
    """serde_json's text for an f64: orjson's, without the "+" of a positive exponent."""
    return orjson.dumps(value).replace(b"e+", b"e")


def serde_json_text(value: Any) -> str:
    """The text serde_json's Value::to_string() prints for a parsed JSON value."""

    def convert(v: Any) -> Any:
        if type(v) is float:
            return orjson.Fragment(serde_float_text(v))
        if type(v) is list:
            return [convert(x) for x in v]
        if type(v) is dict:
            return {k: convert(x) for k, x in v.items()}
        return v

    return orjson.dumps(convert(value)).decode()


def _descriptor_field(descriptor: Descriptor, fm: FieldMap) -> FieldDescriptor:
    fd: FieldDescriptor = descriptor.fields_by_name[fm.name]
    return fd


def _scalar(fm: FieldMap, fd: FieldDescriptor) -> st.SearchStrategy[Any]:
    if fm.raw_json:
        values = JSON_VALUES.filter(lambda v: v is not None) if fm.null_if_unset else JSON_VALUES
        return values.map(serde_json_text)
    if fm.kind == KIND_STRING:
        return TEXT
    if fm.kind == KIND_INT:
        low, high = INT_RANGES[fd.type]
        return st.integers(low, high)
    if fm.kind == KIND_FLOAT:
        return F32 if fm.f32 else F64
    if fm.kind == KIND_BOOL:
        return st.booleans()
    if fm.kind == KIND_ENUM:
        assert fm.enum is not None
        return st.sampled_from(sorted(fm.enum.to_wire))
    if fm.kind == KIND_MESSAGE:
        assert fd.message_type is not None
        return messages(fd.message_type, as_field=True)
    raise AssertionError(f"unhandled kind {fm.kind}")


def _field(descriptor: Descriptor, fm: FieldMap) -> st.SearchStrategy[Any]:
    fd = _descriptor_field(descriptor, fm)
    if fm.is_map:
        value_fd = fd.message_type.fields_by_name["value"]
        assert fm.map_value is not None
        return st.dictionaries(TEXT, _scalar(fm.map_value, value_fd), max_size=3)
    if fm.repeated:
        return st.lists(_scalar(fm, fd), max_size=3)
    return _scalar(fm, fd)


_cache: dict[tuple[str, bool], st.SearchStrategy[Any]] = {}


def messages(descriptor: Descriptor, *, as_field: bool = False) -> st.SearchStrategy[Any]:
    """Messages of this type; `as_field` when the message is the value of a field."""
    key = (descriptor.full_name, as_field)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    mm = message_map(descriptor)
    cls = cls_of(descriptor)
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for fm in mm.fields:
        if fm.oneof is not None:
            continue
        strategy = _field(descriptor, fm)
        # A non-optional enum must hold a value with a LoRAX spelling (0 cannot be sent), and a
        # non-optional raw_json field JSON text ("" is not JSON).
        must_set = (fm.kind == KIND_ENUM or fm.raw_json) and not fm.presence and not fm.repeated
        (required if must_set else optional)[fm.name] = strategy
    oneof_choices: list[st.SearchStrategy[dict[str, Any]]] = []
    for members in mm.oneofs.values():
        member_strategies = [st.fixed_dictionaries({fm.name: _field(descriptor, fm)}) for fm in members]
        # A unwrapped oneof with no member prints as null: as a field value that reads as unset.
        if not (mm.unwrap and as_field):
            member_strategies.insert(0, st.just({}))
        oneof_choices.append(st.one_of(member_strategies))
    base = st.fixed_dictionaries(required, optional=optional)  # type: ignore[arg-type]
    for choice in oneof_choices:
        base = st.tuples(base, choice).map(lambda pair: {**pair[0], **pair[1]})
    strategy = base.map(lambda kwargs: cls(**kwargs))
    _cache[key] = strategy
    return strategy


# ---------------------------------------------------------------------------------------------
# Helpers.


def f32_rounded(message: Any) -> Any:
    """A copy with every f32 field rounded to f32 (what LoRAX holds); other fields untouched."""
    copy = type(message)()
    copy.CopyFrom(message)
    _round_in_place(copy)
    return copy


def _round_in_place(message: Any) -> None:
    mm = message_map(message.DESCRIPTOR)
    for fm in mm.fields:
        if fm.is_map:
            assert fm.map_value is not None
            values = getattr(message, fm.name)
            if fm.map_value.kind == KIND_MESSAGE:
                for key in list(values):
                    _round_in_place(values[key])
            elif fm.map_value.kind == KIND_FLOAT and fm.map_value.f32:
                for key in list(values):
                    values[key] = to_f32(values[key])
        elif fm.kind == KIND_FLOAT and fm.f32:
            if fm.repeated:
                values = getattr(message, fm.name)
                rounded = [to_f32(v) for v in values]
                del values[:]
                values.extend(rounded)
            elif not fm.presence or message.HasField(fm.name):
                setattr(message, fm.name, to_f32(getattr(message, fm.name)))
        elif fm.kind == KIND_MESSAGE:
            if fm.repeated:
                for sub in getattr(message, fm.name):
                    _round_in_place(sub)
            elif message.HasField(fm.name):
                _round_in_place(getattr(message, fm.name))


def with_unknown_keys(message: Any, obj: Any, extra: Any) -> Any:
    """`obj` (the parsed JSON of `message`) with an unknown key added to every JSON object
    that stands for a message. Free-form JSON values are left alone."""
    mm = message_map(message.DESCRIPTOR)
    if mm.unwrap:
        if mm.oneofs:
            ((oneof, members),) = mm.oneofs.items()
            which = message.WhichOneof(oneof)
            if which is None:
                return obj
            fm = next(m for m in members if m.name == which)
            return _with_unknown_in_field(fm, getattr(message, which), obj, extra)
        fm = mm.fields[0]
        return _with_unknown_in_field(fm, getattr(message, fm.name), obj, extra)
    out: dict[str, Any] = {"zz_unknown_first": extra}
    for key, value in obj.items():
        fm = mm.by_key.get(key)
        if fm is None:  # a oneof, printed under its own name
            which = message.WhichOneof(key)
            fm = next(m for m in mm.oneofs[key] if m.name == which)
            out[key] = _with_unknown_in_field(fm, getattr(message, which), value, extra)
        elif value is None:
            out[key] = None
        else:
            out[key] = _with_unknown_in_field(fm, getattr(message, fm.name), value, extra)
    out["zz_unknown_last"] = [extra, {"error": "not at the top"}]
    return out


def _with_unknown_in_field(fm: FieldMap, value: Any, obj: Any, extra: Any) -> Any:
    if fm.is_map:
        assert fm.map_value is not None
        if fm.map_value.kind != KIND_MESSAGE:
            return obj
        return {k: with_unknown_keys(value[k], v, extra) for k, v in obj.items()}
    if fm.kind != KIND_MESSAGE or fm.raw_json:
        return obj
    if fm.repeated:
        return [with_unknown_keys(m, o, extra) for m, o in zip(value, obj, strict=True)]
    return with_unknown_keys(value, obj, extra)


# ---------------------------------------------------------------------------------------------
# Round trips.


def _check_roundtrip(cls: type[Message], message: Any) -> None:
    data = codec.to_json(message)
    back = codec.from_json(cls, data)
    assert f32_rounded(back) == message  # message already holds f32 values in f32 fields
    if "map" in _flags(cls.DESCRIPTOR):
        # A protobuf map keeps no order (nor do LoRAX's HashMaps): compare as JSON values.
        assert orjson.loads(codec.to_json(back)) == orjson.loads(data)
    else:
        assert codec.to_json(back) == data
    assert codec.from_json(cls, data.decode()) == back


@pytest.mark.parametrize("descriptor", ROUTE_MESSAGES, ids=lambda d: d.name)
def test_route_messages_roundtrip(descriptor: Descriptor) -> None:
    cls = cls_of(descriptor)

    @(SETTINGS if descriptor.full_name in HOT else SETTINGS_SOME)
    @given(messages(descriptor))
    def run(message: Any) -> None:
        _check_roundtrip(cls, message)

    run()


@pytest.mark.parametrize("descriptor", OTHER_MESSAGES, ids=lambda d: d.name)
def test_nested_messages_roundtrip(descriptor: Descriptor) -> None:
    cls = cls_of(descriptor)

    @SETTINGS_FEW
    @given(messages(descriptor))
    def run(message: Any) -> None:
        _check_roundtrip(cls, message)

    run()


def test_every_message_type_is_covered() -> None:
    assert {d.name for d in ROUTE_MESSAGES} >= {
        "GenerateRequest",
        "CompatGenerateRequest",
        "GenerateResponse",
        "StreamResponse",
        "CompatGenerateResponse",
        "ChatCompletionRequest",
        "ChatCompletionResponse",
        "ChatCompletionStreamResponse",
        "CompletionRequest",
        "CompletionResponse",
        "CompletionStreamResponse",
        "EmbeddingsRequest",
        "EmbeddingsResponse",
        "ClassifyResponse",
        "ClassifyBatchResponse",
        "TokenizeResponse",
        "InfoResponse",
        "MetricsResponse",
    }
    assert {d.full_name for d in ROUTE_MESSAGES} | {d.full_name for d in OTHER_MESSAGES} == {
        d.full_name for d in ALL_MESSAGES
    }
    assert not {d.full_name for d in ROUTE_MESSAGES} & {d.full_name for d in OTHER_MESSAGES}


@pytest.mark.parametrize("descriptor", ROUTE_MESSAGES, ids=lambda d: d.name)
def test_unknown_keys_change_nothing(descriptor: Descriptor) -> None:
    cls = cls_of(descriptor)

    @SETTINGS_FEWER
    @given(messages(descriptor), JSON_VALUES)
    def run(message: Any, extra: Any) -> None:
        data = codec.to_json(message)
        noisy = orjson.dumps(with_unknown_keys(message, orjson.loads(data), extra))
        assert codec.from_json(cls, noisy) == codec.from_json(cls, data)

    run()


@SETTINGS_SOME
@given(messages(generate_pb2.StreamResponse.DESCRIPTOR))
def test_stream_events_survive_sse_framing(event: Any) -> None:
    """serde_json never prints a raw newline, so an event is always one `data:` line."""
    data = codec.to_json(event)
    assert b"\n" not in data
    assert b"\r" not in data


# ---------------------------------------------------------------------------------------------
# json_format as an oracle, where it agrees with LoRAX.
#
# Where json_format differs from LoRAX (wire spec §8), by design:
#   * 64-bit integers: json_format prints strings ("seed":"42"); LoRAX and we print numbers.
#   * enums: json_format prints proto names (RESPONSE_FORMAT_TYPE_TEXT); LoRAX spells "text".
#   * null: json_format omits an unset optional; LoRAX prints null for some (null_if_unset).
#   * omit_empty: with always_print_fields_with_no_presence, json_format prints "stop":[].
#   * f32: json_format prints the widened double (-0.3400000035762787); LoRAX prints -0.34.
#   * raw_json, oneofs printed under the oneof's name, unwrapped messages (bare arrays),
#     renamed keys ("Function"): no json_format equivalent.
#   * floats: json_format's Python float printing is not serde_json's (1e-05 against 0.00001);
#     both are compared as parsed numbers here.


def _flags(descriptor: Descriptor, seen: frozenset[str] = frozenset()) -> set[str]:
    """Which LoRAX-specific mapping features a message uses, itself or below."""
    mm = message_map(descriptor)
    flags: set[str] = set()
    if mm.unwrap:
        flags.add("unwrap")
    if mm.oneofs:
        flags.add("oneof")
    for fm in mm.fields:
        value = fm.map_value if fm.map_value is not None else fm
        if value.kind == KIND_ENUM:
            flags.add("enum")
        if value.raw_json:
            flags.add("raw_json")
        if value.f32:
            flags.add("f32")
        if fm.null_if_unset:
            flags.add("null_if_unset")
        if fm.omit_empty:
            flags.add("omit_empty")
        if fm.key != fm.name:
            flags.add("wire_name")
        if fm.is_map:
            flags.add("map")
        sub = descriptor.fields_by_name[fm.name].message_type
        if fm.is_map:
            sub = sub.fields_by_name["value"].message_type
        if sub is not None and sub.full_name not in seen:
            flags |= _flags(sub, seen | {descriptor.full_name})
    return flags


PLAIN = [d for d in ALL_MESSAGES if not _flags(d) - {"map"}]
NEAR_PLAIN = [
    d
    for d in ALL_MESSAGES
    if _flags(d) - {"map"} and not _flags(d) & {"enum", "raw_json", "oneof", "unwrap", "wire_name"}
]


def test_oracle_subsets() -> None:
    assert {d.name for d in PLAIN} >= {"SimpleToken", "MetricFamily", "ErrorResponse", "TokenizeRequest", "ImageUrl"}
    assert {d.name for d in NEAR_PLAIN} >= {
        "Token",
        "Details",
        "GenerateResponse",
        "StreamResponse",
        "InfoResponse",
        "Usage",
        "CompletionRequest",
        "EmbedResponse",
    }


def _json_format_normalized(message: Any, printed: Any) -> Any:
    """json_format's dict made comparable with ours: 64-bit strings to ints, empty
    omit_empty lists dropped, f32 values rounded to f32."""
    mm = message_map(message.DESCRIPTOR)
    out: dict[str, Any] = {}
    for fm in mm.fields:
        if fm.name not in printed:
            continue
        value = printed[fm.name]
        fd = message.DESCRIPTOR.fields_by_name[fm.name]
        if fm.omit_empty and value in ([], {}):
            continue
        out[fm.name] = _normalize_value(fm, fd, getattr(message, fm.name), value, theirs=True)
    return out


def _our_normalized(message: Any, printed: Any) -> Any:
    """Our dict made comparable: null_if_unset nulls dropped, f32 values rounded to f32."""
    mm = message_map(message.DESCRIPTOR)
    out: dict[str, Any] = {}
    for fm in mm.fields:
        if fm.key not in printed or (printed[fm.key] is None and fm.null_if_unset):
            continue
        fd = message.DESCRIPTOR.fields_by_name[fm.name]
        out[fm.name] = _normalize_value(fm, fd, getattr(message, fm.name), printed[fm.key], theirs=False)
    return out


def _normalize_value(fm: FieldMap, fd: FieldDescriptor, value: Any, printed: Any, *, theirs: bool) -> Any:
    normalize = _json_format_normalized if theirs else _our_normalized
    if fm.is_map:
        assert fm.map_value is not None
        value_fd = fd.message_type.fields_by_name["value"]
        return {k: _normalize_value(fm.map_value, value_fd, value[k], v, theirs=theirs) for k, v in printed.items()}
    if fm.repeated:
        return [_normalize_one(fm, fd, value[i], v, normalize) for i, v in enumerate(printed)]
    return _normalize_one(fm, fd, value, printed, normalize)


def _normalize_one(fm: FieldMap, fd: FieldDescriptor, value: Any, printed: Any, normalize: Any) -> Any:
    if fm.kind == KIND_MESSAGE:
        return normalize(value, printed)
    if fm.kind == KIND_INT and isinstance(printed, str):
        return int(printed)
    if fm.kind == KIND_FLOAT and fm.f32:
        return to_f32(float(printed))
    return printed


@pytest.mark.parametrize("descriptor", PLAIN, ids=lambda d: d.name)
def test_json_format_agrees_on_plain_types(descriptor: Descriptor) -> None:
    """No LoRAX-specific mapping anywhere below: json_format's output is ours, as values."""
    cls = cls_of(descriptor)

    @SETTINGS_FEWER
    @given(messages(descriptor))
    def run(message: Any) -> None:
        ours = orjson.loads(codec.to_json(message))
        theirs = json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        assert ours == theirs
        assert json_format.Parse(codec.to_json(message), cls()) == message

    run()


@pytest.mark.parametrize("descriptor", NEAR_PLAIN, ids=lambda d: d.name)
def test_json_format_agrees_modulo_documented_differences(descriptor: Descriptor) -> None:
    cls = cls_of(descriptor)

    @SETTINGS_FEWER
    @given(messages(descriptor))
    def run(message: Any) -> None:
        ours = _our_normalized(message, orjson.loads(codec.to_json(message)))
        printed = json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        assert ours == _json_format_normalized(message, printed)
        parsed = json_format.Parse(codec.to_json(message), cls())
        assert f32_rounded(parsed) == message

    run()


# ---------------------------------------------------------------------------------------------
# f32 text against an exact model of ryu: the shortest decimal inside the f32's rounding
# interval (bounds included when the mantissa is even), the closest one when several have
# that length, an even last digit on a tie.


def ryu_f32_digits(single: float) -> tuple[int, int]:
    """(digits, exponent) with single == digits * 10**exponent, as ryu chooses them."""
    (bits,) = struct.unpack("<I", struct.pack("<f", abs(single)))
    exponent_bits, mantissa_bits = bits >> 23, bits & 0x7FFFFF
    if exponent_bits == 0:
        mantissa, exp2 = mantissa_bits, -149
    else:
        mantissa, exp2 = mantissa_bits | 1 << 23, exponent_bits - 150
    value = Fraction(mantissa) * Fraction(2) ** exp2
    above = Fraction(mantissa + 1) * Fraction(2) ** exp2
    if exponent_bits > 1 and mantissa_bits == 0:
        below = Fraction(2 * mantissa - 1) * Fraction(2) ** (exp2 - 1)  # the gap below is half as wide
    else:
        below = Fraction(mantissa - 1) * Fraction(2) ** exp2
    low, high = (value + below) / 2, (value + above) / 2
    inclusive = mantissa % 2 == 0
    for scale in range(-39, 47):  # from the coarsest decimal grid 10**-scale downwards
        step = Fraction(10) ** -scale
        first = -(-low // step)
        last = high // step
        candidates = [
            n
            for n in range(int(first), int(last) + 1)
            if (inclusive or low < n * step < high) and low <= n * step <= high and n > 0
        ]
        if candidates:
            best = min(candidates, key=lambda n: (abs(n * step - value), n % 2))
            exponent = -scale
            while best % 10 == 0:
                best //= 10
                exponent += 1
            return best, exponent
    raise AssertionError("no decimal found")


def _text_digits(text: str) -> tuple[int, int]:
    mantissa, _, exponent = text.lstrip("-").partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = int((whole + fraction).lstrip("0") or "0")
    exp10 = int(exponent or 0) - len(fraction)
    while digits and digits % 10 == 0:
        digits //= 10
        exp10 += 1
    return digits, exp10


def _ryu_layout(digits: int, exp10: int, negative: bool) -> str:
    """ryu's notation: plain when 1e-6 <= |v| < 1e13, else d.ddde-7 (no '+', no padding)."""
    text = str(digits)
    length = len(text)
    kk = exp10 + length
    sign = "-" if negative else ""
    if exp10 >= 0 and kk <= 13:
        return f"{sign}{text}{'0' * exp10}.0"
    if 0 < kk <= 13:
        return f"{sign}{text[:kk]}.{text[kk:]}"
    if -6 < kk <= 0:
        return f"{sign}0.{'0' * -kk}{text}"
    if length == 1:
        return f"{sign}{text}e{kk - 1}"
    return f"{sign}{text[0]}.{text[1:]}e{kk - 1}"


@SETTINGS
@given(st.integers(1, 0x7F7FFFFF), st.booleans())
@example(0x0F800000, False)  # 2**-96: a power of two where the nearest 8-digit decimal misses
@example(0x6B000000, True)  # 2**87
@example(0x6C800000, False)  # 2**90
@example(0x7F7FFFFF, False)  # the largest finite f32
@example(0x7F7FF9C5, True)  # a rounded-up candidate past the largest f32
@example(0x00000001, False)  # the smallest subnormal
@example(0x3EAE147B, True)  # -0.34
def test_f32_text_is_ryus(bits: int, negative: bool) -> None:
    (single,) = struct.unpack("<f", struct.pack("<I", bits | (0x80000000 if negative else 0)))
    digits, exp10 = ryu_f32_digits(single)
    expected = _ryu_layout(digits, exp10, negative)
    assert format_f32(single) == expected
    assert _text_digits(expected) == (digits, exp10)
    assert to_f32(float(expected)) == single


def test_ryu_model_matches_known_ryu_output() -> None:
    """The model reproduces texts printed by Rust's ryu crate."""
    known = {
        -0.34: "-0.34",
        -1.2e-05: "-0.000012",
        -3.5762787e-07: "-3.5762787e-7",
        1e13: "1e13",
        1 / 3: "0.33333334",
        2.0**-96: "1.2621775e-29",
        3.4028234663852886e38: "3.4028235e38",
        1.401298464324817e-45: "1e-45",
        4294967296.0: "4294967300.0",
    }
    for value, text in known.items():
        single = to_f32(value)
        assert _ryu_layout(*ryu_f32_digits(single), single < 0) == text
