"""The ``lorax gateway`` server: WebSocket clients in front, LoRAX's REST API behind.

:class:`Gateway` runs on ``websockets``' asyncio server and speaks the protocol of
``proto/lorax/v1/websocket.proto``. Each call a client sends becomes one REST request
to LoRAX through :class:`lorax.transports.aiohttp.AsyncHTTPTransport` (one pooled
``aiohttp`` session for the whole gateway), and its answer goes back as frames.

On the same port, ``GET /health`` answers ``200 ok`` for load balancers (``503`` while
shutting down), without authentication.

Handshake checks, in order: the health path; the bearer token when one is configured
(``401``; ``400`` for more than one ``Authorization`` header); shutting down
(``503``); the connection limit (``503`` with ``Retry-After: 1``); then websockets
itself requires the ``lorax.v1`` subprotocol (``400``).

:class:`GatewayThread` runs a gateway on its own event loop in a background thread,
for tests and for embedding in sync programs::

    with GatewayThread(upstream="http://127.0.0.1:8080") as gw:
        client = lorax.Client(gw.url)
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import ssl
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.protocol import State

from lorax._redact import HeaderRedactingLogger, header_secrets, redact_url
from lorax._timeout import Timeout
from lorax.gateway._limits import MemoryBudget
from lorax.gateway._log import log, peer
from lorax.gateway._session import CLOSE_TIMEOUT, Session
from lorax.transports import _ws_frames as wsf
from lorax.transports._http_common import DEFAULT_MAX_RESPONSE_BYTES, check_max_response_bytes
from lorax.transports.aiohttp import AsyncHTTPTransport
from lorax.transports.base import AsyncTransport

__all__ = ["DEFAULT_PORT", "Gateway", "GatewayThread"]

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8765
# A gateway may face many clients: no single connection may take much of its
# upstream capacity or memory (see websocket.proto, LIMITS AND FAIRNESS).
DEFAULT_MAX_CALLS_PER_CONNECTION: Final = 256
DEFAULT_MAX_UPSTREAM_CALLS_PER_CONNECTION: Final = 16
DEFAULT_MAX_CONNECTIONS: Final = 1024
DEFAULT_MAX_CONNECTION_BYTES: Final = 128 * 1024 * 1024
DEFAULT_MAX_TOTAL_BYTES: Final = 1024 * 1024 * 1024
DEFAULT_UPSTREAM_POOL_SIZE: Final = 100
# The longest time between two FrameHeartbeat frames of a call that asked for them.
DEFAULT_HEARTBEAT_INTERVAL: Final = 5.0
DEFAULT_IDLE_TIMEOUT: Final = 300.0
DEFAULT_SHUTDOWN_GRACE: Final = 10.0
DEFAULT_UPSTREAM_TIMEOUT: Final = Timeout(connect=10.0, read=60.0)
HEALTH_PATH: Final = "/health"


class Gateway:
    """A WebSocket gateway to one LoRAX server.

    Args:
        upstream: the LoRAX base URL (``http://host:port``, may carry a path prefix).
        host, port: where to listen; port 0 picks a free one (see :attr:`port`).
        upstream_headers: headers sent upstream with every call (for example an
            ``Authorization`` for a Predibase deployment). A call's own headers
            (from its call frame) override them.
        auth_token: when set, clients must open the WebSocket with
            ``Authorization: Bearer <auth_token>``; others get HTTP 401.
        max_frame_bytes: the largest WebSocket message accepted (a larger one closes
            the connection with 1009) and sent (a larger response fails its call with
            ``response_too_large``).
        max_calls_per_connection: calls in flight per connection; more are refused
            with a FrameError (429, ``too_many_calls``).
        max_upstream_calls_per_connection: calls of one connection with an upstream
            request open at once; the connection's other calls wait for a slot, in
            order, so one client cannot hold the whole upstream pool.
        max_connection_bytes, max_total_bytes: memory budgets, in bytes of request and
            response messages held for one connection's calls and for all of them
            (see websocket.proto, LIMITS AND FAIRNESS); a call that does not fit is
            refused or failed with a FrameError (503, ``memory_limit``). Each must be
            at least ``max_frame_bytes``, and the total at least the per-connection one.
        max_connections: open connections; more handshakes get HTTP 503.
        idle_timeout: seconds without a call in flight and without a frame received
            after which a connection is closed with code 4000; None: never.
        shutdown_grace: how long :meth:`stop` lets calls in flight finish.
        upstream_timeout: connect and read timeouts of the upstream requests; a call's
            own read timeout (from its call frame) replaces ``read`` when shorter
            (``read`` is the most a client may ask for).
        upstream_pool_size: the upstream connection pool's limit.
        max_response_bytes: the largest upstream response body read (64 MiB by
            default), counted while reading: a larger one, or a compressed one, fails
            its call with a FrameError (502, ``response_too_large``) and the upstream
            connection is closed. It bounds each upstream stream event too (a larger
            one fails the call with 502 ``upstream_error``).
        heartbeat_interval: the longest time between two FrameHeartbeat frames of a
            call that asked for them (a quarter of the call's read timeout when shorter).
        ping_interval: seconds between keepalive pings to clients; None: none.
        ssl_context: serve ``wss://`` with this context.
        upstream_transport: the transport calls go through, instead of the default
            AsyncHTTPTransport to `upstream` (for tests or embedding). The gateway
            does not close a transport it was given.
    """

    def __init__(
        self,
        upstream: str,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        upstream_headers: Mapping[str, str] | None = None,
        auth_token: str | None = None,
        max_frame_bytes: int = wsf.DEFAULT_MAX_FRAME_BYTES,
        max_calls_per_connection: int = DEFAULT_MAX_CALLS_PER_CONNECTION,
        max_upstream_calls_per_connection: int = DEFAULT_MAX_UPSTREAM_CALLS_PER_CONNECTION,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_connection_bytes: int = DEFAULT_MAX_CONNECTION_BYTES,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
        upstream_timeout: Timeout = DEFAULT_UPSTREAM_TIMEOUT,
        upstream_pool_size: int = DEFAULT_UPSTREAM_POOL_SIZE,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        ping_interval: float | None = 20.0,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        ssl_context: ssl.SSLContext | None = None,
        upstream_transport: AsyncTransport | None = None,
    ) -> None:
        for name, value in (
            ("max_frame_bytes", max_frame_bytes),
            ("max_calls_per_connection", max_calls_per_connection),
            ("max_upstream_calls_per_connection", max_upstream_calls_per_connection),
            ("max_connections", max_connections),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1; got {value!r}")
        # A budget below the frame limit would refuse a message of an allowed size forever.
        if max_connection_bytes < max_frame_bytes:
            raise ValueError(
                f"max_connection_bytes ({max_connection_bytes}) must be at least max_frame_bytes ({max_frame_bytes})"
            )
        if max_total_bytes < max_connection_bytes:
            raise ValueError(
                f"max_total_bytes ({max_total_bytes}) must be at least max_connection_bytes ({max_connection_bytes})"
            )
        if heartbeat_interval <= 0:
            raise ValueError(f"heartbeat_interval must be above 0; got {heartbeat_interval!r}")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be above 0 or None; got {idle_timeout!r}")
        if shutdown_grace < 0:
            raise ValueError(f"shutdown_grace must be >= 0; got {shutdown_grace!r}")
        self.upstream_url = upstream
        self.host = host
        self._requested_port = port
        self._upstream_headers = dict(upstream_headers or {})
        self._auth = f"Bearer {auth_token}".encode() if auth_token else None
        # Credentials the gateway holds: scrubbed out of whatever it forwards to clients
        # (an upstream may echo the upstream token back in a response header).
        self.secret_values: tuple[str, ...] = tuple(header_secrets(self._upstream_headers)) + (
            (auth_token,) if auth_token else ()
        )
        self.max_frame_bytes = max_frame_bytes
        self.max_calls_per_connection = max_calls_per_connection
        self.max_upstream_calls_per_connection = max_upstream_calls_per_connection
        self.max_connections = max_connections
        self.max_connection_bytes = max_connection_bytes
        self.heartbeat_interval = heartbeat_interval
        # Bytes held for every connection's calls (each session has its own budget too).
        self.memory = MemoryBudget(max_total_bytes)
        self.idle_timeout = idle_timeout
        self.shutdown_grace = shutdown_grace
        self.upstream_timeout = upstream_timeout
        self._upstream_pool_size = upstream_pool_size
        self.max_response_bytes = check_max_response_bytes(max_response_bytes)
        self._ping_interval = ping_interval
        self._ssl = ssl_context
        self._given_upstream = upstream_transport
        self._upstream: AsyncTransport | None = upstream_transport
        self._server: Server | None = None
        self._sessions: set[Session] = set()
        # Connections counted against max_connections: handshakes under way and open
        # connections (pruned of closed ones when counting).
        self._slots: set[ServerConnection] = set()
        self._count = 0
        self.draining = False
        self._stopped: asyncio.Event | None = None
        self._stopping: asyncio.Task[None] | None = None

    # -- properties ----------------------------------------------------------------

    @property
    def upstream(self) -> AsyncTransport:
        """The transport calls are forwarded through (available once started)."""
        if self._upstream is None:
            raise RuntimeError("the gateway is not started")
        return self._upstream

    @property
    def port(self) -> int:
        """The port listened on (the chosen one when started with port 0)."""
        if self._server is None:
            return self._requested_port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """``ws://host:port`` (``wss://`` with TLS) for clients."""
        scheme = "wss" if self._ssl is not None else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def connections(self) -> int:
        """Open client connections."""
        return len(self._sessions)

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Open the upstream transport and start listening."""
        if self._server is not None:
            raise RuntimeError("the gateway is already started")
        self._stopped = asyncio.Event()
        if self._upstream is None:
            # aiohttp is imported with this module, not here: its ~180 ms import would
            # stall the running event loop.
            self._upstream = AsyncHTTPTransport(
                self.upstream_url,
                headers=self._upstream_headers,
                limit=self._upstream_pool_size,
                max_response_bytes=self.max_response_bytes,
            )
        try:
            self._server = await serve(
                self._handle,
                self.host,
                self._requested_port,
                subprotocols=[wsf.SUBPROTOCOL],  # type: ignore[list-item]
                process_request=self._process_request,
                compression=None,
                max_size=self.max_frame_bytes,
                # Frames received but not yet read, per connection: uncounted memory, so
                # few (websockets' default is 16, up to 16 frames of max_size each).
                max_queue=4,
                ping_interval=self._ping_interval,
                ping_timeout=self._ping_interval,
                close_timeout=CLOSE_TIMEOUT,
                ssl=self._ssl,
                # websockets logs handshake headers at DEBUG: not the clients' tokens.
                logger=HeaderRedactingLogger("websockets.server"),
            )
        except BaseException:
            await self._close_upstream()
            raise
        log(
            logging.INFO,
            "listening",
            url=self.url,
            upstream=redact_url(self.upstream_url),
            auth="on" if self._auth else "off",
            max_connections=self.max_connections,
            max_calls_per_connection=self.max_calls_per_connection,
            max_upstream_calls_per_connection=self.max_upstream_calls_per_connection,
            max_connection_bytes=self.max_connection_bytes,
            max_total_bytes=self.memory.limit,
        )

    async def serve_forever(self) -> None:
        """Start if needed, then run until :meth:`stop` completes (or cancellation)."""
        if self._server is None:
            await self.start()
        assert self._stopped is not None
        try:
            await self._stopped.wait()
        except asyncio.CancelledError:
            await self.stop()
            raise

    async def stop(self, grace: float | None = None) -> None:
        """Shut down gracefully.

        Stop accepting connections, refuse new calls (503 ``shutting_down``), let the
        calls in flight finish for up to `grace` seconds (default
        :attr:`shutdown_grace`), then close every connection with 1001, cancelling
        what is left, and close the upstream transport. Idempotent.
        """
        if self._server is None:
            return
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop(grace))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float | None) -> None:
        server = self._server
        assert server is not None
        assert self._stopped is not None
        grace = self.shutdown_grace if grace is None else grace
        log(logging.INFO, "shutting_down", connections=len(self._sessions), grace=grace)
        self.draining = True
        server.close(close_connections=False)  # stop listening; connections stay open
        deadline = asyncio.get_running_loop().time() + grace
        drained: set[Session] = set()
        # Repeated for connections whose handshake was already past its checks when
        # draining began: their sessions start a moment later.
        while pending := self._sessions - drained:
            drained |= pending
            await asyncio.gather(*(session.drain(deadline) for session in pending), return_exceptions=True)
        await server.wait_closed()
        await self._close_upstream()
        log(logging.INFO, "stopped")
        self._stopped.set()

    async def _close_upstream(self) -> None:
        if self._upstream is not None and self._given_upstream is None:
            upstream, self._upstream = self._upstream, None
            await upstream.aclose()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- connections ---------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path == HEALTH_PATH:
            if self.draining:
                return connection.respond(503, "shutting down\n")
            return connection.respond(200, "ok\n")
        if self._auth is not None:
            values = request.headers.get_all("Authorization")
            if len(values) > 1:
                # Which one would count is ambiguous (proxies disagree): refuse, as a bad request.
                log(logging.WARNING, "handshake_refused", reason="duplicate_authorization", peer=peer(connection))
                return connection.respond(400, "exactly one Authorization header is allowed\n")
            given = (values[0] if values else "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, self._auth):
                log(logging.WARNING, "handshake_refused", reason="unauthorized", peer=peer(connection))
                response = connection.respond(401, "a valid Authorization: Bearer token is required\n")
                response.headers["WWW-Authenticate"] = 'Bearer realm="lorax gateway"'
                return response
        if self.draining:
            return _retry_later(connection, "the gateway is shutting down\n")
        self._slots = {c for c in self._slots if c.state is not State.CLOSED}
        if len(self._slots) >= self.max_connections:
            log(logging.WARNING, "handshake_refused", reason="too_many_connections", limit=self.max_connections)
            return _retry_later(connection, f"the gateway has its maximum of {self.max_connections} connections\n")
        self._slots.add(connection)
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self._count += 1
        session = Session(self, ws, self._count)
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)
            self._slots.discard(ws)


def _retry_later(connection: ServerConnection, text: str) -> Response:
    response = connection.respond(503, text)
    response.headers["Retry-After"] = "1"
    return response


class GatewayThread:
    """A :class:`Gateway` on its own event loop in a daemon thread.

    ``GatewayThread(upstream=..., **gateway_kwargs)`` takes :class:`Gateway`'s
    arguments, with ``port=0`` by default. Use it as a context manager, or call
    :meth:`start` and :meth:`stop`.
    """

    def __init__(self, upstream: str, **kwargs: Any) -> None:
        kwargs.setdefault("port", 0)
        self._upstream = upstream
        self._kwargs = kwargs
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        # stop() may be called from several threads at once (a test's finally block and
        # a helper thread): the first one stops the loop, the others wait for it.
        self._stop_lock = threading.Lock()
        self.gateway: Gateway | None = None

    @property
    def url(self) -> str:
        """The gateway's ``ws://`` URL."""
        assert self.gateway is not None, "the gateway is not started"
        return self.gateway.url

    @property
    def port(self) -> int:
        assert self.gateway is not None, "the gateway is not started"
        return self.gateway.port

    def start(self) -> GatewayThread:
        """Start the gateway and wait until it listens (re-raising a start failure)."""
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="lorax-gateway", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        gateway = Gateway(self._upstream, **self._kwargs)
        try:
            await gateway.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self.gateway = gateway
        self._ready.set()
        await gateway.serve_forever()

    def stop(self, grace: float | None = None) -> None:
        """Stop the gateway (see :meth:`Gateway.stop`) and join the thread.

        Idempotent and thread-safe: concurrent callers return once it has stopped.
        """
        with self._stop_lock:
            if self._thread is None:
                return
            if self._loop is not None and self.gateway is not None and self._thread.is_alive():
                stopping = self.gateway.stop(grace)
                try:
                    future = asyncio.run_coroutine_threadsafe(stopping, self._loop)
                except RuntimeError:  # the loop closed meanwhile: the gateway is already gone
                    stopping.close()
                else:
                    future.result()
            self._thread.join()
            self._thread = None

    def __enter__(self) -> GatewayThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
