"""What the two HTTP transports share, with no I/O: URLs, headers, TLS, proxies, decoding.

:mod:`lorax.transports.http` (urllib3, sync) and :mod:`lorax.transports.aiohttp`
(asyncio) differ only in how bytes move. Everything that decides *what* moves, and
what the bytes that came back mean, lives here, so the two cannot drift apart:

* :class:`BaseURL` parses and checks ``base_url`` and joins route paths under its
  prefix;
* :func:`default_headers` and :class:`Route` build each method's request headers
  once, and :func:`merge_headers` adds a call's own headers;
* :func:`ssl_context` and :func:`resolve_proxy` turn ``verify``/``cert``/``proxy``/
  ``trust_env`` into one TLS context and one proxy decision, read the same way for
  both transports;
* :func:`decode_response` and :func:`status_error` turn a finished response into the
  method's message or the :mod:`lorax.errors` exception;
* :func:`connection_error`, :func:`timeout_error` and :func:`interrupted` build the
  connection failures with messages that name the host and port, never a URL with
  credentials;
* :class:`lorax._redact.Secrets` (re-exported here) scrubs credentials out of anything
  built from the server's text.

Route joining. A route's path is appended to the base URL's path prefix, so
``https://serving.app.predibase.com/TENANT/deployments/v2/llms/NAME`` with
``/generate`` becomes ``.../llms/NAME/generate``. LoRAX's ``/`` route (the compat
generate route) is the base URL itself, without a trailing slash: exactly where the
official client posts (``.../llms/NAME``), and ``http://host:port/`` without a
prefix. Trailing slashes on ``base_url`` are ignored; a query string or a fragment is
refused, because no route could carry it.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import socket
import ssl
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec

from lorax import codec, errors
from lorax._message import Message

# Secrets and header_secrets are lorax._redact's (the one scrubbing helper), re-exported
# for the transports that reach them through this module.
from lorax._redact import REDACTED, SENSITIVE_HEADERS, Secrets, header_secrets, redact_url
from lorax._routes import Method
from lorax._timeout import Deadline
from lorax.transports.base import DEFAULT_MAX_RESPONSE_BYTES, ResponseMeta, lower_headers

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DRAIN_LIMIT",
    "DRAIN_TIMEOUT",
    "MAX_ERROR_BODY",
    "READ_CHUNK",
    "USER_AGENT",
    "BaseURL",
    "Proxy",
    "Route",
    "Secrets",
    "check_max_response_bytes",
    "compressed",
    "connection_error",
    "decode_response",
    "declared_length",
    "default_headers",
    "header_secrets",
    "interrupted",
    "merge_headers",
    "resolve_proxy",
    "ssl_context",
    "status_error",
    "timeout_error",
    "too_large",
    "warn_insecure",
]

#: Bytes asked for per read of a stream. Large enough that a burst of events, or a
#: several-MiB final event, takes few reads; events are decoded a chunk at a time.
READ_CHUNK = 64 * 1024

#: The most of an error body that is read. The exception keeps 4096 characters; a
#: longer body (a proxy's HTML page) is cut here and its connection is not reused.
MAX_ERROR_BODY = 64 * 1024

#: After ``[DONE]``, the end of the chunked body is read for at most this long and
#: this many bytes so that the connection can be reused; otherwise it is closed.
DRAIN_TIMEOUT = 0.25
DRAIN_LIMIT = 64 * 1024

_log = logging.getLogger("lorax")


def _version() -> str:
    try:
        import lorax

        version = getattr(lorax, "__version__", None)
        if isinstance(version, str) and version:
            return version
        from importlib.metadata import version as dist_version

        return dist_version("lorax-client")
    except Exception:
        return "unknown"


#: The default ``User-Agent``.
USER_AGENT = f"lorax-client/{_version()}"

# RFC 9110 token characters for header names; values may not hold CR, LF or NUL.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(r"[\r\n\x00]")


# ---------------------------------------------------------------------------------
# Base URL and routes


@dataclass(frozen=True)
class BaseURL:
    """A checked ``base_url``.

    Attributes:
        scheme: "http" or "https".
        host: the host name (IPv6 without brackets), lower-case.
        port: the port, explicit or the scheme's default.
        prefix: the path prefix without a trailing slash ("" for none).
        origin: ``scheme://host[:port]`` with no credentials and no path.
        where: ``host:port`` for messages (IPv6 in brackets).
        display: the base URL for reprs and logs, credentials redacted.
        auth_header: an ``Authorization: Basic`` value from ``user:password@``, if any.
        password: the URL's password, kept only to scrub it out of error messages.
    """

    scheme: str
    host: str
    port: int
    prefix: str
    origin: str
    where: str
    display: str
    auth_header: str | None
    password: str | None

    @classmethod
    def parse(cls, base_url: str) -> BaseURL:
        """Check `base_url` and split it. Raises ValueError for anything unusable."""
        if not isinstance(base_url, str):
            raise TypeError(f"base_url must be a str, not {type(base_url).__name__}")
        text = base_url.strip()
        if not text or any(ord(c) < 0x21 or c == "\x7f" for c in text):
            raise ValueError("base_url must be an http:// or https:// URL without spaces or control characters")
        if "?" in text or "#" in text:
            raise ValueError(
                "base_url must not have a query string or a fragment: routes are joined under its path, "
                f"and no route could carry them (got {_safe_url(text)})"
            )
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"base_url must start with http:// or https://, got {_safe_url(text)}")
        host = parts.hostname
        if not host:
            raise ValueError(f"base_url has no host: {_safe_url(text)}")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"base_url has an invalid port: {_safe_url(text)}") from None
        if port is None:
            port = 443 if scheme == "https" else 80
        default_port = port == (443 if scheme == "https" else 80)
        bracketed = f"[{host}]" if ":" in host else host
        origin = f"{scheme}://{bracketed}" if default_port else f"{scheme}://{bracketed}:{port}"
        prefix = parts.path.rstrip("/")
        auth_header = None
        password = None
        if parts.username is not None or parts.password is not None:
            user = unquote(parts.username or "")
            password = unquote(parts.password or "")
            auth_header = basic_auth(user, password)
        display = redact_url(f"{parts.scheme}://{parts.netloc}{prefix}")
        return cls(
            scheme=scheme,
            host=host,
            port=port,
            prefix=prefix,
            origin=origin,
            where=f"{bracketed}:{port}",
            display=display,
            auth_header=auth_header,
            password=password or None,
        )

    def path(self, route_path: str) -> str:
        """The request path of a route: joined under the prefix; ``/`` is the prefix itself."""
        if route_path == "/":
            return self.prefix or "/"
        return self.prefix + route_path

    def url(self, route_path: str) -> str:
        """The absolute URL of a route, without credentials."""
        return self.origin + self.path(route_path)


def _safe_url(text: str) -> str:
    # For messages about a rejected base_url: never show credentials or a query.
    shown = redact_url(text.split("?", 1)[0].split("#", 1)[0])
    return shown if len(shown) <= 200 else shown[:200] + "..."


def basic_auth(user: str, password: str) -> str:
    """An ``Authorization``/``Proxy-Authorization`` Basic value."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def check_headers(headers: Mapping[str, str], what: str) -> dict[str, str]:
    """Lower-case the names and refuse what would corrupt the request (ValueError).

    The message names the header, never its value: values may be credentials.
    """
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ValueError(f"{what}: invalid header name {name!r}")
        if not isinstance(value, str):
            raise TypeError(f"{what}: the value of header {name!r} must be a str, not {type(value).__name__}")
        if _BAD_VALUE.search(value):
            raise ValueError(f"{what}: the value of header {name!r} contains CR, LF or NUL")
        out[name.lower()] = value
    return out


