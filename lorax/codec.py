"""Messages to LoRAX JSON and back, byte-exact.

``to_json(message)`` writes exactly what LoRAX sends or accepts for that message:
snake_case keys in declaration (wire) order, 64-bit integers as numbers, enums in
LoRAX's spelling, ``null`` where LoRAX prints null and nothing where it omits a key,
f32 values in Rust's shortest form, free-form JSON values as serde_json prints them
(msgspec's float text is ryu's, like serde_json's), and bare arrays for the routes that
answer one.

``from_json(message_class, data)`` reads LoRAX JSON into a message. It tolerates what
newer and older servers do (unknown keys, unknown enum spellings, missing fields),
reads ``null`` as ``None`` (never ``0.0``), and raises the ``lorax.errors`` exception
for an ``{"error", "error_type"}`` body wherever a message was expected.

The messages are the msgspec Structs of :mod:`lorax.types`; the ``lorax.v1`` protobuf
(upb) classes are accepted too and converted at the edge (:mod:`lorax._convert`).
Decoding is msgspec's C decoder straight into the Structs; only a body it refuses (a
``null`` where LoRAX's older servers print one, an enum alias, a non-finite float)
takes the careful path, which says which field was wrong. Request classes encode with
msgspec's own encoder; response classes (printed by :mod:`lorax.testing`) through a
per-class step list driven by the ``__lorax_fields__`` table the generator writes
(``proto/lorax/v1/options.proto`` documents the rules).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from lorax import errors
from lorax._build import build_recursive, oneof_types, per_label, run_steps
from lorax._f32 import format_f32
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
    WireEnum,
)

__all__ = ["decoder", "from_json", "from_obj", "to_json", "to_obj"]

M = TypeVar("M")

_Encoder = Callable[[Any], Any]
_Data = bytes | bytearray | memoryview | str

# An Encoder's bound method: no keyword parsing per call (msgspec.json.encode's).
_json_encode = msgspec.json.Encoder().encode


def _classes() -> dict[str, type[Message]]:
    from lorax.v1 import messages

    return {
        name: obj
        for name, obj in vars(messages).items()
        if isinstance(obj, type) and issubclass(obj, Message) and obj is not Message
    }


_by_name: dict[str, type[Message]] = {}


def _cls(name: str) -> type[Message]:
    if not _by_name:
        _by_name.update(_classes())
    return _by_name[name]


def _is_proto(message: Any) -> bool:
    return hasattr(message, "DESCRIPTOR") and not isinstance(message, Message)


# ---------------------------------------------------------------------------------
# Encoding


def to_json(message: Any) -> bytes:
    """Encode `message` (a Struct of :mod:`lorax.types`, or its upb twin) as LoRAX's JSON.

    Raises `lorax.errors.InvalidRequestError` when the message cannot be expressed on
    the wire (a value that JSON cannot hold).
    """
    cls = type(message)
    enc = _encoders.get(cls)
    if enc is None:
        if _is_proto(message):
            from lorax._convert import from_proto

            return to_json(from_proto(message))
        enc = _encoders[cls] = _build_top_encoder(cls)
    try:
        return enc(message)
    except (TypeError, ValueError, OverflowError) as exc:
        raise errors.InvalidRequestError(f"{cls.__name__} cannot be written as JSON: {exc}") from None


def to_obj(message: Any) -> Any:
    """Like `to_json`, but return the parsed JSON value (plain dicts, lists and numbers)."""
    return msgspec.json.decode(to_json(message))


_encoders: dict[type[Any], Callable[[Any], bytes]] = {}


def _build_top_encoder(cls: type[Message]) -> Callable[[Any], bytes]:
    if not (isinstance(cls, type) and issubclass(cls, Message)):
        raise TypeError(f"not a lorax message: {cls!r}")
    if cls.__lorax_request__ and not cls.__lorax_unwrap__:
        # Request classes are laid out so that msgspec's own encoder prints LoRAX's
        # bytes (omit_defaults leaves unset optionals out; see tools/protoc_gen_lorax.py).
        return _enum_guard(cls) or _json_encode
    to_value = _value_encoder_for_class(cls)
    return lambda message: _json_encode(to_value(message))


def _enum_guard(cls: type[Message]) -> Callable[[Any], bytes] | None:
    """The encoder of `cls` that first checks every closed-enum value below it is a
    member, or None if there are none.

    Construction converts spellings to members, but attribute assignment is not checked,
    and msgspec would print any string: an unknown merge strategy crashes LoRAX's router
    (router/src/lib.rs ``MergedAdapters`` ``unwrap()``s the conversion). The check and the
    encoding are compiled to one function of straight-line code (a generic walk cost
    0.5 µs per request; this 0.05 µs).
    """
    env: dict[str, Any] = {"_fail": _enum_failure, "_encode": _json_encode}
    lines = _enum_guard_lines(cls, "m", 1, env, frozenset())
    if not lines:
        return None
    source = "def encode(m):\n" + "\n".join(lines) + "\n    return _encode(m)\n"
    exec(compile(source, f"<lorax.codec enum guard {cls.__name__}>", "exec"), env)  # our own source, from the specs
    return env["encode"]  # type: ignore[no-any-return]


def _enum_guard_lines(cls: type[Message], var: str, depth: int, env: dict[str, Any], seen: frozenset[str]) -> list[str]:
    pad = "    " * depth
    lines: list[str] = []
    for spec in cls.__lorax_fields__:
        if spec.label:
            continue  # no request list or map holds a closed enum
        if spec.kind == KIND_ENUM:
            enum_name = f"E{len(env)}"
            env[enum_name] = _cls_any(spec.target)
            lines.append(f"{pad}x = {var}.{spec.name}")
            lines.append(
                f"{pad}if x is not None and x.__class__ is not {enum_name}: _fail({spec.name!r}, x, {enum_name})"
            )
        elif spec.kind == KIND_MESSAGE and not spec.unwrap and spec.target not in seen:
            inner_var = f"v{depth}"
            inner = _enum_guard_lines(_cls(spec.target), inner_var, depth + 1, env, seen | {cls.__name__})
            if inner:
                lines.append(f"{pad}{inner_var} = {var}.{spec.name}")
                lines.append(f"{pad}if {inner_var} is not None:")
                lines.extend(inner)
    return lines


def _enum_failure(name: str, value: Any, enum_cls: Any) -> None:
    allowed = ", ".join(sorted({m.value for m in enum_cls}))
    raise errors.InvalidRequestError(f"{name}={value!r} is not one of: {allowed}")


_class_encoders: dict[type[Any], _Encoder] = {}


def _value_encoder_for_class(cls: type[Message]) -> _Encoder:
    enc = _class_encoders.get(cls)
    if enc is None:
        enc = build_recursive(_class_encoders, cls, _build_class_encoder)
    return enc


def _f32(value: float) -> msgspec.Raw | None:
    text = format_f32(value)
    return None if text is None else msgspec.Raw(text.encode())


def _enum_value(value: Any) -> Any:
    return value.value if isinstance(value, WireEnum) else value


def _scalar_encoder(spec: FieldSpec) -> _Encoder | None:
    """The converter for one value of `spec`, or None when msgspec prints it as it is."""
    if spec.kind == KIND_FLOAT:
        return _f32 if spec.f32 else None
    if spec.kind == KIND_ENUM:
        return _enum_value
    if spec.kind == KIND_MESSAGE:
        target = _cls(spec.target)
        if spec.unwrap:
            return _inner_encoder(target)
        return _value_encoder_for_class(target)
    if spec.kind == KIND_ONEOF:
        return _oneof_encoder(spec)
    return None


def _inner_encoder(cls: type[Message]) -> _Encoder:
    """How the value of an unwrapped message's single field prints."""
    (only,) = cls.__lorax_fields__
    return _container_encoder(only) or (lambda v: v)


