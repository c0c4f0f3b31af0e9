"""The protobuf binary encoding of a Struct, written directly (no upb message in between).

The gateway sends every response message as protobuf binary inside a WebSocket frame.
Going Struct -> upb message (lorax/_convert.py) -> bytes costs a Python walk plus the
upb construction for every token; the wire format of these messages is simple enough
(varints, length-delimited strings and messages, fixed-width floats) to write straight
from the Struct's fields. One encoder per class is compiled, on first use, from the
class's ``__lorax_fields__`` and the field numbers and types of its upb twin.

Exactness: the output is byte-for-byte what upb's ``SerializeToString()`` gives for
``to_proto(message)`` (fields in number order, packed repeated scalars, implicit-presence
zero values left out; tests/test_pbwire.py checks it for every class it supports).
Classes with a oneof, a free-form JSON, a map or an unwrapped field, and any value the
fast path does not expect (a wrong type, an int out of its range, an unknown enum
spelling), go through lorax/_convert.py instead, which raises what it raises for them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from lorax import _convert
from lorax._build import build_once
from lorax._message import KIND_ENUM, KIND_MESSAGE, KIND_OPEN_ENUM, KIND_RAW, FieldSpec, Message, WireEnum
from lorax.v1 import messages as _messages

__all__ = ["encoder", "frame_message", "to_binary"]


class _Fallback(Exception):
    """A value the fast path does not handle: encode through upb instead."""


# Varints of 0..16383 (one or two bytes), looked up: token ids, lengths, counts.
VARINTS = [bytes((i,)) if i < 128 else bytes(((i & 0x7F) | 0x80, i >> 7)) for i in range(1 << 14)]
_V_LIMIT = 1 << 14


def _varint(value: int) -> bytes:
    if value < _V_LIMIT:
        if value < 0:
            value += 1 << 64  # negative int32/int64: ten bytes of two's complement
        else:
            return VARINTS[value]
    out = bytearray()
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


_T = FieldDescriptor
_INT_RANGES = {
    _T.TYPE_INT32: (-(1 << 31), 1 << 31),
    _T.TYPE_INT64: (-(1 << 63), 1 << 63),
    _T.TYPE_UINT32: (0, 1 << 32),
    _T.TYPE_UINT64: (0, 1 << 64),
}
_PACK_D = struct.Struct("<d").pack
_PACK_F = struct.Struct("<f").pack

_encoders: dict[type[Any], Callable[[Any], bytes] | None] = {}


def encoder(cls: type[Message]) -> Callable[[Any], bytes] | None:
    """The direct encoder of `cls`, or None when the class needs the upb path."""
    # A class that contains itself finds None while it is built: the upb path.
    return _encoders[cls] if cls in _encoders else build_once(_encoders, cls, _build, None)


def _proto_fields(cls: type[Message]) -> list[tuple[FieldSpec, Any]] | None:
    """Each field of `cls` with its upb field; None when one is free-form JSON, a map,
    unwrapped, or not a field of the upb class (a oneof, or a name that differs from
    the proto's): such classes take the general path."""
    descriptor = _convert.proto_class(cls).DESCRIPTOR
    fields = []
    for spec in cls.__lorax_fields__:
        if spec.kind == KIND_RAW or spec.label == "map" or spec.unwrap:
            return None
        fd = descriptor.fields_by_name.get(spec.name)
        if fd is None:
            return None
        fields.append((spec, fd))
    return fields


def _build(cls: type[Message]) -> Callable[[Any], bytes] | None:
    """Compile the encoder of `cls` from generated Python source (one straight-line
    function per class: no per-field calls, which cost more than the encoding itself)."""
    env: dict[str, Any] = {
        "_Fallback": _Fallback,
        "_varint": _varint,
        "_V": VARINTS,
        "_PACK_D": _PACK_D,
        "_PACK_F": _PACK_F,
        "WireEnum": WireEnum,
        "isinstance": isinstance,
        "type": type,
        "int": int,
        "float": float,
        "str": str,
        "list": list,
        "len": len,
    }
    body = _body_source(cls, env, "")
    if body is None:
        return None
    lines = ["def encode(m):", *("    " + line for line in body), '    return b"".join(parts)']
    exec("\n".join(lines), env)
    encode: Callable[[Any], bytes] = env["encode"]
    return encode


# How deep a singular message field's encoding is written into its parent's function.
_INLINE_DEPTH = 2


def _body_source(cls: type[Message], env: dict[str, Any], tag: str) -> list[str] | None:
    """Source lines writing the fields of the message in ``m{tag}`` to the list
    ``parts{tag}``; `tag` keeps the names of a nested message's apart from its parent's."""
    found = _proto_fields(cls)
    if found is None:
        return None
    add = f"add{tag}"
    lines = [f"parts{tag} = []", f"{add} = parts{tag}.append"]
    for number, spec, fd in sorted(((fd.number, spec, fd) for spec, fd in found), key=lambda f: f[0]):
        body = _field_source(number, spec, fd, env, tag, add)
        if body is None:
            return None
        lines.append(f"v = m{tag}.{spec.name}")
        lines.extend(body)
    return lines


def _field_source(number: int, spec: Any, fd: Any, env: dict[str, Any], tag: str, add: str) -> list[str] | None:
    """Source lines writing field `spec` (its value is in ``v``) with `add`."""
    name = f"{tag}_{spec.name}" if tag else spec.name
    if spec.kind == KIND_MESSAGE:
        if fd.type != _T.TYPE_MESSAGE:
            return None
        target = _convert._BY_SHORT[spec.target]
        inner = encoder(target)
        if inner is None:
            return None
        env[f"E_{name}"] = inner
        env[f"T_{name}"] = target
        _length_prefixes(env, name, number)
        put = [
            "n = len(d)",
            f"{add}((L_{name}[n] if n < 128 else K_{name} + _varint(n)) + d)",
        ]
        depth = tag.count("_") + 1
        if spec.label != "list" and depth <= _INLINE_DEPTH:
            # A singular message (a stream's token, its details): its fields written
            # here, without a call and a function frame per message.
            sub = f"{tag}_{number}"  # unique: the path of field numbers
            body = _body_source(target, env, sub)
            if body is not None:
                return [
                    "if v is not None:",
                    f"    if type(v) is not T_{name}: raise _Fallback",
                    f"    m{sub} = v",
                    *("    " + line for line in body),
                    f'    d = b"".join(parts{sub})',
                    *("    " + line for line in put),
                ]
        one = [f"if type(x) is not T_{name}: raise _Fallback", f"d = E_{name}(x)", *put]
        if spec.label == "list":
            return ["if type(v) is not list: raise _Fallback", "for x in v:", *("    " + line for line in one)]
        return ["if v is not None:", "    x = v", *("    " + line for line in one)]
    found = _scalar_source(spec, fd, name, env)
    if found is None:
        return None
    check, write, wire_type, nonzero = found
    if spec.label == "list":
        if wire_type == 2:  # strings: one record each
            _length_prefixes(env, name, number)
            return [
                "if type(v) is not list: raise _Fallback",
                "for x in v:",
                *("    " + line for line in check),
                f"    {add}({write})",
            ]
        env[f"K_{name}"] = _key(number, 2)
        return [
            "if type(v) is not list: raise _Fallback",
            "if v:",
            "    packed = []",
            "    for x in v:",
            *("        " + line for line in check),
            f"        packed.append({write})",
            '    d = b"".join(packed)',
            f"    {add}(K_{name} + _varint(len(d)) + d)",
        ]
    if wire_type == 2:
        _length_prefixes(env, name, number)
        record = write  # the key is in the length prefix
    else:
        env[f"K_{name}"] = _key(number, wire_type)
        record = f"K_{name} + {write}"
    if spec.presence:
        return ["if v is not None:", "    x = v", *("    " + line for line in check), f"    {add}({record})"]
    # proto3 leaves a zero value out (a float by its bits: -0.0 is written).
    return ["x = v", *check, f"if {nonzero}:", f"    {add}({record})"]


def _length_prefixes(env: dict[str, Any], name: str, number: int) -> None:
    """Give the source of length-delimited field `name` ``K_name``, its key, and
    ``L_name``, its key followed by each length below 128 (one lookup per record)."""
    key = _key(number, 2)
    env[f"K_{name}"] = key
    env[f"L_{name}"] = [key + bytes((n,)) for n in range(128)]


def _scalar_source(spec: Any, fd: Any, name: str, env: dict[str, Any]) -> tuple[list[str], str, int, str] | None:
    """(lines checking ``x``, expression writing ``x``, wire type, test for "not zero")."""
    t = fd.type
    if t in _INT_RANGES and spec.kind == "int":
        lo, hi = _INT_RANGES[t]
        small = "x < 16384" if lo >= 0 else "0 <= x < 16384"
        return (
            [f"if type(x) is not int or not {lo} <= x < {hi}: raise _Fallback"],
            f"(_V[x] if {small} else _varint(x))",
            0,
            "x",
        )
    if t == _T.TYPE_BOOL and spec.kind == "bool":
        # Written only when true (proto3 leaves false out; a list packs both).
        return ["if x is not True and x is not False: raise _Fallback"], '(b"\\x01" if x else b"\\x00")', 0, "x"
    if t in (_T.TYPE_DOUBLE, _T.TYPE_FLOAT) and spec.kind == "float":
        pack, size, wire_type = ("_PACK_D", 8, 1) if t == _T.TYPE_DOUBLE else ("_PACK_F", 4, 5)
        env[f"Z_{name}"] = b"\x00" * size
        return (
            ["if type(x) is not float and type(x) is not int: raise _Fallback", f"d = {pack}(x)"],
            "d",
            wire_type,
            f"d != Z_{name}",
        )
    if t == _T.TYPE_STRING and spec.kind in ("string", KIND_OPEN_ENUM):
        return (
            [
                "if type(x) is not str and not isinstance(x, str): raise _Fallback",
                'd = x.encode("utf-8")',
                "n = len(d)",
            ],
            f"(L_{name}[n] if n < 128 else K_{name} + _varint(n)) + d",
            2,
            "d",
        )
    if t == _T.TYPE_ENUM and spec.kind == KIND_ENUM:
        env[f"N_{name}"] = _convert._enum_maps(spec.target)[0]
        return (
            [
                f"n = N_{name}.get(x.value if isinstance(x, WireEnum) else x)",
                "if n is None: raise _Fallback",
            ],
            "(_V[n] if 0 <= n < 16384 else _varint(n))",
            0,
            "n",
        )
    return None


def to_binary(message: Message) -> bytes:
    """The protobuf binary encoding of `message` (a Struct, or a upb message), as upb would write it."""
    if not isinstance(message, Message):
        return _convert.to_binary(message)
    encode = encoder(type(message))
    if encode is not None:
        try:
            return encode(message)
        except (_Fallback, OverflowError, struct.error, UnicodeEncodeError):
            pass
    return _convert.to_binary(message)


_FRAME_CALL_ID = _key(1, 0)
_FRAME_MESSAGE = _key(4, 2)
_FRAME_MESSAGE_BYTES = _key(1, 2)


def frame_message(call_id: int, payload: bytes) -> bytes:
    """The serialized ``Frame`` carrying ``FrameMessage(message=payload)`` for `call_id`.

    Same bytes as ``wsf.encode_message``, without building two upb messages.
    """
    if not 0 < call_id < 1 << 64:
        raise ValueError(f"call id {call_id} is out of range")
    inner = _FRAME_MESSAGE_BYTES + _varint(len(payload)) + payload if payload else b""
    return _FRAME_CALL_ID + _varint(call_id) + _FRAME_MESSAGE + _varint(len(inner)) + inner


# -- bytes -> Struct -----------------------------------------------------------------
#
# Parsing stays upb's (C, and exact on every input); what is compiled per class is the
# walk from the upb message to the Struct, in place of lorax/_convert.py's per-field
# closures: one generated expression per class, for response classes (request classes
# validate on construction and keep the general path).

_builders: dict[type[Any], Callable[[Any], Any] | None] = {}


def _builder(cls: type[Message]) -> Callable[[Any], Any] | None:
    return _builders[cls] if cls in _builders else build_once(_builders, cls, _build_from, None)


def _build_from(cls: type[Message]) -> Callable[[Any], Any] | None:
    if cls.__lorax_request__:
        return None
    found = _proto_fields(cls)
    if found is None:
        return None
    env: dict[str, Any] = {"C": cls, "list": list}
    args = []
    for spec, fd in found:
        name = spec.name
        if spec.kind == KIND_MESSAGE:
            inner = _builder(_convert._BY_SHORT[spec.target])
            if inner is None or fd.type != _T.TYPE_MESSAGE:
                return None
            env[f"B_{name}"] = inner
            if spec.label == "list":
                expr = f"[B_{name}(x) for x in p.{name}]"
            else:
                expr = f'(B_{name}(p.{name}) if p.HasField("{name}") else None)'
        elif spec.kind == KIND_ENUM:
            if fd.type != _T.TYPE_ENUM:
                return None
            enum_cls = getattr(_messages, spec.target)
            env[f"N_{name}"] = {n: enum_cls(w) for n, w in _convert._enum_maps(spec.target)[1].items()}
            expr = _read_source(spec, f"N_{name}.get({{}})")
        elif spec.kind in ("int", "float", "bool", "string", KIND_OPEN_ENUM) and fd.type != _T.TYPE_ENUM:
            expr = _read_source(spec, "{}")
        else:
            return None
        args.append(f"{name}={expr}")
    source = "def build(p):\n    return C(" + ", ".join(args) + ")"
    exec(source, env)
    build: Callable[[Any], Any] = env["build"]
    return build


_parsers: dict[type[Any], Callable[[bytes], Any]] = {}


def from_binary(cls: type[Message], data: bytes) -> Any:
    """A Struct of class `cls` from its protobuf binary encoding; equal to what
    ``lorax._convert.from_binary`` gives.

    Raises google.protobuf.message.DecodeError for bytes that are not such a message.
    """
    parse = _parsers.get(cls)
    if parse is None:
        build = _builder(cls)
        if build is None:
            return _convert.from_binary(cls, data)
        from_string = _convert.proto_class(cls).FromString

        def parse(data: bytes) -> Any:
            try:
                message = from_string(data)
            except UnicodeDecodeError as exc:
                raise _convert.not_utf8(exc) from None
            return build(message)

        _parsers[cls] = parse
    return parse(data)


def _read_source(spec: Any, item: str) -> str:
    """Source reading scalar field `spec` of the upb message ``p``; `item` is the source
    of one value with ``{}`` for it."""
    name = spec.name
    if spec.label == "list":
        return f"list(p.{name})" if item == "{}" else f"[{item.format('x')} for x in p.{name}]"
    value = item.format(f"p.{name}")
    return f'({value} if p.HasField("{name}") else None)' if spec.presence else value
