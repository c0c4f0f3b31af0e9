"""A transport for tests: your handler answers the client's calls, no network.

::

    from lorax import Client
    from lorax.transports import MockTransport
    from lorax.types import GenerateResponse

    def handler(method, request):
        assert method.name == "Generate"
        return GenerateResponse(generated_text=f"echo: {request.inputs}")

    client = Client("http://lorax.test", transport=MockTransport(handler))
    assert client.generate("hi").generated_text == "echo: hi"

The handler receives the :class:`~lorax._routes.Method` and the typed request message
and returns the response message, an iterable (or async iterable) of messages for a
streaming method, or raises a :mod:`lorax.errors` exception, which reaches the caller
exactly as if the server had sent it. Pass a mapping from method names (``"Generate"``,
``"GenerateStream"``, or full names) to handlers to answer several methods. Every call
is recorded in ``calls``. The same instance serves :class:`lorax.Client` (through
``unary``/``stream``) and :class:`lorax.AsyncClient` (through ``unary_async``/
``stream_async``); for the async client a handler may also be a coroutine function, and a
streaming handler may return an async iterable.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Mapping
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

from lorax import errors
from lorax._message import Message
from lorax._redact import redact_headers
from lorax._routes import Method
from lorax._routes import method as lookup_method
from lorax.transports.base import (
    AsyncMessageStream,
    AsyncTransport,
    CallOptions,
    MessageStream,
    ResponseMeta,
    Transport,
)

Handler = Callable[[Method, Any], Any]

__all__ = ["MockCall", "MockTransport"]


@dataclass(frozen=True)
class MockCall:
    """One call the mock transport received."""

    method: Method
    request: Message
    headers: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"MockCall({self.method.name}, headers={redact_headers(self.headers)})"


class MockTransport(Transport, AsyncTransport):
    """A transport whose answers come from a handler (see the module docstring).

    It is both a :class:`Transport` and an :class:`AsyncTransport`: the two seams use
    distinct method names, so one instance (one ``calls`` record) serves both clients.
    """

    def __init__(
        self,
        handler: Handler | Mapping[str, Handler],
        *,
        headers: Mapping[str, str] | None = None,
        status_code: int = 200,
    ) -> None:
        if isinstance(handler, Mapping):
            self._handlers: dict[str, Handler] = {lookup_method(name).full_name: h for name, h in handler.items()}
            self._default: Handler | None = None
        elif callable(handler):
            self._handlers = {}
            self._default = handler
        else:
            raise TypeError("MockTransport needs a callable or a mapping of method names to callables")
        self._meta = ResponseMeta(status_code=status_code, headers={k.lower(): v for k, v in (headers or {}).items()})
        self._lock = threading.Lock()
        self.calls: list[MockCall] = []
        self.closed = False

    def _handle(self, method: Method, request: Message, options: CallOptions) -> Any:
        if self.closed:
            raise errors.ClientClosedError("the MockTransport was closed")
        # The recorded request must not change under the caller.
        copy = deepcopy(request)
        with self._lock:
            self.calls.append(MockCall(method, copy, dict(options.headers)))
        handler = self._handlers.get(method.full_name, self._default)
        if handler is None:
            raise errors.NotFoundError(f"MockTransport has no handler for {method.name}", status_code=404)
        return handler(method, copy)

    def _check(self, method: Method, message: Any) -> Message:
        if not isinstance(message, Message) or not isinstance(message, method.output_type):
            raise TypeError(
                f"the MockTransport handler for {method.name} returned {type(message).__name__}, "
                f"expected {method.output_type.__name__}"
            )
        return message

    def unary(self, method: Method, request: Message, options: CallOptions) -> tuple[Message, ResponseMeta]:
        """Call the handler; its return value is the response."""
        result = self._handle(method, request, options)
        return self._check(method, result), self._meta

    def stream(self, method: Method, request: Message, options: CallOptions) -> MessageStream:
        """Call the handler; it returns an iterable of the stream's messages."""
        result = self._handle(method, request, options)
        if isinstance(result, Message) or not isinstance(result, Iterable):
            raise TypeError(f"the MockTransport handler for {method.name} must return an iterable of messages")
        return _MockStream(self, method, iter(result))

    async def unary_async(self, method: Method, request: Message, options: CallOptions) -> tuple[Message, ResponseMeta]:
        """Call the handler (awaiting it if it is a coroutine); its result is the response."""
        result = self._handle(method, request, options)
        if inspect.isawaitable(result):
            result = await result
        return self._check(method, result), self._meta

    async def stream_async(self, method: Method, request: Message, options: CallOptions) -> AsyncMessageStream:
        """Call the handler; it returns an iterable or an async iterable of messages."""
        result = self._handle(method, request, options)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, AsyncIterable):
            return _AsyncMockStream(self, method, result.__aiter__())
        if isinstance(result, Message) or not isinstance(result, Iterable):
            raise TypeError(f"the MockTransport handler for {method.name} must return an iterable of messages")
        return _AsyncMockStream(self, method, _aiter(iter(result)))

    def close(self) -> None:
        """Mark the transport closed; later calls raise ClientClosedError."""
        self.closed = True

    async def aclose(self) -> None:
        """The same as :meth:`close`."""
        self.closed = True

    def describe(self) -> str:
        return "MockTransport()"

    def requests(self, method_name: str | None = None) -> list[Message]:
        """The requests received, optionally only those of one method."""
        wanted = lookup_method(method_name).full_name if method_name else None
        return [c.request for c in self.calls if wanted is None or c.method.full_name == wanted]


