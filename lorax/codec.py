"""Messages to LoRAX JSON and back, byte-exact.

``to_json(message)`` writes exactly what LoRAX sends or accepts for that message:
snake_case keys in declaration (wire) order, 64-bit integers as numbers, enums in
LoRAX's spelling, ``null`` where LoRAX prints null and nothing where it omits a key,
f32 values in Rust's shortest form, free-form JSON spliced in verbatim, and bare
arrays for the routes that answer one.

``from_json(message_class, data)`` reads LoRAX JSON into a message. It tolerates what
newer and older servers do (unknown keys, unknown enum spellings, missing fields),
keeps ``null`` apart from ``0.0`` (an unset optional field), and raises the
``lorax.errors`` exception for an ``{"error", "error_type"}`` body wherever a message
was expected.

Both are driven by the descriptors and the options in ``proto/lorax/v1/options.proto``;
there is no per-field code. ``google.protobuf.json_format`` is not used: it prints
camelCase keys, quoted 64-bit integers and proto enum names, and reads ``null`` logprobs
as 0.0 (wire spec §8).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from google.protobuf.message import Message

from lorax import errors
from lorax._f32 import format_f32, format_f64
from lorax._jsonmap import (
    KIND_BOOL,
    KIND_ENUM,
    KIND_FLOAT,
    KIND_INT,
    KIND_MESSAGE,
    KIND_STRING,
    FieldMap,
    MessageMap,
    message_map,
)

__all__ = ["decoder", "from_json", "from_obj", "to_json", "to_obj"]

M = TypeVar("M", bound=Message)

_Encoder = Callable[[Any], Any]


def to_json(message: Message) -> bytes:
    """Encode `message` as the compact JSON LoRAX uses for it.

    Raises `lorax.errors.InvalidRequestError` when the message cannot be expressed on
    the wire (an enum left at its unspecified value, invalid free-form JSON text).
    """
    return orjson.dumps(to_obj(message))


def to_obj(message: Message) -> Any:
    """Like `to_json`, but return the JSON-ready Python value (for embedding in a larger body)."""
    return _encoder(message.DESCRIPTOR)(message)


def from_json(message_class: type[M], data: bytes | bytearray | memoryview | str) -> M:
    """Decode LoRAX JSON into a `message_class` message.

    Raises:
        lorax.errors.APIStatusError: (a subclass) when `data` is a LoRAX error body
            ``{"error": ..., "error_type": ...}``.
        lorax.errors.ResponseDecodeError: when `data` is not JSON or does not fit the
            message; the message names the offending path.
    """
    decode = _decoders.get(message_class)
    if decode is None:
        decode = _decoders[message_class] = _build_decoder(message_class)
    return decode(data)  # type: ignore[no-any-return]


_decoders: dict[type[Any], Callable[[Any], Any]] = {}


def decoder(message_class: type[M]) -> Callable[[bytes | bytearray | memoryview | str], M]:
    """The `from_json` function for one message class, for hot loops (stream events)."""
    decode = _decoders.get(message_class)
    if decode is None:
        decode = _decoders[message_class] = _build_decoder(message_class)
    return decode


def _build_decoder(message_class: type[M]) -> Callable[[Any], M]:
    # One closure per message class, so the hot path (a token event: parse, look for
    # an error body, build the message in C) does no lookups beyond the dict test.
    mm = message_map(message_class.DESCRIPTOR)  # type: ignore[arg-type]
    name = message_class.DESCRIPTOR.name
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    check_error = "error" not in mm.by_key
    plain = mm.plain
    prune = _pruner(mm) if plain else None
    # Once a body of this class carried keys the .proto lacks (a newer server), the next
    # ones will too: drop unknown keys before the C constructor rather than failing into
    # the careful path on every event (5.5 -> 2.7 µs for a token event).
    pruning = False

    def decode(data: Any) -> M:
        nonlocal pruning
        try:
            obj = loads(data)
        except decode_error as exc:
            raise errors.ResponseDecodeError(f"{name}: invalid JSON: {exc}", body=_preview(data)) from None
        if type(obj) is dict:
            if check_error and "error" in obj:
                raise _error_body(obj)
            if plain:
                try:
                    return message_class(**(prune(obj) if pruning else obj))  # type: ignore[misc]
                except (ValueError, TypeError):
                    pass  # unknown keys or odd values: the careful path says what is wrong
                result = _decode_careful(message_class, mm, obj)
                pruning = True  # it was unknown keys: the careful path accepted the body
                return result
        return _decode_careful(message_class, mm, obj)

    return decode


_Pruner = Callable[[dict[str, Any]], dict[str, Any]]


def _pruner(mm: MessageMap) -> _Pruner:
    """For a plain message: drop the JSON keys its .proto lacks, at every level."""
    keys = mm.keys
    subs: list[tuple[str, _Pruner, bool, bool]] = []
    for fm in mm.fields:
        sub = fm.message if fm.map_value is None else fm.map_value.message
        if sub is not None:
            subs.append((fm.key, _pruner(message_map(sub)), fm.repeated, fm.is_map))

    def prune(obj: dict[str, Any]) -> dict[str, Any]:
        if not keys.issuperset(obj):
            obj = {k: v for k, v in obj.items() if k in keys}
        for key, sub_prune, repeated, is_map in subs:
            value = obj.get(key)
            if repeated:
                if type(value) is list:
                    obj[key] = [sub_prune(v) if type(v) is dict else v for v in value]
            elif type(value) is dict:
                if is_map:
                    obj[key] = {k: sub_prune(v) if type(v) is dict else v for k, v in value.items()}
                else:
                    obj[key] = sub_prune(value)
        return obj

    return prune


def from_obj(message_class: type[M], obj: Any) -> M:
    """Decode an already parsed JSON value. `obj` may be modified."""
    mm = message_map(message_class.DESCRIPTOR)  # type: ignore[arg-type]
    if type(obj) is dict:
        if "error" in obj and "error" not in mm.by_key:
            raise _error_body(obj)
        if mm.plain:
            try:
                return message_class(**obj)
            except (ValueError, TypeError):
                pass
    return _decode_careful(message_class, mm, obj)


def _decode_careful(message_class: type[M], mm: MessageMap, obj: Any) -> M:
    name = message_class.DESCRIPTOR.name
    try:
        kwargs = _clean_message(mm, obj, name)
        return message_class(**kwargs)
    except errors.LoraxError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise errors.ResponseDecodeError(f"{name}: {exc}") from None


def _error_body(obj: dict[str, Any]) -> errors.APIStatusError:
    message = obj.get("error")
    error_type = obj.get("error_type")
    if isinstance(message, dict):  # an OpenAI-shaped error event
        error_type = message.get("type", error_type)
        message = message.get("message", "")
    return errors.error_from_payload(
        None,
        str(message) if message is not None else "",
        str(error_type) if error_type is not None else None,
    )


def _preview(data: bytes | bytearray | memoryview | str) -> str:
    if isinstance(data, str):
        return data[:200]
    return bytes(data[:200]).decode("utf-8", "replace")


# ---------------------------------------------------------------------------------
# Encoding


_encoders: dict[str, _Encoder] = {}


def _encoder(descriptor: Any) -> _Encoder:
    enc = _encoders.get(descriptor.full_name)
    if enc is None:
        enc = _build_encoder(message_map(descriptor))
        _encoders[descriptor.full_name] = enc
    return enc


def _value_encoder(fm: FieldMap) -> _Encoder | None:
    """The converter for one value of field `fm`, or None when the value is JSON-ready."""
    if fm.raw_json:
        return _raw_json(fm)
    if fm.kind == KIND_FLOAT:
        return _f32_fragment if fm.f32 else _finite_or_none
    if fm.kind == KIND_ENUM:
        assert fm.enum is not None
        to_wire = fm.enum.to_wire
        enum_name = fm.enum.full_name
        field_name = fm.name

        def enum_value(number: int) -> str:
            wire = to_wire.get(number)
            if wire is None:
                raise errors.InvalidRequestError(
                    f"{field_name}: {enum_name} value {number} has no LoRAX spelling; set one of "
                    + ", ".join(sorted(to_wire.values()))
                )
            return wire

        return enum_value
    if fm.kind == KIND_MESSAGE:
        assert fm.message is not None
        message = fm.message
        return _encoder(message)
    return None


def _raw_json(fm: FieldMap) -> _Encoder:
    field_name = fm.name

    def raw(text: str) -> orjson.Fragment:
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise errors.InvalidRequestError(f"{field_name}: not valid JSON text: {exc}") from None
        return orjson.Fragment(text)

    return raw


def _f32_fragment(value: float) -> orjson.Fragment | None:
    text = format_f32(value)
    return None if text is None else orjson.Fragment(text)


def _finite_or_none(value: float) -> float | orjson.Fragment | None:
    # serde_json prints non-finite floats as null. orjson agrees with its ryu layout
    # except above 1e16, where it writes `1e+16` and serde_json `1e16`.
    if not math.isfinite(value):
        return None
    if -1e16 < value < 1e16:
        return value
    return orjson.Fragment(format_f64(value) or "null")


def _serde_json_text(value: Any) -> str:
    """JSON text of a parsed value, printed as serde_json's Value::to_string() would."""
    text = orjson.dumps(value)
    if b"e+" in text:  # a float >= 1e16 (orjson: 1e+16, serde_json: 1e16), or "e+" inside a string
        text = orjson.dumps(_serde_floats(value))
    return text.decode()


