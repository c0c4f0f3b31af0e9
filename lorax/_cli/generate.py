"""``lorax generate`` and ``lorax chat``: text in, text out, streamed as it is made."""

from __future__ import annotations

import argparse
from typing import Any

from lorax._cli.common import (
    EXIT_OK,
    Context,
    UsageError,
    add_adapter_options,
    add_connection_options,
    add_native_generation_options,
    add_sampling_options,
    chat_kwargs,
    generate_kwargs,
    load_json_arg,
    make_client,
    read_text_arg,
)
from lorax.codec import to_json

__all__ = ["register", "run_chat", "run_generate"]


def register(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Add the ``generate`` and ``chat`` subcommands."""
    gen = subparsers.add_parser(
        "generate",
        parents=[parent],
        help="generate text for a prompt (streams tokens as they arrive)",
        description="Generate text for PROMPT with POST /generate_stream (or /generate with --no-stream or --json).",
    )
    gen.add_argument("prompt", metavar="PROMPT", help="the prompt; '-' reads it from stdin")
    _add_output_options(gen, "the full response as LoRAX JSON (one line; not streamed unless --stream)")
    add_adapter_options(gen)
    add_sampling_options(gen)
    add_native_generation_options(gen)
    add_connection_options(gen)
    gen.set_defaults(run=run_generate, _parser=gen)

    chat = subparsers.add_parser(
        "chat",
        parents=[parent],
        help="one chat turn with the model's chat template (POST /v1/chat/completions)",
        description="Send a chat turn: an optional --system message, earlier --messages, then MESSAGE as the user.",
    )
    chat.add_argument("message", metavar="MESSAGE", nargs="?", help="the user's message; '-' reads it from stdin")
    chat.add_argument("--system", metavar="TEXT", help="a system message placed first")
    chat.add_argument(
        "--messages",
        metavar="FILE_OR_JSON",
        help='earlier turns as a JSON list of {"role", "content"} objects (a file, or the JSON itself)',
    )
    _add_output_options(chat, "the full response as JSON (one line; not streamed unless --stream)")
    add_adapter_options(chat)
    add_sampling_options(chat, chat=True)
    add_connection_options(chat)
    chat.set_defaults(run=run_chat, _parser=chat)


def _add_output_options(parser: argparse.ArgumentParser, json_help: str) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--json", action="store_true", help=json_help)
    group.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="stream the answer (default; with --json: one JSON line per event)",
    )


def _streaming(args: argparse.Namespace) -> bool:
    return bool(args.stream) if args.stream is not None else not args.json


def run_generate(args: argparse.Namespace, ctx: Context) -> int:
    """Generate for one prompt and print the text (or JSON) on stdout."""
    prompt = read_text_arg(args.prompt, ctx.stdin)
    kwargs = generate_kwargs(args)
    conn = ctx.connection(args)
    out = ctx.stdout
    with make_client(conn) as client:
        if not _streaming(args):
            # --json shows the whole response, so it asks for the details too.
            response = client.generate(prompt, details=bool(args.details or args.json), **kwargs)
            if args.json:
                out.write(to_json(response).decode() + "\n")
            else:
                out.write(response.generated_text + "\n")
                if args.details and response.details is not None:
                    _print_details(ctx, response.details, response.details.prompt_tokens)
            out.flush()
            return EXIT_OK
        with client.generate_stream(prompt, details=bool(args.details or args.json), **kwargs) as stream:
            if args.json:
                for event in stream:
                    out.write(to_json(event).decode() + "\n")
                    out.flush()
                return EXIT_OK
            if kwargs.get("return_full_text"):
                # Stream events carry only new tokens; the prompt is in the final text.
                out.write(prompt)
            for event in stream:
                if not event.token.special:
                    out.write(event.token.text)
                    out.flush()
            out.write("\n")
            out.flush()
            final = stream.final
            if args.details and final is not None and final.details is not None:
                _print_details(ctx, final.details, final.details.prompt_tokens)
    return EXIT_OK


def _print_details(ctx: Context, details: Any, prompt_tokens: int) -> None:
    # On stderr, so that stdout stays exactly the generated text.
    seed = details.seed
    ctx.stderr.write(
        f"finish_reason={details.finish_reason} prompt_tokens={prompt_tokens} "
        f"generated_tokens={details.generated_tokens} seed={seed}\n"
    )
    ctx.stderr.flush()


def chat_messages(args: argparse.Namespace, ctx: Context) -> list[dict[str, Any]]:
    """The conversation the options describe: system, earlier turns, then the user's message."""
    messages: list[dict[str, Any]] = []
    if args.system is not None:
        messages.append({"role": "system", "content": read_text_arg(args.system, ctx.stdin)})
    if args.messages is not None:
        earlier = load_json_arg(args.messages, "--messages")
        if not isinstance(earlier, list) or not all(isinstance(m, dict) for m in earlier):
            raise UsageError("--messages must be a JSON list of message objects")
        messages.extend(earlier)
    if args.message is not None:
        messages.append({"role": "user", "content": read_text_arg(args.message, ctx.stdin)})
    if not messages:
        raise UsageError("chat needs a MESSAGE (or --messages)")
    return messages


def run_chat(args: argparse.Namespace, ctx: Context) -> int:
    """One chat turn; prints the assistant's reply (or JSON) on stdout."""
    messages = chat_messages(args, ctx)
    kwargs = chat_kwargs(args)
    conn = ctx.connection(args)
    out = ctx.stdout
    with make_client(conn) as client:
        if not _streaming(args):
            response = client.chat(messages, **kwargs)
            if args.json:
                out.write(to_json(response).decode() + "\n")
            else:
                text = response.choices[0].message.content if response.choices else ""
                out.write(text + "\n")
            out.flush()
            return EXIT_OK
        with client.chat_stream(messages, **kwargs) as stream:
            for chunk in stream:
                if args.json:
                    out.write(to_json(chunk).decode() + "\n")
                    out.flush()
                    continue
                for choice in chunk.choices:
                    if choice.delta is not None and choice.delta.content:
                        out.write(choice.delta.content)
                        out.flush()
            if not args.json:
                out.write("\n")
                out.flush()
    return EXIT_OK
