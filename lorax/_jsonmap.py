"""The JSON shape of each message, read once from its descriptor and custom options.

`lorax/v1/options.proto` documents the rules; this module turns a message descriptor
into a `MessageMap` that the codec walks. Nothing here is written per message: adding
a field to a .proto is enough for the codec to encode and decode it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from lorax.v1 import options_pb2

# FieldDescriptor.TYPE_* groups.
_INT_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_INT_RANGES = {
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
_FLOAT_TYPES = frozenset({FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT})

KIND_STRING = "string"
KIND_BOOL = "bool"
KIND_INT = "int"
KIND_FLOAT = "float"
KIND_ENUM = "enum"
KIND_MESSAGE = "message"
KIND_BYTES = "bytes"


@dataclass(frozen=True)
class EnumMap:
    """An enum's wire spellings."""

    full_name: str
    to_wire: dict[int, str]
    from_wire: dict[str, int]
    from_lower: dict[str, int]

    def decode(self, text: str) -> int:
        """The number for a wire spelling; unknown spellings give 0 (forward compatible)."""
        number = self.from_wire.get(text)
        if number is None:
            number = self.from_lower.get(text.lower(), 0)
        return number


@dataclass(eq=False)
class FieldMap:
    """How one field maps to JSON."""

    name: str
    key: str
    kind: str
    repeated: bool
    is_map: bool
    presence: bool
    raw_json: bool
    null_if_unset: bool
    omit_empty: bool
    f32: bool
    oneof: str | None
    # The accepted range of an integer field.
    int_range: tuple[int, int] = (0, 0)
    enum: EnumMap | None = None
    # For message fields, and for the value of a map field when it is a message.
    message: Descriptor | None = None
    map_value: FieldMap | None = None


@dataclass(eq=False)
class MessageMap:
    """How one message maps to JSON."""

    full_name: str
    cls: type[Any]
    fields: tuple[FieldMap, ...]
    by_key: dict[str, FieldMap]
    oneofs: dict[str, tuple[FieldMap, ...]]
    unwrap: bool
    # True when `cls(**orjson.loads(body))` already gives the right message (no enum,
    # raw JSON, renamed key, oneof or unwrapped field anywhere below).
    plain: bool = False
    # The JSON keys a plain dict may carry.
    keys: frozenset[str] = field(default_factory=frozenset)


_lock = threading.Lock()
_messages: dict[str, MessageMap] = {}
_enums: dict[str, EnumMap] = {}


def enum_map(descriptor: EnumDescriptor) -> EnumMap:
    """The wire spellings of an enum, from its `wire_value` and `wire_alias` options."""
    cached = _enums.get(descriptor.full_name)
    if cached is not None:
        return cached
    to_wire: dict[int, str] = {}
    from_wire: dict[str, int] = {}
    from_lower: dict[str, int] = {}
    for value in descriptor.values:
        opts = value.GetOptions()
        wire = opts.Extensions[options_pb2.wire_value] if opts.HasExtension(options_pb2.wire_value) else ""
        if wire:
            to_wire[value.number] = wire
            from_wire[wire] = value.number
            from_lower.setdefault(wire.lower(), value.number)
        for alias in opts.Extensions[options_pb2.wire_alias]:
            from_wire[alias] = value.number
            from_lower.setdefault(alias.lower(), value.number)
        # The proto name is accepted on input too, for callers that print with json_format.
        from_lower.setdefault(value.name.lower(), value.number)
    result = EnumMap(descriptor.full_name, to_wire, from_wire, from_lower)
    _enums[descriptor.full_name] = result
    return result


def message_map(descriptor: Descriptor) -> MessageMap:
    """The JSON map of a message type, built on first use and cached."""
    cached = _messages.get(descriptor.full_name)
    if cached is not None:
        return cached
    with _lock:
        cached = _messages.get(descriptor.full_name)
        if cached is not None:
            return cached
        built = _build(descriptor)
        _messages[descriptor.full_name] = built
        built.plain = _is_plain(built, set())
        return built


def _kind(fd: FieldDescriptor) -> str:
    t = fd.type
    if t == FieldDescriptor.TYPE_STRING:
        return KIND_STRING
    if t == FieldDescriptor.TYPE_BOOL:
        return KIND_BOOL
    if t in _INT_TYPES:
        return KIND_INT
    if t in _FLOAT_TYPES:
        return KIND_FLOAT
    if t == FieldDescriptor.TYPE_ENUM:
        return KIND_ENUM
    if t == FieldDescriptor.TYPE_BYTES:
        return KIND_BYTES
    return KIND_MESSAGE