def _container_encoder(spec: FieldSpec) -> _Encoder | None:
    return per_label(spec, _scalar_encoder(spec))


def _oneof_encoder(spec: FieldSpec) -> _Encoder:
    by_type = [(typ, _scalar_encoder(member)) for typ, member in oneof_types(spec, _cls)]

    def encode(value: Any) -> Any:
        for typ, conv in by_type:
            if isinstance(value, typ):
                return value if conv is None else conv(value)
        raise TypeError(f"{spec.name}: {type(value).__name__} fits none of its members")

    return encode


def _build_class_encoder(cls: type[Message]) -> _Encoder:
    steps: list[Callable[[Any, dict[str, Any]], None]] = [_field_step(spec) for spec in cls.__lorax_fields__]
    if cls.__lorax_unwrap__:
        (only,) = cls.__lorax_fields__
        conv = _container_encoder(only)
        name = only.name

        def encode_unwrapped(msg: Any) -> Any:
            value = getattr(msg, name)
            if value is None:
                return None
            return value if conv is None else conv(value)

        return encode_unwrapped

    return run_steps(steps)


def _field_step(spec: FieldSpec) -> Callable[[Any, dict[str, Any]], None]:
    name, key = spec.name, spec.key
    conv = _container_encoder(spec)
    if spec.label:
        omit = spec.omit_empty

        def container_step(msg: Any, out: dict[str, Any]) -> None:
            value = getattr(msg, name)
            if omit and not value:
                return
            out[key] = value if conv is None else conv(value)

        return container_step
    if spec.kind == KIND_RAW:
        # Free-form JSON: None is JSON null; UNSET (null differs from absent) is left out.
        def raw_step(msg: Any, out: dict[str, Any]) -> None:
            value = getattr(msg, name)
            if value is not UNSET:
                out[key] = value

        return raw_step
    if spec.presence:
        null = spec.null_if_unset

        def presence_step(msg: Any, out: dict[str, Any]) -> None:
            value = getattr(msg, name)
            if value is not None:
                out[key] = value if conv is None else conv(value)
            elif null:
                out[key] = None

        return presence_step

    if spec.kind == KIND_ENUM:
        # A closed enum left unset on a response class has no spelling: LoRAX's zero.
        def enum_step(msg: Any, out: dict[str, Any]) -> None:
            value = getattr(msg, name)
            out[key] = None if value is None else _enum_value(value)

        return enum_step

    def always_step(msg: Any, out: dict[str, Any]) -> None:
        value = getattr(msg, name)
        out[key] = value if conv is None else conv(value)

    return always_step


