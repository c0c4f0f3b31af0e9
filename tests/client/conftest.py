"""Run one test body against Client and AsyncClient.

pytest-asyncio is not a dependency. The ``drv`` fixture is parametrized over "sync" and
"async". Its ``client()`` returns a Client, or an AsyncClient behind a thin synchronous
view. The view runs every coroutine on one event loop per test and turns an
AsyncStream into an iterator, a closeable object and a context manager. The async code
under test is the real one; only the view's plumbing is extra.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import pytest

from lorax import AsyncClient, AsyncStream, Client
from lorax._async_client import _AsyncRawClient

URL = "http://lorax.test"


class StreamView:
    """An AsyncStream used through the Stream interface."""

    def __init__(self, stream: AsyncStream[Any], loop: asyncio.AbstractEventLoop) -> None:
        self._stream = stream
        self._loop = loop

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return self._loop.run_until_complete(self._stream.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        self._loop.run_until_complete(self._stream.aclose())

    def __enter__(self) -> StreamView:
        assert self._loop.run_until_complete(self._stream.__aenter__()) is self._stream
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._loop.run_until_complete(self._stream.__aexit__(exc_type, exc, tb))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __repr__(self) -> str:
        return repr(self._stream)


class AsyncView:
    """An AsyncClient (or its with_raw_response) used through the Client interface."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, (AsyncClient, _AsyncRawClient)):
            return AsyncView(value, self._loop)
        if isinstance(value, AsyncStream):
            return StreamView(value, self._loop)
        if inspect.isawaitable(value):
            return self._wrap(self._loop.run_until_complete(value))
        if callable(value) and not isinstance(value, type):
            fn: Callable[..., Any] = value

            def call(*args: Any, **kwargs: Any) -> Any:
                return self._wrap(fn(*args, **kwargs))

            return call
        return value

    def __getattr__(self, name: str) -> Any:
        return self._wrap(getattr(self._target, name))

    def close(self) -> None:
        """Client.close() is AsyncClient.aclose()."""
        self._wrap(self._target.aclose())

    def __enter__(self) -> AsyncView:
        assert self._loop.run_until_complete(self._target.__aenter__()) is self._target
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._loop.run_until_complete(self._target.__aexit__(exc_type, exc, tb))

    def __repr__(self) -> str:
        return repr(self._target)


class Driver:
    """Builds the client under test, sync or async."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.is_async = kind == "async"
        self.loop = asyncio.new_event_loop() if self.is_async else None
        self.cls: type[Client] | type[AsyncClient] = AsyncClient if self.is_async else Client

    def client(self, transport: Any, url: str = URL, **kwargs: Any) -> Any:
        return self.wrap(self.cls(url, transport=transport, **kwargs))

    def wrap(self, client: Any) -> Any:
        if self.loop is not None:
            return AsyncView(client, self.loop)
        return client

    def close(self) -> None:
        if self.loop is not None:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()


@pytest.fixture(params=["sync", "async"])
def drv(request: pytest.FixtureRequest) -> Iterator[Driver]:
    driver = Driver(request.param)
    yield driver
    driver.close()
