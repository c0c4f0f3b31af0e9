"""``lorax batch``: run a JSONL file of prompts through LoRAX, resumably.

Input, one JSON object per line::

    {"id": "q1", "prompt": "Why is the sky blue?", "parameters": {"max_new_tokens": 64}}
    {"id": "q2", "messages": [{"role": "user", "content": "Hi"}], "adapter_id": "me/chat"}

``prompt`` goes to ``/generate`` and ``parameters`` are :meth:`lorax.AsyncClient.generate`
keywords (LoRAX's ``stop`` is accepted for ``stop_sequences``); ``messages`` goes to
``/v1/chat/completions`` and ``parameters`` are :meth:`lorax.AsyncClient.chat` keywords.
``adapter_id`` at the top level wins over one in ``parameters``. A line without ``id``
gets its line number (from 1). Blank lines are ignored.

Output, one line per answered input line, appended::

    {"id": "q1", "ok": true, "result": {"generated_text": "...", "finish_reason": "length"},
     "prompt_tokens": 7, "generated_tokens": 64, "latency_ms": 812.3, "attempts": 1}
    {"id": "q2", "ok": false, "error": {"type": "OverloadedError", "message": "...", "status_code": 429},
     "latency_ms": 20512.0, "attempts": 9}

Chat results are ``{"content", "finish_reason"}`` (plus ``tool_calls`` when there are
some); ``full_response=True`` puts LoRAX's whole response there instead. Lines that are
not valid requests fail with ``"type": "InvalidInputLine"``; the batch goes on.

Resuming: the output is scanned first and every id with an ``ok: true`` line is skipped;
failed ids are tried again and their new line is appended (the last line for an id is
its current state; ``ok: true`` lines are never duplicated by a rerun). A line torn by a
crash (no final newline) is cut off before anything is appended.

Memory stays flat in the input size: lines are streamed through a bounded queue to
``concurrency`` workers. The only state that grows is the set of ids already done in
the output (read when a run starts), kept as the ids themselves: ``1`` and ``"1"`` are
different ids. That costs about 60 bytes per integer id and 80 to 100 per short string
id, so resuming after a million done lines takes under 100 MB.

Durability: each result is one ``write`` of one complete line to an unbuffered file
opened for appending, so a finished result is on its way to disk before the next one
starts, and an interrupted run never leaves half a line (short of a crash in the middle
of that write, which the next run repairs). Stopping (:func:`run_batch`'s ``stop`` event,
Ctrl-C on the command line) cancels the lines in flight; they have written nothing
and are redone on resume.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import contextlib
import inspect
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from lorax._cli.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
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
from lorax._cli.progress import BatchStats, ProgressReporter, format_summary
from lorax._retry import RetryPolicy
from lorax.codec import to_obj
from lorax.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ClientClosedError,
    LoraxError,
)

__all__ = [
    "INVALID_INPUT",
    "BatchStats",
    "count_lines",
    "register",
    "run_batch",
    "scan_output",
]

logger = logging.getLogger("lorax.batch")

INVALID_INPUT = "InvalidInputLine"
DEFAULT_CONCURRENCY = 8
DEFAULT_MAX_RETRIES = 8
# Non-streaming generations send nothing until they are done; 60 s of silence is normal
# for a long generation on a busy server, so batch waits longer before calling it dead.
DEFAULT_TIMEOUT = 300.0
DEFAULT_MAX_CONNECTION_FAILURES = 10
# Statuses retried on top of the policy's (429, 503): a proxy's 502/504 in front of a
# busy server is transient too, and re-running a generation costs only compute.
EXTRA_RETRY_STATUS = frozenset({502, 504})

_GENERATE_KEYS: frozenset[str] | None = None
_CHAT_KEYS: frozenset[str] | None = None


def _keywords(function: Any, exclude: str) -> frozenset[str]:
    params = inspect.signature(function).parameters
    return frozenset(name for name in params if name not in ("self", exclude))


def _allowed_keys(kind: str) -> frozenset[str]:
    # From the client's own signatures, so the batch accepts whatever a newer client does.
    global _GENERATE_KEYS, _CHAT_KEYS
    from lorax.client import AsyncClient

    if kind == "prompt":
        if _GENERATE_KEYS is None:
            _GENERATE_KEYS = _keywords(AsyncClient.generate, "prompt")
        return _GENERATE_KEYS
    if _CHAT_KEYS is None:
        _CHAT_KEYS = _keywords(AsyncClient.chat, "messages")
    return _CHAT_KEYS


# ---------------------------------------------------------------------------------
# Input lines


@dataclass(frozen=True)
class _Request:
    """A valid input line, ready to send."""

    line: int
    id: str | int
    kind: str  # "prompt" or "messages"
    payload: Any
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class _Invalid:
    """An input line that is not a request; reported in the output, never sent."""

    line: int
    id: str | int
    message: str


def _is_id(value: Any) -> bool:
    # Strings and integers only: they hash and compare exactly (1.0 == 1 == True would
    # make different ids one), and a set of them costs tens of bytes per id.
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def parse_line(raw: bytes, line: int) -> _Request | _Invalid | None:
    """Read one input line; None for a blank one."""
    if not raw.strip():
        return None
    if line == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]  # files saved by some Windows editors start with one
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _Invalid(line, line, f"line {line}: not valid JSON: {exc}")
    if not isinstance(obj, dict):
        return _Invalid(line, line, f"line {line}: expected a JSON object, got {type(obj).__name__}")
    ident = obj.get("id", line)
    if not _is_id(ident):
        return _Invalid(line, line, f"line {line}: id must be a string or an integer")
    has_prompt, has_messages = "prompt" in obj, "messages" in obj
    if has_prompt == has_messages:
        what = "both 'prompt' and 'messages'" if has_prompt else "neither 'prompt' nor 'messages'"
        return _Invalid(line, ident, f"line {line}: has {what}; give exactly one")
    kind = "prompt" if has_prompt else "messages"
    payload = obj[kind]
    if kind == "prompt" and not isinstance(payload, str):
        return _Invalid(line, ident, f"line {line}: 'prompt' must be a string")
    if kind == "messages" and not (isinstance(payload, list) and payload):
        return _Invalid(line, ident, f"line {line}: 'messages' must be a non-empty list")
    parameters = obj.get("parameters", {})
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        return _Invalid(line, ident, f"line {line}: 'parameters' must be an object")
    parameters = dict(parameters)
    if kind == "prompt" and "stop" in parameters and "stop_sequences" not in parameters:
        parameters["stop_sequences"] = parameters.pop("stop")  # LoRAX's wire name
    unknown = sorted(set(parameters) - _allowed_keys(kind))
    if unknown:
        route = "generate" if kind == "prompt" else "chat"
        return _Invalid(line, ident, f"line {line}: unknown {route} parameter(s): {', '.join(unknown)}")
    adapter = obj.get("adapter_id")
    if adapter is not None:
        if not isinstance(adapter, str):
            return _Invalid(line, ident, f"line {line}: 'adapter_id' must be a string")
        parameters["adapter_id"] = adapter
    return _Request(line, ident, kind, payload, parameters)


def count_lines(path: str | os.PathLike[str], cancel: threading.Event | None = None) -> int | None:
    """Count the lines of a file by its newlines, in 1 MiB reads (no parsing).

    Returns None when `cancel` is set before the end. A last line without a newline
    counts too.
    """
    count = 0
    last = b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            if cancel is not None and cancel.is_set():
                return None
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (0 if last == b"\n" else 1)


# ---------------------------------------------------------------------------------
# Output file


def scan_output(path: str | os.PathLike[str]) -> tuple[set[str | int], int]:
    """Read a previous run's output: the keys of ids done, and the bytes of a torn tail cut off.

    A last line without its newline can only come from a crash in the middle of a
    write; it is truncated so the next append starts on a line of its own. Complete
    lines that are not JSON (hand edits) are kept, ignored, and logged.
    """
    done: set[str | int] = set()
    target = Path(path)
    if not target.exists():
        return done, 0
    good_end = 0
    corrupt = 0
    with open(target, "r+b") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            good_end += len(raw)
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                corrupt += 1
                continue
            if isinstance(record, dict) and record.get("ok") is True and _is_id(record.get("id")):
                done.add(record["id"])
        size = f.seek(0, os.SEEK_END)
        torn = size - good_end
        if torn:
            f.truncate(good_end)
    if torn:
        logger.warning("lorax batch: cut a torn last line (%d bytes) left by an earlier crash from %s", torn, target)
    if corrupt:
        logger.warning("lorax batch: ignored %d line(s) of %s that are not JSON", corrupt, target)
    return done, torn


class _ResultWriter:
    """Appends result lines, each with one unbuffered write."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - closed by close()
        _lock_exclusively(self._file, path)

    def write(self, record: Mapping[str, Any]) -> None:
        data = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        view = memoryview(data)
        # A regular file takes it in one write; the loop covers the rare short write.
        while view:
            written = self._file.write(view)
            if written is None:  # pragma: no cover - only for non-blocking files
                continue
            view = view[written:]

    def close(self) -> None:
        self._file.close()


