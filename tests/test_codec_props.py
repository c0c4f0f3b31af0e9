"""Property tests of lorax.codec: generated messages of every class round-trip, through JSON
and through the upb (binary protobuf) twins.

The strategies are built from each generated class's ``__lorax_fields__`` table, field by
field, so a field added to a .proto is covered without touching this file:

* f32 fields hold f32 values (``st.floats(width=32)``), other doubles any finite double;
* integers span their proto type's whole range (seeds up to 2**64 - 1);
* strings are arbitrary Unicode (no lone surrogates, which UTF-8 cannot carry);
* free-form JSON fields hold a parsed JSON value (``UNSET`` too where absent differs from null),
  but not a string that starts like JSON text (``{``/``[``), which construction parses;
* enums take every member; oneofs one member's value or None;
* optional fields also None.

``google.protobuf.json_format`` (on ``to_proto()``) serves as an oracle where it agrees with
LoRAX; see ``test_json_format_agrees_on_plain_types`` for the documented differences.

The default run is quick; set LORAX_HYPOTHESIS_EXAMPLES to run more examples per test.
"""

from __future__ import annotations

import os
import struct
from fractions import Fraction
from typing import Any

import google.protobuf
import msgspec
import orjson
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from lorax import codec
from lorax._convert import from_proto, proto_class, to_proto
from lorax._f32 import format_f32, format_f64, to_f32
from lorax._message import (
    INT_RANGES,
    KIND_BOOL,
    KIND_ENUM,
    KIND_FLOAT,
    KIND_INT,
    KIND_MESSAGE,
    KIND_ONEOF,
    KIND_OPEN_ENUM,
    KIND_RAW,
    KIND_STRING,
    UNSET,
    FieldSpec,
    Message,
)
from lorax.v1 import messages as M

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
HOT = {"StreamResponse", "GenerateResponse", "GenerateRequest", "ChatCompletionRequest", "ChatCompletionStreamResponse"}

ALL_CLASSES: list[type[Message]] = sorted(
    (
        obj
        for obj in vars(M).values()
        if isinstance(obj, type) and issubclass(obj, Message) and obj is not Message and obj.__module__ == M.__name__
    ),
    key=lambda c: c.__name__,
)
BY_NAME = {cls.__name__: cls for cls in ALL_CLASSES}


def _route_classes() -> list[type[Message]]:
    found = {}
    for route in M.ROUTES:
        found[route.input_type.__name__] = route.input_type
        found[route.output_type.__name__] = route.output_type
    return [found[name] for name in sorted(found)]


ROUTE_CLASSES = _route_classes()
OTHER_CLASSES = [c for c in ALL_CLASSES if c not in ROUTE_CLASSES]


# ---------------------------------------------------------------------------------------------
# Strategies from the __lorax_fields__ tables.

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
# Protobuf before 4.21 (pure Python) is the `floor` tox env's runtime. It drops -0.0 from
# fields without presence when serializing (later runtimes keep it), and its json_format
# prints differently from the current one that serves as the oracle below.
MODERN_PROTOBUF = int(google.protobuf.__version__.split(".")[0]) >= 4
needs_modern_oracle = pytest.mark.skipif(
    not MODERN_PROTOBUF, reason="json_format is the oracle of current protobuf runtimes only"
)

F32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
F64 = st.floats(allow_nan=False, allow_infinity=False)


JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | F64 | TEXT
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=10,
)

# A free-form string that starts like an object or array is JSON text (parsed on
# construction, as the 0.8 API took text): the one string that cannot round-trip as itself.
RAW_VALUES = JSON_VALUES.filter(lambda v: not (isinstance(v, str) and v.lstrip()[:1] in ("{", "[")))


def _value(spec: FieldSpec) -> st.SearchStrategy[Any]:
    """One value of the field's kind (one item of a list or map)."""
    kind = spec.kind
    if kind in (KIND_STRING, KIND_OPEN_ENUM):
        return TEXT
    if kind == KIND_INT:
        low, high = INT_RANGES[spec.proto_type]
        return st.integers(low, high)
    if kind == KIND_FLOAT:
        return F32 if spec.f32 else F64
    if kind == KIND_BOOL:
        return st.booleans()
    if kind == KIND_ENUM:
        return st.sampled_from(list(getattr(M, spec.target)))
    if kind == KIND_RAW:
        return RAW_VALUES
    if kind == KIND_MESSAGE:
        target = BY_NAME[spec.target]
        if spec.unwrap:
            (only,) = target.__lorax_fields__
            return _bare(only)
        return st.deferred(lambda: messages(target))
    if kind == KIND_ONEOF:
        return st.one_of([_bare(m) for m in spec.members])
    raise AssertionError(f"unhandled kind {kind}")


