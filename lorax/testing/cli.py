"""``lorax fake-server``: run the fake LoRAX server from a shell (also ``python -m lorax.testing``).

The first line printed is ``lorax fake server listening on http://HOST:PORT`` (flushed at
once), so a parent process can start it with ``--port 0`` and read the URL. Ctrl-C or
SIGTERM stops it cleanly with exit status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from lorax.testing._config import CRASH_ABORT, CRASH_HTTP_500, ServerConfig
from lorax.testing._faults import FaultError, parse_faults
from lorax.testing._runner import AsyncFakeLorax

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lorax fake-server``."""
    defaults = ServerConfig()
    p = argparse.ArgumentParser(prog="lorax fake-server", description="Run a LoRAX-compatible fake server.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on; 0 picks a free one (default 8080)")
    p.add_argument("--token-latency-ms", type=float, default=0.0, help="delay before each token (default 0)")
    p.add_argument("--ttfb-ms", type=float, default=0.0, help="delay before each inference response head")
    p.add_argument("--keep-alive-s", type=float, default=15.0, help="SSE keep-alive interval (default 15, as LoRAX)")
    p.add_argument("--fault", default=None, help="standing faults in the x-lorax-fake-fault syntax")
    p.add_argument("--model-id", default=defaults.model_id)
    p.add_argument("--max-input-length", type=int, default=defaults.max_input_length)
    p.add_argument("--max-total-tokens", type=int, default=defaults.max_total_tokens)
    p.add_argument("--max-best-of", type=int, default=defaults.max_best_of)
    p.add_argument("--max-stop-sequences", type=int, default=defaults.max_stop_sequences)
    p.add_argument("--max-concurrent-requests", type=int, default=defaults.max_concurrent_requests)
    p.add_argument("--embedding-dim", type=int, default=defaults.embedding_dim)
    p.add_argument("--adapter-source", default=defaults.adapter_source)
    p.add_argument(
        "--chat-template", default=defaults.chat_template, choices=["mistral", "chatml", "guideline", "none"]
    )
    p.add_argument("--compat-return-full-text", action="store_true", help="return_full_text default on / and /v1")
    p.add_argument("--no-tokenizer", action="store_true", help="make /tokenize answer 404")
    p.add_argument("--unhealthy", action="store_true", help="make /health answer 503")
    p.add_argument("--crash-behaviour", default=CRASH_ABORT, choices=[CRASH_ABORT, CRASH_HTTP_500])
    return p


async def _serve(args: argparse.Namespace) -> None:
    config = ServerConfig(
        model_id=args.model_id,
        max_input_length=args.max_input_length,
        max_total_tokens=args.max_total_tokens,
        max_best_of=args.max_best_of,
        max_stop_sequences=args.max_stop_sequences,
        max_concurrent_requests=args.max_concurrent_requests,
        embedding_dim=args.embedding_dim,
        adapter_source=args.adapter_source,
        chat_template=None if args.chat_template == "none" else args.chat_template,
        compat_return_full_text=args.compat_return_full_text,
        has_tokenizer=not args.no_tokenizer,
        healthy=not args.unhealthy,
        crash_behaviour=args.crash_behaviour,
    )
    server = AsyncFakeLorax(
        config,
        host=args.host,
        port=args.port,
        token_latency=args.token_latency_ms / 1000.0,
        time_to_first_byte=args.ttfb_ms / 1000.0,
        keep_alive=args.keep_alive_s,
    )
    if args.fault:
        server.faults.set(args.fault)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not on this platform
            pass
    async with server:
        print(f"lorax fake server listening on {server.url}", flush=True)
        await stop.wait()
    print("lorax fake server stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lorax fake-server [options]``; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["fake-server"]:
        args_list = args_list[1:]
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.fault:
        try:
            parse_faults(args.fault)
        except FaultError as exc:
            parser.error(f"--fault: {exc}")
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"lorax fake-server: {exc}", file=sys.stderr)
        return 1
    return 0
