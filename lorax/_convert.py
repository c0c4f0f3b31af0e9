"""Structs of :mod:`lorax.types` to and from their ``lorax.v1`` protobuf (upb) twins.

Used where messages travel as binary protobuf (the WebSocket transport and the
gateway) and by ``Message.to_proto()`` / ``from_proto()``. Driven by the
``__lorax_fields__`` table of each generated class, so no field is written here.
Importing this module loads protobuf; ``import lorax`` does not.

Only the protobuf APIs that every runtime since 3.20 has are used here (the generated
classes themselves, ``HasField``, ``WhichOneof``, ``DESCRIPTOR.full_name``), so the
range in pyproject.toml can stay wide: ML environments often pin an old protobuf.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from lorax import errors
from lorax._build import build_recursive, oneof_types, per_label, run_steps
from lorax._message import (
    KIND_ENUM,
    KIND_MESSAGE,
    KIND_ONEOF,
    KIND_RAW,
    UNSET,
    FieldSpec,
    Message,
    WireEnum,
)
from lorax.v1 import (
    embed_pb2,
    generate_pb2,
    openai_pb2,
    server_pb2,
    tokenize_pb2,
)
from lorax.v1 import messages as _messages

__all__ = ["from_proto", "proto_class", "struct_class", "to_proto"]


def _proto_classes() -> dict[str, type[ProtoMessage]]:
    out = {}
    for module in (embed_pb2, generate_pb2, openai_pb2, server_pb2, tokenize_pb2):
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, ProtoMessage):
                out[obj.DESCRIPTOR.full_name] = obj
    return out


_PROTOS = _proto_classes()


def _struct_classes() -> dict[str, type[Message]]:
    out = {}
    for obj in vars(_messages).values():
        if isinstance(obj, type) and issubclass(obj, Message) and obj is not Message:
            out[obj.__lorax_full_name__] = obj
    return out


_STRUCTS = _struct_classes()
_BY_SHORT = {cls.__name__: cls for cls in _STRUCTS.values()}


def proto_class(cls: type[Message]) -> type[ProtoMessage]:
    """The upb class of a Struct class."""
    return _PROTOS[cls.__lorax_full_name__]


def struct_class(cls: type[ProtoMessage]) -> type[Message]:
    """The Struct class of a upb class."""
    return _STRUCTS[cls.DESCRIPTOR.full_name]


def to_proto(message: Message) -> Any:
    """The upb message equal to `message`."""
    cls = type(message)
    try:
        return proto_class(cls)(**_to_kwargs(cls)(message))
    except (ValueError, TypeError) as exc:
        # A value the binary form cannot hold (assignment is not checked): typed, like JSON's.
        raise errors.InvalidRequestError(f"{cls.__name__} cannot be written as protobuf: {exc}") from None


def from_proto(message: ProtoMessage) -> Any:
    """The Struct equal to the upb `message`."""
    return _from(_STRUCTS[message.DESCRIPTOR.full_name])(message)


# -- enums ---------------------------------------------------------------------------

_enum_numbers: dict[str, tuple[dict[str, int], dict[int, str]]] = {}


def _enum_maps(target: str) -> tuple[dict[str, int], dict[int, str]]:
    maps = _enum_numbers.get(target)
    if maps is None:
        # The generated enum keeps each .proto value name as an alias of its LoRAX
        # spelling (FinishReason.FINISH_REASON_LENGTH == "length"): no options needed.
        members = getattr(_messages, target).__members__
        to_number: dict[str, int] = {}
        to_wire: dict[int, str] = {}
        for module in (generate_pb2, openai_pb2):
            enum_type = module.DESCRIPTOR.enum_types_by_name.get(target)
            if enum_type is None:
                continue
            for value in enum_type.values:
                member = members.get(value.name)
                if member is not None:
                    to_number[member.value] = value.number
                    to_wire[value.number] = member.value
        maps = _enum_numbers[target] = (to_number, to_wire)
    return maps


# -- Struct -> upb keyword arguments -------------------------------------------------

_kwargs_builders: dict[type[Any], Callable[[Any], dict[str, Any]]] = {}


def _to_kwargs(cls: type[Message]) -> Callable[[Any], dict[str, Any]]:
    build = _kwargs_builders.get(cls)
    if build is None:
        build = build_recursive(_kwargs_builders, cls, _build_to_kwargs)
    return build


def _raw_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _value_to(spec: FieldSpec) -> Callable[[Any], Any] | None:
    if spec.kind == KIND_ENUM:
        to_number = _enum_maps(spec.target)[0]

        def enum_number(value: Any) -> int:
            wire = value.value if isinstance(value, WireEnum) else value
            number = to_number.get(wire)
            if number is None:
                raise errors.InvalidRequestError(f"{spec.name}={value!r} is not a {spec.target} value")
            return number

        return enum_number
    if spec.kind == KIND_RAW:
        return _raw_text
    if spec.kind == KIND_MESSAGE:
        # Nested messages are built as messages, not dicts: protobuf before 4.21 cannot
        # fill a map of messages from dicts.
        target = _BY_SHORT[spec.target]
        proto = proto_class(target)
        if spec.unwrap:
            (only,) = target.__lorax_fields__
            if only.kind == KIND_ONEOF:

                def oneof_message(value: Any) -> Any:
                    member = _member_for(only, value)
                    conv = _container_to(member)
                    return proto(**{member.name: value if conv is None else conv(value)})

                return oneof_message
            inner = _container_to(only)
            return lambda value: proto(**{only.name: value if inner is None else inner(value)})
        build = _to_kwargs(target)
        return lambda value: proto(**build(value))
    return None


def _container_to(spec: FieldSpec) -> Callable[[Any], Any] | None:
    if spec.kind == KIND_ONEOF:
        return None  # handled by the caller, which needs the member's name
    return per_label(spec, _value_to(spec))


def _member_for(spec: FieldSpec, value: Any) -> FieldSpec:
    for typ, member in oneof_types(spec, _BY_SHORT.__getitem__):
        if isinstance(value, typ):
            return member
    raise errors.InvalidRequestError(f"{spec.name}: a {type(value).__name__} fits none of its kinds")


def _build_to_kwargs(cls: type[Message]) -> Callable[[Any], dict[str, Any]]:
    return run_steps([_to_step(spec) for spec in cls.__lorax_fields__])


def _to_step(spec: FieldSpec) -> Callable[[Any, dict[str, Any]], None]:
    name = spec.name
    if spec.kind == KIND_ONEOF:

        def oneof_step(message: Any, out: dict[str, Any]) -> None:
            value = getattr(message, name)
            if value is None:
                return
            member = _member_for(spec, value)
            conv = _container_to(member)
            out[member.name] = value if conv is None else conv(value)

        return oneof_step
    conv = _container_to(spec)
    if spec.kind == KIND_RAW:
        # Free-form JSON travels as its text; the text `null` is JSON null, which
        # differs from the field being unset where LoRAX tells them apart.
        keep_null = not spec.null_if_unset

        def raw_step(message: Any, out: dict[str, Any]) -> None:
            value = getattr(message, name)
            if value is UNSET or (value is None and not keep_null):
                return
            out[name] = _raw_text(value)

        return raw_step

    def step(message: Any, out: dict[str, Any]) -> None:
        value = getattr(message, name)
        if value is None:
            return
        out[name] = value if conv is None else conv(value)

    return step


# -- upb -> Struct -------------------------------------------------------------------

_from_builders: dict[type[Any], Callable[[Any], Any]] = {}


def _from(cls: type[Message]) -> Callable[[Any], Any]:
    build = _from_builders.get(cls)
    if build is None:
        build = build_recursive(_from_builders, cls, _build_from)
    return build


def _value_from(spec: FieldSpec) -> Callable[[Any], Any] | None:
    if spec.kind == KIND_ENUM:
        to_wire = _enum_maps(spec.target)[1]
        enum_cls = getattr(_messages, spec.target)

        def enum_member(number: int) -> Any:
            wire = to_wire.get(number)
            return None if wire is None else enum_cls(wire)

        return enum_member
    if spec.kind == KIND_RAW:
        return msgspec.json.decode
    if spec.kind == KIND_MESSAGE:
        target = _BY_SHORT[spec.target]
        if spec.unwrap:
            (only,) = target.__lorax_fields__
            return _field_from(only)
        return _from(target)
    return None


def _field_from(spec: FieldSpec) -> Callable[[Any], Any]:
    """Read field `spec` out of a upb message."""
    name = spec.name
    if spec.kind == KIND_ONEOF:
        members = {m.name: _value_from(m) for m in spec.members}

        def oneof_value(message: Any) -> Any:
            which = message.WhichOneof(name)
            if which is None:
                return None
            conv = members[which]
            value = getattr(message, which)
            return value if conv is None else conv(value)

        return oneof_value
    conv = _value_from(spec)
    if spec.label == "list":
        if conv is None:
            return lambda message: list(getattr(message, name))
        return lambda message: [conv(v) for v in getattr(message, name)]
    if spec.label == "map":
        if conv is None:
            return lambda message: dict(getattr(message, name))
        return lambda message: {k: conv(v) for k, v in getattr(message, name).items()}
    has_presence = spec.presence
    if spec.kind == KIND_RAW:
        unset: Any = UNSET if spec.presence and not spec.null_if_unset else None

        def raw_value(message: Any) -> Any:
            if has_presence and not message.HasField(name):
                return unset
            text = getattr(message, name)
            return None if text == "" else msgspec.json.decode(text)

        return raw_value
    if has_presence:
        if conv is None:
            return lambda message: getattr(message, name) if message.HasField(name) else None
        return lambda message: conv(getattr(message, name)) if message.HasField(name) else None
    if conv is None:
        return lambda message: getattr(message, name)
    return lambda message: conv(getattr(message, name))


def _build_from(cls: type[Message]) -> Callable[[Any], Any]:
    readers = [(spec.name, _field_from(spec)) for spec in cls.__lorax_fields__]
    required = {
        spec.name
        for spec in cls.__lorax_fields__
        if cls.__lorax_request__ and not spec.presence and not (spec.label and spec.omit_empty)
    }
    # A free-form JSON reader says UNSET itself; its None is JSON null, which must not
    # fall back to the field's default (UNSET where null differs from absent).
    required |= {spec.name for spec in cls.__lorax_fields__ if spec.kind == KIND_RAW}

    def build(message: Any) -> Any:
        kwargs = {}
        for name, read in readers:
            value = read(message)
            if value is not None or name in required:
                kwargs[name] = value
        return cls(**kwargs)

    return build


def to_binary(message: Message) -> bytes:
    """The protobuf binary encoding of a Struct, or of a upb message (what a WebSocket frame carries)."""
    proto = to_proto(message) if isinstance(message, Message) else message
    data: bytes = proto.SerializeToString()
    return data


_binary_decoders: dict[type[Any], Callable[[bytes], Any]] = {}


def from_binary(cls: type[Message], data: bytes) -> Any:
    """A Struct of class `cls` from its protobuf binary encoding.

    Raises google.protobuf.message.DecodeError for bytes that are not such a message.
    """
    decode = _binary_decoders.get(cls)
    if decode is None:
        parse = proto_class(cls).FromString
        build = _from(cls)

        def decode(data: bytes) -> Any:
            try:
                message = parse(data)
            except UnicodeDecodeError as exc:
                raise not_utf8(exc) from None
            return build(message)

        _binary_decoders[cls] = decode
    return decode(data)


def not_utf8(exc: UnicodeDecodeError) -> DecodeError:
    """The DecodeError that upb raises for a string field that is not UTF-8, in place of
    the UnicodeDecodeError that protobuf's pure-Python implementation raises (protobuf 3.x
    runs it where it has no C extension, e.g. 3.20 on Python 3.11)."""
    return DecodeError(f"a string field is not UTF-8: {exc.reason}")