def default_headers(headers: Mapping[str, str] | None, user_agent: str | None, base: BaseURL) -> dict[str, str]:
    """A transport's own headers, lower-cased: ``user-agent``, basic auth, then `headers`.

    `headers` wins over both (so ``headers={"User-Agent": ...}`` beats ``user_agent``).
    """
    out: dict[str, str] = {"user-agent": USER_AGENT if user_agent is None else user_agent}
    if user_agent is not None:
        check_headers({"User-Agent": user_agent}, "user_agent")
    if base.auth_header is not None:
        out["authorization"] = base.auth_header
    if headers:
        out.update(check_headers(headers, "headers"))
    return out


def merge_headers(route_headers: dict[str, str], call_headers: Mapping[str, str]) -> dict[str, str]:
    """A route's headers plus a call's (the call wins, compared case-insensitively)."""
    merged = dict(route_headers)
    merged.update(check_headers(call_headers, "CallOptions.headers"))
    return merged


class DescribedByBaseURL:
    """``describe()`` and the repr of an HTTP transport: its class and its base URL, which
    :class:`BaseURL` keeps free of credentials."""

    _base: BaseURL

    def describe(self) -> str:
        return f"{type(self).__name__}({self._base.display})"

    def __repr__(self) -> str:
        return self.describe()