def _bare(spec: FieldSpec) -> st.SearchStrategy[Any]:
    """The field's value, without None."""
    if spec.label == "list":
        return st.lists(_value(spec), max_size=3)
    if spec.label == "map":
        return st.dictionaries(TEXT, _value(spec), max_size=3)
    return _value(spec)


# LoRAX copies these into response headers: request classes refuse control characters.
HEADER_TEXT = st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=12)


def _field(cls: type[Message], spec: FieldSpec) -> st.SearchStrategy[Any]:
    value = HEADER_TEXT if spec.name in ("adapter_id", "adapter_source") else _bare(spec)
    if spec.kind == KIND_RAW and spec.presence and not spec.null_if_unset:
        return value | st.just(UNSET)  # absent differs from null (None is in JSON_VALUES)
    if spec.presence and not spec.label:
        return value | st.none()
    return value


_cache: dict[type[Message], st.SearchStrategy[Any]] = {}


def _required(cls: type[Message]) -> set[str]:
    return {
        f.name
        for f in msgspec.structs.fields(cls)
        if f.default is msgspec.NODEFAULT and f.default_factory is msgspec.NODEFAULT
    }


def messages(cls: type[Message]) -> st.SearchStrategy[Any]:
    """Instances of `cls`, every field drawn from its spec."""
    cached = _cache.get(cls)
    if cached is not None:
        return cached
    required = _required(cls)
    must: dict[str, st.SearchStrategy[Any]] = {}
    may: dict[str, st.SearchStrategy[Any]] = {}
    for spec in cls.__lorax_fields__:
        (must if spec.name in required else may)[spec.name] = _field(cls, spec)
    strategy = st.fixed_dictionaries(must, optional=may).map(lambda kwargs: cls(**kwargs))  # type: ignore[arg-type]
    _cache[cls] = strategy
    return strategy


# ---------------------------------------------------------------------------------------------
# Helpers.


def _has_map(cls: type[Message], seen: frozenset[str] = frozenset()) -> bool:
    for spec in cls.__lorax_fields__:
        for s in spec.members or (spec,):
            if s.label == "map":
                return True
            if s.kind == KIND_MESSAGE and s.target not in seen and _has_map(BY_NAME[s.target], seen | {cls.__name__}):
                return True
    return False


def _check_json_roundtrip(cls: type[Message], message: Any) -> None:
    data = codec.to_json(message)
    back = codec.from_json(cls, data)
    # `message` holds f32 values in f32 fields; ryu's shortest text reads back as the same f32.
    assert f32_rounded(back) == message
    # Python dicts keep order, so even maps print back byte for byte.
    assert codec.to_json(back) == data
    assert codec.from_json(cls, data.decode()) == back
    assert codec.from_obj(cls, orjson.loads(data)) == back


def _check_proto_roundtrip(cls: type[Message], message: Any) -> None:
    """Struct -> upb -> binary -> upb -> Struct -> LoRAX JSON: the same message, the same bytes."""
    pb = message.to_proto()
    assert type(pb) is proto_class(cls)
    wire = pb.SerializeToString()
    again = proto_class(cls).FromString(wire)
    back = cls.from_proto(again)
    assert type(back) is cls
    assert back == message
    if _has_map(cls):
        # A protobuf map keeps no order (nor do LoRAX's HashMaps): the same JSON, as values.
        assert orjson.loads(codec.to_json(back)) == orjson.loads(codec.to_json(message))
        assert orjson.loads(codec.to_json(again)) == orjson.loads(codec.to_json(message))
    else:
        assert codec.to_json(back) == codec.to_json(message)
        # The codec's upb support agrees.
        assert codec.to_json(again) == codec.to_json(message)
    assert from_proto(to_proto(message)) == message


@pytest.mark.parametrize("cls", ROUTE_CLASSES, ids=lambda c: c.__name__)
def test_route_messages_roundtrip(cls: type[Message]) -> None:
    @(SETTINGS if cls.__name__ in HOT else SETTINGS_SOME)
    @given(messages(cls))
    def run(message: Any) -> None:
        _check_json_roundtrip(cls, message)

    run()


