"""Starting and stopping the fake server: in a background thread, or on the caller's event loop.

::

    with FakeLorax() as server:                 # its own thread and event loop
        urllib3.request("POST", server.url + "/generate", json={"inputs": "Hi"})

    async with AsyncFakeLorax() as server:      # on the running loop
        ...

Both listen on 127.0.0.1 on a free port unless told otherwise, and stop cleanly: open
connections are closed, stalled handlers cancelled, no warnings left behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
from types import TracebackType
from typing import Any

from aiohttp import web

from lorax.testing._config import ServerConfig
from lorax.testing._faults import Faults
from lorax.testing._recording import RecordedRequest, Stats
from lorax.testing._server import LoraxServer

__all__ = ["AsyncFakeLorax", "FakeLorax"]

_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(ServerConfig))


def _build(
    config: ServerConfig | None,
    token_latency: float | None,
    keep_alive: float | None,
    time_to_first_byte: float | None,
    options: dict[str, Any],
) -> LoraxServer:
    unknown = set(options) - _CONFIG_FIELDS
    if unknown:
        raise TypeError(f"unknown FakeLorax option(s): {', '.join(sorted(unknown))}")
    if config is None:
        config = ServerConfig(**options)
    elif options:
        config = dataclasses.replace(config, **options)
    server = LoraxServer(config)
    server.faults.set(token_latency=token_latency, keep_alive=keep_alive, time_to_first_byte=time_to_first_byte)
    return server


class _Common:
    """What both forms share: the address, and the handles tests assert on."""

    _server: LoraxServer
    _host: str
    _port: int

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The port the server listens on (the real one when 0 was asked for)."""
        return self._port

    @property
    def url(self) -> str:
        """The base URL, like ``http://127.0.0.1:PORT`` (no trailing slash)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def config(self) -> ServerConfig:
        """The live configuration (``server.config.healthy = False`` takes effect at once)."""
        return self._server.config

    @property
    def faults(self) -> Faults:
        """Fault switches (:class:`lorax.testing.Faults`): what the next requests get."""
        return self._server.faults

    @property
    def stats(self) -> Stats:
        """Counters: requests, cancelled, dropped, crashes, overloaded, in_flight."""
        return self._server.stats

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        return self._server.recorder.all()

    @property
    def last_request(self) -> RecordedRequest:
        """The most recent request (IndexError when there is none)."""
        return self._server.recorder.all()[-1]

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        self._server.recorder.clear()


class AsyncFakeLorax(_Common):
    """The fake LoRAX server on the running event loop.

    Args:
        config: the identity, limits and switches; keyword `options` override its fields
            (``AsyncFakeLorax(max_total_tokens=64)``).
        host, port: where to listen; port 0 picks a free one.
        token_latency, keep_alive, time_to_first_byte: standing faults, in seconds.
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token_latency: float | None = None,
        keep_alive: float | None = None,
        time_to_first_byte: float | None = None,
        **options: Any,
    ) -> None:
        self._server = _build(config, token_latency, keep_alive, time_to_first_byte, options)
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> AsyncFakeLorax:
        """Bind and start serving; returns self."""
        if self._runner is not None:
            raise RuntimeError("already started")
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        runner: web.AppRunner | None = None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.setblocking(False)
            # A short shutdown timeout: stalled handlers (injected faults) are cancelled at
            # once on stop instead of being waited for.
            runner = web.AppRunner(
                self._server.make_app(), handler_cancellation=True, access_log=None, shutdown_timeout=0.25
            )
            await runner.setup()
            await web.SockSite(runner, sock).start()
        except BaseException:
            if runner is not None:
                await runner.cleanup()
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        self._sock = sock
        self._runner = runner
        return self

    async def stop(self) -> None:
        """Stop serving and close every connection."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            self._sock.close()

    async def __aenter__(self) -> AsyncFakeLorax:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        """Start (if needed) and serve until cancelled."""
        if self._runner is None:
            await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()


class FakeLorax(_Common):
    """The fake LoRAX server in a background thread with its own event loop.

    Takes the same arguments as :class:`AsyncFakeLorax`. Use it as a context manager, or
    call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, config: ServerConfig | None = None, **kwargs: Any) -> None:
        self._async = AsyncFakeLorax(config, **kwargs)
        self._server = self._async._server
        self._host = self._async.host
        self._port = self._async.port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeLorax:
        """Start the thread and wait until the server listens; returns self."""
        if self._thread is not None:
            raise RuntimeError("already started")
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        thread = threading.Thread(target=run, name="lorax-fake-server", daemon=True)
        thread.start()
        ready.wait()
        try:
            asyncio.run_coroutine_threadsafe(self._async.start(), loop).result()
        except BaseException:
            self._shutdown_loop(loop, thread)
            raise
        self._loop, self._thread = loop, thread
        self._port = self._async.port
        return self

    def stop(self) -> None:
        """Stop serving, close connections, end the thread."""
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._async.stop(), loop).result()
        finally:
            self._shutdown_loop(loop, thread)

    @staticmethod
    def _shutdown_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        async def finish() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await loop.shutdown_asyncgens()

        asyncio.run_coroutine_threadsafe(finish(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    def __enter__(self) -> FakeLorax:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
