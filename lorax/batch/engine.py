"""The batch engine: run a JSONL file of requests through LoRAX, resumably.

:func:`run_batch` reads the input (format: :mod:`lorax.batch.lines`), sends each line
through an :class:`lorax.AsyncClient` with ``concurrency`` lines in flight, and writes
one row per line to the output (format, resuming and durability:
:mod:`lorax.batch.output`). :class:`LineRunner` sends one line, with retries; the Ray
Data engine (:mod:`lorax.batch.ray`) runs the same class in its actors, so both engines
write the same rows.

Memory stays flat in the input size: lines are streamed through a bounded queue to
``concurrency`` workers. What grows is a set of ids: all the input's ids while the
input is checked before the run (for duplicates), then the ids already done. Ids are
kept as themselves; that costs about 60 bytes per integer id and 80 to 100 per short
string id, so a million lines take under 100 MB.

Retries follow the client's :class:`~lorax.RetryPolicy` (by default
``client.retry_policy``), applied by the same :class:`~lorax._retry.RetryState` the
client's own calls use, with one addition for batches: a failure after which the
request may have reached the server (a read timeout, a dropped connection) is retried
too, within the same ``max_retries``, since the worst case is a generation computed
twice. The engine runs the loop itself, not the client, to count each line's attempts
and to stop at once when nothing has reached the server yet.

Stopping (:func:`run_batch`'s ``stop`` event, Ctrl-C on the command line) cancels the
lines in flight; they have written nothing and are redone on resume. An unreachable
server (connection refused, DNS failure, TLS failure) stops the run at once when no
request has reached the server yet in this run (``stats.aborted`` and
``stats.unreachable`` are set; no row is written for the lines in flight). Once the
server has answered, the same failure is retried per the retry policy first, so a
restarting server is ridden out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorax._retry import RetryPolicy, RetryState
from lorax._timeout import Deadline
from lorax.batch.lines import (
    INVALID_INPUT,
    BatchInputError,
    InputCheck,
    InvalidLine,
    Request,
    _read_lines,
    check_input,
    parse_line,
    request_kwargs,
)
from lorax.batch.output import BatchOutputError, ResultWriter
from lorax.codec import to_obj
from lorax.errors import (
    APIConnectionError,
    APITimeoutError,
    ClientClosedError,
    LoraxError,
    StreamInterruptedError,
)
from lorax.types import ChatCompletionResponse, EmbedResponse, GenerateResponse

if TYPE_CHECKING:
    from lorax.client import AsyncClient

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MAX_CONNECTION_FAILURES",
    "DEFAULT_WORKERS",
    "BatchRunner",
    "EndpointUnreachableError",
    "BatchStats",
    "LineOutcome",
    "LineRunner",
    "Recorder",
    "failure_row",
    "run_batch",
]

logger = logging.getLogger("lorax.batch")

DEFAULT_CONCURRENCY = 8
# Actors of the Ray engine (lorax.batch.ray); here so that the CLI need not import Ray.
DEFAULT_WORKERS = 2
DEFAULT_MAX_CONNECTION_FAILURES = 10


@dataclass
class BatchStats:
    """Counters of one batch run, updated by the engine as lines finish.

    Attributes:
        total: input lines (a newline count, blank lines included), or None while
            unknown or when not counted.
        done: lines answered successfully in this run.
        failed: lines that failed in this run (``invalid`` included).
        invalid: lines that could not be read as a request (bad JSON, no prompt).
        skipped: lines whose id was already done in the output (resume).
        blank: empty lines, ignored.
        read: lines read from the input so far (at most a queue's worth ahead of
            the lines answered: the input is streamed).
        prompt_tokens, generated_tokens: summed over the lines done in this run.
        interrupted: the run was stopped by a signal before the input ended.
        aborted: why the run gave up early (the server is unreachable), or None.
        unreachable: the run gave up because the server could not be reached
            (connection refused, DNS or TLS failure).
    """

    total: int | None = None
    done: int = 0
    failed: int = 0
    invalid: int = 0
    skipped: int = 0
    blank: int = 0
    read: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    interrupted: bool = False
    aborted: str | None = None
    unreachable: bool = False
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def elapsed(self, now: float | None = None) -> float:
        """Seconds since the run started (frozen once it finished)."""
        end = self.finished if self.finished is not None else (time.monotonic() if now is None else now)
        return max(0.0, end - self.started)

    @property
    def handled(self) -> int:
        """Input lines dealt with so far, whatever the outcome."""
        return self.done + self.failed + self.skipped + self.blank

    def tokens_per_second(self, now: float | None = None) -> float:
        """Generated tokens per second of wall time."""
        elapsed = self.elapsed(now)
        return self.generated_tokens / elapsed if elapsed > 0 else 0.0

    def eta(self, now: float | None = None) -> float | None:
        """Seconds until the input is done at the current pace, or None when unknown."""
        if self.total is None:
            return None
        answered = self.done + self.failed
        elapsed = self.elapsed(now)
        if answered == 0 or elapsed <= 0:
            return None
        remaining = max(0, self.total - self.handled)
        # Skipped and blank lines cost nothing, so the pace counts answered lines only.
        return remaining / (answered / elapsed)


def _generate_result(response: GenerateResponse, full: bool) -> tuple[Any, int | None, int | None]:
    details = response.details
    prompt_tokens = details.prompt_tokens if details is not None else None
    generated = details.generated_tokens if details is not None else None
    if full:
        return to_obj(response), prompt_tokens, generated
    result: dict[str, Any] = {"generated_text": response.generated_text}
    if details is not None:
        result["finish_reason"] = details.finish_reason
    return result, prompt_tokens, generated


def _chat_result(response: ChatCompletionResponse, full: bool) -> tuple[Any, int | None, int | None]:
    prompt_tokens = generated = None
    if response.usage is not None:
        prompt_tokens = response.usage.prompt_tokens
        if response.usage.completion_tokens is not None:
            generated = response.usage.completion_tokens
    if full:
        return to_obj(response), prompt_tokens, generated
    result: dict[str, Any] = {"content": None, "finish_reason": None}
    if response.choices:
        choice = response.choices[0]
        message = choice.message
        result["content"] = message.content if message is not None else None
        result["finish_reason"] = choice.finish_reason
        if message is not None and message.tool_calls:
            result["tool_calls"] = [to_obj(call) for call in message.tool_calls]
    return result, prompt_tokens, generated


def _unreachable(exc: LoraxError) -> bool:
    # Transports mark "nothing reached the server" (refused, DNS, TLS) with
    # request_sent = False; see lorax.transports.base.
    return (
        isinstance(exc, APIConnectionError)
        and not isinstance(exc, StreamInterruptedError)
        and getattr(exc, "request_sent", True) is False
    )


def _replayable(exc: LoraxError) -> bool:
    # The batch addition to the policy: a failure after which the request may have
    # reached the server. An interactive call does not replay those (the user would
    # pay twice for a generation they may already have); a batch line does.
    if isinstance(exc, APITimeoutError):
        return exc.phase != "total"
    return isinstance(exc, APIConnectionError) and not isinstance(exc, StreamInterruptedError)


def _embed_result(response: EmbedResponse, full: bool) -> tuple[Any, int | None, int | None]:
    if full:
        return to_obj(response), None, None
    return {"embeddings": list(response.embeddings)}, None, None


class EndpointUnreachableError(APIConnectionError):
    """No request of the job reached the server (connection refused, DNS or TLS failure).

    Raised by the Ray engine's workers, which stop the job at once: the endpoint is
    wrong or down, and retrying every row would only delay saying so.
    """


def failure_row(ident: str | int, error_type: str, message: str, status: int | None) -> dict[str, Any]:
    """A failed line's row, without timing."""
    return {"id": ident, "ok": False, "error": {"type": error_type, "message": message, "status_code": status}}


