"""What Client and AsyncClient share: configuration, call options, stream end rules.

Nothing here does I/O. The two clients differ only in ``await``, ``async for`` and how
they sleep between retries; every decision lives here or in ``_params``, ``_retry``
and ``_timeout``.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, urlsplit

from lorax import errors
from lorax._message import Message
from lorax._redact import redact_url
from lorax._retry import RetryPolicy
from lorax._routes import Method
from lorax._timeout import NOT_GIVEN, Deadline, NotGiven, Timeout
from lorax.transports.base import CallOptions, ResponseMeta

logger = logging.getLogger("lorax")

PREDIBASE_SERVING_URL = "https://serving.app.predibase.com"
PREDIBASE_TOKEN_ENV = "PREDIBASE_API_TOKEN"


@dataclass(frozen=True)
class ClientConfig:
    """A client's settings. Immutable: ``with_options`` makes a changed copy."""

    base_url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: Timeout = field(default_factory=Timeout)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_response: Callable[[ResponseMeta], None] | None = None

    def call_options(self) -> CallOptions:
        """Options for one call, with a fresh total deadline."""
        return CallOptions(headers=self.headers, timeout=self.timeout, deadline=Deadline(self.timeout.total))

    def changed(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: Timeout | float | tuple[float | None, float | None] | NotGiven | None = NOT_GIVEN,
        max_retries: RetryPolicy | int | NotGiven | None = NOT_GIVEN,
    ) -> ClientConfig:
        new = self
        if headers is not None:
            merged = dict(self.headers)
            merged.update({k.lower(): v for k, v in headers.items()})
            new = replace(new, headers=merged)
        if timeout is not NOT_GIVEN:
            new = replace(new, timeout=Timeout.coerce(timeout))
        if max_retries is not NOT_GIVEN:
            new = replace(new, retry=RetryPolicy.coerce(max_retries))
        return new


def build_headers(headers: Mapping[str, str] | None, cookies: Mapping[str, str] | None) -> dict[str, str]:
    """Client-level request headers: the caller's headers plus a Cookie header."""
    out: dict[str, str] = {}
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("headers must map strings to strings")
        out[name.lower()] = value
    if cookies:
        jar = "; ".join(f"{k}={v}" for k, v in cookies.items())
        out["cookie"] = f"{out['cookie']}; {jar}" if "cookie" in out else jar
    return out


