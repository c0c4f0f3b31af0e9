"""``close()`` closes every socket the transport opened, at once, whatever happened before.

Counted from outside: the process's open file descriptors (``/proc/self/fd``) that
are TCP sockets (``/proc/self/net/tcp*``) whose remote end is the server's port. The
count is taken right after ``close()``/``aclose()`` returns, with the client still
referenced (so no garbage collection can close anything on its behalf), after a mix
of calls: completed ones, an error response, a stream abandoned half-way, and a call
cut off by its deadline or by task cancellation. The gateway's upstream transport is
checked the same way when the gateway stops.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from lorax import AsyncClient, Client, Timeout, errors
from lorax.gateway import GatewayThread
from lorax.testing import FAULT_HEADER, FakeLorax

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts sockets in /proc")


def sockets_to(port: int) -> int:
    """This process's open TCP sockets whose remote port is `port`."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own fd)
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[9] in inodes:
                count += 1
    return count


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


@pytest.fixture
def server() -> Iterator[FakeLorax]:
    # One server per test: a socket another test leaked must not count against this one.
    with FakeLorax() as fake:
        yield fake


TIMEOUT = Timeout(connect=5, read=5)


def _sync_calls(client: Client) -> None:
    assert client.generate("hi", max_new_tokens=2).generated_text
    with pytest.raises(errors.ServiceUnavailableError):
        client.with_options(headers={FAULT_HEADER: "bad-gateway"}).generate("hi", max_new_tokens=2)
    # Cut off by its deadline while the server holds the answer back.
    slow = client.with_options(timeout=Timeout(connect=5, read=5, total=0.3), max_retries=0)
    with pytest.raises(errors.APITimeoutError):
        slow.with_options(headers={FAULT_HEADER: "ttfb=3s"}).generate("hi", max_new_tokens=2)
    # Several streams at once (more connections), two of them abandoned half-way.
    streams = [client.generate_stream("hi", max_new_tokens=50) for _ in range(3)]
    for stream in streams:
        next(iter(stream))
    for _ in streams[0]:
        pass
    client._abandoned = streams  # type: ignore[attr-defined]  # still referenced at close()


async def _async_calls(client: AsyncClient) -> None:
    assert (await client.generate("hi", max_new_tokens=2)).generated_text
    with pytest.raises(errors.ServiceUnavailableError):
        await client.with_options(headers={FAULT_HEADER: "bad-gateway"}).generate("hi", max_new_tokens=2)
    # A call whose task is cancelled while the server holds the answer back.
    task = asyncio.ensure_future(
        client.with_options(headers={FAULT_HEADER: "ttfb=3s"}).generate("hi", max_new_tokens=2)
    )
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    streams = [client.generate_stream("hi", max_new_tokens=50) for _ in range(3)]
    for stream in streams:
        await stream.__anext__()
    async for _ in streams[0]:
        pass
    client._abandoned = streams  # type: ignore[attr-defined]


@pytest.mark.parametrize("transport", ["http", "ws"])
def test_sync_close_closes_every_socket(transport: str, server: FakeLorax) -> None:
    gw = GatewayThread(upstream=server.url).start() if transport == "ws" else None
    try:
        url = gw.url if gw is not None else server.url
        port = port_of(url)
        client = Client(url, timeout=TIMEOUT, max_retries=0)
        _sync_calls(client)
        assert sockets_to(port) >= 1
        client.close()
        assert sockets_to(port) == 0, "close() left sockets open"
        with pytest.raises(errors.ClientClosedError):
            client.generate("again")
        assert sockets_to(port) == 0
        del client
    finally:
        if gw is not None:
            gw.stop(grace=0)


@pytest.mark.parametrize("transport", ["http", "ws"])
def test_async_close_closes_every_socket(transport: str, server: FakeLorax) -> None:
    gw = GatewayThread(upstream=server.url).start() if transport == "ws" else None
    try:
        url = gw.url if gw is not None else server.url
        port = port_of(url)

        async def main() -> None:
            client = AsyncClient(url, timeout=TIMEOUT, max_retries=0)
            await _async_calls(client)
            assert sockets_to(port) >= 1
            await client.aclose()
            assert sockets_to(port) == 0, "aclose() left sockets open"
            with pytest.raises(errors.ClientClosedError):
                await client.generate("again")
            assert sockets_to(port) == 0

        asyncio.run(main())
    finally:
        if gw is not None:
            gw.stop(grace=0)


def test_one_call_then_close(server: FakeLorax) -> None:
    """The issue's case: one generate, close(), and the idle pooled socket is gone."""
    port = port_of(server.url)
    client = Client(server.url)
    client.generate("hi", max_new_tokens=1)
    assert sockets_to(port) == 1
    client.close()
    assert sockets_to(port) == 0


def test_gateway_stop_closes_its_upstream_sockets(server: FakeLorax) -> None:
    upstream_port = port_of(server.url)
    gw = GatewayThread(upstream=server.url).start()
    try:
        with Client(gw.url, timeout=TIMEOUT, max_retries=0) as client:
            _sync_calls(client)
            assert sockets_to(upstream_port) >= 1
            gateway: Any = gw.gateway
            gw.stop(grace=0)
            assert sockets_to(upstream_port) == 0, "the gateway's upstream transport left sockets open"
            assert gateway is not None
    finally:
        gw.stop(grace=0)
