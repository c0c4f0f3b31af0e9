"""Fixtures for the HTTP transport tests: loopback servers and a sync/async driver."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.protobuf.message import Message

from lorax._routes import Method
from lorax.errors import LoraxError
from lorax.transports.aiohttp import AsyncHTTPTransport
from lorax.transports.base import AsyncMessageStream, CallOptions, MessageStream, ResponseMeta
from lorax.transports.http import HTTPTransport

from ._servers import AppServer, LoopThread, RawHandler, RawServer

_ENV = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "requests_ca_bundle", "curl_ca_bundle"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy or CA bundle in the developer's environment must not leak into the tests.
    for name in list(os.environ):
        if name.lower() in _ENV:
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def lt() -> Iterator[LoopThread]:
    loop_thread = LoopThread()
    yield loop_thread
    loop_thread.close()


@pytest.fixture
def app(lt: LoopThread) -> Iterator[AppServer]:
    server = AppServer(lt).start()
    yield server
    server.stop()


@pytest.fixture
def raw(lt: LoopThread) -> Iterator[Callable[[RawHandler], RawServer]]:
    servers: list[RawServer] = []

    def start(handler: RawHandler) -> RawServer:
        server = RawServer(lt, handler).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Stream:
    """A sync face on either kind of message stream."""

    def __init__(self, driver: Driver, stream: MessageStream | AsyncMessageStream) -> None:
        self.driver = driver
        self.inner = stream
        self.meta: ResponseMeta = stream.meta

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Message:
        if isinstance(self.inner, MessageStream):
            return next(self.inner)
        inner = self.inner

        async def step() -> Message:
            return await inner.__anext__()

        try:
            return self.driver.run(step())
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        if isinstance(self.inner, MessageStream):
            self.inner.close()
        else:
            self.driver.run(self.inner.aclose())


class Driver:
    """One transport, sync or async, driven through a sync API (async on a private loop)."""

    def __init__(self, kind: str, base_url: str, *, pool: int | None = None, **kwargs: Any) -> None:
        self.kind = kind
        self.loop: asyncio.AbstractEventLoop | None = None
        self.transport: HTTPTransport | AsyncHTTPTransport
        if kind == "sync":
            if pool is not None:
                kwargs["pool_maxsize"] = pool
            self.transport = HTTPTransport(base_url, **kwargs)
        else:
            if pool is not None:
                kwargs["limit"] = pool
            self.transport = AsyncHTTPTransport(base_url, **kwargs)
            self.loop = asyncio.new_event_loop()

    def run(self, coro: Any) -> Any:
        assert self.loop is not None
        return self.loop.run_until_complete(coro)

    def unary(
        self, method: Method, request: Message, options: CallOptions | None = None
    ) -> tuple[Message, ResponseMeta]:
        options = options or CallOptions()
        if isinstance(self.transport, HTTPTransport):
            return self.transport.unary(method, request, options)
        result: tuple[Message, ResponseMeta] = self.run(self.transport.unary_async(method, request, options))
        return result

    def stream(self, method: Method, request: Message, options: CallOptions | None = None) -> Stream:
        options = options or CallOptions()
        if isinstance(self.transport, HTTPTransport):
            return Stream(self, self.transport.stream(method, request, options))
        return Stream(self, self.run(self.transport.stream_async(method, request, options)))

    def collect(
        self, method: Method, request: Message, options: CallOptions | None = None
    ) -> tuple[list[Message], LoraxError | None]:
        """Every message of a stream, and the error that ended it (None at a clean end)."""
        out: list[Message] = []
        stream = self.stream(method, request, options)
        try:
            for message in stream:
                out.append(message)
        except LoraxError as exc:
            return out, exc
        finally:
            stream.close()
        return out, None

    def stats(self) -> dict[str, int]:
        return self.transport.pool_stats()

    def close(self) -> None:
        if isinstance(self.transport, HTTPTransport):
            self.transport.close()
            return
        assert self.loop is not None
        self.run(self.transport.aclose())
        self.run(self.loop.shutdown_asyncgens())
        self.loop.close()


@pytest.fixture
def driver(kind: str) -> Iterator[Callable[..., Driver]]:
    """``driver(base_url, **kwargs)`` builds a transport of the test's kind, closed after it."""
    made: list[Driver] = []

    def make(base_url: str, **kwargs: Any) -> Driver:
        d = Driver(kind, base_url, **kwargs)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()
