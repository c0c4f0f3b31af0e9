"""The transport seam: how a request message reaches LoRAX and how answers come back.

A transport works in messages of the ``lorax.v1`` service. The client builds a request
message, picks a :class:`~lorax._routes.Method`, and calls :meth:`Transport.unary` or
:meth:`Transport.stream` (sync) or :meth:`AsyncTransport.unary_async` or
:meth:`AsyncTransport.stream_async` (asyncio). The transport decides how the message travels (JSON over
HTTP with SSE, binary frames over a WebSocket, or not at all for the mock) and maps
its library's exceptions to :mod:`lorax.errors` at the boundary: the client never sees
a urllib3, aiohttp or websockets exception.

Implementing a transport::

    class MyTransport(Transport):
        def unary(self, method, request, options):
            ...  # send, wait, decode
            return response_message, ResponseMeta(status_code=200, headers={...})

        def stream(self, method, request, options):
            ...  # send; return once the answer has started (status and headers known)
            return MyMessageStream(...)

        def close(self):
            ...

The two seams use distinct method names (``unary``/``stream``/``close`` and
``unary_async``/``stream_async``/``aclose``), as httpx's ``handle_request`` and
``handle_async_request`` do, so one class may implement both: :class:`~lorax.transports.mock.
MockTransport` is a single class serving :class:`lorax.Client` and :class:`lorax.AsyncClient`.
An async transport implements::

    class MyAsyncTransport(AsyncTransport):
        async def unary_async(self, method, request, options): ...
        async def stream_async(self, method, request, options): ...
        async def aclose(self): ...

Rules every transport follows:

* Raise only :class:`lorax.errors.LoraxError` subclasses. An error body or an error
  event becomes the class :func:`lorax.errors.error_from_payload` gives.
* Set ``request_sent = False`` on an :class:`~lorax.errors.APIConnectionError` when
  nothing reached the server (connection refused, DNS, TLS handshake, connect timeout):
  only such failures are retried by the client, so a generation is never duplicated.
* A connection failure after a stream started raises
  :class:`~lorax.errors.StreamInterruptedError`.
* Closing a :class:`MessageStream` before its end releases the connection and makes
  the server stop generating (the HTTP response is closed; a WebSocket call is
  cancelled).
* ``read`` timeouts are idle time between received bytes; ``options.deadline`` caps
  every wait.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from lorax._message import Message
from lorax._redact import redact_headers
from lorax._routes import Method
from lorax._timeout import Deadline, Timeout
from lorax.errors import _request_id

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "AsyncMessageStream",
    "AsyncTransport",
    "CallOptions",
    "MessageStream",
    "ResponseMeta",
    "Transport",
]


#: The default ``max_response_bytes`` of the HTTP transports and the gateway: the most
#: bytes of one response body read. The same as the SSE decoder's ``max_event_bytes``
#: for one stream event and the WebSocket frame limit; LoRAX's largest answers
#: (embeddings of a long batch) are a few MiB.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class CallOptions:
    """Per-call settings a client hands to its transport."""

    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra request headers (Authorization, cookies, the caller's own). They go on the
    wire; they are never logged."""

    timeout: Timeout = field(default_factory=Timeout)
    """Connect and read (idle) timeouts for this call."""

    deadline: Deadline = field(default_factory=lambda: Deadline(None))
    """The call's total deadline, shared across its retries."""

    def __repr__(self) -> str:
        return f"CallOptions(headers={redact_headers(self.headers)!r}, timeout={self.timeout!r})"


