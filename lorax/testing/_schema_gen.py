"""Make a JSON value that fits a JSON schema, deterministically from a random generator.

It covers what structured-output tests use: objects with typed properties (all of them,
in schema order, so ``required`` is always satisfied), ``$ref`` into ``$defs`` /
``definitions`` / ``$functions``, ``enum`` and ``const``, ``anyOf``/``oneOf`` (first
branch), arrays (``minItems``/``maxItems``), strings (``maxLength``/``minLength``),
integers and numbers (``minimum``/``maximum``), booleans and null, and
``additionalProperties`` schemas (the ArbitraryJsonModel default) with a couple of keys.
Anything else gets a short string.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["generate_json"]

_WORDS = ("alpha", "bravo", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "iris", "juniper", "kestrel")


def generate_json(schema: Any, rng: random.Random, *, hints: list[str] | None = None) -> Any:
    """A value that validates against `schema`; `hints` are preferred words for strings."""
    return _gen(schema, schema, rng, hints or [], 0)


def _resolve(ref: str, root: Any) -> Any:
    if not ref.startswith("#/"):
        return {}
    node = root
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node


def _string(schema: dict[str, Any], rng: random.Random, hints: list[str]) -> str:
    pool = [h for h in hints if h] or list(_WORDS)
    text = rng.choice(pool)
    max_len = schema.get("maxLength")
    min_len = schema.get("minLength", 0)
    if isinstance(min_len, int) and len(text) < min_len:
        text = (text * (min_len // max(len(text), 1) + 1))[: max(min_len, 1)]
    if isinstance(max_len, int):
        text = text[:max_len]
    return text


def _number(schema: dict[str, Any], rng: random.Random, integer: bool) -> int | float:
    lo = schema.get("minimum", schema.get("exclusiveMinimum", 0))
    hi = schema.get("maximum", schema.get("exclusiveMaximum", lo + 100))
    if not isinstance(lo, (int, float)) or not isinstance(hi, (int, float)) or hi < lo:
        lo, hi = 0, 100
    if "exclusiveMinimum" in schema and isinstance(schema["exclusiveMinimum"], (int, float)):
        lo = lo + 1 if integer else lo + 0.5
    if "exclusiveMaximum" in schema and isinstance(schema["exclusiveMaximum"], (int, float)):
        hi = hi - 1 if integer else hi - 0.5
    if integer:
        lo_i, hi_i = int(lo), int(hi)
        return rng.randint(lo_i, max(lo_i, hi_i))
    return round(rng.uniform(float(lo), float(hi)), 2)


def _gen(schema: Any, root: Any, rng: random.Random, hints: list[str], depth: int) -> Any:
    if schema is True or not isinstance(schema, dict):
        return rng.choice(hints) if hints else "value"
    if "$ref" in schema and isinstance(schema["$ref"], str):
        return _gen(_resolve(schema["$ref"], root), root, rng, hints, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            return _gen(branches[0], root, rng, hints, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"] or ["null"]
        kind = kinds[0] if depth > 2 else rng.choice(kinds)
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        out: dict[str, Any] = {}
        props = schema.get("properties")
        if isinstance(props, dict):
            for name, sub in props.items():
                out[name] = _gen(sub, root, rng, hints, depth + 1)
        extra = schema.get("additionalProperties")
        if not out and isinstance(extra, dict) and depth < 3:
            for name in rng.sample(_WORDS, 2):
                out[name] = _gen(extra, root, rng, hints, depth + 1)
        return out
    if kind == "array":
        items = schema.get("items", {})
        lo = schema.get("minItems", 1)
        hi = schema.get("maxItems", max(lo, 3))
        count = rng.randint(int(lo), max(int(lo), int(hi))) if depth < 4 else int(lo)
        return [_gen(items, root, rng, hints, depth + 1) for _ in range(count)]
    if kind == "string":
        return _string(schema, rng, hints)
    if kind == "integer":
        return _number(schema, rng, integer=True)
    if kind == "number":
        return _number(schema, rng, integer=False)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return "value"