@dataclass(frozen=True)
class Route:
    """Everything about one method's request that does not change between calls.

    Attributes:
        method: the HTTP method.
        path: the method's route path (what the route was built from).
        url: absolute URL (no credentials).
        target: what goes on the request line: the path, or the absolute URL when a
            forwarding (plain HTTP) proxy is used.
        has_body: POST routes send the JSON of the request message; GET routes nothing.
        headers: the request headers (lower-case names).
        json_headers: for the metrics route, the headers that ask for JSON.
    """

    method: str
    path: str
    url: str
    target: str
    has_body: bool
    headers: dict[str, str]
    json_headers: dict[str, str] | None

    @classmethod
    def build(cls, method: Method, base: BaseURL, defaults: Mapping[str, str], proxy: Proxy | None) -> Route:
        url = base.url(method.path)
        forwarding = proxy is not None and base.scheme == "http"
        has_body = method.http_method == "POST"
        headers: dict[str, str] = {}
        if method.server_streaming:
            headers["accept"] = "text/event-stream"
        elif method.metrics_response:
            headers["accept"] = "text/plain"
        else:
            headers["accept"] = "application/json"
        if has_body:
            headers["content-type"] = "application/json"
        # Never ask for compression: a proxy that gzips an event stream holds events back.
        headers["accept-encoding"] = "identity"
        headers.update(defaults)
        if forwarding and proxy is not None and proxy.auth_header is not None:
            # A forwarding proxy reads its credentials from the request itself.
            headers.setdefault("proxy-authorization", proxy.auth_header)
        json_headers = None
        if method.metrics_response:
            json_headers = dict(headers)
            if "accept" not in defaults:
                json_headers["accept"] = "application/json"
        return cls(
            method=method.http_method,
            path=method.path,
            url=url,
            target=url if forwarding else base.path(method.path),
            has_body=has_body,
            headers=headers,
            json_headers=json_headers,
        )

    def headers_for(self, request: Message, call_headers: Mapping[str, str]) -> dict[str, str]:
        """The headers of one call."""
        headers = self.headers
        if self.json_headers is not None and str(getattr(request, "format", "")).lower() == "json":
            headers = self.json_headers
        if call_headers:
            return merge_headers(headers, call_headers)
        return headers


# ---------------------------------------------------------------------------------
# TLS and proxies


