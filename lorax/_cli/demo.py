"""``lorax demo``: the client's tour, against an embedded fake server, in a few seconds.

It starts :class:`lorax.testing.FakeLorax` and a :class:`lorax.gateway.GatewayThread`
in front of it, both on free loopback ports, then runs the same short script over
HTTP and over the WebSocket gateway: a generation, a token stream, structured JSON
output, an embedding and a chat turn. Everything is shut down before it returns.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from typing import IO, Any

import orjson

from lorax._cli.common import EXIT_ERROR, EXIT_OK, Context

__all__ = ["register", "run_demo", "tour"]

PROMPT = "Why is the sky blue?"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "population": {"type": "integer"},
        "coastal": {"type": "boolean"},
    },
    "required": ["city", "population", "coastal"],
}


def register(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        parents=[parent],
        help="start an embedded fake server and gateway and show the client at work",
        description="Run a short tour of the client over HTTP and WebSocket against an embedded fake LoRAX.",
    )
    parser.add_argument(
        "--token-latency-ms",
        type=float,
        default=15.0,
        metavar="MS",
        help="the fake model's time per token, so streaming is visible (default 15)",
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=24, metavar="N", help="tokens per generation (default 24)"
    )
    parser.add_argument("--no-ws", action="store_true", help="skip the WebSocket part")
    parser.set_defaults(run=run_demo, _parser=parser)


class _Printer:
    """Section headings and indented lines, so the tour reads like a transcript."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def heading(self, text: str) -> None:
        self.out.write(f"\n=== {text} ===\n")
        self.out.flush()

    def section(self, text: str) -> None:
        self.out.write(f"\n--- {text}\n")
        self.out.flush()

    def line(self, text: str = "") -> None:
        self.out.write(f"  {text}\n" if text else "\n")
        self.out.flush()

    def raw(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


def tour(client: Any, printer: _Printer, max_new_tokens: int) -> None:
    """The script run over each transport with a sync :class:`lorax.Client`."""
    printer.section("generate: one request, one answer")
    printer.line(f"prompt: {PROMPT!r}")
    started = time.monotonic()
    response = client.generate(PROMPT, max_new_tokens=max_new_tokens, seed=7)
    elapsed = (time.monotonic() - started) * 1000
    details = response.details
    printer.line(f"text:   {response.generated_text!r}")
    printer.line(f"        {details.generated_tokens} tokens, finish_reason={details.finish_reason}, {elapsed:.0f} ms")

    printer.section("generate_stream: tokens printed as they arrive")
    printer.raw("  ")
    count = 0
    with client.generate_stream(PROMPT, max_new_tokens=max_new_tokens, seed=7) as stream:
        for event in stream:
            count += 1
            if not event.token.special:
                printer.raw(event.token.text)
    printer.raw("\n")
    printer.line(f"({count} events, one per token; the last one also carries the full text and details)")

    printer.section("structured output: response_format with a JSON schema")
    printer.line("schema: " + orjson.dumps(SCHEMA).decode())
    structured = client.generate(
        "Describe a city as JSON.",
        max_new_tokens=96,
        response_format={"type": "json_object", "schema": SCHEMA},
    )
    try:
        parsed = orjson.loads(structured.generated_text)
    except orjson.JSONDecodeError:
        printer.line(f"(not JSON: {structured.generated_text!r})")
    else:
        for row in orjson.dumps(parsed, option=orjson.OPT_INDENT_2).decode().splitlines():
            printer.line(row)

    printer.section("embed: a vector for a text")
    vector = list(client.embed("The sky is blue.").embeddings)
    shown = ", ".join(f"{v:+.4f}" for v in vector[:5])
    printer.line(f"dimension {len(vector)}: [{shown}, ...]")

    printer.section("chat: one turn with the chat template")
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is LoRA?"},
    ]
    printer.line("user:      What is LoRA?")
    chat = client.chat(messages, max_tokens=max_new_tokens, seed=7)
    content = chat.choices[0].message.content if chat.choices else ""
    printer.line(f"assistant: {content}")


@contextlib.contextmanager
def _fake_server(token_latency: float) -> Iterator[str]:
    from lorax.testing import FakeLorax

    with FakeLorax(token_latency=token_latency or None) as server:
        yield server.url


@contextlib.contextmanager
def _gateway(upstream: str) -> Iterator[str]:
    from lorax.gateway import GatewayThread

    with GatewayThread(upstream=upstream, host="127.0.0.1") as gateway:
        yield gateway.url


def run_demo(args: argparse.Namespace, ctx: Context) -> int:
    """Run the tour over HTTP, then over WebSocket; 0 when every step worked."""
    from lorax.client import Client

    printer = _Printer(ctx.stdout)
    started = time.monotonic()
    with _fake_server(args.token_latency_ms / 1000.0) as url:
        printer.raw(f"lorax demo: a fake LoRAX server is listening on {url}\n")
        printer.heading(f"over HTTP: Client({url!r})")
        with Client(url) as client:
            tour(client, printer, args.max_new_tokens)
        if not args.no_ws:
            status = _websocket_part(url, printer, args.max_new_tokens, ctx)
            if status != EXIT_OK:
                return status
    printer.raw(f"\ndone in {time.monotonic() - started:.1f} s; server and gateway stopped.\n")
    return EXIT_OK


def _websocket_part(upstream: str, printer: _Printer, max_new_tokens: int, ctx: Context) -> int:
    """The same tour through the gateway; kept apart so the demo works without it."""
    from lorax.client import Client

    try:
        import lorax.gateway  # noqa: F401
    except ImportError as exc:
        ctx.stderr.write(f"lorax demo: skipping WebSocket: the gateway is not available ({exc})\n")
        return EXIT_OK
    try:
        with _gateway(upstream) as ws_url:
            printer.heading(f"over WebSocket, through the gateway: Client({ws_url!r})")
            with Client(ws_url) as client:
                tour(client, printer, max_new_tokens)
    except OSError as exc:
        ctx.stderr.write(f"lorax demo: the gateway could not start: {exc}\n")
        return EXIT_ERROR
    return EXIT_OK