def check_base_url(base_url: str) -> str:
    """Validate a base URL and return its scheme."""
    if not isinstance(base_url, str):
        raise TypeError(f"base_url must be a string, not {type(base_url).__name__}")
    parts = urlsplit(base_url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise ValueError(
            f"base_url must be an http(s):// URL of a LoRAX server or a ws(s):// URL of a lorax gateway, "
            f"got {redact_url(base_url)!r}"
        )
    return scheme


def predibase_url(tenant: str, deployment: str, *, serving_url: str = PREDIBASE_SERVING_URL) -> str:
    """The base URL of a Predibase deployment: ``{serving}/{tenant}/deployments/v2/llms/{deployment}``."""
    if not tenant or not deployment:
        raise ValueError("tenant and deployment are both required")
    return f"{serving_url.rstrip('/')}/{quote(tenant, safe='')}/deployments/v2/llms/{quote(deployment, safe='')}"


def predibase_headers(
    api_token: str | None, headers: Mapping[str, str] | None, *, owner: str = "Client"
) -> tuple[dict[str, str], str]:
    """Headers for Predibase, and where their token came from (for :func:`explain_auth`).

    The bearer token comes from an ``Authorization`` header in `headers`, else
    `api_token`, else ``PREDIBASE_API_TOKEN``. Every Predibase deployment wants one, so
    none at all raises :class:`~lorax.errors.MissingCredentialsError` now rather than a
    401 on the first call.
    """
    out = dict(headers or {})
    if any(k.lower() == "authorization" for k in out):
        return out, "the Authorization header given in headers="
    if api_token is not None:
        if not api_token.strip():
            raise errors.MissingCredentialsError(f"{owner}.from_predibase: api_token is empty")
        token, source = api_token, "the api_token argument"
    else:
        token = os.environ.get(PREDIBASE_TOKEN_ENV, "")
        source = f"the {PREDIBASE_TOKEN_ENV} environment variable"
        if not token.strip():
            raise errors.MissingCredentialsError(
                f"{owner}.from_predibase needs a Predibase API token: pass api_token=..., or set the "
                f"{PREDIBASE_TOKEN_ENV} environment variable"
                + (" (it is set, but empty)" if PREDIBASE_TOKEN_ENV in os.environ else "")
            )
    out["Authorization"] = f"Bearer {token}"
    return out, source


def auth_source(headers: Mapping[str, str]) -> str | None:
    """Where a client built with `headers` gets its credentials, for :func:`explain_auth`."""
    if any(k.lower() == "authorization" for k in headers):
        return "the Authorization header given in headers="
    return None


def explain_auth(error: errors.LoraxError, source: str | None) -> None:
    """Say, on a 401 or 403, which credentials the server refused (never their value).

    `source` is where the client's token came from (None: it sent none). An error that
    already explains itself (a gateway refusing its WebSocket handshake) is left alone.
    """
    if error.hint is not None:
        return
    if isinstance(error, errors.AuthenticationError):
        if source is None:
            error.hint = (
                "the server wants credentials and none were sent: pass an Authorization header "
                f"(headers=), or use Client.from_predibase with api_token= or {PREDIBASE_TOKEN_ENV}"
            )
        else:
            error.hint = f"the server refused the token from {source}: check that it is valid and not expired"
    elif isinstance(error, errors.PermissionDeniedError):
        if source is None:
            error.hint = "the server refused the request, and no credentials were sent"
        else:
            error.hint = (
                f"the server refused the request with the token from {source}: check that the token is valid "
                "and allowed to use this deployment"
            )


# ---------------------------------------------------------------------------------
# Stream end rules


class StreamTracker:
    """Knows when a stream has delivered its final event, per route.

    A native stream ends with the event that carries ``generated_text``; an OpenAI
    stream with the chunk whose choice has a ``finish_reason`` (``[DONE]`` follows, but
    is not required: older servers did not send it). A stream that ends before its
    final event is an :class:`~lorax.errors.IncompleteGenerationError`, never a silent
    truncation.
    """

    __slots__ = ("_is_final", "count", "finished", "method")

    def __init__(self, method: Method) -> None:
        self.method = method
        self.count = 0
        self.finished = False
        self._is_final = _final_rule(method)

    def observe(self, message: Message) -> None:
        """Record a delivered message."""
        self.count += 1
        if self._is_final(message):
            self.finished = True

    def incomplete(self) -> errors.IncompleteGenerationError:
        """The error for a stream that ended before its final event."""
        return errors.IncompleteGenerationError(
            f"the {self.method.name} stream ended after {self.count} event(s) without its final event; "
            "the output is incomplete"
        )


def _final_rule(method: Method) -> Callable[[Any], bool]:
    # Module functions, not a lambda per tracker: one object fewer per stream for the
    # garbage collector to track.
    return _is_final_choice if method.done_marker else _is_final_text


def _is_final_choice(message: Any) -> bool:
    return any(c.finish_reason is not None for c in message.choices)


def _is_final_text(message: Any) -> bool:
    return message.generated_text is not None


# How many events past the final one are read (and dropped) so the connection can be
# reused, before the stream is closed instead.
DRAIN_AFTER_FINAL = 4


# ---------------------------------------------------------------------------------
# Response metadata capture (client.with_raw_response)

_captured: contextvars.ContextVar[list[ResponseMeta] | None] = contextvars.ContextVar("lorax_meta", default=None)


def report_meta(config: ClientConfig, meta: ResponseMeta) -> None:
    """Hand a response's metadata to whoever asked for it."""
    sink = _captured.get()
    if sink is not None:
        sink.append(meta)
    if config.on_response is not None:
        config.on_response(meta)


def start_capture() -> tuple[list[ResponseMeta], contextvars.Token[list[ResponseMeta] | None]]:
    sink: list[ResponseMeta] = []
    return sink, _captured.set(sink)


def stop_capture(token: contextvars.Token[list[ResponseMeta] | None]) -> None:
    _captured.reset(token)


@dataclass(frozen=True)
class RawResponse:
    """A result together with the response metadata (status, headers, LoRAX timings)."""

    parsed: Any
    meta: ResponseMeta

    @property
    def headers(self) -> Mapping[str, str]:
        """Response headers, lower-case names."""
        return self.meta.headers

    @property
    def status_code(self) -> int:
        """The HTTP status (200 over transports without one)."""
        return self.meta.status_code
