"""protoc plugin: compile proto/lorax/v1/*.proto into msgspec Structs (lorax/v1/messages.py).

Run through grpcio-tools, as tools/gen_proto.py does::

    python -m grpc_tools.protoc -Iproto -I<grpc_tools>/_proto \
        --plugin=protoc-gen-lorax=<wrapper running this file> --lorax_out=OUT proto/lorax/v1/*.proto

It reads the same custom options as every other consumer of the schemas
(proto/lorax/v1/options.proto: ``json``, ``unwrap``, ``wire_value``, ``wire_alias``,
``route``) and writes one module holding, for every message, a Struct with type hints,
the field docs from the .proto comments, and a ``__lorax_fields__`` table that the codec
(lorax/codec.py) and the protobuf conversion (lorax/_convert.py) walk; for every enum a
``str`` enum whose values are LoRAX's spellings; and the service's routes.

Field mapping (LoRAX's `Option<T>` is a proto3 ``optional``):
  * ``optional`` scalars and message fields read ``None`` when unset or null.
  * Free-form JSON (``raw_json``) holds the parsed value; where null differs from absent
    (``optional`` without ``null_if_unset``) an absent key reads ``UNSET``.
  * A oneof is one attribute named after the oneof (its JSON key), typed as the union of
    its members; an ``unwrap`` message used as a field is replaced by its inner type.
  * Messages reachable from a request type are request classes: their non-optional
    fields are required keyword arguments, they encode with msgspec's own encoder
    (``omit_defaults``: unset optionals are left out) and they check on construction what
    LoRAX refuses (lorax/_validate.py). Response classes give every field a default, so a
    body from an older or newer server (keys missing or added) still decodes.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = "lorax/v1/messages.py"
# Hand-written extra checks per request class (`check_<ClassName>`), called by __post_init__.
VALIDATE = ROOT / "lorax" / "_validate.py"
# String fields that LoRAX copies into response headers with `HeaderValue::from_str(..).unwrap()`
# (router/src/server.rs): a control character crashes its router, so they are checked
# for one (lorax/_validate.py `HEADER`).
HEADER_FIELDS: dict[str, tuple[str, ...]] = {
    "GenerateParameters": ("adapter_id", "adapter_source"),
    "EmbedParameters": ("adapter_id", "adapter_source"),
}
# Files whose messages are LoRAX's REST bodies (websocket.proto frames are binary-only,
# options.proto holds the options themselves).
SKIP_FILES = {"lorax/v1/options.proto", "lorax/v1/websocket.proto"}

# The official lorax-client's member names, kept so that code written for it runs.
OFFICIAL_ENUM_ALIASES: dict[str, dict[str, str]] = {
    "FinishReason": {"Length": "length", "EndOfSequenceToken": "eos_token", "StopSequence": "stop_sequence"},
    "ResponseFormatType": {"json_object": "json_object", "text": "text", "json_schema": "json_schema"},
}


# The integer types as constrained msgspec types, so that the C decoder refuses an
# out-of-range number (the codec's careful path then names the field).
_INT_ALIASES = {
    "int32": "_I32",
    "sint32": "_I32",
    "sfixed32": "_I32",
    "uint32": "_U32",
    "fixed32": "_U32",
    "int64": "_I64",
    "sint64": "_I64",
    "sfixed64": "_I64",
    "uint64": "_U64",
    "fixed64": "_U64",
}
_INT_ALIAS_SOURCE = """
_I32 = Annotated[int, msgspec.Meta(ge=-2147483648, le=2147483647)]
_U32 = Annotated[int, msgspec.Meta(ge=0, le=4294967295)]
_I64 = Annotated[int, msgspec.Meta(ge=-9223372036854775808, le=9223372036854775807)]
_U64 = Annotated[int, msgspec.Meta(ge=0)]  # msgspec bounds stop at i64; it reads at most a u64
"""


@dataclass
class Field:
    name: str
    key: str
    kind: str
    label: str = ""
    presence: bool = False
    null_if_unset: bool = False
    omit_empty: bool = False
    f32: bool = False
    proto_type: str = ""
    target: str = ""
    unwrap: bool = False
    members: list[Field] = field(default_factory=list)
    doc: str = ""
    annotation: str = ""
    default: str | None = None  # Python source; None means required


@dataclass
class Msg:
    name: str
    full_name: str
    doc: str
    fields: list[Field]
    unwrap: bool
    file: str
    request: bool = False


@dataclass
class EnumDef:
    name: str
    full_name: str
    doc: str
    values: list[tuple[str, str, list[str], str]]  # (member name, wire value, aliases, doc)


def _comments(fd: Any) -> dict[tuple[int, ...], str]:
    out: dict[tuple[int, ...], str] = {}
    for loc in fd.source_code_info.location:
        text = loc.leading_comments.strip()
        if text:
            out[tuple(loc.path)] = "\n".join(line.strip() for line in text.splitlines())
    return out


def _scalar(ftype: Any) -> tuple[str, str]:
    from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F

    table: dict[Any, tuple[str, str]] = {
        F.TYPE_STRING: ("string", "string"),
        F.TYPE_BOOL: ("bool", "bool"),
        F.TYPE_DOUBLE: ("float", "double"),
        F.TYPE_FLOAT: ("float", "float"),
        F.TYPE_INT32: ("int", "int32"),
        F.TYPE_INT64: ("int", "int64"),
        F.TYPE_UINT32: ("int", "uint32"),
        F.TYPE_UINT64: ("int", "uint64"),
        F.TYPE_SINT32: ("int", "sint32"),
        F.TYPE_SINT64: ("int", "sint64"),
        F.TYPE_FIXED32: ("int", "fixed32"),
        F.TYPE_FIXED64: ("int", "fixed64"),
        F.TYPE_SFIXED32: ("int", "sfixed32"),
        F.TYPE_SFIXED64: ("int", "sfixed64"),
    }
    if ftype not in table:
        raise SystemExit(f"protoc-gen-lorax: unsupported field type {ftype}")
    return table[ftype]


_PY = {"string": "str", "bool": "bool", "int": "int", "float": "float"}
_ZERO = {"string": '""', "bool": "False", "int": "0", "float": "0.0", "open_enum": '""'}


class Generator:
    def __init__(self, request: Any, options_pb2: Any, int_ranges: dict[str, tuple[int, int]]) -> None:
        self.opts = options_pb2
        self.int_ranges = int_ranges
        self.files = [f for f in request.proto_file if f.package == "lorax.v1"]
        self.messages: dict[str, Msg] = {}  # by full name
        self.enums: dict[str, EnumDef] = {}
        self.maps: dict[str, Any] = {}  # map entry full name -> DescriptorProto
        self.service: list[tuple[str, str, str, Any]] = []
        self.raw_msgs: dict[str, tuple[Any, str, dict[tuple[int, ...], str], tuple[int, ...]]] = {}
        for fd in self.files:
            comments = _comments(fd)
            for i, ed in enumerate(fd.enum_type):
                self._enum(ed, f"{fd.package}.{ed.name}", comments, (5, i))
            for i, md in enumerate(fd.message_type):
                self._collect(md, f"{fd.package}.{md.name}", fd.name, comments, (4, i))
            for sd in fd.service:
                for md in sd.method:
                    route = md.options.Extensions[options_pb2.route]
                    self.service.append((md.name, md.input_type.lstrip("."), md.output_type.lstrip("."), route))
                    if md.server_streaming != route.server_streaming:
                        raise SystemExit(f"{md.name}: `stream` and route.server_streaming disagree")
        for full_name, (md, fname, comments, path) in self.raw_msgs.items():
            if fname in SKIP_FILES:
                continue
            self.messages[full_name] = self._message(md, full_name, fname, comments, path)
        self._mark_requests()

    # -- collection -------------------------------------------------------------

    def _enum(self, ed: Any, full_name: str, comments: dict[tuple[int, ...], str], path: tuple[int, ...]) -> None:
        values = []
        for j, vd in enumerate(ed.value):
            wire = vd.options.Extensions[self.opts.wire_value]
            if not wire:
                continue  # the UNSPECIFIED zero value has no spelling on the wire
            aliases = list(vd.options.Extensions[self.opts.wire_alias])
            values.append((vd.name, wire, aliases, comments.get((*path, 2, j), "")))
        self.enums[full_name] = EnumDef(ed.name, full_name, comments.get(path, ""), values)

    def _collect(self, md: Any, full_name: str, fname: str, comments: Any, path: tuple[int, ...]) -> None:
        if md.options.map_entry:
            self.maps[full_name] = md
            return
        self.raw_msgs[full_name] = (md, fname, comments, path)
        for j, nested in enumerate(md.nested_type):
            self._collect(nested, f"{full_name}.{nested.name}", fname, comments, (*path, 3, j))
        for j, ed in enumerate(md.enum_type):
            self._enum(ed, f"{full_name}.{ed.name}", comments, (*path, 4, j))

    def _field(self, fd: Any, doc: str) -> Field:
        from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F

        json = fd.options.Extensions[self.opts.json]
        key = json.wire_name or fd.name
        f = Field(
            name=fd.name,
            key=key,
            kind="",
            null_if_unset=json.null_if_unset,
            omit_empty=json.omit_empty,
            f32=json.f32,
            doc=doc,
        )
        repeated = fd.label == F.LABEL_REPEATED
        type_name = fd.type_name.lstrip(".")
        if repeated and type_name in self.maps:
            entry = self.maps[type_name]
            value_fd = entry.field[1]
            f.label = "map"
            self._fill_kind(f, value_fd, json)
            return f
        if repeated:
            f.label = "list"
        self._fill_kind(f, fd, json)
        f.presence = not repeated and (fd.proto3_optional or fd.type == F.TYPE_MESSAGE)
        return f

    def _fill_kind(self, f: Field, fd: Any, json: Any) -> None:
        from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F

        type_name = fd.type_name.lstrip(".")
        if fd.type == F.TYPE_MESSAGE:
            f.kind = "message"
            f.target = type_name
            md = self.raw_msgs[type_name][0]
            f.unwrap = bool(md.options.Extensions[self.opts.unwrap])
        elif fd.type == F.TYPE_ENUM:
            f.kind = "enum"
            f.target = type_name
        elif json.raw_json:
            f.kind = "raw"
        elif json.open_enum:
            f.kind = "open_enum"
            f.target = json.open_enum
        else:
            f.kind, f.proto_type = _scalar(fd.type)

    def _message(self, md: Any, full_name: str, fname: str, comments: Any, path: tuple[int, ...]) -> Msg:
        fields: list[Field] = []
        oneofs: dict[int, Field] = {}
        real_oneofs = {fd.oneof_index for fd in md.field if fd.HasField("oneof_index") and not fd.proto3_optional}
        for j, fd in enumerate(md.field):
            doc = comments.get((*path, 2, j), "")
            f = self._field(fd, doc)
            if fd.HasField("oneof_index") and fd.oneof_index in real_oneofs:
                group = oneofs.get(fd.oneof_index)
                if group is None:
                    oname = md.oneof_decl[fd.oneof_index].name
                    group = Field(name=oname, key=oname, kind="oneof", presence=True)
                    group.doc = comments.get((*path, 8, fd.oneof_index), "")
                    oneofs[fd.oneof_index] = group
                    fields.append(group)
                f.key = group.key
                f.presence = False
                group.members.append(f)
                group.null_if_unset = group.null_if_unset or f.null_if_unset
                if f.doc:
                    group.doc = (group.doc + "\n" if group.doc else "") + f"{f.name}: {f.doc}"
                continue
            fields.append(f)
        unwrap = bool(md.options.Extensions[self.opts.unwrap])
        return Msg(md.name, full_name, comments.get(path, ""), fields, unwrap, fname)

    def _mark_requests(self) -> None:
        seen: set[str] = set()
        stack = [inp for _, inp, _, _ in self.service]
        while stack:
            name = stack.pop()
            if name in seen or name not in self.messages:
                continue
            seen.add(name)
            for f in self._walk_fields(self.messages[name].fields):
                if f.kind == "message":
                    stack.append(f.target)
        responses: set[str] = set()
        stack = [out for _, _, out, _ in self.service]
        while stack:
            name = stack.pop()
            if name in responses or name not in self.messages:
                continue
            responses.add(name)
            for f in self._walk_fields(self.messages[name].fields):
                if f.kind == "message":
                    stack.append(f.target)
        for name in seen - responses:
            self.messages[name].request = True

    @staticmethod
    def _walk_fields(fields: Iterable[Field]) -> Iterable[Field]:
        for f in fields:
            yield f
            yield from f.members

    # -- type expressions ----------------------------------------------------------

    def cls(self, full_name: str) -> str:
        msg = self.messages.get(full_name)
        if msg is not None:
            return msg.name
        return self.enums[full_name].name

    def value_type(self, f: Field) -> str:
        """The Python type of one value of `f` (an element, for lists and maps)."""
        if f.kind == "message":
            msg = self.messages[f.target]
            if f.unwrap:
                return self.inner_type(msg)
            return msg.name
        if f.kind == "enum":
            return self.cls(f.target)
        if f.kind == "raw":
            return "Any"
        if f.kind == "open_enum":
            return "str"
        if f.kind == "int":
            return _INT_ALIASES[f.proto_type]
        if f.kind == "oneof":
            return " | ".join(self.value_type(m) for m in f.members)
        return _PY[f.kind]

    def container_type(self, f: Field) -> str:
        value = self.value_type(f)
        if f.label == "list":
            return f"list[{value}]"
        if f.label == "map":
            return f"dict[str, {value}]"
        return value

    def inner_type(self, msg: Msg) -> str:
        (only,) = msg.fields
        return self.container_type(only)

    def annotate(self, msg: Msg) -> None:
        for f in msg.fields:
            f.annotation = self.container_type(f)
            required = msg.request and not f.presence and not (f.label and f.omit_empty)
            if f.kind == "raw":
                if f.presence and not f.null_if_unset:
                    f.default = "UNSET"
                elif f.presence or f.null_if_unset:
                    f.default = "None"
                else:
                    f.default = None if required else "None"
                continue
            if f.label:
                f.default = (
                    None if required else f"msgspec.field(default_factory={'list' if f.label == 'list' else 'dict'})"
                )
            elif f.presence:
                f.annotation += " | None"
                f.default = "None"
            elif required:
                f.default = None
            elif f.kind == "enum":
                # A response's closed enum left unset: no LoRAX spelling, so None.
                f.annotation += " | None"
                f.default = "None"
            else:
                f.default = _ZERO[f.kind]

    # -- output ----------------------------------------------------------------------

    def spec_source(self, f: Field, indent: str) -> str:
        args = [repr(f.name), repr(f.key), repr(f.kind)]
        kw = []
        if f.label:
            kw.append(f"label={f.label!r}")
        if f.presence:
            kw.append("presence=True")
        if f.null_if_unset:
            kw.append("null_if_unset=True")
        if f.omit_empty:
            kw.append("omit_empty=True")
        if f.f32:
            kw.append("f32=True")
        if f.proto_type:
            kw.append(f"proto_type={f.proto_type!r}")
        if f.target:
            kw.append(f"target={self.cls(f.target) if f.kind != 'open_enum' else f.target.rsplit('.', 1)[1]!r}")
        if f.unwrap:
            kw.append("unwrap=True")
        if f.members:
            inner = ",\n".join(indent + "    " + self.spec_source(m, indent + "    ") for m in f.members)
            kw.append(f"members=(\n{inner},\n{indent})")
        return f"_F({', '.join(args + kw)})"

    def validation(self, msg: Msg) -> list[str]:
        # Each field costs one attribute load and one identity test when it is unset, and a
        # type test (plus a range or finiteness test) when set: the checkers in
        # lorax/_validate.py run only for a value that failed it, and raise or normalise.
        lines: list[str] = []
        headers = HEADER_FIELDS.get(msg.name, ())
        # (Reading every field at once with msgspec.structs.astuple and testing locals
        # measured slower: 0.40 µs against 0.24 µs for GenerateParameters with nothing set.)
        if msg.fields:
            # Any: the checks exist for values that do not match the annotations.
            lines.append("        v: Any")
        for f in msg.fields:
            lines.append(f"        v = self.{f.name}")
            guard = "v is not None and " if (f.presence or f.default == "None") else ""
            if f.label:
                call = f"_v.check_{f.label}(self, {f.name!r}, v, {self._checker(f)})"
                item = self._item_test(f, "x") if f.label == "list" else None
                lines.append("        if v:")
                if item is None:
                    lines.append(f"            {call}")
                else:
                    # The common case inline: a list whose items all pass their type test
                    # (a generator expression and a call per item cost 0.9 µs for two stops).
                    lines.append("            if v.__class__ is not list:")
                    lines.append(f"                {call}")
                    lines.append("            else:")
                    lines.append("                for x in v:")
                    lines.append(f"                    if {item}:")
                    lines.append(f"                        {call}")
                    lines.append("                        break")
                if f.default is None:
                    lines.append(f"        elif v.__class__ is not {f.label if f.label == 'list' else 'dict'}:")
                    lines.append(f"            {call}")
                continue
            if f.kind == "raw":
                # JSON text given for free-form JSON (the 0.8 API took text) is parsed.
                lines.append("        if v.__class__ is str:")
                lines.append(f"            self.{f.name} = _v.check(self, {f.name!r}, v, _v.RAW)")
                # A value msgspec cannot print, or a non-finite float (msgspec prints NaN
                # as null, a different request), is refused here, not at the server.
                lines.append("        elif v is not UNSET and v is not None:")
                lines.append(f"            _v.check_json_value({f.name!r}, v)")
                continue
            if f.name in headers:
                assert f.kind == "string", f.name
                # A string already seen to be header-safe is known by its hash (str caches
                # it); isprintable() over an adapter id cost 0.15 µs per request.
                lines.append(f"        if {guard}(v.__class__ is not str or v not in _v.SAFE_HEADER_VALUES):")
                lines.append(f"            self.{f.name} = _v.check(self, {f.name!r}, v, _v.HEADER)")
                continue
            lines.append(f"        if {guard}{self._item_test(f, 'v', parenthesise=bool(guard))}:")
            lines.append(f"            self.{f.name} = _v.check(self, {f.name!r}, v, {self._checker(f)})")
        extra = f"check_{msg.name}"
        if re.search(rf"^def {extra}\(", VALIDATE.read_text(), re.M):
            lines.append(f"        _v.{extra}(self)")
        return lines

    def _item_test(self, f: Field, var: str, parenthesise: bool = False) -> str | None:
        """Source of the test that is true when `var` is not a plain, valid value of `f`
        (None for a list item kind that always goes to its checker)."""
        if f.kind == "int":
            lo, hi = self.int_ranges[f.proto_type]
            return f"not ({var}.__class__ is int and {lo} <= {var} <= {hi})"
        if f.kind == "float":
            # x - x is 0.0 for every finite float, NaN for NaN and the infinities.
            test = f"{var}.__class__ is not float or {var} - {var} != 0.0"
            return f"({test})" if parenthesise else test
        if f.kind in ("string", "open_enum"):
            return f"{var}.__class__ is not str"
        if f.kind == "bool":
            return f"{var}.__class__ is not bool"
        if f.kind == "enum" or (f.kind == "message" and not f.unwrap):
            return f"{var}.__class__ is not {self.cls(f.target)}"
        if f.label:
            return None
        # oneofs and unwrapped messages: a string is always one of the members
        return f"{var}.__class__ is not str"

    def _checker(self, f: Field) -> str:
        """Source of the value checker for one value of `f`."""
        if f.kind == "int":
            lo, hi = self.int_ranges[f.proto_type]
            return f"_v.Int({f.proto_type!r}, {lo}, {hi})"
        if f.kind == "float":
            return "_v.FLOAT"
        if f.kind in ("string", "open_enum"):
            return "_v.STR"
        if f.kind == "bool":
            return "_v.BOOL"
        if f.kind == "enum":
            return f"_v.Enum({self.cls(f.target)})"
        if f.kind == "raw":
            return "_v.RAW"
        if f.kind == "message":
            msg = self.messages[f.target]
            if f.unwrap:
                (only,) = msg.fields
                if only.kind == "oneof" or not only.label:
                    return self._checker(only)
                return f"_v.Container({only.label!r}, {self._checker(only)})"
            return f"_v.Msg({msg.name})"
        if f.kind == "oneof":
            return "_v.OneOf(" + ", ".join(self._checker(m) for m in f.members) + ")"
        raise AssertionError(f.kind)

    def render(self) -> str:
        out: list[str] = [HEADER]
        for enum in self.enums.values():
            if not enum.values:
                continue
            out.append(f"\n\nclass {enum.name}(WireEnum):")
            out.append(_docstring(enum.doc or f"The {enum.full_name} enum, by LoRAX spelling.", "    "))
            prefix = _enum_prefix(enum.name)
            names: set[str] = set()
            for vname, wire, _aliases, vdoc in enum.values:
                short = vname[len(prefix) :] if vname.startswith(prefix) else vname
                if vdoc:
                    out.extend(f"    # {line}" for line in vdoc.splitlines())
                out.append(f"    {short} = {wire!r}")
                names.add(short)
            for vname, wire, _aliases, _ in enum.values:
                if vname not in names:
                    out.append(f"    {vname} = {wire!r}  # the .proto name")
                    names.add(vname)
            for alias, wire in OFFICIAL_ENUM_ALIASES.get(enum.name, {}).items():
                if alias not in names:
                    out.append(f"    {alias} = {wire!r}  # the official client's name")
                    names.add(alias)
            aliases = {a: w for _, w, als, _ in enum.values for a in als}
            out.append("")
            out.append("    @classmethod")
            out.append("    def _missing_(cls, value: object) -> Any:")
            out.append("        # LoRAX's other accepted spellings, then any case-insensitive match.")
            out.append(f"        aliases: dict[str, str] = {aliases!r}")
            out.append("        if isinstance(value, str):")
            out.append("            wire = aliases.get(value, value.lower())")
            out.append("            for member in cls:")
            out.append("                if member.value == wire:")
            out.append("                    return member")
            out.append("        return None")
        for msg in self.messages.values():
            self.annotate(msg)
        for msg in self.messages.values():
            out.append(self.render_message(msg))
        out.append(self.render_routes())
        exported = sorted([m.name for m in self.messages.values()] + [e.name for e in self.enums.values() if e.values])
        out.append("\n\n__all__ = [")
        out.extend(f"    {n!r}," for n in exported)
        out.append("]\n")
        return "\n".join(out)

    def render_message(self, msg: Msg) -> str:
        # kw_only is not inherited; it lets required fields keep their wire position.
        config = ", kw_only=True" + (", omit_defaults=True" if msg.request else "")
        lines = [f"\n\nclass {msg.name}(Message{config}):"]
        doc = msg.doc or f"The {msg.full_name} message."
        attrs = [f for f in msg.fields if f.doc]
        if attrs:
            doc += "\n\nAttributes:"
            for f in attrs:
                first, *rest = f.doc.splitlines()
                doc += f"\n    {f.name}: {first}"
                for line in rest:
                    doc += f"\n        {line}"
        lines.append(_docstring(doc, "    "))
        if msg.fields:
            lines.append("")
        # Declaration order is the JSON key order (kw_only Structs allow required fields anywhere).
        for f in msg.fields:
            lines.append(f"    {f.name}: {f.annotation}" + ("" if f.default is None else f" = {f.default}"))
            if f.key != f.name and f.kind != "oneof":
                lines[-1] = f"    {f.name}: {f.annotation} = msgspec.field(name={f.key!r}" + (
                    ")" if f.default is None else f", default={f.default})"
                )
        lines.append("")
        lines.append(f"    __lorax_full_name__: ClassVar[str] = {msg.full_name!r}")
        if msg.request:
            lines.append("    __lorax_request__: ClassVar[bool] = True")
        if msg.unwrap:
            lines.append("    __lorax_unwrap__: ClassVar[bool] = True")
        if msg.fields:
            specs = ",\n".join("        " + self.spec_source(f, "        ") for f in msg.fields)
            lines.append(f"    __lorax_fields__: ClassVar[tuple[_F, ...]] = (\n{specs},\n    )")
        else:
            lines.append("    __lorax_fields__: ClassVar[tuple[_F, ...]] = ()")
        if msg.request:
            body = self.validation(msg)
            if body:
                lines.append("")
                lines.append("    def __post_init__(self) -> None:")
                lines.extend(body)
        return "\n".join(lines)

    def render_routes(self) -> str:
        lines = ["\n\n# The routes of lorax.v1.LoraxService, from each method's `route` option.", "ROUTES = ("]
        for name, inp, outp, route in self.service:
            lines.append(
                f"    _Route({name!r}, 'lorax.v1.LoraxService.{name}', {self.cls(inp)}, {self.cls(outp)}, "
                f"{route.method!r}, {route.path!r}, {route.server_streaming!r}, {route.done_marker!r}, "
                f"{route.response_body}),"
            )
        lines.append(")")
        return "\n".join(lines)


def _enum_prefix(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.upper())
    return "".join(out) + "_"


def _docstring(text: str, indent: str) -> str:
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    lines = text.splitlines()
    if len(lines) == 1:
        return f'{indent}"""{lines[0]}"""'
    body = "\n".join((indent + line) if line else "" for line in lines[1:])
    return f'{indent}"""{lines[0]}\n{body}\n{indent}"""'


HEADER = '''"""LoRAX's request and response bodies as msgspec Structs, compiled from proto/lorax/v1.

Generated by tools/protoc_gen_lorax.py (run `python tools/gen_proto.py`); do not edit.
The public names are re-exported, with the official client's aliases, by lorax.types.
"""

# ruff: noqa
from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec

from lorax import _validate as _v
from lorax._message import UNSET, FieldSpec as _F, Message, WireEnum
from lorax._route import Route as _Route
'''
HEADER += _INT_ALIAS_SOURCE


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # msgspec looks a Struct's module up while defining it
    spec.loader.exec_module(module)
    return module


def main() -> None:
    from google.protobuf.compiler import plugin_pb2

    # The custom options must be registered before the request is parsed. Load their
    # generated module (and the integer ranges) by path: importing the `lorax` package
    # would need this output.
    options_pb2 = _load("_lorax_options_pb2", ROOT / "lorax" / "v1" / "options_pb2.py")
    int_ranges = _load("_lorax_message", ROOT / "lorax" / "_message.py").INT_RANGES
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse()
    response.supported_features = plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    gen = Generator(request, options_pb2, int_ranges)
    out = response.file.add()
    out.name = OUTPUT
    out.content = gen.render()
    sys.stdout.buffer.write(response.SerializeToString())


if __name__ == "__main__":
    main()