def ssl_context(
    verify: bool | str | ssl.SSLContext,
    cert: str | tuple[str, str] | None,
    *,
    trust_env: bool,
) -> ssl.SSLContext:
    """The TLS context both transports use.

    * ``verify=True``: the system's trust store (OpenSSL honours ``SSL_CERT_FILE`` and
      ``SSL_CERT_DIR``). With ``trust_env``, ``REQUESTS_CA_BUNDLE`` (what ``requests``
      reads) replaces it when set, so corporate CA bundles work the same as there.
    * ``verify="path"``: that CA file (or directory).
    * ``verify=False``: no certificate or host name checks (the transport logs a
      warning once).
    * an ``ssl.SSLContext``: used as it is; put a client certificate in it yourself.
    * ``cert``: a client certificate, a PEM file holding key and certificate, or a
      ``(certfile, keyfile)`` pair.
    """
    if isinstance(verify, ssl.SSLContext):
        if cert is not None:
            raise ValueError("cert cannot be combined with an SSLContext: call load_cert_chain() on your context")
        return verify
    if verify is True:
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") if trust_env else None
        ctx = _verifying_context(bundle) if bundle else ssl.create_default_context()
    elif verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif isinstance(verify, str):
        ctx = _verifying_context(verify)
    else:
        raise TypeError(f"verify must be a bool, a CA bundle path or an ssl.SSLContext, not {type(verify).__name__}")
    if cert is not None:
        if isinstance(cert, str):
            ctx.load_cert_chain(cert)
        elif isinstance(cert, tuple) and len(cert) == 2:
            ctx.load_cert_chain(cert[0], cert[1])
        else:
            raise TypeError("cert must be a PEM file path or a (certfile, keyfile) tuple")
    return ctx


def _verifying_context(path: str) -> ssl.SSLContext:
    if os.path.isdir(path):
        return ssl.create_default_context(capath=path)
    if not os.path.exists(path):
        raise ValueError(f"verify: no CA bundle at {path!r}")
    return ssl.create_default_context(cafile=path)


_insecure_warned: set[str] = set()


def warn_insecure(display: str) -> None:
    """Log, once per base URL and process, that TLS verification is off."""
    if display in _insecure_warned:
        return
    _insecure_warned.add(display)
    _log.warning(
        "TLS certificate verification is disabled for %s (verify=False): the connection can be intercepted",
        display,
    )


@dataclass(frozen=True)
class Proxy:
    """The proxy a transport goes through.

    Attributes:
        url: the proxy URL without credentials (``http://host:port``).
        where: ``host:port`` for messages.
        auth_header: ``Proxy-Authorization`` from the proxy URL's ``user:password@``.
        password: kept only to scrub it out of messages.
        from_env: True when it came from the environment rather than ``proxy=``.
    """

    url: str
    where: str
    auth_header: str | None
    password: str | None
    from_env: bool

    @property
    def headers(self) -> dict[str, str]:
        return {"Proxy-Authorization": self.auth_header} if self.auth_header else {}


def resolve_proxy(base: BaseURL, proxy: str | None, *, trust_env: bool) -> Proxy | None:
    """Decide once, at construction, which proxy (if any) the transport uses.

    An explicit ``proxy`` wins. Otherwise, with ``trust_env``, the environment decides
    exactly as ``urllib.request`` (and so aiohttp's own ``trust_env``) reads it:
    ``HTTPS_PROXY`` for an https base URL, ``HTTP_PROXY`` for http (lower-case names
    win), skipped when ``NO_PROXY`` matches the host. ``ALL_PROXY`` is not read, and
    only http:// and https:// proxies are supported. Both transports call this same
    function, so sync and async always agree.
    """
    if proxy is not None:
        return _parse_proxy(proxy, from_env=False)
    if not trust_env:
        return None
    proxies = urllib.request.getproxies()
    candidate = proxies.get(base.scheme)
    if not candidate:
        return None
    host = base.host if ":" in base.host else f"{base.host}:{base.port}"
    if urllib.request.proxy_bypass(host):
        return None
    try:
        return _parse_proxy(candidate, from_env=True)
    except ValueError as exc:
        _log.warning("ignoring the %s proxy from the environment: %s", base.scheme, exc)
        return None


