"""The checks request classes run on construction (their generated ``__post_init__``).

Never stricter than LoRAX (``top_p=1.0`` and ``temperature=0`` are valid; ranges are
left to the server). What is refused here is what cannot be put on the wire at all (a
value that does not fit the field's type, a non-finite float, an enum spelling LoRAX does
not know) and what would crash the LoRAX router: control characters in ``adapter_id``
or ``adapter_source`` (router/src/server.rs copies them into response headers with
``HeaderValue::from_str(..).unwrap()``) and merge strategies or sign methods it cannot
parse (router/src/lib.rs ``MergedAdapters`` ``unwrap()``s the conversion).

The generated code calls :func:`check` only when a field's fast type test failed, so
the common case costs one comparison per field (an unset field) or two or three (a set one).
"""

from __future__ import annotations

import enum
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from lorax import errors

Checker = Callable[[str, Any], Any]


def _invalid(message: str) -> errors.InvalidRequestError:
    return errors.InvalidRequestError(message)


def _name(owner: Any, field: str) -> str:
    return field


class Int:
    """An integer that fits a protobuf integer type."""

    def __init__(self, proto_type: str, low: int, high: int) -> None:
        self.proto_type, self.low, self.high = proto_type, low, high
        self.describe = {
            "uint32": "an integer from 0 to 2**32-1",
            "uint64": "an integer from 0 to 2**64-1",
            "int32": "an integer from -2**31 to 2**31-1",
            "int64": "a 64-bit integer",
        }.get(proto_type, f"an integer from {low} to {high}")

    def __call__(self, name: str, value: Any) -> int:
        if isinstance(value, (bool, float)):
            raise _invalid(f"{name}={value!r} does not fit the field ({self.describe})")
        try:
            number = operator.index(value)
        except TypeError:
            raise _invalid(f"{name}={value!r} does not fit the field ({self.describe})") from None
        if not self.low <= number <= self.high:
            raise _invalid(f"{name}={value!r} does not fit the field ({self.describe})")
        return number


def _float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy floats, Decimal
        except (TypeError, ValueError):
            raise _invalid(f"{name}={value!r} does not fit the field (a number)") from None
    number = float(value)
    if not math.isfinite(number):
        # JSON has no NaN or infinity: it would be printed as `null`, which LoRAX reads as
        # "not set" and replaces with its default, a different request from the one asked.
        raise _invalid(f"{name}={value!r} is not a finite number and cannot be sent as JSON")
    return number


def _str(name: str, value: Any) -> str:
    if isinstance(value, str):
        return str(value)
    raise _invalid(f"{name} must be a string, not {type(value).__name__}")


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise _invalid(f"{name} must be True or False, got {value!r}")


def _raw(name: str, value: Any) -> Any:
    """Free-form JSON: a JSON value (dicts keep their key order), or JSON text to parse.

    Only text that starts like an object or array (``{``/``[``) is parsed: anything else
    is a JSON string value. Decoding runs this check too, so parsing every string would
    turn the JSON string ``"12"`` into the number 12, and refuse ``"just a string"``.
    """
    if isinstance(value, str):
        if value.lstrip()[:1] not in ("{", "["):
            return value
        try:
            return msgspec.json.decode(value)
        except msgspec.DecodeError as exc:
            raise _invalid(f"{name}: not valid JSON text: {exc}") from None
    check_json_value(name, value)
    return value