def _lock_exclusively(file: IO[bytes], path: str | os.PathLike[str]) -> None:
    # Two runs appending to one output would both redo the same ids. POSIX only: on
    # other systems the second run is simply not prevented.
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.close()
        raise UsageError(f"another lorax batch is writing to {os.fspath(path)}") from None


# ---------------------------------------------------------------------------------
# The engine


def _retryable(policy: RetryPolicy, exc: LoraxError) -> bool:
    if policy.is_retryable(exc, stream_started=False):
        return True
    # Unlike an interactive call, a batch line may be sent again after a failure that
    # might have reached the server: the worst case is a generation computed twice.
    if isinstance(exc, APITimeoutError):
        return exc.phase != "total"
    if isinstance(exc, APIConnectionError):
        return True
    return isinstance(exc, APIStatusError) and exc.status_code in EXTRA_RETRY_STATUS


def _generate_result(response: Any, full: bool) -> tuple[Any, int | None, int | None]:
    details = response.details if response.HasField("details") else None
    prompt_tokens = details.prompt_tokens if details is not None else None
    generated = details.generated_tokens if details is not None else None
    if full:
        return to_obj(response), prompt_tokens, generated
    result: dict[str, Any] = {"generated_text": response.generated_text}
    if details is not None:
        result["finish_reason"] = details.finish_reason
    return result, prompt_tokens, generated


