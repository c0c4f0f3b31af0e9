"""``lorax batch``: parse the command line and call the engine in :mod:`lorax.batch`.

The formats, resuming and retry rules are the engine's (:mod:`lorax.batch.lines`,
:mod:`lorax.batch.output`, :mod:`lorax.batch.engine`); this module turns options into
its arguments, shows progress, handles Ctrl-C and SIGTERM, and maps the outcome to an
exit code. ``--engine ray`` runs the same lines on Ray (:mod:`lorax.batch.ray`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import signal
import time
from pathlib import Path
from typing import IO, Any

import orjson

from lorax._cli.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
    Connection,
    Context,
    UsageError,
    add_adapter_options,
    add_connection_options,
    add_native_generation_options,
    add_sampling_options,
    chat_kwargs,
    generate_kwargs,
    make_async_client,
)
from lorax._cli.progress import ProgressReporter, format_summary
from lorax._retry import RetryPolicy
from lorax.batch.engine import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_CONNECTION_FAILURES,
    DEFAULT_WORKERS,
    BatchRunner,
    BatchStats,
)
from lorax.batch.lines import DRY_RUN_SHOW, BatchInputError, dry_run, is_parquet
from lorax.batch.output import BatchOutputError

__all__ = ["BATCH_RETRY_STATUS", "EXIT_UNREACHABLE", "register", "run_batch_command"]

DEFAULT_MAX_RETRIES = 8
# Non-streaming generations send nothing until they are done; 60 s of silence is normal
# for a long generation on a busy server, so batch waits longer before calling it dead.
DEFAULT_TIMEOUT = 300.0
# The statuses `lorax batch` retries: the client's (429, 503) plus a proxy's 502/504 in
# front of a busy server, which are transient too; re-running a generation costs only
# compute.
BATCH_RETRY_STATUS = frozenset({429, 502, 503, 504})
EXIT_UNREACHABLE = 3  # the server could not be reached: stopped early, nothing lost


def register(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Add the ``batch`` subcommand."""
    parser = subparsers.add_parser(
        "batch",
        parents=[parent],
        help="run a JSONL file of prompts or chats, resumably, with N requests in flight",
        description=(
            'Each INPUT line is {"id": ..., "prompt": "..."} or {"id": ..., "messages": [...]}, with optional '
            '"parameters" and "adapter_id"; any other key fails the line. Ids must be unique (lines without one '
            'get "line:N"). OUTPUT gets one row per input line; rerunning skips the lines done and retries the '
            "failed ones, replacing their rows. Options given here are defaults that a line's parameters "
            "override. Exit code 0 when every line succeeded, 1 when some failed (rerun to retry them), 2 for "
            f"a bad command line or duplicate ids (nothing sent), {EXIT_UNREACHABLE} when the server could not "
            "be reached, 130 on Ctrl-C, 143 on SIGTERM."
        ),
    )
    parser.add_argument(
        "input",
        metavar="INPUT.jsonl",
        help="the requests, one JSON object per line; or a .parquet file, one row per line, its columns the keys",
    )
    parser.add_argument(
        "-o", "--output", metavar="OUTPUT.jsonl", help="results, one row per input line (resumed when it exists)"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help=f"check the whole input and print the requests of the first {DRY_RUN_SHOW} lines; send nothing",
    )
    parser.add_argument(
        "-c",
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"requests in flight (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process (default); ray: Ray Data actors, --workers x --concurrency requests in flight "
        "(needs pip install 'lorax-client[ray]')",
    )
    parser.add_argument(
        "--address",
        metavar="ADDR",
        help="with --engine ray: the Ray cluster ('auto', 'ray://host:10001'; default: a local Ray runtime)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"with --engine ray: actors, each with its own client and --concurrency (default {DEFAULT_WORKERS})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress display on stderr")
    parser.add_argument("--full-response", action="store_true", help="store LoRAX's whole response as the result")
    parser.add_argument(
        "--max-connection-failures",
        type=int,
        default=DEFAULT_MAX_CONNECTION_FAILURES,
        metavar="N",
        help="stop after N lines in a row lost their connection after sending "
        f"(default {DEFAULT_MAX_CONNECTION_FAILURES}; 0: never)",
    )
    add_adapter_options(parser)
    add_sampling_options(parser)
    add_native_generation_options(parser, details=False)
    add_connection_options(
        parser,
        max_retries_default=DEFAULT_MAX_RETRIES,
        timeout_default=DEFAULT_TIMEOUT,
        retries_help="retries per line for 429, overloaded, 502/503/504, timeouts and dropped connections",
    )
    parser.set_defaults(run=run_batch_command, _parser=parser)


def run_batch_command(args: argparse.Namespace, ctx: Context) -> int:
    """``lorax batch``: run, print the summary, and map the outcome to an exit code."""
    if args.concurrency < 1:
        raise UsageError("--concurrency must be >= 1")
    if args.workers < 1:
        raise UsageError("--workers must be >= 1")
    if args.engine != "ray" and (args.address is not None or args.workers != DEFAULT_WORKERS):
        raise UsageError("--address and --workers go with --engine ray")
    if args.input == "-":
        raise UsageError("batch reads INPUT again when it resumes, so it must be a file, not stdin")
    generate_defaults = generate_kwargs(args)
    chat_defaults = chat_kwargs(args)
    if args.dry_run:
        return _dry_run_command(args, ctx, generate_defaults, chat_defaults)
    if args.output is None:
        raise UsageError("the following arguments are required: -o/--output")
    if is_parquet(args.output):
        raise UsageError(
            "OUTPUT is JSONL (rows are appended as lines finish, which Parquet cannot do); "
            "INPUT may be Parquet, and lorax.batch.ray.process_dataset writes Parquet from a Ray pipeline"
        )
    conn = ctx.connection(args)
    stats = BatchStats()
    received: list[int] = []  # the signals that stopped the run
    try:
        if args.engine == "ray":
            _run_ray(args, ctx, conn, generate_defaults, chat_defaults, stats, received)
        else:
            asyncio.run(_run(args, ctx, conn, generate_defaults, chat_defaults, stats, received))
    except KeyboardInterrupt:
        # A second Ctrl-C (or a platform without loop signal handlers).
        stats.interrupted = True
        received.append(int(signal.SIGINT))
    except (BatchInputError, BatchOutputError) as exc:
        ctx.stderr.write(ctx.secrets.scrub(f"{args._parser.prog}: error: {exc.message}\n"))
        return EXIT_USAGE
    if stats.finished is None:
        stats.finished = time.monotonic()
    ctx.stderr.write(format_summary(stats) + "\n")
    ctx.stderr.flush()
    if stats.interrupted:
        return EXIT_TERMINATED if received and received[0] == signal.SIGTERM else EXIT_INTERRUPTED
    if stats.unreachable:
        return EXIT_UNREACHABLE
    if stats.aborted or stats.failed:
        return EXIT_ERROR
    return EXIT_OK


def _dry_run_command(
    args: argparse.Namespace, ctx: Context, generate_defaults: dict[str, Any], chat_defaults: dict[str, Any]
) -> int:
    if not Path(args.input).is_file():
        raise FileNotFoundError(2, "No such file", args.input)
    report = dry_run(args.input, generate_defaults=generate_defaults, chat_defaults=chat_defaults)
    check = report.check
    prog = args._parser.prog
    if check.duplicates:
        ctx.stderr.write(ctx.secrets.scrub(f"{prog}: error: {check.duplicate_message(args.input)}\n"))
        return EXIT_USAGE
    for line, ident, route, body in report.shown:
        ctx.stdout.write(f"line {line}, id {orjson.dumps(ident).decode()}: {route}\n")
        ctx.stdout.write(body.decode() + "\n")
    ctx.stdout.flush()
    for bad in check.invalid:
        ctx.stderr.write(ctx.secrets.scrub(f"{prog}: invalid: {bad.message}\n"))
    if check.invalid_count > len(check.invalid):
        ctx.stderr.write(f"{prog}: invalid: ... and {check.invalid_count - len(check.invalid)} more\n")
    ctx.stderr.write(
        f"lorax batch: dry run: {check.lines} lines, {check.requests} valid ({report.generate} generate, "
        f"{report.chat} chat), {check.invalid_count} invalid, {check.blank} blank; nothing was sent\n"
    )
    ctx.stderr.flush()
    return EXIT_ERROR if check.invalid_count else EXIT_OK


async def _run(
    args: argparse.Namespace,
    ctx: Context,
    conn: Connection,
    generate_defaults: dict[str, Any],
    chat_defaults: dict[str, Any],
    stats: BatchStats,
    received: list[int],
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        received.append(signum)
        stop.set()
        # From now on the default behaviour again: a second Ctrl-C ends at once.
        loop.remove_signal_handler(signum)

    installed: list[int] = []
    for signum in (int(signal.SIGINT), int(signal.SIGTERM)):
        # Installed explicitly, so that Ctrl-C works even when the parent started us
        # with SIGINT ignored (background jobs of non-interactive shells).
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)

    policy = RetryPolicy(max_retries=args.max_retries, retry_on_status=BATCH_RETRY_STATUS)
    timeout = args.timeout if args.timeout is not None else DEFAULT_TIMEOUT
    client = make_async_client(conn, timeout=timeout, max_retries=policy, pool_size=max(100, args.concurrency))
    tty = _is_tty(ctx.stderr)
    show_progress = not args.no_progress
    runner = BatchRunner(
        client,
        args.input,
        args.output,
        concurrency=args.concurrency,
        retry=policy,
        generate_defaults=generate_defaults,
        chat_defaults=chat_defaults,
        full_response=args.full_response,
        max_connection_failures=args.max_connection_failures,
        count_total=show_progress,
        stats=stats,
        scrub=ctx.secrets.scrub,
    )
    reporter_task: asyncio.Task[None] | None = None
    if show_progress:
        reporter = ProgressReporter(stats, ctx.stderr, tty=tty)
        reporter_task = asyncio.create_task(reporter.run())
    try:
        await runner.run(stop)
    finally:
        if reporter_task is not None:
            reporter_task.cancel()
            await asyncio.gather(reporter_task, return_exceptions=True)
        await client.aclose()
        for signum in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)


