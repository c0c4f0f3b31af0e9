"""Everything lorax raises.

The tree::

    LoraxError                          root: `except LoraxError` catches all of it
    ├── APIConnectionError              nothing usable came back (refused, reset, TLS, DNS)
    │   ├── APITimeoutError             connect, read (idle) or total deadline ran out
    │   └── StreamInterruptedError      a stream broke after it started (also an
    │                                   IncompleteGenerationError)
    ├── ProtocolError                   the peer broke the protocol
    │   ├── ResponseDecodeError         a body or event could not be decoded
    │   └── ResponseTooLargeError       a body above max_response_bytes, or a compressed
    │                                   one (the client asks for identity)
    ├── ClientClosedError               the client or transport was closed
    ├── MissingCredentialsError         no token where one is needed, raised when the
    │                                   client is built (``Client.from_predibase``)
    └── APIStatusError                  the server answered with an error
        ├── ValidationError             error_type "validation" (422 or in-stream)
        │   └── InvalidRequestError     refused before sending: it would be rejected or
        │                               would crash the server
        ├── GenerationError             error_type "generation" (424)
        ├── OverloadedError             error_type "overloaded" (429)
        ├── IncompleteGenerationError   error_type "incomplete_generation", or a stream
        │                               that ended before its final event
        ├── BadRequestError             400 (axum's JSON syntax rejection)
        ├── ShardNotReadyError          424 without an error_type
        │   └── PermissionDeniedError   403: the credentials were refused for this
        ├── ShardTimeoutError           504
        ├── NotFoundError               404 (e.g. "no fast tokenizer")
        ├── RateLimitExceededError      429 without an error_type (a proxy's rate limit)
        ├── NotSupportedError           kept for compatibility with the official client
        ├── UnprocessableEntityError    other 422s
        │   ├── TemplateError           error_type "template_error"
        │   ├── ToolError               error_type "tool_error"
        │   ├── MissingTemplateVariableError
        │   └── RequestDeserializationError  axum's text/plain 422
        └── UnknownError                anything else (5xx, 413, 415, HTML from a proxy)
            ├── PayloadTooLargeError    413 (LoRAX's 2 MiB body limit)
            ├── UnsupportedMediaTypeError 415
            ├── EmbeddingFailureError   error_type "embedding_failure"
            ├── ClassificationFailureError error_type "classification_failure"
            ├── UnhealthyError          error_type "healthcheck" (503)
            ├── ServiceUnavailableError 502 or 503 without a LoRAX error_type
            └── AuthenticationError     401: no credentials, or refused ones

The official client's class names are all here and keep their meaning, so existing
``except`` clauses keep working: the official client raises ``UnknownError`` for a 401
and ``ShardNotReadyError`` for a 403 (``parse_error`` in its ``lorax/errors.py``), so
``AuthenticationError`` and ``PermissionDeniedError`` subclass those. The mapping
looks at ``error_type`` first and falls back to the HTTP status (docs/wire.md, "Errors"), and it
is the same whether the error arrived as an HTTP response, as an event inside a 200
stream, or as a WebSocket error frame.

An error built from an HTTP response names the request (``request_method``,
``request_url``: no credentials, no query) in its text, and when the body was not
LoRAX's JSON error body it says so (``hint``)::

    Not Found (status 404, POST http://host:8080/prefix/generate): the server answered
    HTML, not LoRAX JSON: is the URL right?
"""

from __future__ import annotations

from collections.abc import Mapping

from lorax._redact import redact_headers, redact_url

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ClassificationFailureError",
    "ClientClosedError",
    "EmbeddingFailureError",
    "GenerationError",
    "IncompleteGenerationError",
    "InvalidRequestError",
    "LoraxError",
    "MissingCredentialsError",
    "MissingTemplateVariableError",
    "NotFoundError",
    "NotSupportedError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitExceededError",
    "RequestDeserializationError",
    "ResponseDecodeError",
    "ResponseTooLargeError",
    "ServiceUnavailableError",
    "ShardNotReadyError",
    "ShardTimeoutError",
    "StreamInterruptedError",
    "TemplateError",
    "ToolError",
    "UnhealthyError",
    "UnknownError",
    "UnprocessableEntityError",
    "UnsupportedMediaTypeError",
    "ValidationError",
    "error_from_payload",
    "error_from_response",
    "parse_error",
]