# ---------------------------------------------------------------------------------
# Decoding


def from_json(message_class: type[M], data: _Data) -> M:
    """Decode LoRAX JSON into a `message_class` message.

    Raises:
        lorax.errors.APIStatusError: (a subclass) when `data` is a LoRAX error body
            ``{"error": ..., "error_type": ...}``.
        lorax.errors.ResponseDecodeError: when `data` is not JSON or does not fit the
            message; the message names the offending path.
    """
    fast = _fast_paths.get(message_class)
    if fast is not None:
        # The decoder's common case without its call (0.05 µs of a token event's 0.4).
        try:
            message = fast[0](data)
        except _FAST_ERRORS:
            pass  # the decoder decides, and names what is wrong
        else:
            if message != fast[1]:
                return message  # type: ignore[no-any-return]
    decoded: M = decoder(message_class)(data)
    return decoded


_decoders: dict[type[Any], Callable[[Any], Any]] = {}
# Per message class: msgspec's decoder and the class's empty message (see _build_decoder).
_fast_paths: dict[type[Any], tuple[Callable[[Any], Any], Any]] = {}
# What msgspec's decoder raises for a body it refuses (before 0.19, UnicodeDecodeError
# for invalid UTF-8 inside a string); from_json also leaves a request class's own checks
# to the decoder.
_MSGSPEC_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError)
_FAST_ERRORS = (*_MSGSPEC_ERRORS, errors.InvalidRequestError)


def decoder(message_class: type[M]) -> Callable[[_Data], M]:
    """The `from_json` function for one message class, for hot loops (stream events)."""
    decode = _decoders.get(message_class)
    if decode is None:
        decode = _decoders[message_class] = _build_decoder(message_class)
    return decode


