"""The ``lorax`` command line.

::

    lorax generate "Why is the sky blue?" --max-new-tokens 64
    lorax chat --system "Be brief." "What is LoRA?"
    lorax batch prompts.jsonl -o results.jsonl --concurrency 16
    lorax demo

Every subcommand but ``fake-server``, ``gateway`` and ``demo`` talks to a LoRAX server
(``--endpoint``, ``$LORAX_ENDPOINT``, default ``http://127.0.0.1:8080``), a lorax gateway
(a ``ws://`` URL), or a Predibase deployment (``--predibase-tenant/--predibase-deployment``).
Their connection options may come before or after the subcommand's name.

Exit codes: 0 success, 1 the server or the network failed, 2 a bad command line, 130
interrupted (Ctrl-C), 143 terminated (SIGTERM, ``batch`` only). A failure prints one
line, ``lorax: error: <ErrorClass>: <message>``, on stderr and never a traceback unless
``--debug`` is given. Credentials never appear in anything the command prints.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import IO

from lorax._cli import batch, demo, endpoints, generate
from lorax._cli.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliParser,
    Context,
    UsageError,
    error_line,
    hoist_connection_options,
    log_traceback,
    secrets_from_argv,
    setup_logging,
)
from lorax._redact import Secrets
from lorax.errors import LoraxError

__all__ = ["build_parser", "main"]

# 128 + SIGPIPE: what a shell reports when the reader of a pipe went away (`| head`).
EXIT_BROKEN_PIPE = 141

# Subcommands that belong to other packages and parse their own arguments.
_DELEGATED: dict[str, tuple[str, str]] = {
    "fake-server": ("lorax.testing.cli", "run a LoRAX-compatible fake server for tests"),
    "gateway": ("lorax.gateway.cli", "run the WebSocket gateway in front of a LoRAX server"),
}
# Delegated subcommands that configure logging themselves (``--log-level``): the
# command line must leave the ``lorax`` logger alone, or their INFO lines never show.
_OWN_LOGGING = frozenset({"gateway"})


def build_parser(secrets: Secrets | None = None) -> argparse.ArgumentParser:
    """The ``lorax`` argument parser, all subcommands included."""
    CliParser.secrets = secrets if secrets is not None else Secrets()
    from lorax import __version__

    parser = CliParser(
        prog="lorax",
        description="Command line client for LoRAX: generate, chat, embed, run JSONL batches, and try it all "
        "with 'lorax demo'.",
        epilog="Run 'lorax COMMAND --help' for a command's options. The connection options (--endpoint, "
        "--api-token, --gateway-token, -H/--header, --transport, --timeout, --max-retries, --predibase-tenant, "
        "--predibase-deployment) may also come before COMMAND. Exit codes: 0 ok, 1 server or network "
        "error, 2 bad usage, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"lorax-client {__version__}")
    parser.add_argument("--debug", action="store_true", help="log at DEBUG (tracebacks included, secrets redacted)")
    # Subcommands accept --debug too; SUPPRESS keeps them from resetting the top-level value.
    parent = CliParser(add_help=False)
    parent.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CliParser)
    generate.register(subparsers, parent)
    endpoints.register(subparsers, parent)
    batch.register(subparsers, parent)
    demo.register(subparsers, parent)
    for name, (_, help_text) in _DELEGATED.items():
        # Listed for --help only: main() hands their argv over before argparse runs.
        subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def _subcommands(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    return [name for action in parser._actions for name in action.option_strings]


def _delegated(argv: Sequence[str]) -> tuple[str, list[str], bool] | None:
    """``(command, rest, debug)`` when argv runs a subcommand owned by another package."""
    debug = False
    for i, arg in enumerate(argv):
        if arg == "--debug":
            debug = True
            continue
        if arg in _DELEGATED:
            return arg, list(argv[i + 1 :]), debug
        return None
    return None


def _nothing_to_restore() -> None:
    pass


def _run_delegated(command: str, rest: list[str], ctx: Context) -> int:
    import importlib

    module_name = _DELEGATED[command][0]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        ctx.stderr.write(ctx.secrets.scrub(f"lorax: error: 'lorax {command}' is not available: {exc}\n"))
        return EXIT_ERROR
    entry: Callable[[list[str]], int] = module.main
    try:
        return int(entry(rest) or 0)
    except SystemExit as exc:  # their argparse, on --help or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    stdin: IO[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the ``lorax`` command line with `argv` (default ``sys.argv[1:]``); return the exit code.

    The streams and the environment can be replaced, for tests and for applications
    that embed the command line.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    secrets = secrets_from_argv(args_list, env)
    ctx = Context(
        stdout=stdout if stdout is not None else sys.stdout,
        stderr=stderr if stderr is not None else sys.stderr,
        stdin=stdin if stdin is not None else sys.stdin,
        environ=env,
        secrets=secrets,
    )

    delegated = _delegated(args_list)
    if delegated is not None:
        command, rest, debug = delegated
        if command in _OWN_LOGGING:
            if debug and not any(arg == "--log-level" or arg.startswith("--log-level=") for arg in rest):
                rest = ["--log-level", "debug", *rest]
            restore = _nothing_to_restore
        else:
            restore = setup_logging(debug, secrets, ctx.stderr)
        try:
            return _run_delegated(command, rest, ctx)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        finally:
            restore()

    parser = build_parser(secrets)
    # Connection options may come before the subcommand too: `lorax --endpoint URL info`.
    args_list = hoist_connection_options(args_list, _subcommands(parser), _option_strings(parser))
    try:
        # argparse prints help, version and complaints on sys.stdout/stderr itself.
        with contextlib.redirect_stdout(ctx.stdout), contextlib.redirect_stderr(ctx.stderr):
            args = parser.parse_args(args_list)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(ctx.stderr)
        return EXIT_USAGE

    restore = setup_logging(args.debug, secrets, ctx.stderr)
    try:
        return _run(args, ctx)
    finally:
        restore()


def _run(args: argparse.Namespace, ctx: Context) -> int:
    """Run the parsed subcommand, turning every failure into one line and an exit code."""
    secrets = ctx.secrets
    run: Callable[[argparse.Namespace, Context], int] = args.run
    try:
        return run(args, ctx)
    except UsageError as exc:
        ctx.stderr.write(secrets.scrub(f"{args._parser.prog}: error: {exc}\n"))
        return EXIT_USAGE
    except KeyboardInterrupt:
        if _isatty(ctx.stdout):
            ctx.stdout.write("\n")  # end a half-streamed line before the shell prompt comes back
            ctx.stdout.flush()
        ctx.stderr.write("lorax: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except LoraxError as exc:
        log_traceback(exc)
        ctx.stderr.write(error_line(exc, secrets) + "\n")
        return EXIT_ERROR
    except Exception as exc:
        # A bug or an environment problem: still one line, with the way to learn more.
        log_traceback(exc)
        hint = "" if args.debug else " (run with --debug for details)"
        ctx.stderr.write(error_line(exc, secrets) + hint + "\n")
        return EXIT_ERROR


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _silence_stdout() -> None:
    # The reader is gone; make the interpreter's final flush of stdout a no-op instead
    # of a second BrokenPipeError message.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