def _chat_result(response: Any, full: bool) -> tuple[Any, int | None, int | None]:
    prompt_tokens = generated = None
    if response.HasField("usage"):
        prompt_tokens = response.usage.prompt_tokens
        if response.usage.HasField("completion_tokens"):
            generated = response.usage.completion_tokens
    if full:
        return to_obj(response), prompt_tokens, generated
    result: dict[str, Any] = {"content": None, "finish_reason": None}
    if response.choices:
        choice = response.choices[0]
        message = choice.message
        result["content"] = message.content if message.HasField("content") else None
        result["finish_reason"] = choice.finish_reason if choice.HasField("finish_reason") else None
        if message.tool_calls:
            result["tool_calls"] = [to_obj(call) for call in message.tool_calls]
    return result, prompt_tokens, generated


class BatchRunner:
    """One run of a batch; see :func:`run_batch` for the arguments."""

    def __init__(
        self,
        client: Any,
        input_path: str | os.PathLike[str],
        output_path: str | os.PathLike[str],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        retry: RetryPolicy | None = None,
        generate_defaults: Mapping[str, Any] | None = None,
        chat_defaults: Mapping[str, Any] | None = None,
        full_response: bool = False,
        max_connection_failures: int = DEFAULT_MAX_CONNECTION_FAILURES,
        count_total: bool = False,
        stats: BatchStats | None = None,
        scrub: Callable[[str], str] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.input_path = Path(input_path)
        self.output_path = Path(output_path)
        self.concurrency = concurrency
        self.retry = retry if retry is not None else client.retry_policy
        # The runner owns retries (to count attempts and retry more kinds of failure),
        # so each call goes through a view of the client that does not retry itself.
        self.client = client.with_options(max_retries=None)
        self.generate_defaults = dict(generate_defaults or {})
        self.chat_defaults = dict(chat_defaults or {})
        self.full_response = full_response
        self.max_connection_failures = max_connection_failures
        self.count_total = count_total
        self.stats = stats if stats is not None else BatchStats()
        self._scrub: Callable[[str], str] = scrub if scrub is not None else str
        self._done: set[str | int] = set()
        self._writer: _ResultWriter | None = None
        self._connection_failures = 0
        self._halt = asyncio.Event()
        self._stop: asyncio.Event | None = None

    # -- lines ---------------------------------------------------------------------

    def _write(self, record: dict[str, Any]) -> None:
        assert self._writer is not None
        self._writer.write(record)

    def _fail(self, ident: Any, error_type: str, message: str, status: int | None, **extra: Any) -> None:
        self._write(
            {
                "id": ident,
                "ok": False,
                "error": {"type": error_type, "message": self._scrub(message), "status_code": status},
                **extra,
            }
        )
        self.stats.failed += 1

    async def _call(self, request: _Request) -> tuple[Any, int | None, int | None]:
        if request.kind == "prompt":
            kwargs = {"details": True, **self.generate_defaults, **request.parameters}
            response = await self.client.generate(request.payload, **kwargs)
            return _generate_result(response, self.full_response)
        kwargs = {**self.chat_defaults, **request.parameters}
        response = await self.client.chat(request.payload, **kwargs)
        return _chat_result(response, self.full_response)

    async def _process(self, request: _Request) -> None:
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            try:
                result, prompt_tokens, generated = await self._call(request)
                break
            except LoraxError as exc:
                delay = None
                if attempts <= self.retry.max_retries and _retryable(self.retry, exc):
                    delay = self.retry.backoff(attempts, exc)
                if delay is None:
                    self._line_failed(request, exc, started, attempts)
                    return
                logger.info(
                    "lorax batch: id %s: %s; retry %d in %.2fs", request.id, type(exc).__name__, attempts, delay
                )
                await asyncio.sleep(delay)
            except (TypeError, ValueError) as exc:
                # The line's parameters have the wrong types; the client refused them.
                self._fail(request.id, INVALID_INPUT, f"line {request.line}: {exc}", None, attempts=attempts)
                self.stats.invalid += 1
                return
        self._write(
            {
                "id": request.id,
                "ok": True,
                "result": result,
                "prompt_tokens": prompt_tokens,
                "generated_tokens": generated,
                "latency_ms": round((time.monotonic() - started) * 1000, 1),
                "attempts": attempts,
            }
        )
        self.stats.done += 1
        self.stats.prompt_tokens += prompt_tokens or 0
        self.stats.generated_tokens += generated or 0
        self._connection_failures = 0

    def _line_failed(self, request: _Request, exc: LoraxError, started: float, attempts: int) -> None:
        self._fail(
            request.id,
            type(exc).__name__,
            exc.message or str(exc),
            exc.status_code,
            latency_ms=round((time.monotonic() - started) * 1000, 1),
            attempts=attempts,
        )
        if isinstance(exc, APIConnectionError) and not isinstance(exc, ClientClosedError):
            self._connection_failures += 1
            limit = self.max_connection_failures
            if limit and self._connection_failures >= limit and self.stats.aborted is None:
                self.stats.aborted = (
                    f"{self._connection_failures} lines in a row could not reach the server "
                    f"(last: {type(exc).__name__}: {self._scrub(str(exc))})"
                )
                self._halt.set()
        else:
            self._connection_failures = 0

    # -- tasks ---------------------------------------------------------------------

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        with open(self.input_path, "rb") as f:
            yield from enumerate(f, start=1)

    async def _produce(self, queue: asyncio.Queue[_Request | None]) -> None:
        # Reading a regular file blocks for microseconds per line: done on the loop.
        for number, raw in self._lines():
            self.stats.read = number
            parsed = parse_line(raw, number)
            if parsed is None:
                self.stats.blank += 1
                continue
            if parsed.id in self._done:
                self.stats.skipped += 1
                continue
            if isinstance(parsed, _Invalid):
                self._fail(parsed.id, INVALID_INPUT, parsed.message, None)
                self.stats.invalid += 1
                continue
            await queue.put(parsed)
        for _ in range(self.concurrency):
            await queue.put(None)

    def _stopping(self) -> bool:
        return self._halt.is_set() or (self._stop is not None and self._stop.is_set())

    async def _work(self, queue: asyncio.Queue[_Request | None]) -> None:
        while True:
            request = await queue.get()
            # Checked here too, not only by run(): a worker can take its next line
            # before run() gets to cancel it.
            if request is None or self._stopping():
                return
            await self._process(request)

    async def _count(self, cancel: threading.Event) -> None:
        self.stats.total = await asyncio.to_thread(count_lines, self.input_path, cancel)

    async def run(self, stop: asyncio.Event | None = None) -> BatchStats:
        """Process the input; returns the stats (``interrupted`` set when `stop` fired)."""
        if not self.input_path.is_file():
            raise FileNotFoundError(2, "No such file", os.fspath(self.input_path))
        if self.output_path.exists() and os.path.samefile(self.input_path, self.output_path):
            raise UsageError("the output file must not be the input file")
        self._stop = stop
        # Lock first, then repair and read: another run still appending must not have
        # its last line taken for a torn one and cut off.
        self._writer = _ResultWriter(self.output_path)
        try:
            self._done, _ = scan_output(self.output_path)
        except BaseException:
            self._writer.close()
            raise
        stats = self.stats
        stats.started = time.monotonic()
        queue: asyncio.Queue[_Request | None] = asyncio.Queue(maxsize=self.concurrency * 2)
        cancel_count = threading.Event()
        work = [asyncio.create_task(self._produce(queue), name="lorax-batch-reader")]
        work += [asyncio.create_task(self._work(queue), name=f"lorax-batch-{i}") for i in range(self.concurrency)]
        helpers: list[asyncio.Task[Any]] = []
        if self.count_total:
            helpers.append(asyncio.create_task(self._count(cancel_count)))
        halt = asyncio.create_task(self._halt.wait())
        stopped = asyncio.create_task(stop.wait()) if stop is not None else None
        waiters = [halt] + ([stopped] if stopped is not None else [])
        try:
            pending: set[asyncio.Task[Any]] = set(work) | set(waiters)
            while any(not task.done() for task in work):
                finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if stopped is not None and stopped in finished:
                    stats.interrupted = True
                    break
                if halt in finished:
                    break
                for task in finished:
                    failure = None if task.cancelled() else task.exception()
                    if failure is not None:
                        # A bug or an I/O error (disk full): stop, keeping what was written.
                        raise failure
        finally:
            cancel_count.set()
            # Stop reading and cancel the lines in flight: they have written nothing
            # and will be redone on resume.
            for task in [*work, *helpers, *waiters]:
                task.cancel()
            await asyncio.gather(*work, *helpers, *waiters, return_exceptions=True)
            self._writer.close()
            stats.finished = time.monotonic()
        return stats


async def run_batch(
    client: Any,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    retry: RetryPolicy | None = None,
    generate_defaults: Mapping[str, Any] | None = None,
    chat_defaults: Mapping[str, Any] | None = None,
    full_response: bool = False,
    max_connection_failures: int = DEFAULT_MAX_CONNECTION_FAILURES,
    stop: asyncio.Event | None = None,
    stats: BatchStats | None = None,
) -> BatchStats:
    """Run every line of `input_path` through `client`, appending results to `output_path`.

    The file formats, resuming and durability are described in this module's
    docstring. One failing line never stops the batch: its error is written and the
    next line goes on. The run stops early only when `stop` is set (lines in flight
    are cancelled and ``stats.interrupted`` is True) or when
    `max_connection_failures` lines in a row could not reach the server
    (``stats.aborted`` says so; 0 never gives up).

    Args:
        client: a :class:`lorax.AsyncClient` (any transport). It is not closed here.
        input_path: the JSONL requests.
        output_path: the JSONL results; created, or appended to and resumed.
        concurrency: lines in flight at once.
        retry: how failed calls are retried; by default the client's policy. 429,
            503, 502, 504, ``overloaded`` and connection failures are retried.
        generate_defaults: keywords for every ``prompt`` line (a line's own
            ``parameters`` win).
        chat_defaults: keywords for every ``messages`` line.
        full_response: put LoRAX's whole response in ``result``.
        max_connection_failures: give up after this many lines in a row failed to
            reach the server.
        stop: set it to stop the run cleanly.
        stats: counters to update (for showing progress while it runs).

    Returns:
        The run's :class:`BatchStats`.

    Example::

        async with lorax.AsyncClient(url) as client:
            stats = await run_batch(client, "in.jsonl", "out.jsonl", concurrency=32)
    """
    runner = BatchRunner(
        client,
        input_path,
        output_path,
        concurrency=concurrency,
        retry=retry,
        generate_defaults=generate_defaults,
        chat_defaults=chat_defaults,
        full_response=full_response,
        max_connection_failures=max_connection_failures,
        stats=stats,
    )
    return await runner.run(stop)


# ---------------------------------------------------------------------------------
# The subcommand


def register(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    """Add the ``batch`` subcommand."""
    parser = subparsers.add_parser(
        "batch",
        parents=[parent],
        help="run a JSONL file of prompts or chats, resumably, with N requests in flight",
        description=(
            'Each INPUT line is {"id": ..., "prompt": "..."} or {"id": ..., "messages": [...]}, with optional '
            '"parameters" and "adapter_id". Results are appended to OUTPUT, one line per input line; rerunning '
            "skips the ids already done. Options given here are defaults that a line's parameters override. "
            "Exit code 0 when every line succeeded, 1 when some failed (rerun to retry them), 130 on Ctrl-C."
        ),
    )
    parser.add_argument("input", metavar="INPUT.jsonl", help="the requests, one JSON object per line")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT.jsonl", help="results (appended; resumed)")
    parser.add_argument(
        "-c",
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"requests in flight (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress display on stderr")
    parser.add_argument("--full-response", action="store_true", help="store LoRAX's whole response as the result")
    parser.add_argument(
        "--max-connection-failures",
        type=int,
        default=DEFAULT_MAX_CONNECTION_FAILURES,
        metavar="N",
        help=f"stop after N lines in a row cannot reach the server (default {DEFAULT_MAX_CONNECTION_FAILURES}; "
        "0: never)",
    )
    add_adapter_options(parser)
    add_sampling_options(parser)
    add_native_generation_options(parser, details=False)
    add_connection_options(
        parser,
        max_retries_default=DEFAULT_MAX_RETRIES,
        timeout_default=DEFAULT_TIMEOUT,
        retries_help="retries per line for 429, overloaded, 502/503/504, timeouts and connection failures",
    )
    parser.set_defaults(run=run_batch_command, _parser=parser)


def run_batch_command(args: argparse.Namespace, ctx: Context) -> int:
    """``lorax batch``: run, print the summary, and map the outcome to an exit code."""
    if args.concurrency < 1:
        raise UsageError("--concurrency must be >= 1")
    if args.input == "-":
        raise UsageError("batch reads INPUT again when it resumes, so it must be a file, not stdin")
    generate_defaults = generate_kwargs(args)
    chat_defaults = chat_kwargs(args)
    conn = ctx.connection(args)
    stats = BatchStats()
    received: list[int] = []  # the signals that stopped the run
    try:
        asyncio.run(_run(args, ctx, conn, generate_defaults, chat_defaults, stats, received))
    except KeyboardInterrupt:
        # A second Ctrl-C (or a platform without loop signal handlers).
        stats.interrupted = True
        received.append(int(signal.SIGINT))
    if stats.finished is None:
        stats.finished = time.monotonic()
    ctx.stderr.write(format_summary(stats) + "\n")
    ctx.stderr.flush()
    if stats.interrupted:
        return EXIT_TERMINATED if received and received[0] == signal.SIGTERM else EXIT_INTERRUPTED
    if stats.aborted or stats.failed:
        return EXIT_ERROR
    return EXIT_OK


async def _run(
    args: argparse.Namespace,
    ctx: Context,
    conn: Any,
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

    policy = RetryPolicy(max_retries=args.max_retries)
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


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