# Bodies kept on an error are cut here: an HTML error page can be large and it ends
# up in logs.
MAX_BODY_CHARS = 4096


def _request_id(headers: Mapping[str, str]) -> str | None:
    """The request or trace id a proxy or gateway in front of LoRAX put in `headers`
    (lower-case names), if any; shared with ResponseMeta (lorax/transports/base.py)."""
    for name in ("x-request-id", "x-b3-traceid", "x-amzn-requestid", "request-id"):
        value = headers.get(name)
        if value:
            return value
    return None


class LoraxError(Exception):
    """Base class of every exception raised by lorax.

    Attributes:
        message: human-readable text, from the server when it sent one.
        status_code: the HTTP status, or None when the error did not come from an
            HTTP status line (a connection failure, or an error event inside a 200
            stream).
        error_type: LoRAX's machine-readable ``error_type``, when it sent one.
        headers: response headers with credentials removed (empty when none).
        body: the raw response text for non-JSON errors, cut to 4096 characters.
        request_method: the HTTP method of the request that failed ("POST"), when
            the error came from an HTTP response.
        request_url: that request's URL, without credentials or query string.
        hint: what the client makes of it, added to ``str(error)`` after the
            server's message: that the body was not LoRAX's JSON, or which token the
            server refused.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: str | None = None,
        request_method: str | None = None,
        request_url: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.error_type = error_type
        self.headers: dict[str, str] = {k.lower(): v for k, v in redact_headers(headers).items()}
        self.body = body[:MAX_BODY_CHARS] if body is not None else None
        self.request_method = request_method
        # Never a query string (it may carry a key) nor user:password@.
        self.request_url = redact_url(request_url.split("?", 1)[0].split("#", 1)[0]) if request_url else None
        self.hint = hint

    @property
    def request_id(self) -> str | None:
        """A request or trace id from the response headers, when a proxy set one."""
        return _request_id(self.headers)

    @property
    def retry_after(self) -> str | None:
        """The raw ``Retry-After`` header value, if the server sent one."""
        return self.headers.get("retry-after")

    def __str__(self) -> str:
        facts = []
        if self.status_code is not None:
            facts.append(f"status {self.status_code}")
        if self.request_url is not None:
            facts.append(f"{self.request_method} {self.request_url}" if self.request_method else self.request_url)
        text = self.message
        if facts:
            text = f"{text} ({', '.join(facts)})" if text else ", ".join(facts)
        if self.hint:
            text = f"{text}: {self.hint}" if text else self.hint
        return text

    def __repr__(self) -> str:
        parts = [repr(self.message)]
        if self.status_code is not None:
            parts.append(f"status_code={self.status_code}")
        if self.error_type is not None:
            parts.append(f"error_type={self.error_type!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __reduce__(self) -> tuple[object, ...]:
        # Exceptions cross process boundaries (multiprocessing, batch workers); keep
        # the keyword-only attributes when they do.
        return (
            _rebuild,
            (type(self), self.message, self.status_code, self.error_type, self.headers, self.body),
            {k: v for k, v in self.__dict__.items() if k not in _INIT_ATTRS},
        )


# Set by LoraxError.__init__ from _rebuild's arguments; everything else an error carries
# (request_method, hint, phase, request_sent, ...) travels as its pickled __dict__.
_INIT_ATTRS = frozenset({"message", "status_code", "error_type", "headers", "body"})


def _rebuild(
    cls: type[LoraxError],
    message: str,
    status_code: int | None,
    error_type: str | None,
    headers: dict[str, str],
    body: str | None,
) -> LoraxError:
    err = cls.__new__(cls)
    LoraxError.__init__(err, message, status_code=status_code, error_type=error_type, headers=headers, body=body)
    return err


class APIConnectionError(LoraxError):
    """The request did not get a usable answer: refused, reset, DNS, TLS, proxy.

    ``request_sent`` is False when nothing reached the server (refused, DNS, TLS
    handshake, connect timeout); only then is a call retried, so a generation is never
    run twice.
    """

    request_sent: bool = True


class APITimeoutError(APIConnectionError):
    """A timeout ran out. ``phase`` says which: "connect", "read" (idle time between
    bytes), "pool" (no free pooled connection in time) or "total" (the call's deadline)."""

    def __init__(self, message: str, *, phase: str = "read", **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.phase = phase


class ProtocolError(LoraxError):
    """The peer broke the protocol (malformed HTTP, SSE or WebSocket frames)."""


class ResponseDecodeError(ProtocolError):
    """A response body or stream event could not be decoded into its message."""


class ResponseTooLargeError(ProtocolError):
    """A response body the client refused to read to its end.

    Either it grew past the transport's ``max_response_bytes`` (declared in
    ``Content-Length`` or counted while reading: reading stops there), or it came
    compressed (``Content-Encoding`` other than ``identity``, which the client never
    asks for): a small compressed body can expand without bound. ``limit`` is the
    ``max_response_bytes`` in force.
    """

    limit: int = 0

    def __init__(self, message: str, *, limit: int, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.limit = limit


class ClientClosedError(LoraxError):
    """The client or transport was used after ``close()``."""


class MissingCredentialsError(LoraxError):
    """No token where one is required; raised when the client is built.

    ``Client.from_predibase`` raises it when neither ``api_token`` nor the
    ``PREDIBASE_API_TOKEN`` environment variable (nor an ``Authorization`` header)
    gives one: every Predibase deployment wants a token, and a client without one
    would only fail later, on its first call, with a 401.
    """


class APIStatusError(LoraxError):
    """The server answered with an error (an HTTP status, an error event or frame)."""


# The official client's names.
class ValidationError(APIStatusError):
    """LoRAX rejected the request's parameters (error_type "validation")."""


class GenerationError(APIStatusError):
    """Generation failed on the server (error_type "generation", HTTP 424)."""


class OverloadedError(APIStatusError):
    """The server is at its concurrency limit (error_type "overloaded", HTTP 429)."""


class IncompleteGenerationError(APIStatusError):
    """Generation ended before its final event, on the server or on the way here."""


class BadRequestError(APIStatusError):
    """HTTP 400: the body was not valid JSON for the server."""


class ShardNotReadyError(APIStatusError):
    """HTTP 424 without a LoRAX error_type (and, as in the official client, 403:
    see :class:`PermissionDeniedError`)."""


class ShardTimeoutError(APIStatusError):
    """HTTP 504 from the server or a proxy in front of it."""


class NotFoundError(APIStatusError):
    """HTTP 404: unknown route, or a model without a fast tokenizer."""


class RateLimitExceededError(APIStatusError):
    """HTTP 429 without LoRAX's error_type, typically from a gateway or proxy."""


class NotSupportedError(APIStatusError):
    """Kept for compatibility with the official client; lorax does not raise it itself."""


class UnprocessableEntityError(APIStatusError):
    """HTTP 422 that is not a LoRAX validation error."""


class UnknownError(APIStatusError):
    """Any error the mapping has no better class for."""


# Newer, more specific subclasses.
class InvalidRequestError(ValidationError):
    """Refused before sending: the server would reject it, or it would crash the server.

    Client-side checks are never stricter than LoRAX's own (docs/wire.md, "Inputs that crash LoRAX"
    and "Validation order").
    """


class StreamInterruptedError(IncompleteGenerationError, APIConnectionError):
    """The connection broke after the stream had started.

    It is both an :class:`IncompleteGenerationError` (the output is partial) and an
    :class:`APIConnectionError` (the cause is the network). It is never retried,
    because tokens may already have been delivered.
    """


class TemplateError(UnprocessableEntityError):
    """The chat template could not be applied (error_type "template_error")."""


class ToolError(UnprocessableEntityError):
    """Tool calling failed (error_type "tool_error")."""


class MissingTemplateVariableError(UnprocessableEntityError):
    """The chat template needs a variable that was not given."""


class RequestDeserializationError(UnprocessableEntityError):
    """axum could not deserialize the JSON body into LoRAX's type (text/plain 422)."""


class PayloadTooLargeError(UnknownError):
    """HTTP 413: the body exceeded the server's limit (2 MiB on LoRAX)."""


class UnsupportedMediaTypeError(UnknownError):
    """HTTP 415: the request's Content-Type was refused."""


class EmbeddingFailureError(UnknownError):
    """No embedding came back (error_type "embedding_failure")."""


class ClassificationFailureError(UnknownError):
    """No classification came back (error_type "classification_failure")."""


class UnhealthyError(UnknownError):
    """The health check failed (error_type "healthcheck", HTTP 503)."""


class ServiceUnavailableError(UnknownError):
    """HTTP 502 or 503 without a LoRAX error_type, usually from a proxy."""


class AuthenticationError(UnknownError):
    """HTTP 401: no credentials were sent, or the server refused them.

    A subclass of :class:`UnknownError`, the class the official client raises for a
    401. Through a client, ``str(error)`` says where the refused token came from (an
    ``Authorization`` header, the ``api_token`` argument, ``PREDIBASE_API_TOKEN``),
    never the token itself.
    """


class PermissionDeniedError(ShardNotReadyError):
    """HTTP 403: the server refused the request with these credentials.

    A subclass of :class:`ShardNotReadyError`, the class the official client raises
    for a 403. ``str(error)`` says where the token came from, as for
    :class:`AuthenticationError`.
    """


_BY_ERROR_TYPE: dict[str, type[APIStatusError]] = {
    "validation": ValidationError,
    "generation": GenerationError,
    "overloaded": OverloadedError,
    "incomplete_generation": IncompleteGenerationError,
    "template_error": TemplateError,
    "tool_error": ToolError,
    "missing_template_variable": MissingTemplateVariableError,
    "embedding_failure": EmbeddingFailureError,
    "classification_failure": ClassificationFailureError,
    "healthcheck": UnhealthyError,
    "no fast tokenizer": NotFoundError,
}

_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: UnprocessableEntityError,
    424: ShardNotReadyError,
    429: RateLimitExceededError,
    502: ServiceUnavailableError,
    503: ServiceUnavailableError,
    504: ShardTimeoutError,
}


def error_class(status_code: int | None, error_type: str | None) -> type[APIStatusError]:
    """The exception class for an error: by ``error_type`` first, then by status."""
    if error_type is not None:
        cls = _BY_ERROR_TYPE.get(error_type)
        if cls is not None:
            return cls
    if status_code is not None:
        return _BY_STATUS.get(status_code, UnknownError)
    return UnknownError


def error_from_payload(
    status_code: int | None,
    message: str,
    error_type: str | None,
    headers: Mapping[str, str] | None = None,
) -> APIStatusError:
    """Build the exception for a LoRAX ``{"error", "error_type"}`` body or event.

    ``status_code`` is None for an error event inside a 200 stream: the class is then
    chosen by ``error_type`` alone, which gives the same class as the HTTP error.
    """
    cls = error_class(status_code, error_type)
    return cls(message, status_code=status_code, error_type=error_type, headers=headers)


def error_from_response(
    status_code: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    request_method: str | None = None,
    request_url: str | None = None,
) -> APIStatusError:
    """Build the exception for a non-2xx HTTP response, whatever its body.

    A JSON ``{"error", "error_type"}`` body maps by ``error_type``. Anything else (axum's
    text/plain rejections, an HTML page from a proxy, an empty body) maps by status and
    keeps the text as the message and as ``body``; unless it is one of LoRAX's own
    non-JSON answers, the error's ``hint`` says that the body was not LoRAX's (and, for
    404, 405 and 501, asks whether the URL is right). `request_method` and
    `request_url` name the request in ``str(error)``.
    """
    request = {"request_method": request_method, "request_url": request_url}
    text = body.decode("utf-8", "replace")
    content_type = _header(headers, "content-type").lower()
    if "json" in content_type or text[:1] == "{":
        payload = _loads_error(body)
        if payload is not None:
            message, error_type = payload
            cls = error_class(status_code, error_type)
            return cls(message, status_code=status_code, error_type=error_type, headers=headers, body=text, **request)
    cls = error_class(status_code, None)
    if status_code == 422 and "text/plain" in content_type:
        cls = RequestDeserializationError
    message = text.strip() if "html" not in content_type else _html_summary(text, status_code)
    hint = _not_lorax_hint(status_code, content_type, text)
    return cls(message, status_code=status_code, headers=headers, body=text, hint=hint, **request)


# Statuses a wrong URL gets: no such route, a route without this method, a server that
# implements neither. LoRAX's router answers an unknown path with an empty 404 and a
# known path with the wrong method with an empty 405.
_WRONG_URL_STATUSES = frozenset({404, 405, 501})

# axum's own text/plain rejections on LoRAX's routes (router/src/server.rs): JSON syntax
# (400), the body limit (413), the content type (415), deserialization (422).
_LORAX_TEXT_STATUSES = frozenset({400, 413, 415, 422})


def _not_lorax_hint(status_code: int, content_type: str, text: str) -> str | None:
    """What to say about an error body that is not LoRAX's JSON, or None."""
    if status_code in (401, 403):
        return None  # the client says which token was refused instead
    if not text.strip():
        what = "an empty body"
    elif "html" in content_type or text.lstrip()[:1] == "<":
        what = "HTML"
    elif "json" in content_type:
        what = "JSON that is not a LoRAX error"
    elif content_type.startswith("text/") or not content_type:
        what = "plain text"
    else:
        what = content_type.split(";", 1)[0].strip()
    if status_code in _LORAX_TEXT_STATUSES and what in ("plain text", "an empty body"):
        return None
    if status_code in _WRONG_URL_STATUSES:
        return f"the server answered {what}, not LoRAX JSON: is the URL right?"
    return f"the server answered {what}, not LoRAX JSON (a proxy in front of LoRAX, or another server)"


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        for key, val in headers.items():
            if key.lower() == name:
                return val
        return ""
    return value


def _loads_error(body: bytes) -> tuple[str, str | None] | None:
    import orjson

    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict):
        return None
    message = payload.get("error")
    if isinstance(message, dict):  # OpenAI-shaped {"error": {"message", "type"}}
        inner_type = message.get("type")
        text = message.get("message")
        return (str(text) if text is not None else "", str(inner_type) if inner_type is not None else None)
    if message is None and "message" in payload:
        message = payload["message"]
    if message is None:
        return None
    error_type = payload.get("error_type")
    return str(message), (str(error_type) if error_type is not None else None)


def _html_summary(text: str, status_code: int) -> str:
    # A proxy's error page: its <title> says what happened; the rest is markup.
    lower = text.lower()
    start = lower.find("<title>")
    end = lower.find("</title>")
    if start != -1 and end > start:
        title = " ".join(text[start + 7 : end].split())
        if title:
            return title
    return f"HTTP {status_code} with an HTML body"


def parse_error(status_code: int, payload: Mapping[str, object]) -> APIStatusError:
    """The official client's name: the exception for an error ``payload`` answered with `status_code`.

    ``payload`` is LoRAX's error body as a dict (``{"error": ..., "error_type": ...}``);
    the class is chosen as for every other error, by ``error_type`` first, then by status.
    """
    message = payload.get("error")
    error_type = payload.get("error_type")
    return error_from_payload(
        status_code,
        "" if message is None else str(message),
        None if error_type is None else str(error_type),
    )