def _parse_proxy(text: str, *, from_env: bool) -> Proxy:
    if "://" not in text:
        text = "http://" + text  # curl and requests accept "host:port"
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"only http:// and https:// proxies are supported, not {scheme}://")
    if not parts.hostname:
        raise ValueError(f"the proxy URL has no host: {redact_url(text)}")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"the proxy URL has an invalid port: {redact_url(text)}") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    auth_header = None
    password = None
    if parts.username is not None or parts.password is not None:
        password = unquote(parts.password or "")
        auth_header = basic_auth(unquote(parts.username or ""), password)
    return Proxy(
        url=f"{scheme}://{host}:{port}",
        where=f"{host}:{port}",
        auth_header=auth_header,
        password=password or None,
        from_env=from_env,
    )


# ---------------------------------------------------------------------------------
# Responses


def decode_response(method: Method, status: int, headers: Mapping[str, str], body: bytes) -> Message:
    """The message of a 2xx response.

    Raises the :mod:`lorax.errors` class for a LoRAX error body and
    :class:`~lorax.errors.ResponseDecodeError` for a body that does not decode.
    """
    if method.empty_response:
        result: Message = method.output_type()
        return result
    if method.metrics_response:
        from lorax.types import MetricFamilies, MetricsResponse

        content_type = _get(headers, "content-type").lower()
        if "json" in content_type:
            families = codec.from_json(MetricFamilies, body)
            return MetricsResponse(body=families.families)
        return MetricsResponse(body=body.decode("utf-8", "replace"))
    message: Message = codec.from_json(method.output_type, body)
    return message


def response_meta(status: int, headers: Any, call_headers: Mapping[str, str], own: Secrets) -> ResponseMeta:
    """A success's status and headers, for :class:`ResponseMeta`.

    Header names lower-cased, repeated headers joined with ", " (as
    :func:`~lorax.transports.base.lower_headers`), credentials redacted by name and,
    wherever the server echoed one of the transport's (`own`) or the call's headers (a
    debug header, a misconfigured proxy), by value. (The request's ``api_token`` is left
    to error texts: walking the message on every call costs more than the rest.)
    `headers` is the library's response header mapping (names of any case).
    """
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key in out:
            out[key] = f"{out[key]}, {value}"
        else:
            out[key] = value
    if not SENSITIVE_HEADERS.isdisjoint(out):
        for key in SENSITIVE_HEADERS.intersection(out):
            out[key] = REDACTED
    secrets = Secrets.of(own.values, call_headers) if call_headers else own
    return ResponseMeta(status, secrets.scrub_headers(out) if secrets.values else out)


def _get(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.title())
    return value or ""


def is_event_stream(headers: Mapping[str, str]) -> bool:
    """Whether a 2xx answer to a streaming route is really a stream.

    A missing content type is accepted (an odd proxy); JSON, HTML or text is not.
    """
    content_type = _get(headers, "content-type").lower()
    return not content_type or "event-stream" in content_type


def status_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Secrets,
    route: Route | None = None,
) -> errors.LoraxError:
    """The exception for a non-2xx status (or a 2xx stream that is not a stream).

    LoRAX JSON errors map by ``error_type``; axum's text/plain 4xx, a proxy's HTML 502
    and empty bodies by status (:func:`lorax.errors.error_from_response`). A 3xx is
    refused: lorax does not follow redirects (LoRAX never sends one, and following
    one would carry the Authorization header to wherever it points). With `route`, the
    error names the request's method and URL (never credentials: a route's URL has
    none).
    """
    body = secrets.scrub_bytes(body)
    lowered = secrets.scrub_headers(lower_headers(headers))
    method = route.method if route is not None else None
    url = route.url if route is not None else None
    if 300 <= status < 400:
        location = lowered.get("location", "")
        where = _location(location)
        message = (
            f"the server answered with a redirect ({status}){' to ' + where if where else ''}; "
            "lorax does not follow redirects: point base_url at the final address"
        )
        cls = errors.error_class(status, None)
        return cls(
            secrets.scrub(message),
            status_code=status,
            headers=lowered,
            body=body.decode("utf-8", "replace"),
            request_method=method,
            request_url=url,
        )
    return errors.error_from_response(status, lowered, body, request_method=method, request_url=url)


