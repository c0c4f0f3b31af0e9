"""The base classes of the generated message types (``lorax/v1/messages.py``).

Every request and response class is a :class:`msgspec.Struct` generated from
``proto/lorax/v1/*.proto`` by ``tools/protoc_gen_lorax.py``. This module holds what they
share: the JSON-mapping metadata the generator writes for each class (:class:`FieldSpec`),
the conversions (``to_dict``, ``to_json``, ``to_proto``, the pydantic-style names the
official client's users call), a one-line repr, and the ``str`` enum base.

Nothing here imports ``google.protobuf``: protobuf is loaded only by ``to_proto`` /
``from_proto`` and the WebSocket transport.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar

import msgspec

if TYPE_CHECKING:
    from google.protobuf.message import Message as ProtoMessage

__all__ = ["UNSET", "FieldSpec", "Message", "UnsetType", "WireEnum"]

UNSET = msgspec.UNSET
UnsetType = msgspec.UnsetType

M = TypeVar("M", bound="Message")

# A plain dict of field values; spelled as an alias because `Message.dict` shadows the builtin.
FieldDict = dict[str, Any]

# What a field holds, for the codec and the protobuf conversion.
KIND_STRING = "string"
KIND_BOOL = "bool"
KIND_INT = "int"
KIND_FLOAT = "float"
KIND_ENUM = "enum"
KIND_OPEN_ENUM = "open_enum"
KIND_MESSAGE = "message"
KIND_RAW = "raw"
KIND_ONEOF = "oneof"

# The values each protobuf integer type holds (FieldSpec.proto_type).
INT_RANGES: dict[str, tuple[int, int]] = {
    "int32": (-(2**31), 2**31 - 1),
    "sint32": (-(2**31), 2**31 - 1),
    "sfixed32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "fixed32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "sint64": (-(2**63), 2**63 - 1),
    "sfixed64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
    "fixed64": (0, 2**64 - 1),
}


class FieldSpec(NamedTuple):
    """How one Struct field maps to LoRAX JSON and to its protobuf field(s).

    Written by the generator from the field's descriptor and its ``(json)`` options
    (``proto/lorax/v1/options.proto`` documents them).
    """

    name: str
    """The Python attribute (the proto field name, or the oneof's name)."""
    key: str
    """The JSON key."""
    kind: str
    """One of the ``KIND_*`` constants."""
    label: str = ""
    """``""`` (singular), ``"list"`` or ``"map"``."""
    presence: bool = False
    """None (or UNSET for free-form JSON) means unset: the key is omitted or printed null."""
    null_if_unset: bool = False
    omit_empty: bool = False
    f32: bool = False
    proto_type: str = ""
    """The scalar's protobuf type (``uint32``, ``double``, ...), for range checks."""
    target: str = ""
    """The message or enum class name for message and enum fields."""
    unwrap: bool = False
    """The message target is printed as its single field's value (a bare array or a map)."""
    members: tuple[FieldSpec, ...] = ()
    """For a oneof: one spec per member, named as the proto field (``key`` is the oneof's)."""


class WireEnum(str, enum.Enum):
    """An enum whose values are LoRAX's spellings: members compare equal to those strings."""

    __str__ = str.__str__

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self.name}"


_REPR_ITEMS = 6
# Fields holding credentials: a repr (logs, tracebacks) shows that one is set, never its value.
_SECRET_FIELDS = frozenset({"api_token"})


def _short(value: Any) -> str:
    if isinstance(value, list):
        if len(value) > _REPR_ITEMS:
            shown = ", ".join(_short(v) for v in value[:_REPR_ITEMS])
            return f"[{shown}, ... {len(value) - _REPR_ITEMS} more]"
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, dict):
        items = list(value.items())
        shown = ", ".join(f"{k!r}: {_short(v)}" for k, v in items[:_REPR_ITEMS])
        more = f", ... {len(items) - _REPR_ITEMS} more" if len(items) > _REPR_ITEMS else ""
        return "{" + shown + more + "}"
    if isinstance(value, str) and len(value) > 200:
        return repr(value[:200]) + f"...({len(value)} chars)"
    if isinstance(value, WireEnum):
        return repr(value.value)
    return repr(value)


_NULL_IS_SET: dict[type[Any], frozenset[str]] = {}


