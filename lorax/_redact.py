"""Keeping credentials out of logs, reprs and exception messages.

Every place that renders headers, URLs or request options for a human goes through
these helpers, so a secret has exactly one way out: the wire.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REDACTED = "<redacted>"

# Lower-case header names whose values are credentials. Cookies count: session
# cookies are bearer tokens by another name.
SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-predibase-api-token",
    }
)

# JSON keys in request bodies that carry credentials (LoRAX's adapter token).
SENSITIVE_FIELDS = frozenset({"api_token"})


def is_sensitive_header(name: str) -> bool:
    """Return True when the header named `name` carries a credential."""
    return name.lower() in SENSITIVE_HEADERS


def redact_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> dict[str, str]:
    """Return a plain dict copy of `headers` with credential values replaced."""
    if headers is None:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {k: (REDACTED if is_sensitive_header(k) else v) for k, v in items}


def redact_url(url: str) -> str:
    """Drop any `user:password@` part of a URL before it is shown."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if "@" not in parts.netloc:
        return url
    # The host and port as written: parsing the port could fail (out of range).
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{REDACTED}@{host}", parts.path, parts.query, parts.fragment))


def redact_query(target: str) -> str:
    """A request target (``/path?query``) with its query string replaced."""
    path, sep, _ = target.partition("?")
    return f"{path}?{REDACTED}" if sep else target


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret in `text`.

    Used on text that came from outside (an error body, a library's exception message)
    before it is put in an exception: a proxy that echoes the request back must not
    carry the token into a traceback.
    """
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, REDACTED)
    return text


class HeaderRedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The logger named `name`, with credential header values replaced in its records.

    For libraries that log HTTP headers one per record as ``log("> %s: %s", name,
    value)``: websockets does so for the whole WebSocket handshake at DEBUG, which
    would print the gateway's bearer token. Hand them this instead of their own logger.
    """

    def __init__(self, name: str) -> None:
        super().__init__(logging.getLogger(name), {})

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if len(args) == 2 and isinstance(args[0], str) and is_sensitive_header(args[0]):
            args = (args[0], REDACTED)
        elif any(isinstance(arg, str) and arg[:1] == "/" and "?" in arg for arg in args):
            # The request line ("< %s %s %s": GET /path?token=... HTTP/1.1): a client
            # may put a token in the query string, which nothing reads; never log it.
            args = tuple(redact_query(arg) if isinstance(arg, str) and arg[:1] == "/" else arg for arg in args)
        kwargs.setdefault("stacklevel", 2)  # the record names the library's line, not this one
        super().log(level, msg, *args, **kwargs)