def _field_map(fd: FieldDescriptor) -> FieldMap:
    opts = fd.GetOptions()
    json_opts = opts.Extensions[options_pb2.json] if opts.HasExtension(options_pb2.json) else options_pb2.FieldJson()
    kind = _kind(fd)
    is_map = kind == KIND_MESSAGE and fd.message_type is not None and fd.message_type.GetOptions().map_entry
    repeated = bool(fd.is_repeated)
    oneof = fd.containing_oneof
    real_oneof = oneof.name if oneof is not None and not _is_synthetic(oneof) else None
    fm = FieldMap(
        name=fd.name,
        key=json_opts.wire_name or fd.name,
        kind=kind,
        repeated=repeated and not is_map,
        is_map=bool(is_map),
        presence=not repeated and fd.has_presence,
        raw_json=json_opts.raw_json,
        null_if_unset=json_opts.null_if_unset,
        omit_empty=json_opts.omit_empty,
        f32=json_opts.f32,
        oneof=real_oneof,
    )
    if kind == KIND_INT:
        fm.int_range = _INT_RANGES[fd.type]
    if kind == KIND_ENUM:
        assert fd.enum_type is not None
        fm.enum = enum_map(fd.enum_type)
    elif is_map:
        assert fd.message_type is not None
        value_fd = fd.message_type.fields_by_name["value"]
        fm.map_value = _field_map(value_fd)
        fm.map_value.f32 = fm.map_value.f32 or json_opts.f32
    elif kind == KIND_MESSAGE:
        fm.message = fd.message_type
    return fm


def _is_synthetic(oneof: Any) -> bool:
    # proto3 `optional` fields live in a synthetic oneof of their own.
    synthetic = getattr(oneof, "is_synthetic", None)
    if synthetic is not None:
        return bool(synthetic)
    return len(oneof.fields) == 1 and oneof.name == "_" + oneof.fields[0].name


def _build(descriptor: Descriptor) -> MessageMap:
    fields = tuple(_field_map(fd) for fd in descriptor.fields)
    oneofs: dict[str, list[FieldMap]] = {}
    for fm in fields:
        if fm.oneof is not None:
            oneofs.setdefault(fm.oneof, []).append(fm)
    unwrap = descriptor.GetOptions().Extensions[options_pb2.unwrap]
    if unwrap and not (len(fields) == 1 or (len(oneofs) == 1 and all(f.oneof for f in fields))):
        raise TypeError(f"{descriptor.full_name}: unwrap needs exactly one field or one oneof")
    by_key = {fm.key: fm for fm in fields}
    return MessageMap(
        full_name=descriptor.full_name,
        cls=message_factory.GetMessageClass(descriptor),
        fields=fields,
        by_key=by_key,
        oneofs={name: tuple(members) for name, members in oneofs.items()},
        unwrap=bool(unwrap),
        keys=frozenset(by_key),
    )


def _is_plain(mm: MessageMap, seen: set[str]) -> bool:
    if mm.unwrap or mm.oneofs:
        return False
    seen.add(mm.full_name)
    for fm in mm.fields:
        if fm.kind == KIND_ENUM or fm.raw_json or fm.key != fm.name or fm.kind == KIND_BYTES:
            return False
        if fm.repeated and fm.kind == KIND_STRING:
            # upb's constructor takes any iterable here: "abc" would become ["a", "b", "c"].
            return False
        sub = fm.message if fm.map_value is None else fm.map_value.message
        if fm.map_value is not None and (fm.map_value.kind == KIND_ENUM or fm.map_value.raw_json):
            return False
        if sub is not None and sub.full_name not in seen:
            sub_map = _messages.get(sub.full_name) or _build_cached(sub)
            if not _is_plain(sub_map, seen):
                return False
    return True


def _build_cached(descriptor: Descriptor) -> MessageMap:
    # Called with _lock held, from _is_plain.
    built = _build(descriptor)
    _messages[descriptor.full_name] = built
    built.plain = _is_plain(built, {descriptor.full_name})
    return built