def _run_ray(
    args: argparse.Namespace,
    ctx: Context,
    conn: Connection,
    generate_defaults: dict[str, Any],
    chat_defaults: dict[str, Any],
    stats: BatchStats,
    received: list[int],
) -> None:
    try:
        from lorax.batch.ray import run_batch_ray
    except ImportError as exc:
        raise UsageError(
            f"--engine ray needs Ray Data: pip install 'lorax-client[ray]' ({type(exc).__name__}: {exc})"
        ) from None

    def on_sigterm(signum: int, frame: Any) -> None:
        received.append(signum)
        raise KeyboardInterrupt  # unwinds the driver like Ctrl-C: the rows written stay

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    policy = RetryPolicy(max_retries=args.max_retries, retry_on_status=BATCH_RETRY_STATUS)
    timeout = args.timeout if args.timeout is not None else DEFAULT_TIMEOUT
    # A module-level function and a dataclass: it pickles, so each actor builds its
    # own client from the same settings.
    factory = functools.partial(
        make_async_client, conn, timeout=timeout, max_retries=policy, pool_size=max(100, args.concurrency)
    )
    try:
        run_batch_ray(
            args.input,
            args.output,
            factory,
            workers=args.workers,
            concurrency=args.concurrency,
            retry=policy,
            generate_defaults=generate_defaults,
            chat_defaults=chat_defaults,
            full_response=args.full_response,
            max_connection_failures=args.max_connection_failures,
            address=args.address,
            stats=stats,
            scrub=ctx.secrets.scrub,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
