"""Loopback servers for the HTTP transport tests.

Everything runs on one asyncio loop in a background thread (:class:`LoopThread`), so
the sync transport can be driven from the test's thread and the async transport from
``asyncio.run`` in it, both against real sockets:

* :class:`AppServer`: an aiohttp.web app whose routes each test scripts, recording
  every request it got and every client disconnect it saw;
* :class:`RawServer`: a bare TCP server whose connections a test handles byte by
  byte, for faults (resets, truncated bodies, stalls, trickles, stale connections);
* :class:`ProxyServer`: a forwarding and CONNECT proxy that records what it relayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")


class LoopThread:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="test-servers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        with contextlib.suppress(Exception):
            self.run(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@dataclass
class Seen:
    """A request as the app server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer: int  # the client's port: equal ports mean one kept-alive connection


Handler = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]


@dataclass
class AppServer:
    """An aiohttp.web server whose routes are scripted per test."""

    lt: LoopThread
    ssl_context: ssl.SSLContext | None = None
    handlers: dict[tuple[str, str], Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    disconnects: list[str] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> AppServer:
        self.lt.run(self._start())
        return self

    async def _start(self) -> None:
        app = web.Application(client_max_size=16 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        if self._runner is not None:
            self.lt.run(self._runner.cleanup())
            self._runner = None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.seen.append(Seen(request.method, request.path, headers, body, peer[1] if peer else 0))
        handler = self.handlers.get((request.method, request.path)) or self.handlers.get(("*", request.path))
        if handler is None:
            return web.Response(status=404)
        return await handler(request, body)

    # Scripting ------------------------------------------------------------------

    def on(self, method: str, path: str, handler: Handler) -> None:
        self.handlers[(method, path)] = handler

    def reply(
        self,
        method: str,
        path: str,
        body: bytes | str = b"",
        *,
        status: int = 200,
        content_type: str | None = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode() if isinstance(body, str) else body

        async def handler(request: web.Request, _: bytes) -> web.StreamResponse:
            hdrs = dict(headers or {})
            if content_type is not None:
                hdrs["Content-Type"] = content_type
            return web.Response(status=status, body=data, headers=hdrs)

        self.on(method, path, handler)

    def sse(
        self,
        method: str,
        path: str,
        frames: list[bytes],
        *,
        delay: float = 0.0,
        forever: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer with these body frames, each one HTTP chunk; with `forever`, then
        keep sending that frame every 20 ms until the client goes away."""

        async def handler(request: web.Request, _: bytes) -> web.StreamResponse:
            resp = web.StreamResponse(
                status=200,
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **(headers or {})},
            )
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            gone = True
            try:
                for frame in frames:
                    await resp.write(frame)
                    if delay:
                        await asyncio.sleep(delay)
                if forever is not None:
                    while True:
                        await resp.write(forever)
                        await asyncio.sleep(0.02)
                await resp.write_eof()
                gone = False
            finally:
                if gone:
                    self.disconnects.append(request.path)
            return resp

        self.on(method, path, handler)


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "RawServer"], Awaitable[None]]


@dataclass
class RawServer:
    """A TCP server whose connections a test handles byte by byte."""

    lt: LoopThread
    handler: RawHandler
    connections: int = 0
    requests: int = 0
    port: int = 0
    _server: asyncio.AbstractServer | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RawServer:
        self.lt.run(self._start())
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    def stop(self) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.sleep(0.01)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

        if self._server is not None:
            self.lt.run(stop())
            self._server = None


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """One HTTP/1.1 request: its head and its body (Content-Length only); None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return head, body


def head(status: int = 200, headers: list[tuple[str, str]] | None = None, *, chunked: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Status'}"]
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"

SSE_HEAD = head(200, [("Content-Type", "text/event-stream")], chunked=True)


def json_response(body: bytes, status: int = 200, extra: list[tuple[str, str]] | None = None) -> bytes:
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *(extra or [])]
    return head(status, headers) + body


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0) instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def eventually(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    """Poll `condition` until it holds or `timeout` passes; its last value."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return condition()
        time.sleep(0.01)
    return True


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ProxyServer:
    """An HTTP proxy: forwards absolute-form requests (one per connection) and tunnels
    CONNECT; records the request lines and Proxy-Authorization headers it saw."""

    lt: LoopThread
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    raw: RawServer | None = None

    @property
    def url(self) -> str:
        assert self.raw is not None
        return self.raw.url

    def start(self) -> ProxyServer:
        self.raw = RawServer(self.lt, self._handle).start()
        return self

    def stop(self) -> None:
        if self.raw is not None:
            self.raw.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: RawServer) -> None:
        request = await read_request(reader)
        if request is None:
            return
        head_bytes, body = request
        lines = head_bytes.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
        auth = None
        kept: list[str] = []
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            lname = name.strip().lower()
            if lname == "proxy-authorization":
                auth = value.strip()
            elif lname not in ("proxy-connection", "connection"):
                kept.append(line)
        self.seen.append((f"{method} {target}", auth))
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await _pipe_both(reader, writer, up_reader, up_writer)
            return
        # Absolute form: http://host:port/path
        rest = target.split("://", 1)[1]
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        out = [f"{method} /{path} {version}", *kept, "Connection: close", "", ""]
        up_writer.write("\r\n".join(out).encode("latin-1") + body)
        await up_writer.drain()
        try:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            up_writer.close()


async def _pipe_both(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
) -> None:
    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()

    await asyncio.gather(pipe(a_reader, b_writer), pipe(b_reader, a_writer))
