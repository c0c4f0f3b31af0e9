"""The client suite's transport matrix: every test runs over every transport.

* ``http``: :class:`lorax.Client` over urllib3, straight to the fake LoRAX server;
* ``http-async``: :class:`lorax.AsyncClient` over aiohttp;
* ``ws``: :class:`lorax.Client` over one WebSocket to ``lorax gateway``, which forwards
  to the fake server;
* ``ws-async``: :class:`lorax.AsyncClient` the same way.

A *driver* hides sync versus async so one test body serves all four: async calls run
on an event loop in a background thread that lives as long as the driver.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from lorax import AsyncClient, Client, RetryPolicy
from lorax.gateway import GatewayThread
from lorax.testing import FakeLorax

TRANSPORTS = ["http", "http-async", "ws", "ws-async"]

FAST_RETRY = RetryPolicy(max_retries=3, backoff_base=0.01, backoff_max=0.05)


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeLorax]:
    with FakeLorax() as server:
        yield server


@pytest.fixture(scope="session")
def gateway(fake_server: FakeLorax) -> Iterator[GatewayThread]:
    with GatewayThread(upstream=fake_server.url) as gw:
        yield gw


class SyncDriver:
    """Runs client calls directly."""

    is_async = False

    def __init__(self, client: Client) -> None:
        self.client = client

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.client, name)(*args, **kwargs)

    def stream(self, name: str, *args: Any, limit: int | None = None, **kwargs: Any) -> list[Any]:
        """Read a stream to its end (or `limit` events, then close it)."""
        events = []
        with getattr(self.client, name)(*args, **kwargs) as stream:
            for event in stream:
                events.append(event)
                if limit is not None and len(events) >= limit:
                    break
        return events

    def with_options(self, **kwargs: Any) -> SyncDriver:
        return SyncDriver(self.client.with_options(**kwargs))

    def close(self) -> None:
        self.client.close()


class AsyncDriver:
    """Runs client coroutines on a private event loop in a background thread."""

    is_async = True

    def __init__(self, client: AsyncClient, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.client = client
        self._owner = loop is None
        if loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, daemon=True)
            thread.start()
            self._thread: threading.Thread | None = thread
        else:
            self._thread = None
        self.loop = loop

    def run(self, factory: Callable[[], Coroutine[Any, Any, Any]], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(factory(), self.loop).result(timeout)

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.run(lambda: getattr(self.client, name)(*args, **kwargs))

    def stream(self, name: str, *args: Any, limit: int | None = None, **kwargs: Any) -> list[Any]:
        async def go() -> list[Any]:
            events = []
            async with getattr(self.client, name)(*args, **kwargs) as stream:
                async for event in stream:
                    events.append(event)
                    if limit is not None and len(events) >= limit:
                        break
            return events

        return self.run(go)

    def with_options(self, **kwargs: Any) -> AsyncDriver:
        return AsyncDriver(self.client.with_options(**kwargs), self.loop)

    def close(self) -> None:
        if not self._owner:
            return
        self.run(self.client.aclose)
        self.loop.call_soon_threadsafe(self.loop.stop)
        assert self._thread is not None
        self._thread.join(5)
        self.loop.close()


Driver = SyncDriver | AsyncDriver


def make_driver(kind: str, fake_server: FakeLorax, gateway: GatewayThread, **kwargs: Any) -> Driver:
    kwargs.setdefault("max_retries", FAST_RETRY)
    if kind == "http":
        return SyncDriver(Client(fake_server.url, **kwargs))
    if kind == "http-async":
        return AsyncDriver(AsyncClient(fake_server.url, **kwargs))
    if kind == "ws":
        return SyncDriver(Client(gateway.url, **kwargs))
    if kind == "ws-async":
        return AsyncDriver(AsyncClient(gateway.url, **kwargs))
    raise ValueError(kind)


@pytest.fixture(params=TRANSPORTS)
def driver(request: pytest.FixtureRequest, fake_server: FakeLorax, gateway: GatewayThread) -> Iterator[Driver]:
    d = make_driver(request.param, fake_server, gateway)
    try:
        yield d
    finally:
        d.close()


@pytest.fixture
def make(fake_server: FakeLorax, gateway: GatewayThread) -> Iterator[Callable[..., Driver]]:
    """Build drivers with custom client arguments; all are closed at teardown."""
    made: list[Driver] = []

    def factory(kind: str, **kwargs: Any) -> Driver:
        d = make_driver(kind, fake_server, gateway, **kwargs)
        made.append(d)
        return d

    yield factory
    for d in made:
        d.close()