class _MockStream(MessageStream):
    def __init__(self, transport: MockTransport, method: Method, items: Iterator[Any]) -> None:
        self._transport = transport
        self._method = method
        self._items = items
        self._closed = False
        self.meta = transport._meta

    def __next__(self) -> Message:
        if self._closed:
            raise StopIteration
        try:
            item = next(self._items)
        except StopIteration:
            self.close()
            raise
        except errors.LoraxError:
            self.close()
            raise
        if self._closed:
            # close() came from another thread while the handler was producing this
            # item; it could not stop a running generator, so finish the job here.
            self._close_items()
            raise StopIteration
        return self._transport._check(self._method, item)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_items()

    def _close_items(self) -> None:
        closer = getattr(self._items, "close", None)
        if closer is not None:
            try:
                closer()  # lets a generator handler run its `finally`
            except ValueError:
                # "generator already executing": another thread is inside the
                # handler; __next__ closes it once the handler yields.
                pass


async def _aiter(items: Iterator[Any]) -> Any:
    try:
        for item in items:
            yield item
    finally:
        closer = getattr(items, "close", None)
        if closer is not None:
            closer()


class _AsyncMockStream(AsyncMessageStream):
    def __init__(self, transport: MockTransport, method: Method, items: Any) -> None:
        self._transport = transport
        self._method = method
        self._items = items
        self._closed = False
        # The handler's step in progress. It runs as its own task so that aclose()
        # from another task can cancel it, as closing a real response would end a
        # pending read; an async generator cannot be aclose()d while it runs.
        self._step: asyncio.Future[Any] | None = None
        self._cancelled_by_close = False
        self.meta = transport._meta

    async def __anext__(self) -> Message:
        if self._closed:
            raise StopAsyncIteration
        step = self._step = asyncio.ensure_future(self._items.__anext__())
        try:
            item = await step
        except StopAsyncIteration:
            await self.aclose()
            raise
        except errors.LoraxError:
            await self.aclose()
            raise
        except asyncio.CancelledError:
            if self._cancelled_by_close and step.cancelled():
                raise StopAsyncIteration from None
            raise
        finally:
            self._step = None
        return self._transport._check(self._method, item)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        step = self._step
        if step is not None and not step.done():
            self._cancelled_by_close = True
            step.cancel()
            await asyncio.wait([step])
        closer = getattr(self._items, "aclose", None)
        if closer is not None:
            await closer()