def _build_decoder(message_class: type[Any]) -> Callable[[Any], Any]:
    if not (isinstance(message_class, type) and issubclass(message_class, Message)):
        if hasattr(message_class, "DESCRIPTOR"):
            from lorax._convert import struct_class, to_proto

            struct_decode = decoder(struct_class(message_class))
            return lambda data: to_proto(struct_decode(data))
        raise TypeError(f"not a lorax message class: {message_class!r}")
    cls: type[Message] = message_class
    name = cls.__name__
    check_error = not any(spec.key == "error" for spec in cls.__lorax_fields__)
    if cls.__lorax_unwrap__:
        (only,) = msgspec.structs.fields(cls)
        inner = msgspec.json.Decoder(only.type).decode
        field_name = only.name

        def fast(data: Any) -> Any:
            return cls(**{field_name: inner(data)})

    else:
        fast = msgspec.json.Decoder(cls).decode  # type: ignore[assignment]
    # LoRAX's error bodies and events ({"error": ..., "error_type": ...}) have only keys
    # the message classes do not know, so msgspec reads them as the class's empty
    # message (or refuses them, where the class has a required field or is an array):
    # only an empty result is looked at again. (A test of the first bytes before decoding
    # cost 0.2 µs per token event, about what msgspec's decode of it costs.)
    empty: Any = _empty(cls) if check_error else None
    fast_errors = _MSGSPEC_ERRORS
    _fast_paths[cls] = (fast, empty)

    def decode(data: Any) -> Any:
        try:
            message = fast(data)
        except fast_errors:
            pass  # odd but legal: the careful path decides, and names what is wrong
        except errors.InvalidRequestError as exc:
            # A request class's own checks (a request read back): a decode error, as on the careful path.
            raise errors.ResponseDecodeError(f"{name}: {exc}") from None
        else:
            if message != empty:
                return message
        obj = _loads(name, data)
        if check_error and type(obj) is dict and "error" in obj:
            raise _error_body(obj)
        return _decode_careful(cls, obj)

    return decode


def _empty(cls: type[Message]) -> Any:
    """The message every field of which is unset, or None if the class has required fields."""
    try:
        return cls()
    except (TypeError, errors.LoraxError):
        return None


def _loads(name: str, data: Any) -> Any:
    try:
        return msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise errors.ResponseDecodeError(f"{name}: invalid JSON: {exc}", body=_preview(data)) from None


def from_obj(message_class: type[M], obj: Any) -> M:
    """Decode an already parsed JSON value."""
    if not (isinstance(message_class, type) and issubclass(message_class, Message)):
        from lorax._convert import struct_class, to_proto

        proto: M = to_proto(from_obj(struct_class(message_class), obj))  # type: ignore[arg-type]
        return proto
    if type(obj) is dict and "error" in obj and not any(s.key == "error" for s in message_class.__lorax_fields__):
        raise _error_body(obj)
    return _decode_careful(message_class, obj)  # type: ignore[no-any-return]


def _decode_careful(cls: type[Message], obj: Any) -> Any:
    try:
        return _clean_message(cls, obj, cls.__name__)
    except errors.LoraxError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise errors.ResponseDecodeError(f"{cls.__name__}: {exc}") from None


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


def _preview(data: _Data) -> str:
    if isinstance(data, str):
        return data[:200]
    return bytes(data[:200]).decode("utf-8", "replace")


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
_ZERO: dict[str, Any] = {KIND_STRING: "", KIND_OPEN_ENUM: "", KIND_BOOL: False, KIND_INT: 0, KIND_FLOAT: 0.0}


def _clean_scalar(spec: FieldSpec, value: Any, path: str) -> Any:
    kind = spec.kind
    if kind in (KIND_STRING, KIND_OPEN_ENUM):
        if type(value) is not str:
            raise _bad(path, "a string", value)
        return value
    if kind == KIND_FLOAT:
        if type(value) is float or type(value) is int:
            return float(value)
        if type(value) is str and value in _NON_FINITE:
            return _NON_FINITE[value]
        raise _bad(path, "a number", value)
    if kind == KIND_INT:
        if type(value) is not int:
            raise _bad(path, "an integer", value)
        low, high = INT_RANGES[spec.proto_type]
        if not low <= value <= high:
            raise _bad(path, f"an integer in [{low}, {high}]", value)
        return value
    if kind == KIND_BOOL:
        if type(value) is not bool:
            raise _bad(path, "a boolean", value)
        return value
    if kind == KIND_ENUM:
        enum_cls = _cls_any(spec.target)
        if type(value) is str:
            try:
                return enum_cls(value)
            except ValueError:
                member = _enum_fallback(enum_cls, value)
            if member is None and not spec.presence:
                # A required enum has no "unset" to fall back to (a request read back).
                allowed = ", ".join(dict.fromkeys(m.value for m in enum_cls))
                raise _bad(path, f"one of {allowed}", value)
            return member  # None: an unknown spelling from a newer server, unset
        raise _bad(path, f"a lorax.v1.{spec.target} string", value)
    if kind == KIND_RAW:
        return value
    if kind == KIND_MESSAGE:
        target = _cls(spec.target)
        if spec.unwrap:
            (only,) = target.__lorax_fields__
            return _clean_field(only, value, path)
        return _clean_message(target, value, path)
    if kind == KIND_ONEOF:
        return _clean_oneof(spec, value, path)
    raise _bad(path, kind, value)