@pytest.mark.parametrize("cls", OTHER_CLASSES, ids=lambda c: c.__name__)
def test_nested_messages_roundtrip(cls: type[Message]) -> None:
    @SETTINGS_FEW
    @given(messages(cls))
    def run(message: Any) -> None:
        _check_json_roundtrip(cls, message)

    run()


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_struct_upb_binary_roundtrip(cls: type[Message]) -> None:
    @(SETTINGS_SOME if cls.__name__ in HOT else SETTINGS_FEW)
    @given(messages(cls))
    def run(message: Any) -> None:
        if not MODERN_PROTOBUF:
            assume(b"-0.0" not in codec.to_json(message))
        _check_proto_roundtrip(cls, message)

    run()


def test_every_message_type_is_covered() -> None:
    assert {c.__name__ for c in ROUTE_CLASSES} >= {
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
    # One Struct per message of the .proto files (websocket.proto's frames stay upb-only).
    from lorax.v1 import embed_pb2, generate_pb2, openai_pb2, server_pb2, tokenize_pb2

    proto_names = {
        d.full_name
        for module in (generate_pb2, embed_pb2, openai_pb2, server_pb2, tokenize_pb2)
        for d in module.DESCRIPTOR.message_types_by_name.values()
    }
    assert {c.__lorax_full_name__ for c in ALL_CLASSES} == proto_names
    assert not set(ROUTE_CLASSES) & set(OTHER_CLASSES)


def with_unknown_keys(message: Any, obj: Any, extra: Any) -> Any:
    """`obj` (the parsed JSON of `message`) with an unknown key added to every JSON object
    that stands for a message. Free-form JSON values are left alone."""
    cls = type(message)
    if cls.__lorax_unwrap__:
        (only,) = cls.__lorax_fields__
        return _with_unknown_in_field(only, getattr(message, only.name), obj, extra)
    out: dict[str, Any] = {"zz_unknown_first": extra}
    by_key = {spec.key: spec for spec in cls.__lorax_fields__}
    for key, value in obj.items():
        spec = by_key[key]
        out[key] = None if value is None else _with_unknown_in_field(spec, getattr(message, spec.name), value, extra)
    out["zz_unknown_last"] = [extra, {"error": "not at the top"}]
    return out


def _with_unknown_in_field(spec: FieldSpec, value: Any, obj: Any, extra: Any) -> Any:
    if spec.kind == KIND_ONEOF:
        for member in spec.members:
            if member.kind == KIND_MESSAGE and not member.unwrap and isinstance(value, BY_NAME[member.target]):
                return with_unknown_keys(value, obj, extra)
            if member.kind == KIND_MESSAGE and member.unwrap and isinstance(value, (list, dict)):
                (only,) = BY_NAME[member.target].__lorax_fields__
                return _with_unknown_in_field(only, value, obj, extra)
        return obj
    if spec.kind != KIND_MESSAGE:
        return obj
    if spec.unwrap:
        (only,) = BY_NAME[spec.target].__lorax_fields__
        if spec.label == "list":
            return [_with_unknown_in_field(only, v, o, extra) for v, o in zip(value, obj, strict=True)]
        return _with_unknown_in_field(only, value, obj, extra)
    if spec.label == "map":
        return {k: with_unknown_keys(value[k], v, extra) for k, v in obj.items()}
    if spec.label == "list":
        return [with_unknown_keys(m, o, extra) for m, o in zip(value, obj, strict=True)]
    return with_unknown_keys(value, obj, extra)


@pytest.mark.parametrize("cls", ROUTE_CLASSES, ids=lambda c: c.__name__)
def test_unknown_keys_change_nothing(cls: type[Message]) -> None:
    @SETTINGS_FEWER
    @given(messages(cls), JSON_VALUES)
    def run(message: Any, extra: Any) -> None:
        data = codec.to_json(message)
        noisy = orjson.dumps(with_unknown_keys(message, orjson.loads(data), extra))
        assert codec.from_json(cls, noisy) == codec.from_json(cls, data)

    run()


@SETTINGS_SOME
@given(messages(M.StreamResponse))
def test_stream_events_survive_sse_framing(event: Any) -> None:
    """serde_json never prints a raw newline, so an event is always one `data:` line."""
    data = codec.to_json(event)
    assert b"\n" not in data
    assert b"\r" not in data


# ---------------------------------------------------------------------------------------------
# json_format (on the upb twin) as an oracle, where it agrees with LoRAX.
#
# Where json_format differs from LoRAX (docs/wire.md), by design:
#   * 64-bit integers: json_format prints strings ("seed":"42"); LoRAX and we print numbers.
#   * enums: json_format prints proto names (RESPONSE_FORMAT_TYPE_TEXT); LoRAX spells "text".
#   * null: json_format omits an unset optional; LoRAX prints null for some (null_if_unset).
#   * omit_empty: with always_print_fields_with_no_presence, json_format prints "stop":[].
#   * f32: json_format prints the widened double (-0.3400000035762787); LoRAX prints -0.34.
#   * raw JSON, oneofs printed under the oneof's name, unwrapped messages (bare arrays),
#     renamed keys ("Function"): no json_format equivalent.
#   * floats: json_format's Python float printing is not serde_json's (1e-05 against 0.00001);
#     both are compared as parsed numbers here.


def _flags(cls: type[Message], seen: frozenset[str] = frozenset()) -> set[str]:
    """Which LoRAX-specific mapping features a message uses, itself or below."""
    flags: set[str] = set()
    if cls.__lorax_unwrap__:
        flags.add("unwrap")
    for spec in cls.__lorax_fields__:
        if spec.kind == KIND_ONEOF:
            flags.add("oneof")
        for s in spec.members or (spec,):
            if s.kind == KIND_ENUM:
                flags.add("enum")
            if s.kind == KIND_RAW:
                flags.add("raw_json")
            if s.f32:
                flags.add("f32")
            if s.null_if_unset:
                flags.add("null_if_unset")
            if s.omit_empty:
                flags.add("omit_empty")
            if s.key != s.name and spec.kind != KIND_ONEOF:
                flags.add("wire_name")
            if s.label == "map":
                flags.add("map")
            if s.unwrap:
                flags.add("unwrap")
            if s.kind == KIND_MESSAGE and s.target not in seen:
                flags |= _flags(BY_NAME[s.target], seen | {cls.__name__})
    return flags


PLAIN = [c for c in ALL_CLASSES if not _flags(c) - {"map"}]
NEAR_PLAIN = [
    c
    for c in ALL_CLASSES
    if _flags(c) - {"map"} and not _flags(c) & {"enum", "raw_json", "oneof", "unwrap", "wire_name"}
]


def test_oracle_subsets() -> None:
    assert {c.__name__ for c in PLAIN} >= {
        "SimpleToken",
        "MetricFamily",
        "ErrorResponse",
        "TokenizeRequest",
        "ImageUrl",
    }
    assert {c.__name__ for c in NEAR_PLAIN} >= {
        "Token",
        "Details",
        "GenerateResponse",
        "StreamResponse",
        "InfoResponse",
        "Usage",
        "CompletionRequest",
        "EmbedResponse",
    }


def _json_format_normalized(cls: type[Message], printed: Any) -> Any:
    """json_format's dict made comparable with ours: 64-bit strings to ints, empty
    omit_empty lists dropped, f32 values rounded to f32."""
    out: dict[str, Any] = {}
    for spec in cls.__lorax_fields__:
        if spec.name not in printed:
            continue
        value = printed[spec.name]
        if spec.omit_empty and value in ([], {}):
            continue
        out[spec.name] = _normalize_value(spec, value, theirs=True)
    return out


def _our_normalized(cls: type[Message], printed: Any) -> Any:
    """Our dict made comparable: null_if_unset nulls dropped, f32 values rounded to f32."""
    out: dict[str, Any] = {}
    for spec in cls.__lorax_fields__:
        if spec.key not in printed or (printed[spec.key] is None and spec.null_if_unset):
            continue
        out[spec.name] = _normalize_value(spec, printed[spec.key], theirs=False)
    return out


def _normalize_value(spec: FieldSpec, printed: Any, *, theirs: bool) -> Any:
    if spec.label == "map":
        return {k: _normalize_one(spec, v, theirs) for k, v in printed.items()}
    if spec.label == "list":
        return [_normalize_one(spec, v, theirs) for v in printed]
    return _normalize_one(spec, printed, theirs)


def _normalize_one(spec: FieldSpec, printed: Any, theirs: bool) -> Any:
    if spec.kind == KIND_MESSAGE:
        target = BY_NAME[spec.target]
        return (_json_format_normalized if theirs else _our_normalized)(target, printed)
    if spec.kind == KIND_INT and isinstance(printed, str):
        return int(printed)
    if spec.kind == KIND_FLOAT and spec.f32:
        return to_f32(float(printed))
    return printed


@needs_modern_oracle
@pytest.mark.parametrize("cls", PLAIN, ids=lambda c: c.__name__)
def test_json_format_agrees_on_plain_types(cls: type[Message]) -> None:
    """No LoRAX-specific mapping anywhere below: json_format's output is ours, as values."""

    @SETTINGS_FEWER
    @given(messages(cls))
    def run(message: Any) -> None:
        ours = orjson.loads(codec.to_json(message))
        theirs = json_format.MessageToDict(
            message.to_proto(), preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        assert ours == theirs
        assert cls.from_proto(json_format.Parse(codec.to_json(message), proto_class(cls)())) == message

    run()


@needs_modern_oracle
@pytest.mark.parametrize("cls", NEAR_PLAIN, ids=lambda c: c.__name__)
def test_json_format_agrees_modulo_documented_differences(cls: type[Message]) -> None:
    @SETTINGS_FEWER
    @given(messages(cls))
    def run(message: Any) -> None:
        ours = _our_normalized(cls, orjson.loads(codec.to_json(message)))
        printed = json_format.MessageToDict(
            message.to_proto(), preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        assert ours == _json_format_normalized(cls, printed)
        parsed = cls.from_proto(json_format.Parse(codec.to_json(message), proto_class(cls)()))
        assert f32_rounded(parsed) == message

    run()


def f32_rounded(message: Any) -> Any:
    """A copy with every f32 field rounded to f32 (what LoRAX holds); other fields untouched."""
    changes = {spec.name: _rounded(spec, getattr(message, spec.name)) for spec in type(message).__lorax_fields__}
    return msgspec.structs.replace(message, **changes)


def _rounded(spec: FieldSpec, value: Any) -> Any:
    if value is None or value is UNSET:
        return value
    if spec.label == "list":
        return [_rounded_one(spec, v) for v in value]
    if spec.label == "map":
        return {k: _rounded_one(spec, v) for k, v in value.items()}
    return _rounded_one(spec, value)


def _rounded_one(spec: FieldSpec, value: Any) -> Any:
    if spec.kind == KIND_FLOAT and spec.f32:
        return to_f32(value)
    if spec.kind == KIND_MESSAGE:
        if spec.unwrap:
            (only,) = BY_NAME[spec.target].__lorax_fields__
            return _rounded(only, value)
        return f32_rounded(value)
    if spec.kind == KIND_ONEOF:
        for member in spec.members:
            if member.kind == KIND_MESSAGE and isinstance(value, Message if not member.unwrap else (list, dict)):
                return _rounded_one(member, value)
    return value


# ---------------------------------------------------------------------------------------------
# Float text: msgspec's printing of an f64 (request classes and free-form JSON go through
# msgspec's encoder) is serde_json's (ryu's), which lorax._f32.format_f64 models.

F64_EDGES = [1e16, 1e-7, 0.000012, 1e21, 5e-324, 1.7976931348623157e308, 2.2250738585072014e-308, 1e15, 1e-5]


@SETTINGS
@given(st.integers(0, 2**64 - 1))
def test_msgspec_prints_any_double_like_serde_json(bits: int) -> None:
    (value,) = struct.unpack("<d", bits.to_bytes(8, "little"))
    expected = format_f64(value)
    printed = msgspec.json.encode(value).decode()
    assert printed == ("null" if expected is None else expected)


@pytest.mark.parametrize("value", F64_EDGES + [-v for v in F64_EDGES] + [0.0, -0.0], ids=repr)
def test_msgspec_prints_edge_doubles_like_serde_json(value: float) -> None:
    texts = {
        1e16: "1e16",
        1e-7: "1e-7",
        0.000012: "0.000012",
        1e21: "1e21",
        5e-324: "5e-324",
        1.7976931348623157e308: "1.7976931348623157e308",
        2.2250738585072014e-308: "2.2250738585072014e-308",
        1e15: "1000000000000000.0",
        1e-5: "0.00001",
        0.0: "0.0",
    }
    expected = texts[abs(value)]
    if value < 0 or str(value).startswith("-"):
        expected = "-" + expected
    assert format_f64(value) == expected
    assert msgspec.json.encode(value).decode() == expected
    # In a request's f64 field, a free-form schema and a response's f64 field alike.
    assert codec.to_json(M.MetricSample(key="", value=value)) == b'{"key":"","value":' + expected.encode() + b"}"
    rf = M.ResponseFormat(type="json_object", schema={"minimum": value})
    assert codec.to_json(rf) == b'{"type":"json_object","schema":{"minimum":' + expected.encode() + b"}}"


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