def _serde_floats(value: Any) -> Any:
    if type(value) is float:
        return _finite_or_none(value)
    if type(value) is list:
        return [_serde_floats(v) for v in value]
    if type(value) is dict:
        return {k: _serde_floats(v) for k, v in value.items()}
    return value


def _build_encoder(mm: MessageMap) -> _Encoder:
    steps: list[Callable[[Any, dict[str, Any]], None]] = []
    done_oneofs: set[str] = set()
    for fm in mm.fields:
        if fm.oneof is not None:
            if fm.oneof not in done_oneofs:
                done_oneofs.add(fm.oneof)
                steps.append(_oneof_step(fm.oneof, mm.oneofs[fm.oneof]))
            continue
        steps.append(_field_step(fm))
    if mm.unwrap:
        only = mm.fields[0].key if not mm.oneofs else next(iter(mm.oneofs))
        missing = object()

        def encode_unwrapped(msg: Any) -> Any:
            out: dict[str, Any] = {}
            for step in steps:
                step(msg, out)
            value = out.get(only, missing)
            return None if value is missing else value

        return encode_unwrapped

    def encode(msg: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for step in steps:
            step(msg, out)
        return out

    return encode


def _field_step(fm: FieldMap) -> Callable[[Any, dict[str, Any]], None]:
    name, key = fm.name, fm.key
    if fm.is_map:
        assert fm.map_value is not None
        conv = _value_encoder(fm.map_value)
        omit = fm.omit_empty

        def map_step(msg: Any, out: dict[str, Any]) -> None:
            value = getattr(msg, name)
            if omit and not value:
                return
            out[key] = dict(value.items()) if conv is None else {k: conv(v) for k, v in value.items()}

        return map_step
    conv = _value_encoder(fm)
    if fm.repeated:
        omit = fm.omit_empty

        def repeated_step(msg: Any, out: dict[str, Any]) -> None:
            value = getattr(msg, name)
            if omit and not value:
                return
            out[key] = list(value) if conv is None else [conv(v) for v in value]

        return repeated_step
    if fm.presence:
        null = fm.null_if_unset

        def presence_step(msg: Any, out: dict[str, Any]) -> None:
            if msg.HasField(name):
                value = getattr(msg, name)
                out[key] = value if conv is None else conv(value)
            elif null:
                out[key] = None

        return presence_step

    def always_step(msg: Any, out: dict[str, Any]) -> None:
        value = getattr(msg, name)
        out[key] = value if conv is None else conv(value)

    return always_step


def _oneof_step(oneof: str, members: tuple[FieldMap, ...]) -> Callable[[Any, dict[str, Any]], None]:
    convs = {fm.name: _value_encoder(fm) for fm in members}
    null = any(fm.null_if_unset for fm in members)

    def oneof_step(msg: Any, out: dict[str, Any]) -> None:
        which = msg.WhichOneof(oneof)
        if which is None:
            if null:
                out[oneof] = None
            return
        value = getattr(msg, which)
        conv = convs[which]
        out[oneof] = value if conv is None else conv(value)

    return oneof_step


# ---------------------------------------------------------------------------------
# Decoding (the careful path: every value checked, unknown keys dropped)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _bad(path: str, expected: str, value: Any) -> errors.ResponseDecodeError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return errors.ResponseDecodeError(f"{path}: expected {expected}, got {_type_name(value)} ({shown})")


_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _clean_scalar(fm: FieldMap, value: Any, path: str) -> Any:
    kind = fm.kind
    if fm.raw_json:
        return _serde_json_text(value)
    if kind == KIND_STRING:
        if type(value) is not str:
            raise _bad(path, "a string", value)
        return value
    if kind == KIND_FLOAT:
        if type(value) is float or type(value) is int:
            return value
        if type(value) is str and value in _NON_FINITE:
            return _NON_FINITE[value]
        raise _bad(path, "a number", value)
    if kind == KIND_INT:
        if type(value) is not int:
            raise _bad(path, "an integer", value)
        low, high = fm.int_range
        if not low <= value <= high:
            raise _bad(path, f"an integer in [{low}, {high}]", value)
        return value
    if kind == KIND_BOOL:
        if type(value) is not bool:
            raise _bad(path, "a boolean", value)
        return value
    if kind == KIND_ENUM:
        assert fm.enum is not None
        if type(value) is str:
            return fm.enum.decode(value)
        if type(value) is int:
            return value
        raise _bad(path, f"a {fm.enum.full_name} string", value)
    if kind == KIND_MESSAGE:
        assert fm.message is not None
        sub = message_map(fm.message)
        return _clean_message(sub, value, path)
    raise _bad(path, kind, value)


def _clean_message(mm: MessageMap, obj: Any, path: str) -> dict[str, Any]:
    if mm.unwrap:
        if mm.oneofs:
            ((_, members),) = mm.oneofs.items()
            return _clean_oneof(members, obj, path)
        only = mm.fields[0]
        if obj is None:
            return {}
        return {only.name: _clean_field(only, obj, path)}
    if type(obj) is not dict:
        raise _bad(path, f"an object ({mm.full_name})", obj)
    out: dict[str, Any] = {}
    for key, value in obj.items():
        fm = mm.by_key.get(key)
        if fm is None:
            oneof_members = mm.oneofs.get(key)
            if oneof_members is not None and value is not None:
                out.update(_clean_oneof(oneof_members, value, f"{path}.{key}"))
            continue  # unknown key: a newer server's field
        if value is None and (not fm.raw_json or fm.null_if_unset):
            # null means unset, never 0 or "". A raw_json field keeps null as the text
            # "null" (for `schema`, null differs from absent) unless it prints unset as
            # null anyway (`logprobs`), where unset is the only faithful reading.
            continue
        out[fm.name] = _clean_field(fm, value, f"{path}.{key}")
    return out


def _clean_field(fm: FieldMap, value: Any, path: str) -> Any:
    if fm.is_map:
        if type(value) is not dict:
            raise _bad(path, "an object", value)
        assert fm.map_value is not None
        return {str(k): _clean_scalar(fm.map_value, v, f"{path}.{k}") for k, v in value.items()}
    if fm.repeated:
        if type(value) is not list:
            raise _bad(path, "an array", value)
        if fm.kind == KIND_FLOAT:
            # LoRAX prints a non-finite f32 as null, inside arrays too.
            return [math.nan if v is None else _clean_scalar(fm, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return [_clean_scalar(fm, v, f"{path}[{i}]") for i, v in enumerate(value)]
    return _clean_scalar(fm, value, path)


_JSON_KIND = {
    str: KIND_STRING,
    bool: KIND_BOOL,
    int: KIND_INT,
    float: KIND_FLOAT,
}


def _unwrapped_json_type(mm: MessageMap) -> type[object]:
    """The JSON type an unwrapped message prints as: an array, or an object for a map."""
    if not mm.oneofs and mm.fields[0].is_map:
        return dict
    return list


def _clean_oneof(members: tuple[FieldMap, ...], value: Any, path: str) -> dict[str, Any]:
    """Pick the oneof member that can hold a JSON value of this type."""
    if value is None:
        return {}
    json_kind = _JSON_KIND.get(type(value))
    for fm in members:
        if json_kind is not None and fm.kind == json_kind:
            return {fm.name: _clean_scalar(fm, value, path)}
        if json_kind == KIND_INT and fm.kind == KIND_FLOAT:
            return {fm.name: float(value)}
        if fm.kind == KIND_MESSAGE and fm.message is not None:
            sub = message_map(fm.message)
            if type(value) is (_unwrapped_json_type(sub) if sub.unwrap else dict):
                return {fm.name: _clean_message(sub, value, path)}
    expected = " or ".join(fm.kind if fm.kind != KIND_MESSAGE else "an object or array" for fm in members)
    raise _bad(path, expected, value)