@dataclass(frozen=True)
class ResponseMeta:
    """What came back besides the message: status and headers, with LoRAX's timings.

    Headers have lower-case names; credentials (``set-cookie``) are redacted.
    """

    status_code: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)

    def _int(self, name: str) -> int | None:
        value = self.headers.get(name)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            return None

    @property
    def request_id(self) -> str | None:
        """A request or trace id set by a proxy or gateway in front of LoRAX."""
        return _request_id(self.headers)

    @property
    def model_id(self) -> str | None:
        """``x-model-id``: the served base model."""
        return self.headers.get("x-model-id")

    @property
    def adapter_id(self) -> str | None:
        """``x-adapter-id``: the adapter(s) used, comma-joined; None for the base model."""
        return self.headers.get("x-adapter-id")

    @property
    def adapter_source(self) -> str | None:
        """``x-adapter-source``."""
        return self.headers.get("x-adapter-source")

    @property
    def compute_time_ms(self) -> int | None:
        """``x-compute-time``: total milliseconds on the server."""
        return self._int("x-compute-time")

    @property
    def validation_time_ms(self) -> int | None:
        """``x-validation-time``."""
        return self._int("x-validation-time")

    @property
    def queue_time_ms(self) -> int | None:
        """``x-queue-time``: milliseconds waiting in LoRAX's queue."""
        return self._int("x-queue-time")

    @property
    def inference_time_ms(self) -> int | None:
        """``x-inference-time``."""
        return self._int("x-inference-time")

    @property
    def time_per_token_ms(self) -> int | None:
        """``x-time-per-token``."""
        return self._int("x-time-per-token")

    @property
    def time_to_first_token_ms(self) -> int | None:
        """``x-time-to-first-token``."""
        return self._int("x-time-to-first-token")

    @property
    def time_per_output_token_ms(self) -> int | None:
        """``x-time-per-output-token``."""
        return self._int("x-time-per-output-token")

    @property
    def prompt_tokens(self) -> int | None:
        """``x-prompt-tokens``."""
        return self._int("x-prompt-tokens")

    @property
    def generated_tokens(self) -> int | None:
        """``x-generated-tokens``."""
        return self._int("x-generated-tokens")

    @property
    def total_tokens(self) -> int | None:
        """``x-total-tokens``."""
        return self._int("x-total-tokens")


class MessageStream(abc.ABC):
    """The messages of a server-streaming call, in order. Iterate it, then close it.

    Iteration raises :class:`lorax.errors.LoraxError` subclasses only. ``close()`` is
    idempotent and safe to call from another thread; after it, iteration stops.
    """

    meta: ResponseMeta

    @abc.abstractmethod
    def __next__(self) -> Message:
        """The next message; StopIteration at the stream's normal end."""

    def __iter__(self) -> Iterator[Message]:
        return self

    def next_batch(self) -> list[Message]:
        """The next messages that are ready, at least one; StopIteration at the end.

        What :class:`lorax.Stream` calls: a transport that decodes a whole read at
        once hands over every message of it in one call. The default is one
        ``__next__``. An error found after some messages is raised by the next call.
        """
        return [self.__next__()]

    @abc.abstractmethod
    def close(self) -> None:
        """Stop the stream and release its connection (the server stops generating)."""

    def __enter__(self) -> MessageStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncMessageStream(abc.ABC):
    """The async twin of :class:`MessageStream`."""

    meta: ResponseMeta

    @abc.abstractmethod
    async def __anext__(self) -> Message:
        """The next message; StopAsyncIteration at the stream's normal end."""

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def next_batch(self) -> list[Message]:
        """The next messages that are ready, at least one; StopAsyncIteration at the end.

        What :class:`lorax.AsyncStream` calls (as :meth:`MessageStream.next_batch`). The
        default is one ``__anext__``.
        """
        return [await self.__anext__()]

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop the stream and release its connection. Safe from another task."""

    async def __aenter__(self) -> AsyncMessageStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class Transport(abc.ABC):
    """A synchronous transport. Safe to share between threads."""

    @abc.abstractmethod
    def unary(self, method: Method, request: Message, options: CallOptions) -> tuple[Message, ResponseMeta]:
        """Send `request` to `method` and return its response message and metadata."""

    @abc.abstractmethod
    def stream(self, method: Method, request: Message, options: CallOptions) -> MessageStream:
        """Start a server-streaming call; return once the answer has begun."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release every connection. Idempotent."""

    def describe(self) -> str:
        """A short human description for reprs (never contains credentials)."""
        return type(self).__name__

    def __enter__(self) -> Transport:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncTransport(abc.ABC):
    """An asyncio transport, bound to the event loop it is first used on."""

    @abc.abstractmethod
    async def unary_async(self, method: Method, request: Message, options: CallOptions) -> tuple[Message, ResponseMeta]:
        """Send `request` to `method` and return its response message and metadata."""

    @abc.abstractmethod
    async def stream_async(self, method: Method, request: Message, options: CallOptions) -> AsyncMessageStream:
        """Start a server-streaming call; return once the answer has begun."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release every connection. Idempotent."""

    def describe(self) -> str:
        """A short human description for reprs (never contains credentials)."""
        return type(self).__name__

    async def __aenter__(self) -> AsyncTransport:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def lower_headers(headers: Mapping[str, str] | Any) -> dict[str, str]:
    """Response headers as a dict with lower-case names, credentials redacted.

    Repeated headers are joined with ", " (RFC 9110 §5.3).
    """
    out: dict[str, str] = {}
    items: Any = headers.items() if hasattr(headers, "items") else headers
    for name, value in items:
        key = str(name).lower()
        out[key] = f"{out[key]}, {value}" if key in out else str(value)
    return redact_headers(out)