def _location(location: str) -> str:
    if not location:
        return ""
    shown = redact_url(location.split("?", 1)[0].split("#", 1)[0])
    return shown[:200]


def not_a_stream(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Secrets,
    route: Route | None = None,
) -> errors.LoraxError:
    """A 2xx answer to a streaming route that is not ``text/event-stream``."""
    body = secrets.scrub_bytes(body)
    headers = secrets.scrub_headers(lower_headers(headers))
    method = route.method if route is not None else None
    url = route.url if route is not None else None
    error = (
        errors.error_from_response(status, headers, body, request_method=method, request_url=url)
        if body[:1] == b"{"
        else None
    )
    if error is not None and error.error_type is not None:
        return error
    content_type = _get(headers, "content-type")
    return errors.ResponseDecodeError(
        f"expected a text/event-stream answer, got {content_type!r} (status {status})",
        headers=headers,
        body=body.decode("utf-8", "replace"),
        request_method=method,
        request_url=url,
    )


def check_max_response_bytes(value: int) -> int:
    """`value` if it is a usable ``max_response_bytes`` (an int >= 1); else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_response_bytes must be an int >= 1, got {value!r}")
    return value


def compressed(headers: Mapping[str, str]) -> str | None:
    """The body's ``Content-Encoding`` when it is not ``identity`` (None when it is).

    The transports ask for ``Accept-Encoding: identity`` and read no compressed body:
    one MiB of gzip can expand to GiBs, and a size cap can only be checked after
    decompressing.
    """
    value = _get(headers, "content-encoding").strip().lower()
    if not value or value == "identity":
        return None
    return value[:40]


def declared_length(headers: Mapping[str, str]) -> int | None:
    """The ``Content-Length`` of a response, when it declares a valid one."""
    value = _get(headers, "content-length").strip()
    if not value.isdigit() or len(value) > 18:
        return None
    return int(value)


def too_large(
    where: str, limit: int, *, size: int | None = None, encoding: str | None = None
) -> errors.ResponseTooLargeError:
    """The error for a body that is not read: above `limit`, or compressed (`encoding`)."""
    if encoding is not None:
        message = (
            f"the response from {where} is compressed (Content-Encoding: {encoding}) though lorax asked for "
            "identity; compressed bodies are refused because they can expand without bound"
        )
    elif size is not None:
        message = f"the response from {where} declares {size} bytes, above max_response_bytes={limit}; it was not read"
    else:
        message = f"the response from {where} grew past max_response_bytes={limit}; reading stopped there"
    error = errors.ResponseTooLargeError(message, limit=limit)
    error.request_sent = True  # type: ignore[attr-defined]
    return error


def read_timeout(where: str, read: float | None) -> errors.APITimeoutError:
    """The error for a response that stopped arriving for the read timeout (the request was sent)."""
    return timeout_error(
        f"{where} stopped sending the response for {seconds(read)} (read timeout)",
        phase="read",
        request_sent=True,
    )


def log_stale(log: logging.Logger, route: Route, exc: BaseException) -> None:
    """Log that a pooled connection was stale and the request goes out again on a new one."""
    log.debug("%s %s: the pooled connection was stale (%r); retrying on a new one", route.method, route.url, exc)


def checked_length(headers: Mapping[str, str], limit: int, where: str) -> int | None:
    """The declared length of a body about to be read, once it is known to be readable.

    Raises :func:`too_large`'s error for a compressed body or a declared length above
    `limit`, before any of it is read. `headers` are the HTTP library's own
    (case-insensitive) headers: one lookup says there is no encoding.
    """
    encoding = compressed(headers) if "content-encoding" in headers else None
    if encoding is not None:
        raise too_large(where, limit, encoding=encoding)
    length = declared_length(headers)
    if length is not None and length > limit:
        raise too_large(where, limit, size=length)
    return length


class BoundedBody:
    """The reads of a body of undeclared length, refused once they pass `limit` bytes."""

    __slots__ = ("_limit", "_parts", "_size", "_where")

    def __init__(self, limit: int, where: str) -> None:
        self._limit = limit
        self._where = where
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self._limit:
            raise too_large(self._where, self._limit)
        self._parts.append(chunk)

    def value(self) -> bytes:
        return b"".join(self._parts)


# ---------------------------------------------------------------------------------
# Connection failures


def connection_error(message: str, *, request_sent: bool) -> errors.APIConnectionError:
    """An :class:`~lorax.errors.APIConnectionError` marked with ``request_sent``."""
    error = errors.APIConnectionError(message)
    error.request_sent = request_sent
    return error


def timeout_error(message: str, *, phase: str, request_sent: bool) -> errors.APITimeoutError:
    """An :class:`~lorax.errors.APITimeoutError` of `phase`, marked with ``request_sent``."""
    error = errors.APITimeoutError(message, phase=phase)
    error.request_sent = request_sent
    return error


def total_timeout(deadline: Deadline, *, sent: bool) -> errors.APITimeoutError:
    """The ``phase="total"`` error of a call whose deadline ran out."""
    total = deadline.total
    message = f"the total timeout of {total:g} s ran out" if total is not None else "the total timeout ran out"
    return timeout_error(message, phase="total", request_sent=sent)


def log_answer(log: logging.Logger, route: Route, status: int, started: float, kind: str = "") -> None:
    """Log (debug) a call's status and the time since `started` (``time.perf_counter()``)."""
    log.debug("%s %s -> %d%s in %.1f ms", route.method, route.url, status, kind, (time.perf_counter() - started) * 1000)