def _null_is_set(cls: type[Any]) -> frozenset[str]:
    names = _NULL_IS_SET.get(cls)
    if names is None:
        names = _NULL_IS_SET[cls] = frozenset(f.name for f in msgspec.structs.fields(cls) if f.default is UNSET)
    return names


class Message(msgspec.Struct, kw_only=True, gc=False):
    """The base of every generated request and response class.

    Fields read as plain Python values: ``None`` where LoRAX sent ``null`` or left a
    key out (never a false ``0.0`` or ``0``), lists, dicts, ``str`` for strings and
    enum values. ``copy.copy``, ``==`` and pickling work as on any msgspec Struct.
    """

    __lorax_fields__: ClassVar[tuple[FieldSpec, ...]] = ()
    __lorax_full_name__: ClassVar[str] = ""
    __lorax_request__: ClassVar[bool] = False
    __lorax_unwrap__: ClassVar[bool] = False

    def __repr__(self) -> str:
        parts = []
        quiet = self.__lorax_request__  # requests: only what was set
        # Where absent is UNSET, None is JSON null and was set: show it.
        null_is_set = _null_is_set(type(self)) if quiet else frozenset()
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is UNSET or (quiet and ((value is None and name not in null_is_set) or value in ([], {}))):
                continue
            if name in _SECRET_FIELDS and value is not None:
                parts.append(f"{name}='<redacted>'")
                continue
            parts.append(f"{name}={_short(value)}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __rich_repr__(self) -> Any:  # pragma: no cover - used by rich when installed
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is not UNSET:
                yield name, ("<redacted>" if name in _SECRET_FIELDS and value is not None else value)

    # -- conversions ---------------------------------------------------------------

    def to_dict(self) -> FieldDict:
        """Every field as plain Python values (nested messages as dicts, enums as strings).

        Unset optional fields are ``None``; a free-form JSON field left out (``UNSET``) is
        not included.
        """
        return _to_builtins(self)  # type: ignore[no-any-return]

    def to_json(self) -> str:
        """This message as LoRAX's JSON, exactly as LoRAX sends or accepts it (a ``str``)."""
        from lorax import codec

        return codec.to_json(self).decode()

    def to_proto(self) -> ProtoMessage:
        """The same message as a ``lorax.v1`` protobuf (upb) message."""
        from lorax._convert import to_proto

        proto: ProtoMessage = to_proto(self)
        return proto

    @classmethod
    def from_proto(cls: type[M], message: ProtoMessage) -> M:
        """Build this class from its ``lorax.v1`` protobuf (upb) message."""
        from lorax._convert import from_proto

        result = from_proto(message)
        if not isinstance(result, cls):
            raise TypeError(f"{type(message).__name__} is not a {cls.__name__} message")
        return result

    @classmethod
    def from_json(cls: type[M], data: bytes | bytearray | memoryview | str) -> M:
        """Decode LoRAX JSON into this class (see :func:`lorax.codec.from_json`)."""
        from lorax import codec

        return codec.from_json(cls, data)

    # -- the official client's pydantic names ---------------------------------------

    def model_dump(self) -> FieldDict:
        """Like pydantic's ``model_dump()``: every field as plain Python values."""
        return _to_builtins(self)  # type: ignore[no-any-return]

    def model_dump_json(self) -> str:
        """Like pydantic's ``model_dump_json()``: :meth:`model_dump` as compact JSON."""
        return msgspec.json.encode(_to_builtins(self)).decode()

    def dict(self) -> FieldDict:
        """Alias of :meth:`model_dump` (pydantic v1's name)."""
        return _to_builtins(self)  # type: ignore[no-any-return]

    def json(self) -> str:
        """Alias of :meth:`model_dump_json` (pydantic v1's name)."""
        return msgspec.json.encode(_to_builtins(self)).decode()


def _to_builtins(value: Any) -> Any:
    if isinstance(value, Message):
        out = {}
        for name in value.__struct_fields__:
            item = getattr(value, name)
            if item is not UNSET:
                out[name] = _to_builtins(item)
        return out
    if isinstance(value, list):
        return [_to_builtins(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_builtins(v) for k, v in value.items()}
    if isinstance(value, WireEnum):
        return value.value
    return value
