"""axum 0.7.7's ``Json<T>`` extractor: content type, body limit, then serde.

See docs/wire.md, "Rejections before LoRAX's code runs" (axum's ``axum/src/json.rs``
and ``axum/src/extract/rejection.rs``).

Every rejection is ``text/plain; charset=utf-8`` with no ``error_type``, which is how a
client tells it apart from LoRAX's own JSON 422.
"""

from __future__ import annotations

from typing import Any

from lorax.testing._serde import SerdeError, Type, deserialize

__all__ = ["BODY_LIMIT", "Rejection", "extract_json", "is_json_content_type"]

#: axum's DefaultBodyLimit.
BODY_LIMIT = 2 * 1024 * 1024

_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class Rejection(Exception):
    """An extractor rejection: the status and the exact text/plain body."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def is_json_content_type(value: str | None) -> bool:
    """axum's ``json_content_type``: ``application/json`` or ``application/*+json``, parameters allowed."""
    if value is None:
        return False
    essence = value.split(";", 1)[0].strip()
    type_, sep, subtype = essence.partition("/")
    # The mime crate refuses anything that is not token "/" token.
    if not sep or not type_ or not subtype or not set(type_) <= _TOKEN_CHARS or not set(subtype) <= _TOKEN_CHARS:
        return False
    if type_.lower() != "application":
        return False
    subtype = subtype.lower()
    return subtype == "json" or (("+" in subtype) and subtype.rsplit("+", 1)[1] == "json")


def unsupported_media_type() -> Rejection:
    """The 415 rejection."""
    return Rejection(415, "Expected request with `Content-Type: application/json`")


def too_large() -> Rejection:
    """The 413 rejection."""
    return Rejection(413, "Failed to buffer the request body: length limit exceeded")


def extract_json(schema: Type, body: bytes) -> Any:
    """Deserialize `body`; raise :class:`Rejection` (400 syntax/EOF, 422 data) on failure."""
    try:
        return deserialize(schema, body)
    except SerdeError as exc:
        if exc.is_data:
            return _raise(422, f"Failed to deserialize the JSON body into the target type: {exc.text()}")
        return _raise(400, f"Failed to parse the request body as JSON: {exc.text()}")


def _raise(status: int, text: str) -> Any:
    raise Rejection(status, text)
