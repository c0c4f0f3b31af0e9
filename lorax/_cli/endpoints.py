"""The one-shot subcommands: ``embed``, ``classify``, ``tokenize``, ``info``, ``health``, ``metrics``.

Each prints a short human view by default and, with ``--json``, exactly the JSON LoRAX
sends for that route (via :func:`lorax.codec.to_json`), one line, for scripts.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from lorax._cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    Context,
    add_adapter_options,
    add_connection_options,
    make_client,
    read_text_arg,
)
from lorax.codec import to_json
from lorax.types import TokenizeResponse

__all__ = ["register"]

# How many leading values of an embedding the human view shows.
EMBED_PREVIEW = 8


def register(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Add the one-shot subcommands."""
    embed = subparsers.add_parser("embed", parents=[parent], help="embed a text (POST /embed)")
    embed.add_argument("text", metavar="TEXT", help="the text; '-' reads it from stdin")
    _json_option(embed)
    add_adapter_options(embed)
    add_connection_options(embed)
    embed.set_defaults(run=run_embed, _parser=embed)

    classify = subparsers.add_parser(
        "classify", parents=[parent], help="classify the tokens of a text (POST /classify)"
    )
    classify.add_argument("text", metavar="TEXT", help="the text; '-' reads it from stdin")
    _json_option(classify)
    add_connection_options(classify)
    classify.set_defaults(run=run_classify, _parser=classify)

    tokenize = subparsers.add_parser("tokenize", parents=[parent], help="tokenize a text (POST /tokenize)")
    tokenize.add_argument("text", metavar="TEXT", help="the text; '-' reads it from stdin")
    tokenize.add_argument(
        "--add-special-tokens",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the tokenizer's special tokens (default: the server's choice)",
    )
    _json_option(tokenize)
    add_connection_options(tokenize)
    tokenize.set_defaults(run=run_tokenize, _parser=tokenize)

    info = subparsers.add_parser("info", parents=[parent], help="the served model and the server's limits (GET /info)")
    _json_option(info)
    add_connection_options(info)
    info.set_defaults(run=run_info, _parser=info)

    health = subparsers.add_parser(
        "health", parents=[parent], help="check the server's health (exit 0 healthy, 1 otherwise)"
    )
    add_connection_options(health)
    health.set_defaults(run=run_health, _parser=health)

    metrics = subparsers.add_parser("metrics", parents=[parent], help="server metrics (GET /metrics)")
    metrics.add_argument("--json", action="store_true", help="LoRAX's JSON metric families instead of Prometheus text")
    add_connection_options(metrics)
    metrics.set_defaults(run=run_metrics, _parser=metrics)


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print LoRAX's JSON answer (one line)")


def _write(ctx: Context, text: str) -> None:
    ctx.stdout.write(text if text.endswith("\n") else text + "\n")
    ctx.stdout.flush()


def run_embed(args: argparse.Namespace, ctx: Context) -> int:
    """Embed TEXT; print the dimension and the first values (or the JSON)."""
    text = read_text_arg(args.text, ctx.stdin)
    kwargs: dict[str, Any] = {}
    if args.adapter_id is not None:
        kwargs["adapter_id"] = args.adapter_id
    if args.adapter_source is not None:
        kwargs["adapter_source"] = args.adapter_source
    with make_client(ctx.connection(args)) as client:
        response = client.embed(text, **kwargs)
    if args.json:
        _write(ctx, to_json(response).decode())
        return EXIT_OK
    values = list(response.embeddings)
    shown = ", ".join(f"{v:.4f}" for v in values[:EMBED_PREVIEW])
    more = ", ..." if len(values) > EMBED_PREVIEW else ""
    _write(ctx, f"dimension {len(values)}: [{shown}{more}]")
    return EXIT_OK


def run_classify(args: argparse.Namespace, ctx: Context) -> int:
    """Classify TEXT; one line per entity: group, score, span, word."""
    text = read_text_arg(args.text, ctx.stdin)
    with make_client(ctx.connection(args)) as client:
        response = client.classify(text)
    if args.json:
        _write(ctx, to_json(response).decode())
        return EXIT_OK
    lines = [f"{e.entity_group}\t{e.score:.4f}\t{e.start}-{e.end}\t{e.word}" for e in response.entities]
    _write(ctx, "\n".join(lines) if lines else "(no entities)")
    return EXIT_OK


def run_tokenize(args: argparse.Namespace, ctx: Context) -> int:
    """Tokenize TEXT; one line per token: id, text (quoted), span."""
    text = read_text_arg(args.text, ctx.stdin)
    with make_client(ctx.connection(args)) as client:
        tokens = client.tokenize(text, add_special_tokens=args.add_special_tokens)
    if args.json:
        _write(ctx, to_json(TokenizeResponse(tokens=tokens)).decode())
        return EXIT_OK
    lines = [f"{t.id}\t{orjson.dumps(t.text).decode()}\t{t.start}-{t.stop}" for t in tokens]
    _write(ctx, "\n".join(lines) if lines else "(no tokens)")
    return EXIT_OK


def run_info(args: argparse.Namespace, ctx: Context) -> int:
    """Print the server's /info, one ``key: value`` per line (or the JSON)."""
    with make_client(ctx.connection(args)) as client:
        info = client.info()
    if args.json:
        _write(ctx, to_json(info).decode())
        return EXIT_OK
    obj = orjson.loads(to_json(info))
    _write(ctx, "\n".join(f"{key}: {_plain(value)}" for key, value in obj.items()))
    return EXIT_OK


def _plain(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def run_health(args: argparse.Namespace, ctx: Context) -> int:
    """Print ``healthy`` (exit 0) or ``unhealthy`` (exit 1); unreachable is an error (exit 1)."""
    with make_client(ctx.connection(args)) as client:
        healthy = client.health()
    _write(ctx, "healthy" if healthy else "unhealthy")
    return EXIT_OK if healthy else EXIT_ERROR


def run_metrics(args: argparse.Namespace, ctx: Context) -> int:
    """Print the Prometheus text, or with ``--json`` the JSON families."""
    with make_client(ctx.connection(args)) as client:
        if args.json:
            families = client.metrics("json")
            _write(ctx, orjson.dumps(families).decode())
        else:
            ctx.stdout.write(client.metrics())
            ctx.stdout.flush()
    return EXIT_OK