@dataclass
class LineOutcome:
    """What :meth:`LineRunner.run` made of one line.

    Attributes:
        record: the output row, or None when the line got no answer because the server
            could not be reached (it is redone on resume).
        error: the error of a failed line (None for a success or an invalid line).
        unreachable: the server could not be reached; the run should stop.
        invalid: the client refused the line's parameters (an ``InvalidInputLine`` row).
        connection_failure: the line failed after its request may have been sent
            (connection reset, read timeout): the server is there but not answering.
        prompt_tokens, generated_tokens: of a success, when the server said.
    """

    record: dict[str, Any] | None
    error: LoraxError | None = None
    unreachable: bool = False
    invalid: bool = False
    connection_failure: bool = False
    prompt_tokens: int | None = None
    generated_tokens: int | None = None


class LineRunner:
    """Sends one line at a time through a client, with the batch retry rules.

    Safe to share between the tasks of one event loop. ``reached`` becomes True once
    the server has answered anything: from then on "cannot connect" is retried (the
    server is restarting) instead of stopping at once (the endpoint is wrong or down).

    Args:
        client: the client; its own retries are switched off for these calls (this
            class runs the loop, to count attempts).
        retry: the policy; by default ``client.retry_policy``.
        generate_defaults: keywords for every ``prompt`` line (a line's own
            ``parameters`` win).
        chat_defaults: keywords for every ``messages`` line.
        full_response: put LoRAX's whole response in ``result``.
        scrub: applied to error messages written to rows (the CLI removes secrets).
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        retry: RetryPolicy | None = None,
        generate_defaults: Mapping[str, Any] | None = None,
        chat_defaults: Mapping[str, Any] | None = None,
        full_response: bool = False,
        scrub: Callable[[str], str] | None = None,
    ) -> None:
        self.retry = retry if retry is not None else client.retry_policy
        self.client = client.with_options(max_retries=None)
        self.generate_defaults = dict(generate_defaults or {})
        self.chat_defaults = dict(chat_defaults or {})
        self.full_response = full_response
        self.scrub: Callable[[str], str] = scrub if scrub is not None else str
        self.reached = False

    async def _call(self, request: Request) -> tuple[Any, int | None, int | None]:
        kwargs = request_kwargs(request, self.generate_defaults, self.chat_defaults)
        if request.kind == "prompt":
            return _generate_result(await self.client.generate(request.payload, **kwargs), self.full_response)
        if request.kind == "embed":
            return _embed_result(await self.client.embed(request.payload, **kwargs), self.full_response)
        return _chat_result(await self.client.chat(request.payload, **kwargs), self.full_response)

    async def run(self, request: Request) -> LineOutcome:
        """Send `request`, retrying per the policy; never raises a :class:`LoraxError`."""
        started = time.monotonic()
        state = RetryState(self.retry, Deadline(None))
        while True:
            try:
                result, prompt_tokens, generated = await self._call(request)
                break
            except LoraxError as exc:
                unreachable = _unreachable(exc)
                if not unreachable and not isinstance(exc, APIConnectionError):
                    self.reached = True  # an HTTP status came back
                if unreachable and not self.reached:
                    # Nothing has reached the server in this run: the endpoint is wrong
                    # or down, and retrying every line would only delay saying so.
                    return LineOutcome(None, exc, unreachable=True)
                delay = state.next_delay(exc, stream_started=False)
                if delay is None and _replayable(exc) and state.attempts <= self.retry.max_retries:
                    delay = self.retry.backoff(state.attempts, exc)
                if delay is None:
                    if unreachable:
                        return LineOutcome(None, exc, unreachable=True)
                    record = failure_row(
                        request.id, type(exc).__name__, self.scrub(exc.message or str(exc)), exc.status_code
                    )
                    record["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
                    record["attempts"] = state.attempts
                    lost = isinstance(exc, APIConnectionError) and not isinstance(exc, ClientClosedError)
                    return LineOutcome(record, exc, connection_failure=lost)
                logger.info(
                    "lorax batch: id %s: %s; retry %d in %.2fs", request.id, type(exc).__name__, state.attempts, delay
                )
                await asyncio.sleep(delay)
            except (TypeError, ValueError) as exc:
                # The line's parameters have the wrong types; the client refused them.
                record = failure_row(request.id, INVALID_INPUT, self.scrub(f"line {request.line}: {exc}"), None)
                record["attempts"] = state.attempts + 1
                return LineOutcome(record, invalid=True)
        self.reached = True
        record = {
            "id": request.id,
            "ok": True,
            "result": result,
            "prompt_tokens": prompt_tokens,
            "generated_tokens": generated,
            "latency_ms": round((time.monotonic() - started) * 1000, 1),
            "attempts": state.attempts + 1,
        }
        return LineOutcome(record, prompt_tokens=prompt_tokens, generated_tokens=generated)


class Recorder:
    """Writes the rows of outcomes and keeps the run's counters (both engines use it).

    ``halted`` is set when the run should stop: the server is unreachable, or
    `max_connection_failures` lines in a row lost their connection after sending.
    """

    def __init__(
        self,
        writer: ResultWriter,
        stats: BatchStats,
        *,
        max_connection_failures: int = DEFAULT_MAX_CONNECTION_FAILURES,
        scrub: Callable[[str], str] | None = None,
    ) -> None:
        self.writer = writer
        self.stats = stats
        self.max_connection_failures = max_connection_failures
        self.scrub: Callable[[str], str] = scrub if scrub is not None else str
        self.halted = asyncio.Event()
        self._connection_failures = 0

    def invalid(self, line: InvalidLine) -> None:
        """Write the row of an input line that is not a request."""
        self.writer.write(failure_row(line.id, INVALID_INPUT, self.scrub(line.message), None))
        self.stats.failed += 1
        self.stats.invalid += 1

    def unreachable(self, exc: LoraxError) -> None:
        """Stop the run: the server could not be reached (no row: the line is redone on resume)."""
        if self.stats.aborted is None:
            self.stats.aborted = f"cannot reach the server: {self.scrub(str(exc))}"
            self.stats.unreachable = True
        self.halted.set()

    def record(self, outcome: LineOutcome) -> None:
        """Count `outcome` and write its row."""
        if outcome.unreachable:
            assert outcome.error is not None
            self.unreachable(outcome.error)
            return
        assert outcome.record is not None
        self.writer.write(outcome.record)
        if outcome.record["ok"]:
            self.stats.done += 1
            self.stats.prompt_tokens += outcome.prompt_tokens or 0
            self.stats.generated_tokens += outcome.generated_tokens or 0
            self._connection_failures = 0
            return
        self.stats.failed += 1
        if outcome.invalid:
            self.stats.invalid += 1
            return
        if outcome.connection_failure:
            self._connection_failures += 1
            limit = self.max_connection_failures
            if limit and self._connection_failures >= limit and self.stats.aborted is None:
                exc = outcome.error
                if exc is not None:
                    last = f"{type(exc).__name__}: {self.scrub(str(exc))}"
                else:  # a row from another process (the Ray engine)
                    last = f"{outcome.record['error']['type']}: {outcome.record['error']['message']}"
                self.stats.aborted = (
                    f"{self._connection_failures} lines in a row could not reach the server (last: {last})"
                )
                self.halted.set()
        else:
            self._connection_failures = 0


class BatchRunner:
    """One run of a batch; see :func:`run_batch` for the arguments."""

    def __init__(
        self,
        client: AsyncClient,
        input_path: str | os.PathLike[str],
        output_path: str | os.PathLike[str],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        retry: RetryPolicy | None = None,
        generate_defaults: Mapping[str, Any] | None = None,
        chat_defaults: Mapping[str, Any] | None = None,
        full_response: bool = False,
        max_connection_failures: int = DEFAULT_MAX_CONNECTION_FAILURES,
        count_total: bool = True,
        stats: BatchStats | None = None,
        scrub: Callable[[str], str] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.input_path = Path(input_path)
        self.output_path = Path(output_path)
        self.concurrency = concurrency
        self.lines = LineRunner(
            client,
            retry=retry,
            generate_defaults=generate_defaults,
            chat_defaults=chat_defaults,
            full_response=full_response,
            scrub=scrub,
        )
        self.max_connection_failures = max_connection_failures
        self.count_total = count_total  # kept for callers; the input is always counted now
        self.stats = stats if stats is not None else BatchStats()
        self._scrub = scrub
        self._done: set[str | int] = set()
        self._recorder: Recorder | None = None
        self._stop: asyncio.Event | None = None

    async def _process(self, request: Request) -> None:
        assert self._recorder is not None
        self._recorder.record(await self.lines.run(request))

    # -- tasks ---------------------------------------------------------------------

    async def _produce(self, queue: asyncio.Queue[Request | None]) -> None:
        # Reading a regular file blocks for microseconds per line: done on the loop.
        for number, raw in _read_lines(self.input_path):
            self.stats.read = number
            parsed = parse_line(raw, number)
            if parsed is None:
                self.stats.blank += 1
                continue
            if parsed.id in self._done:
                self.stats.skipped += 1
                continue
            if isinstance(parsed, InvalidLine):
                assert self._recorder is not None
                self._recorder.invalid(parsed)
                continue
            await queue.put(parsed)
        for _ in range(self.concurrency):
            await queue.put(None)

    def _stopping(self) -> bool:
        halted = self._recorder is not None and self._recorder.halted.is_set()
        return halted or (self._stop is not None and self._stop.is_set())

    async def _work(self, queue: asyncio.Queue[Request | None]) -> None:
        while True:
            request = await queue.get()
            # Checked here too, not only by run(): a worker can take its next line
            # before run() gets to cancel it.
            if request is None or self._stopping():
                return
            await self._process(request)

    async def _check(self, stop: asyncio.Event | None) -> InputCheck | None:
        # In a thread, so that a stop (Ctrl-C) is seen while a big file is read.
        cancel = threading.Event()
        check = asyncio.create_task(asyncio.to_thread(check_input, self.input_path, cancel=cancel, keep_ids=True))
        waiters: list[asyncio.Task[Any]] = [check]
        stopped = asyncio.create_task(stop.wait()) if stop is not None else None
        if stopped is not None:
            waiters.append(stopped)
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if stopped is not None:
                stopped.cancel()
            cancel.set()
        return await check

    async def run(self, stop: asyncio.Event | None = None) -> BatchStats:
        """Process the input; returns the stats (``interrupted`` set when `stop` fired).

        Raises:
            BatchInputError: the input has duplicate ids (nothing was sent and the
                output was not touched).
        """
        if not self.input_path.is_file():
            raise FileNotFoundError(2, "No such file", os.fspath(self.input_path))
        if self.output_path.exists() and os.path.samefile(self.input_path, self.output_path):
            raise BatchOutputError("the output file must not be the input file")
        self._stop = stop
        stats = self.stats
        stats.started = time.monotonic()
        check = await self._check(stop)
        if check is None:
            stats.interrupted = True
            stats.finished = time.monotonic()
            return stats
        if check.duplicates:
            raise BatchInputError(check.duplicate_message(self.input_path))
        stats.total = check.lines
        # Lock first, then repair and read: another run still appending must not have
        # its last line taken for a torn one and cut off.
        writer = ResultWriter(self.output_path)
        try:
            self._done = writer.prepare(check.ids)
        except BaseException:
            writer.close()
            raise
        self._recorder = recorder = Recorder(
            writer, stats, max_connection_failures=self.max_connection_failures, scrub=self._scrub
        )
        del check  # the input's ids: only the done ones are needed from here on
        queue: asyncio.Queue[Request | None] = asyncio.Queue(maxsize=self.concurrency * 2)
        work = [asyncio.create_task(self._produce(queue), name="lorax-batch-reader")]
        work += [asyncio.create_task(self._work(queue), name=f"lorax-batch-{i}") for i in range(self.concurrency)]
        halt = asyncio.create_task(recorder.halted.wait())
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
            # Stop reading and cancel the lines in flight: they have written nothing
            # and will be redone on resume.
            for task in [*work, *waiters]:
                task.cancel()
            await asyncio.gather(*work, *waiters, return_exceptions=True)
            writer.close()
            stats.finished = time.monotonic()
        return stats


async def run_batch(
    client: AsyncClient,
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
    """Run every line of `input_path` through `client`, writing one row per line to `output_path`.

    The file formats, resuming and durability are described in this module's
    docstring. The whole input is checked first; duplicate ids raise
    :class:`BatchInputError` before anything is sent. One failing line never stops
    the batch: its error is written and the next line goes on. The run stops early
    only when `stop` is set (lines in flight are cancelled and ``stats.interrupted``
    is True), when the server cannot be reached (``stats.aborted`` says why and
    ``stats.unreachable`` is True), or when `max_connection_failures` lines in a row
    failed after their request may have been sent (0 never gives up).

    Args:
        client: a :class:`lorax.AsyncClient` (any transport). It is not closed here.
        input_path: the JSONL requests.
        output_path: the JSONL results; created, or resumed.
        concurrency: lines in flight at once.
        retry: how failed calls are retried; by default the client's policy (429,
            503 and ``overloaded``). Failures after which the request may have
            reached the server (read timeouts, dropped connections) are retried too.
        generate_defaults: keywords for every ``prompt`` line (a line's own
            ``parameters`` win).
        chat_defaults: keywords for every ``messages`` line.
        full_response: put LoRAX's whole response in ``result``.
        max_connection_failures: give up after this many lines in a row failed with
            a connection error.
        stop: set it to stop the run cleanly.
        stats: counters to update (for showing progress while it runs).

    Returns:
        The run's :class:`BatchStats`.

    Raises:
        BatchInputError: duplicate ids in the input.

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
