"""What the per-class converters share: lorax/codec.py (JSON), lorax/_convert.py (upb
messages) and lorax/_pbwire.py (protobuf binary) each build one function per message
class from its ``__lorax_fields__`` (lorax/_message.py) on first use; these are the
pieces they have in common.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from lorax import _message as m
from lorax._message import FieldSpec

if TYPE_CHECKING:
    from lorax._message import Message

_T = TypeVar("_T")
_Step = Callable[[Any, dict[str, Any]], None]


def build_once(cache: dict[type[Any], _T], cls: type[Any], build: Callable[[type[Any]], _T], placeholder: _T) -> _T:
    """``build(cls)``, kept in `cache`. While it runs, `cache` holds `placeholder` for
    `cls`: what a message type that contains itself finds for its own fields."""
    cache[cls] = placeholder
    built = cache[cls] = build(cls)
    return built


def build_recursive(
    cache: dict[type[Any], Callable[[Any], _T]], cls: type[Any], build: Callable[[type[Any]], Callable[[Any], _T]]
) -> Callable[[Any], _T]:
    """:func:`build_once` whose placeholder calls the finished function (a trampoline)."""

    def trampoline(message: Any) -> _T:
        return cache[cls](message)

    return build_once(cache, cls, build, trampoline)


def run_steps(steps: list[_Step]) -> Callable[[Any], dict[str, Any]]:
    """One function that fills a dict by running each of `steps` on a message."""

    def build(message: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for step in steps:
            step(message, out)
        return out

    return build


def per_label(spec: FieldSpec, conv: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """`conv` (for one value, None: as it is) applied to each item of a repeated or map `spec`."""
    if conv is None:
        return None
    if spec.label == "list":
        return lambda value: [conv(v) for v in value]
    if spec.label == "map":
        return lambda value: {k: conv(v) for k, v in value.items()}
    return conv


def oneof_types(spec: FieldSpec, resolve: Callable[[str], type[Message]]) -> list[tuple[type[Any], FieldSpec]]:
    """The members of oneof `spec`, each with the Python type of the values it takes, in order.

    A oneof is one attribute: the type of its value picks the member (the first whose
    type it is an instance of). `resolve` gives the class of a message member's target.
    """
    out: list[tuple[type[Any], FieldSpec]] = []
    for member in spec.members:
        if member.kind == m.KIND_MESSAGE:
            target = resolve(member.target)
            if member.unwrap:
                (only,) = target.__lorax_fields__
                if only.kind != m.KIND_ONEOF:  # a bare oneof is no container to tell apart
                    out.append((dict if only.label == "map" else list, member))
            else:
                out.append((target, member))
        elif member.kind in (m.KIND_STRING, m.KIND_OPEN_ENUM, m.KIND_ENUM):
            out.append((str, member))
        elif member.kind == m.KIND_FLOAT:
            out.append((float, member))
        elif member.kind == m.KIND_INT:
            out.append((int, member))
        elif member.kind == m.KIND_BOOL:
            out.append((bool, member))
    return out