def check_json_value(name: str, value: Any, _depth: int = 0) -> None:
    """Refuse what JSON cannot hold (sets, bytes, objects, non-string keys, NaN)."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _invalid(f"{name}: cannot be written as JSON: {value!r} is not finite")
        return
    if _depth > 64:
        raise _invalid(f"{name}: cannot be written as JSON: nested too deeply")
    if isinstance(value, (list, tuple)):
        for item in value:
            check_json_value(name, item, _depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _invalid(f"{name}: cannot be written as JSON: key {key!r} is not a string")
            check_json_value(name, item, _depth + 1)
        return
    raise _invalid(f"{name}: cannot be written as JSON: {type(value).__name__} is not a JSON type")


FLOAT: Checker = _float
STR: Checker = _str
BOOL: Checker = _bool
RAW: Checker = _raw


class Enum:
    """A member of a closed enum, from the member, its LoRAX spelling (any case) or its .proto name."""

    def __init__(self, cls: type[enum.Enum]) -> None:
        self.cls = cls

    def __call__(self, name: str, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return self.cls(value)
            except ValueError:
                member = self.cls.__members__.get(value)
                if member is not None:
                    return member
        allowed = ", ".join(sorted({str(m.value) for m in self.cls}))
        raise _invalid(f"{name}={value!r} is not one of: {allowed}")


class Msg:
    """A nested message, or a dict of its fields (as in LoRAX's and the official client's docs)."""

    def __init__(self, cls: type[Any]) -> None:
        self.cls = cls

    def __call__(self, name: str, value: Any) -> Any:
        if isinstance(value, self.cls):
            return value
        if isinstance(value, Mapping):
            known = set(self.cls.__struct_fields__) | {f.key for f in self.cls.__lorax_fields__}
            unknown = sorted(set(value) - known)
            if unknown:
                raise _invalid(f"{name}: unknown keys {unknown}")
            try:
                return self.cls(**{_attr(self.cls, k): v for k, v in value.items()})
            except TypeError as exc:
                raise _invalid(f"{name}: {exc}") from None
        raise _invalid(f"{name} must be a dict or {self.cls.__name__}, not {type(value).__name__}")


def _attr(cls: type[Any], key: str) -> str:
    for spec in cls.__lorax_fields__:
        if spec.key == key:
            return str(spec.name)
    return key


class Container:
    """A list or dict of values (an unwrapped message's single field)."""

    def __init__(self, label: str, item: Checker) -> None:
        self.label, self.item = label, item

    def __call__(self, name: str, value: Any) -> Any:
        if self.label == "list":
            return _list(name, value, self.item)
        return _map(name, value, self.item)


class OneOf:
    """The value of one member of a oneof, chosen by its type."""

    def __init__(self, *members: Checker) -> None:
        self.members = members

    def __call__(self, name: str, value: Any) -> Any:
        problems = []
        for member in self.members:
            try:
                return member(name, value)
            except errors.InvalidRequestError as exc:
                problems.append(str(exc))
        raise _invalid(" or ".join(problems) if len(problems) < 3 else problems[0])


def _list(name: str, value: Any, item: Checker) -> list[Any]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise _invalid(f"{name} must be a list, not {type(value).__name__}")
    return [item(f"{name}[{i}]", v) for i, v in enumerate(value)]


def _map(name: str, value: Any, item: Checker) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _invalid(f"{name} must be a dict, not {type(value).__name__}")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise _invalid(f"{name} keys must be strings, got {k!r}")
        out[k] = item(f"{name}[{k!r}]", v)
    return out


def check(owner: Any, field: str, value: Any, checker: Checker) -> Any:
    """Check (and normalise) a value whose fast type test failed."""
    return checker(field, value)


def check_list(owner: Any, field: str, value: Any, item: Checker) -> None:
    """Check every item of a list field, normalising it in place."""
    if type(value) is list and all(_fast_ok(item, v) for v in value):
        return
    setattr(owner, field, _list(field, value, item))


def check_map(owner: Any, field: str, value: Any, item: Checker) -> None:
    """Check every value of a map field."""
    setattr(owner, field, _map(field, value, item))


def _fast_ok(item: Checker, value: Any) -> bool:
    if item is STR:
        return type(value) is str
    if item is FLOAT:
        return type(value) is float and value - value == 0.0
    if isinstance(item, Msg):
        return type(value) is item.cls
    return False


# C0 controls except tab, and DEL: what http's HeaderValue::from_str refuses.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")


# Strings that passed `header_safe`: a request's adapter id is checked by one set lookup
# (a str caches its hash), not by a scan of its characters each time. Bounded (an internal
# memo, not a limit on requests): at most 1024 strings of at most 512 characters are
# remembered; others are still checked, every time.
SAFE_HEADER_VALUES: set[str] = set()
_SAFE_HEADER_LIMIT = 1024
_SAFE_HEADER_MAX_LEN = 512


def header_safe(name: str, value: str | None) -> None:
    """Refuse control characters LoRAX would put into a response header (and crash on)."""
    if value is None or value.isprintable():  # the common case, in C (a per-char loop cost 2.7 µs)
        return
    found = _CONTROL.search(value)
    if found is not None:
        raise _invalid(
            f"{name} contains the control character {found.group()!r}; LoRAX cannot put it in a response "
            "header and its router would crash, so it was not sent"
        )


def _header(name: str, value: Any) -> str:
    """A string LoRAX can copy into a response header (``adapter_id``, ``adapter_source``)."""
    text = _str(name, value)
    header_safe(name, text)
    if len(text) <= _SAFE_HEADER_MAX_LEN and len(SAFE_HEADER_VALUES) < _SAFE_HEADER_LIMIT:
        SAFE_HEADER_VALUES.add(text)
    return text


HEADER: Checker = _header
