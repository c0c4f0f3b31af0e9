"""``lorax gateway``: run the WebSocket gateway in front of a LoRAX server.

``main(argv)`` takes the arguments after ``gateway`` (``lorax gateway --upstream URL``
dispatches here; so does ``python -m lorax.gateway``) and returns the exit status.
SIGINT and SIGTERM shut down gracefully (see :meth:`lorax.gateway.Gateway.stop`); a
second signal stops at once.

Secrets stay out of argv when they come from the environment: the client token from
``LORAX_GATEWAY_TOKEN``, the upstream token from ``LORAX_GATEWAY_UPSTREAM_TOKEN``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable

from lorax._redact import redact_url
from lorax._timeout import Timeout
from lorax.gateway import server
from lorax.transports._http_common import DEFAULT_MAX_RESPONSE_BYTES

__all__ = ["main"]

TOKEN_ENV = "LORAX_GATEWAY_TOKEN"
UPSTREAM_TOKEN_ENV = "LORAX_GATEWAY_UPSTREAM_TOKEN"


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text.split(':', maxsplit=1)[0]!r}...")
    return name.strip(), value.strip()


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    parse.__name__ = getattr(kind, "__name__", "number")
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lorax gateway",
        description="Serve LoRAX over one multiplexed WebSocket per client (protocol: lorax/v1/websocket.proto).",
    )
    parser.add_argument("--upstream", required=True, help="the LoRAX server's base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--host", default=server.DEFAULT_HOST, help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=server.DEFAULT_PORT, help="port (default %(default)s; 0: any)")
    parser.add_argument(
        "--auth-token",
        default=None,
        help=f"require 'Authorization: Bearer TOKEN' from clients (default: env {TOKEN_ENV}; unset: no check)",
    )
    parser.add_argument(
        "--upstream-header",
        action="append",
        type=_header,
        default=[],
        metavar="'NAME: VALUE'",
        help="a header sent upstream with every call (repeatable)",
    )
    parser.add_argument(
        "--upstream-token",
        default=None,
        help=f"send 'Authorization: Bearer TOKEN' upstream (default: env {UPSTREAM_TOKEN_ENV})",
    )
    parser.add_argument("--max-frame-bytes", type=_positive(int), default=64 * 1024 * 1024)
    parser.add_argument(
        "--max-response-bytes",
        type=_positive(int),
        default=DEFAULT_MAX_RESPONSE_BYTES,
        help="the largest upstream response body read, counted while reading (default %(default)s)",
    )
    parser.add_argument(
        "--max-calls-per-connection",
        type=_positive(int),
        default=server.DEFAULT_MAX_CALLS_PER_CONNECTION,
        help="calls in flight per connection; more are refused with too_many_calls (default %(default)s)",
    )
    parser.add_argument(
        "--max-upstream-calls-per-connection",
        type=_positive(int),
        default=server.DEFAULT_MAX_UPSTREAM_CALLS_PER_CONNECTION,
        help="calls of one connection with an upstream request open at once; the others wait (default %(default)s)",
    )
    parser.add_argument("--max-connections", type=_positive(int), default=server.DEFAULT_MAX_CONNECTIONS)
    parser.add_argument(
        "--max-connection-bytes",
        type=_positive(int),
        default=server.DEFAULT_MAX_CONNECTION_BYTES,
        help="memory budget per connection, bytes of messages held; over it: memory_limit (default %(default)s)",
    )
    parser.add_argument(
        "--max-total-bytes",
        type=_positive(int),
        default=server.DEFAULT_MAX_TOTAL_BYTES,
        help="memory budget of the whole gateway, bytes of messages held (default %(default)s)",
    )
    parser.add_argument(
        "--upstream-pool-size",
        type=_positive(int),
        default=server.DEFAULT_UPSTREAM_POOL_SIZE,
        help="connections to LoRAX, shared by all clients (default %(default)s)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=server.DEFAULT_IDLE_TIMEOUT,
        help="close connections idle this long, seconds (0: never; default %(default)s)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=server.DEFAULT_SHUTDOWN_GRACE,
        help="seconds calls in flight get to finish on shutdown (default %(default)s)",
    )
    parser.add_argument("--upstream-connect-timeout", type=_positive(float), default=10.0)
    parser.add_argument(
        "--upstream-read-timeout",
        type=_positive(float),
        default=60.0,
        help="seconds LoRAX may stay silent during a call; also the most a client may ask for (default %(default)s)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the gateway until SIGINT or SIGTERM; return the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    upstream_headers = dict(args.upstream_header)
    upstream_token = args.upstream_token or os.environ.get(UPSTREAM_TOKEN_ENV)
    if upstream_token:
        upstream_headers["Authorization"] = f"Bearer {upstream_token}"
    try:
        gateway = server.Gateway(
            args.upstream,
            host=args.host,
            port=args.port,
            upstream_headers=upstream_headers,
            auth_token=args.auth_token or os.environ.get(TOKEN_ENV) or None,
            max_frame_bytes=args.max_frame_bytes,
            max_response_bytes=args.max_response_bytes,
            max_calls_per_connection=args.max_calls_per_connection,
            max_upstream_calls_per_connection=args.max_upstream_calls_per_connection,
            max_connections=args.max_connections,
            max_connection_bytes=args.max_connection_bytes,
            max_total_bytes=args.max_total_bytes,
            upstream_pool_size=args.upstream_pool_size,
            idle_timeout=args.idle_timeout or None,
            shutdown_grace=args.shutdown_grace,
            upstream_timeout=Timeout(connect=args.upstream_connect_timeout, read=args.upstream_read_timeout),
        )
    except ValueError as exc:
        print(f"lorax gateway: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(gateway))
    except OSError as exc:
        print(f"lorax gateway: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


async def _serve(gateway: server.Gateway) -> None:
    await gateway.start()
    print(f"lorax gateway on {gateway.url} -> {redact_url(gateway.upstream_url)}", file=sys.stderr, flush=True)
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    stopping: list[asyncio.Task[None]] = []

    def on_signal() -> None:
        if not stopping:
            stopping.append(loop.create_task(gateway.stop()))
        elif main_task is not None:
            main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows, non-main thread
            loop.add_signal_handler(sig, on_signal)
    try:
        await gateway.serve_forever()
    except asyncio.CancelledError:
        await gateway.stop(grace=0)