def _enum_fallback(enum_cls: Any, value: str) -> Any:
    """The member for a .proto name (``RESPONSE_FORMAT_TYPE_TEXT``, as json_format prints
    it) or a spelling that differs only in case and underscores (``JsonObject``)."""
    member = enum_cls.__members__.get(value)
    if member is not None:
        return member
    folded = value.replace("_", "").lower()
    for member in enum_cls:
        if member.value.replace("_", "") == folded:
            return member
    return None


def _cls_any(name: str) -> Any:
    from lorax.v1 import messages

    return getattr(messages, name)


def _clean_message(cls: type[Message], obj: Any, path: str) -> Any:
    specs = cls.__lorax_fields__
    if cls.__lorax_unwrap__:
        (only,) = specs
        if obj is None:
            return cls()
        return cls(**{only.name: _clean_field(only, obj, path)})
    if type(obj) is not dict:
        raise _bad(path, f"an object ({cls.__lorax_full_name__})", obj)
    kwargs: dict[str, Any] = {}
    for spec in specs:
        if spec.key not in obj:
            continue
        value = obj[spec.key]
        if value is None and spec.kind != KIND_RAW:
            continue  # null means unset (None), never 0 or ""
        if value is None and spec.kind == KIND_RAW and not spec.presence and not spec.null_if_unset:
            kwargs[spec.name] = None
            continue
        cleaned = _clean_field(spec, value, f"{path}.{spec.key}")
        if cleaned is not None or spec.presence or spec.null_if_unset:
            kwargs[spec.name] = cleaned
    if cls.__lorax_request__:
        # A request read back (by a test or a server): required fields LoRAX would
        # refuse as missing still build, at their zero values.
        for spec in specs:
            if spec.name not in kwargs and not spec.presence and not (spec.label and spec.omit_empty):
                kwargs[spec.name] = _zero(spec)
    try:
        return cls(**kwargs)
    except errors.LoraxError as exc:
        raise errors.ResponseDecodeError(f"{path}: {exc}") from None


def _zero(spec: FieldSpec) -> Any:
    if spec.label == "list":
        return []
    if spec.label == "map":
        return {}
    if spec.kind == KIND_RAW:
        return None
    if spec.kind == KIND_ENUM:
        enum_cls = _cls_any(spec.target)
        return next(iter(enum_cls))
    return _ZERO.get(spec.kind)


def _clean_field(spec: FieldSpec, value: Any, path: str) -> Any:
    if spec.label == "map":
        if type(value) is not dict:
            raise _bad(path, "an object", value)
        return {str(k): _clean_scalar(spec, v, f"{path}.{k}") for k, v in value.items() if v is not None}
    if spec.label == "list":
        if type(value) is not list:
            raise _bad(path, "an array", value)
        if spec.kind == KIND_FLOAT:
            # LoRAX prints a non-finite f32 as null, inside arrays too.
            return [math.nan if v is None else _clean_scalar(spec, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return [_clean_scalar(spec, v, f"{path}[{i}]") for i, v in enumerate(value)]
    return _clean_scalar(spec, value, path)


_JSON_KINDS = {
    str: (KIND_STRING, KIND_OPEN_ENUM, KIND_ENUM),
    bool: (KIND_BOOL,),
    int: (KIND_INT, KIND_FLOAT),
    float: (KIND_FLOAT,),
}


def _clean_oneof(spec: FieldSpec, value: Any, path: str) -> Any:
    """Pick the oneof member that can hold a JSON value of this type."""
    kinds = _JSON_KINDS.get(type(value), ())
    for member in spec.members:
        if member.kind in kinds:
            return _clean_scalar(member, value, path)
        if member.kind == KIND_MESSAGE:
            target = _cls(member.target)
            if member.unwrap:
                (only,) = target.__lorax_fields__
                if type(value) is (dict if only.label == "map" else list):
                    return _clean_field(only, value, path)
            elif type(value) is dict:
                return _clean_message(target, value, path)
    expected = " or ".join(m.kind if m.kind != KIND_MESSAGE else "an object or array" for m in spec.members)
    raise _bad(path, expected, value)