def failed(log: logging.Logger, route: Route, error: errors.LoraxError) -> errors.LoraxError:
    """`error`, logged at debug level on `log` as the failure of a call to `route`."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s %s failed: %s: %s", route.method, route.url, type(error).__name__, error)
    return error


# What a failure before the response means, for both HTTP transports. Each transport
# reads its library's exception into one of these kinds and a reason (the library
# knowledge stays there); the error class, text, phase and ``request_sent`` are here.
# Texts name: where (host:port, proxy included), base (host:port), proxy, host, the
# connect/read/pool timeouts, maxsize (pool_maxsize) and reason.
SEND_FAILURES: dict[str, tuple[str, str | None, bool]] = {
    # kind: (message template, timeout phase or None for a connection error, request_sent)
    "pool": (
        "no free connection to {where} within {pool}: all {maxsize} connections of the pool are in use (pool_maxsize)",
        "pool",
        False,
    ),
    "proxy": ("could not reach {base} through the proxy {proxy}: {reason}", None, False),
    "proxy_timeout": ("connecting to the proxy {proxy} timed out after {connect}", "connect", False),
    "dns": ("could not resolve the host {host!r}: {reason}", None, False),
    "connect": ("could not connect to {where}: {reason}", None, False),
    "connect_timeout": ("connecting to {where} timed out after {connect}", "connect", False),
    "tls_handshake": ("the TLS handshake with {where} failed: {reason}", None, False),
    "tls_handshake_timeout": ("the TLS handshake with {where} timed out after {connect}", "connect", False),
    "tls": ("TLS error talking to {where}: {reason}", None, True),
    "read_timeout": ("{where} sent no response within {read} (read timeout)", "read", True),
    "no_response": ("{where} closed the connection without a response", None, True),
    "broken": ("the connection to {where} failed before a response: {reason}", None, True),
}


@dataclass(frozen=True)
class Where:
    """What the error texts of one transport name."""

    where: str
    base: str
    proxy: str
    host: str
    maxsize: int | str = ""


def send_failure(kind: str, at: Where, timeout: Any, reason: str = "") -> errors.LoraxError:
    """The error for a failure of `kind` (a key of :data:`SEND_FAILURES`)."""
    template, phase, sent = SEND_FAILURES[kind]
    message = template.format(
        where=at.where,
        base=at.base,
        proxy=at.proxy,
        host=at.host,
        maxsize=at.maxsize,
        connect=seconds(timeout.connect),
        read=seconds(timeout.read),
        pool=seconds(timeout.pool),
        reason=reason,
    )
    if phase is None:
        return connection_error(message, request_sent=sent)
    return timeout_error(message, phase=phase, request_sent=sent)


def interrupted(events: int, where: str, reason: str) -> errors.StreamInterruptedError:
    """The stream broke after it had started."""
    noun = "event" if events == 1 else "events"
    error = errors.StreamInterruptedError(f"the stream from {where} broke after {events} {noun}: {reason}")
    error.request_sent = True
    return error


def seconds(value: float | None) -> str:
    return "no limit" if value is None else f"{value:g} s"


def os_reason(exc: BaseException) -> str:
    """A short human reason from the OSError (or SSL error) at the root of `exc`."""
    seen: set[int] = set()
    current: BaseException | None = exc
    fallback = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        # getattr: aiohttp's ClientConnectorSSLError is an ssl.SSLError built in Python,
        # without the attributes the ssl module sets on the errors it raises.
        if isinstance(current, ssl.SSLCertVerificationError):
            detail = getattr(current, "verify_message", None) or getattr(current, "reason", None) or current
            return f"certificate verification failed: {detail}"
        if isinstance(current, ssl.SSLError):
            return f"TLS error: {getattr(current, 'reason', None) or current}"
        if isinstance(current, socket.gaierror) and current.strerror:
            return str(current.strerror)
        if isinstance(current, OSError) and isinstance(current.errno, int) and current.errno > 0:
            # strerror may be a library's own text ("Connect call failed ..."); the
            # errno's name is what people search for.
            return os.strerror(current.errno).lower()
        if isinstance(current, OSError) and current.strerror:
            return str(current.strerror)
        if not fallback and str(current):
            fallback = str(current)
        current = current.__cause__ or current.__context__
    return fallback or type(exc).__name__


_fast_decoders: dict[type[Any], Callable[[bytes], Any] | None] = {}

# What a :func:`fast_decoder` raises for data that the careful path should decide on:
# msgspec before 0.19 raises UnicodeDecodeError, not DecodeError, for invalid UTF-8
# inside a JSON string.
FAST_DECODE_ERRORS = (msgspec.MsgspecError, UnicodeDecodeError)


def fast_decoder(message_class: type[Any]) -> Callable[[bytes], Any] | None:
    """msgspec's own decoder of a stream's event class, for the per-token loop; None if
    the class needs :func:`lorax.codec.decoder`'s unwrapping.

    Use it only on data without ``"error"`` in it, and fall back to
    ``codec.decoder(cls)`` when it raises one of :data:`FAST_DECODE_ERRORS`: for such
    data the two give the same message, this one without the wrapper's call (measured:
    ~0.3 µs of ~1 µs per event).
    """
    try:
        return _fast_decoders[message_class]
    except KeyError:
        pass
    fast: Callable[[bytes], Any] | None = None
    is_message = isinstance(message_class, type) and issubclass(message_class, Message)
    if is_message and not getattr(message_class, "__lorax_unwrap__", True):
        fast = msgspec.json.Decoder(message_class).decode
    _fast_decoders[message_class] = fast
    return fast
