"""Keeping credentials out of logs, reprs and exception messages.

Every place that renders headers, URLs or request options for a human goes through
these helpers, so a secret has exactly one way out: the wire. Two kinds:

* redaction by *name*: :func:`redact_headers`, :func:`redact_url`, :func:`redact_query`
  and :class:`HeaderRedactingLogger` hide values because of where they sit;
* scrubbing by *value*: :class:`Secrets` holds the credential strings themselves and
  replaces them in text that came from elsewhere (an error body that echoes the
  request, a library's exception message, the command line's log and error lines).
  The transports, the gateway and the ``lorax`` command all use this one class.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from lorax.errors import LoraxError

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


# ---------------------------------------------------------------------------------
# Scrubbing by value

# Shorter strings would scrub ordinary words out of messages; real tokens are longer.
_MIN_SECRET = 4
# Authorization schemes whose parameter is the credential on its own: a server may
# quote the token without the scheme.
_TOKEN_SCHEMES = ("bearer", "basic", "token")


class Secrets:
    """Credential values that must not appear in anything built from outside text.

    The transports build one when an error is being built (their own credentials, the
    call's sensitive headers and any ``api_token`` in the request: :meth:`of`); the
    ``lorax`` command collects the run's tokens once and scrubs every line it prints.
    Values shorter than four characters are ignored; ``Bearer xyz`` also remembers
    ``xyz``. The values are replaced longest first, so no tail of a longer secret
    survives a shorter one.
    """

    __slots__ = ("values",)

    def __init__(self, values: Iterable[str] = ()) -> None:
        found: set[str] = set()
        for value in values:
            _collect(found, value)
        self.values = _longest_first(found)

    @classmethod
    def of(
        cls,
        transport_values: Iterable[str],
        call_headers: Mapping[str, str] | None = None,
        request: object = None,
    ) -> Secrets:
        """A transport's own secret values, plus those of one call's headers and request."""
        values = list(transport_values)
        if call_headers:
            values.extend(header_secrets(call_headers))
        if request is not None:
            values.extend(request_secrets(request))
        return cls(values)

    def add(self, value: str | None) -> None:
        """Remember `value` (and, for ``Bearer xyz``, ``xyz`` alone) as a secret."""
        found = set(self.values)
        _collect(found, value)
        self.values = _longest_first(found)

    def add_header(self, name: str, value: str) -> None:
        """Remember the value of header `name` when the header carries a credential."""
        for secret in header_secrets({name: value}):
            self.add(secret)

    def scrub(self, text: str) -> str:
        """`text` with every secret replaced by ``<redacted>``."""
        for secret in self.values:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def scrub_error(self, error: LoraxError) -> LoraxError:
        """`error` (changed in place) with secrets scrubbed out of its message, body and headers.

        For errors built from the server's words by code that knows no secrets: the
        error events of a stream (:func:`lorax.codec.from_json`).
        """
        if self.values:
            error.message = self.scrub(error.message)
            error.args = tuple(self.scrub(a) if isinstance(a, str) else a for a in error.args)
            if error.body is not None:
                error.body = self.scrub(error.body)
            error.headers = self.scrub_headers(error.headers)
        return error

    def scrub_headers(self, headers: dict[str, str]) -> dict[str, str]:
        """`headers` with secrets scrubbed out of the values (a proxy may echo them back)."""
        if not self.values:
            return headers
        joined = "\n".join(headers.values())
        if not any(secret in joined for secret in self.values):
            return headers  # the usual case, at the cost of one join
        return {name: self.scrub(value) for name, value in headers.items()}

    def scrub_bytes(self, data: bytes) -> bytes:
        """`data` with every secret (UTF-8 encoded) replaced by ``<redacted>``."""
        for secret in self.values:
            raw = secret.encode("utf-8", "replace")
            if raw in data:
                data = data.replace(raw, REDACTED.encode())
        return data

    def __bool__(self) -> bool:
        return bool(self.values)

    def __repr__(self) -> str:  # never the values themselves
        return f"<Secrets: {len(self.values)} value(s)>"


def _collect(found: set[str], value: str | None) -> None:
    if not value:
        return
    for candidate in (value, value.strip()):
        if len(candidate) >= _MIN_SECRET:
            found.add(candidate)
    scheme, _, rest = value.strip().partition(" ")
    rest = rest.strip()
    if rest and scheme.lower() in _TOKEN_SCHEMES and len(rest) >= _MIN_SECRET:
        found.add(rest)


def _longest_first(values: set[str]) -> tuple[str, ...]:
    return tuple(sorted(values, key=lambda v: (-len(v), v)))


def header_secrets(headers: Mapping[str, str]) -> list[str]:
    """The credential values among `headers`, and their token parts (``Bearer X`` → X,
    ``Cookie: a=X; b=Y`` → X and Y: a server may quote one cookie's value alone)."""
    out: list[str] = []
    for name, value in headers.items():
        if is_sensitive_header(name) and value:
            out.append(value)
            _, _, token = value.partition(" ")
            if token:
                out.append(token.strip())
            if name.lower() in ("cookie", "set-cookie"):
                for pair in value.split(";"):
                    _, eq, cookie = pair.partition("=")
                    if eq and len(cookie.strip()) >= 8:  # session ids, not "lang=en"
                        out.append(cookie.strip())
    return out


def request_secrets(request: object, _depth: int = 0) -> list[str]:
    """``api_token`` values anywhere near the top of a request message (a msgspec Struct)."""
    out: list[str] = []
    for name in getattr(request, "__struct_fields__", ()):
        value = getattr(request, name)
        if name in SENSITIVE_FIELDS and isinstance(value, str):
            out.append(value)
        elif _depth < 3 and hasattr(type(value), "__struct_fields__"):
            out.extend(request_secrets(value, _depth + 1))
    return out
