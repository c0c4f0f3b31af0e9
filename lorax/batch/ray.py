"""Batch jobs on Ray Data: the same lines as ``lorax batch``, on many machines.

Needs ``pip install 'lorax-client[ray]'`` (Ray Data and pyarrow); this module imports
:mod:`ray` and is imported only when used.

Two entry points:

- :func:`process_dataset` adds LoRAX results to a :class:`ray.data.Dataset` of rows
  (a prompt column, optional per-row parameters): the transform for pipelines that
  already run on Ray.
- :func:`run_batch_ray` runs a ``lorax batch`` input file (JSONL, or Parquet) on Ray,
  writing the same output rows as :func:`lorax.batch.run_batch`, with the same resume;
  ``lorax batch IN -o OUT --engine ray`` calls it.

Both run ``map_batches`` on a fixed pool of actors. Each actor holds one
:class:`lorax.AsyncClient` and sends every row through the local engine's
:class:`~lorax.batch.LineRunner` (so rows, retries and attempt counts are the local
engine's), with at most ``concurrency`` requests in flight per actor: ``workers`` x
``concurrency`` requests in flight in all. The UDF is ``async``: Ray Data runs it on
an event loop in the actor, and lets an actor take its next batch while the last one's
stragglers finish (``max_concurrent_calls_per_actor``), so the ``concurrency`` slots
stay busy across batch boundaries. (A sync :class:`lorax.Client` over a thread pool
was measured against it: bench/bench_batch_ray.py.)

A row that fails gets its error in its result columns and the job goes on. Overload
(429, 503, ``overloaded``) is retried per the client's :class:`~lorax.RetryPolicy`. When
nothing has reached the server yet (connection refused, DNS or TLS failure), the worker
raises :class:`~lorax.batch.engine.EndpointUnreachableError` and the job fails at once
with that one error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import ray
import ray.data
from ray.data import ActorPoolStrategy

from lorax._retry import RetryPolicy
from lorax.batch.engine import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_CONNECTION_FAILURES,
    DEFAULT_WORKERS,
    BatchStats,
    EndpointUnreachableError,
    LineOutcome,
    LineRunner,
    Recorder,
    failure_row,
)
from lorax.batch.lines import (
    INVALID_INPUT,
    BatchInputError,
    InvalidLine,
    Kind,
    Request,
    _read_lines,
    build_request,
    check_input,
    parse_line,
)
from lorax.batch.output import BatchOutputError, ResultWriter

if TYPE_CHECKING:
    from lorax.client import AsyncClient

__all__ = [
    "DEFAULT_WORKERS",
    "RESULT_COLUMNS",
    "ClientSpec",
    "EndpointUnreachableError",
    "process_dataset",
    "run_batch_ray",
]

logger = logging.getLogger("lorax.batch")

# Rows handed to an actor per call, as a multiple of its concurrency: big enough that
# the per-call overhead of Ray Data (a few ms) is small against the requests' time.
BATCH_ROWS_PER_SLOT = 4
# Batches an actor works on at once: the next batch starts while the last one's slowest
# requests finish, so no slot idles at a batch boundary.
CALLS_PER_ACTOR = 2
# A worker waits on the network; a quarter of a CPU lets 4 of them share a core and
# leaves CPUs for Ray Data's own read and write tasks.
DEFAULT_NUM_CPUS = 0.25

#: The columns :func:`process_dataset` adds (for ``task="embed"``: ``embedding`` instead
#: of ``text`` and ``finish_reason``).
RESULT_COLUMNS = (
    "ok",
    "text",
    "finish_reason",
    "prompt_tokens",
    "generated_tokens",
    "error_type",
    "error_message",
    "status_code",
    "attempts",
    "latency_ms",
)

_TASKS: dict[str, Kind] = {"generate": "prompt", "chat": "messages", "embed": "embed"}


@dataclass(frozen=True)
class ClientSpec:
    """How each actor builds its client; sent to the actors, so it must pickle.

    Attributes:
        endpoint: the LoRAX URL, or a picklable function that returns a new
            :class:`lorax.AsyncClient` (for Predibase, a gateway, custom transports).
        options: :class:`lorax.AsyncClient` keyword arguments (``headers``,
            ``timeout``, ``max_retries`` ...), with a URL endpoint.
    """

    endpoint: str | Callable[[], AsyncClient]
    options: Mapping[str, Any] = field(default_factory=dict)

    def make(self) -> AsyncClient:
        """A new client."""
        if callable(self.endpoint):
            return self.endpoint()
        from lorax.client import AsyncClient

        return AsyncClient(self.endpoint, **self.options)


@dataclass(frozen=True)
class _WorkerConfig:
    client: ClientSpec
    concurrency: int
    retry: RetryPolicy | None
    generate_defaults: Mapping[str, Any]
    chat_defaults: Mapping[str, Any]
    full_response: bool
    scrub: Callable[[str], str] | None


class _Worker:
    """One actor: one client, at most ``concurrency`` requests in flight."""

    def __init__(self, config: _WorkerConfig) -> None:
        self._config = config
        self._lines: LineRunner | None = None
        self._slots: asyncio.Semaphore | None = None

    def _runner(self) -> tuple[LineRunner, asyncio.Semaphore]:
        # Built on the first call, on the actor's event loop, where the client's
        # connections will live.
        if self._lines is None or self._slots is None:
            config = self._config
            self._lines = LineRunner(
                config.client.make(),
                retry=config.retry,
                generate_defaults=config.generate_defaults,
                chat_defaults=config.chat_defaults,
                full_response=config.full_response,
                scrub=config.scrub,
            )
            self._slots = asyncio.Semaphore(config.concurrency)
        return self._lines, self._slots

    async def _run_all(self, requests: Sequence[Request | InvalidLine]) -> list[LineOutcome]:
        lines, slots = self._runner()

        async def one(request: Request | InvalidLine) -> LineOutcome:
            if isinstance(request, InvalidLine):
                record = failure_row(request.id, INVALID_INPUT, lines.scrub(request.message), None)
                return LineOutcome(record, invalid=True)
            async with slots:
                return await lines.run(request)

        outcomes = await asyncio.gather(*(one(request) for request in requests))
        for outcome in outcomes:
            if outcome.unreachable:
                raise EndpointUnreachableError(f"cannot reach the server: {lines.scrub(str(outcome.error))}")
        return outcomes


# ---------------------------------------------------------------------------------
# The Dataset transform


@dataclass(frozen=True)
class _Columns:
    task: str
    column: str
    parameters: str | None
    adapter: str | None
    defaults: Mapping[str, Any]


def _parameters(value: Any) -> Any:
    # A column of dicts becomes an Arrow struct of every key seen, with nulls where a
    # row had none: a null is "not given", as for the client's keywords.
    if isinstance(value, (str, bytes)):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value  # reported by build_request as "must be an object"
    if isinstance(value, dict):
        return {key: item for key, item in value.items() if item is not None}
    return value


class _RowWorker(_Worker):
    def __init__(self, config: _WorkerConfig, columns: _Columns) -> None:
        super().__init__(config)
        self._columns = columns

    async def __call__(self, batch: pa.Table) -> pa.Table:
        columns = self._columns
        kind = _TASKS[columns.task]
        added = _added_columns(kind)
        clash = sorted(set(added) & set(batch.column_names))
        if clash:
            raise BatchInputError(
                f"the dataset already has column(s) {', '.join(clash)} that the results would replace"
            )
        if columns.column not in batch.column_names:
            raise BatchInputError(f"the dataset has no column {columns.column!r} (columns: {batch.column_names})")
        requests: list[Request | InvalidLine] = []
        for index, row in enumerate(batch.to_pylist(), start=1):
            parameters = _parameters(row.get(columns.parameters)) if columns.parameters else None
            if columns.defaults and (parameters is None or isinstance(parameters, dict)):
                parameters = {**columns.defaults, **(parameters or {})}
            adapter = row.get(columns.adapter) if columns.adapter else None
            requests.append(build_request(index, index, kind, row[columns.column], parameters, adapter))
        outcomes = await self._run_all(requests)
        values: dict[str, list[Any]] = {name: [] for name in added}
        for outcome in outcomes:
            _add_row(values, kind, outcome)
        types = {
            "ok": pa.bool_(),
            "text": pa.string(),
            "finish_reason": pa.string(),
            "prompt_tokens": pa.int64(),
            "generated_tokens": pa.int64(),
            "error_type": pa.string(),
            "error_message": pa.string(),
            "status_code": pa.int64(),
            "attempts": pa.int64(),
            "latency_ms": pa.float64(),
            "embedding": pa.list_(pa.float32()),
        }
        for name in added:
            batch = batch.append_column(name, pa.array(values[name], type=types[name]))
        return batch


def _added_columns(kind: Kind) -> list[str]:
    if kind == "embed":  # no text: the vector is the result
        return [name for name in RESULT_COLUMNS if name not in ("text", "finish_reason")] + ["embedding"]
    return list(RESULT_COLUMNS)


def _add_row(values: dict[str, list[Any]], kind: Kind, outcome: LineOutcome) -> None:
    record = outcome.record
    assert record is not None
    result = record.get("result") or {}
    error = record.get("error") or {}
    ok = bool(record["ok"])
    values["ok"].append(ok)
    if kind == "embed":
        values["embedding"].append(result.get("embeddings") if ok else None)
    else:
        text = result.get("generated_text") if kind == "prompt" else result.get("content")
        values["text"].append(text if isinstance(text, str) else None)
        values["finish_reason"].append(result.get("finish_reason"))
    values["prompt_tokens"].append(record.get("prompt_tokens"))
    values["generated_tokens"].append(record.get("generated_tokens"))
    values["error_type"].append(error.get("type"))
    values["error_message"].append(error.get("message"))
    values["status_code"].append(error.get("status_code"))
    values["attempts"].append(record.get("attempts"))
    values["latency_ms"].append(record.get("latency_ms"))


def _compute(workers: int, concurrency: int) -> ActorPoolStrategy:
    if workers < 1:
        raise ValueError("workers must be >= 1")
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    return ActorPoolStrategy(size=workers, max_concurrent_calls_per_actor=CALLS_PER_ACTOR)


def process_dataset(
    dataset: ray.data.Dataset,
    endpoint: str | Callable[[], AsyncClient],
    *,
    task: str = "generate",
    column: str | None = None,
    parameters_column: str | None = "parameters",
    adapter_column: str | None = "adapter_id",
    workers: int = DEFAULT_WORKERS,
    concurrency: int = DEFAULT_CONCURRENCY,
    batch_size: int | None = None,
    client_options: Mapping[str, Any] | None = None,
    retry: RetryPolicy | None = None,
    defaults: Mapping[str, Any] | None = None,
    num_cpus: float = DEFAULT_NUM_CPUS,
) -> ray.data.Dataset:
    """Add LoRAX results to each row of `dataset` (lazily, as Ray Data does).

    Each row's ``column`` (``"prompt"`` for ``task="generate"``, ``"messages"`` for
    ``"chat"``, ``"text"`` for ``"embed"``) is sent with the row's parameters: the
    ``parameters_column`` (a dict or a JSON string of the client method's keywords;
    nulls count as not given) and the ``adapter_column``, both optional (a missing
    column means none). The rows come back with the columns in
    :data:`RESULT_COLUMNS` added: ``ok``; ``text`` (the generated text, or the chat
    message's content) and ``finish_reason``; ``prompt_tokens`` and
    ``generated_tokens``; for failed rows ``error_type`` (the
    :mod:`lorax.errors` class name, or ``InvalidInputLine`` for parameters the client
    refused), ``error_message`` and ``status_code``; ``attempts`` and ``latency_ms``;
    and for ``task="embed"``, ``embedding`` (a list of floats) instead of ``text`` and
    ``finish_reason``. A result column that the dataset already has is refused
    (:class:`~lorax.batch.BatchInputError`), not overwritten. Row order is not kept, as with any
    ``map_batches``.

    Args:
        dataset: the rows.
        endpoint: the LoRAX URL, or a picklable function returning a new
            :class:`lorax.AsyncClient` (called once in each actor).
        task: ``"generate"``, ``"chat"`` or ``"embed"``.
        column: the column with the prompt, messages or text to embed.
        parameters_column: per-row keywords, or None.
        adapter_column: per-row adapter id, or None.
        workers: actors, each with its own client.
        concurrency: requests in flight per actor.
        batch_size: rows per ``map_batches`` call (default ``4 x concurrency``).
        client_options: :class:`lorax.AsyncClient` keywords, with a URL endpoint.
        retry: the retry policy (default: the client's).
        defaults: keywords for every row (a row's own parameters win).
        num_cpus: CPUs reserved per actor (they mostly wait on the network).

    Raises:
        ValueError: an unknown task, or workers or concurrency below 1.

    When the job runs, a worker that cannot reach the server before any request has
    reached it raises :class:`EndpointUnreachableError`, which fails the job.
    """
    if task not in _TASKS:
        raise ValueError(f"task must be one of {', '.join(_TASKS)}; got {task!r}")
    kind = _TASKS[task]
    default_column = {"prompt": "prompt", "messages": "messages", "embed": "text"}[kind]
    names = set(dataset.columns() or ()) if _schema_known(dataset) else None
    config = _WorkerConfig(
        client=ClientSpec(endpoint, dict(client_options or {})),
        concurrency=concurrency,
        retry=retry,
        generate_defaults={},
        chat_defaults={},
        full_response=False,
        scrub=None,
    )
    columns = _Columns(
        task=task,
        column=column or default_column,
        parameters=parameters_column if names is None or parameters_column in names else None,
        adapter=adapter_column if names is None or adapter_column in names else None,
        defaults=dict(defaults or {}),
    )
    return dataset.map_batches(
        _RowWorker,
        fn_constructor_args=(config, columns),
        batch_size=batch_size or max(1, concurrency * BATCH_ROWS_PER_SLOT),
        batch_format="pyarrow",
        compute=_compute(workers, concurrency),
        num_cpus=num_cpus,
    )


def _schema_known(dataset: ray.data.Dataset) -> bool:
    # Asking for the schema of a lazy dataset can run part of it; only look when it
    # is cheap to know (materialised or read from files with a schema).
    try:
        return dataset.schema(fetch_if_missing=False) is not None
    except Exception:  # pragma: no cover - older Ray without fetch_if_missing
        return False


# ---------------------------------------------------------------------------------
# lorax batch --engine ray


class _LineWorker(_Worker):
    """Runs raw input lines, returning the local engine's output rows."""

    async def __call__(self, batch: pa.Table) -> pa.Table:
        lines = batch.column("line").to_pylist()
        raws = batch.column("raw").to_pylist()
        requests: list[Request | InvalidLine] = []
        for number, raw in zip(lines, raws, strict=True):
            parsed = parse_line(raw, number)
            assert parsed is not None  # the driver sends only non-blank lines
            requests.append(parsed)
        outcomes = await self._run_all(requests)
        rows = [orjson.dumps(outcome.record) for outcome in outcomes]
        return pa.table(
            {
                "row": pa.array(rows, type=pa.binary()),
                "invalid": pa.array([outcome.invalid for outcome in outcomes], type=pa.bool_()),
                "lost": pa.array([outcome.connection_failure for outcome in outcomes], type=pa.bool_()),
            }
        )


def _ensure_ray(address: str | None, num_cpus: int | None) -> None:
    if ray.is_initialized():
        return
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address is None and num_cpus is not None:
        options["num_cpus"] = num_cpus
    ray.init(address=address, **options)


def _quiet_ray_data() -> None:
    # The driver's output is the batch's summary; Ray Data's per-run INFO lines and
    # its "more blocks would help" hints are for tuning pipelines, not for this.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.data\..*")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    with contextlib.suppress(AttributeError):
        context.print_on_execution_start = False


_UNREACHABLE_LINE = re.compile(r"EndpointUnreachableError: (.+)")


def _unreachable_in(exc: BaseException) -> str | None:
    """The message of the EndpointUnreachableError a worker raised, if that ended `exc`."""
    # Ray wraps a worker's exception (RayTaskError around UserCodeException); the
    # original is in the cause chain, or, once serialised, only in the text.
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, EndpointUnreachableError):
            return current.message
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else (current.__cause__ or current.__context__)
    found = _UNREACHABLE_LINE.search(str(exc))
    return found.group(1).strip() if found else None


def _pending_lines(
    input_path: Path, done: set[str | int], recorder: Recorder, stats: BatchStats
) -> Iterator[dict[str, Any]]:
    for number, raw in _read_lines(input_path):
        stats.read = number
        parsed = parse_line(raw, number)
        if parsed is None:
            stats.blank += 1
            continue
        if parsed.id in done:
            stats.skipped += 1
            continue
        if isinstance(parsed, InvalidLine):
            recorder.invalid(parsed)
            continue
        yield {"line": number, "raw": raw}


def run_batch_ray(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    endpoint: str | Callable[[], AsyncClient],
    *,
    client_options: Mapping[str, Any] | None = None,
    workers: int = DEFAULT_WORKERS,
    concurrency: int = DEFAULT_CONCURRENCY,
    retry: RetryPolicy | None = None,
    generate_defaults: Mapping[str, Any] | None = None,
    chat_defaults: Mapping[str, Any] | None = None,
    full_response: bool = False,
    max_connection_failures: int = DEFAULT_MAX_CONNECTION_FAILURES,
    address: str | None = None,
    num_cpus: float = DEFAULT_NUM_CPUS,
    local_cpus: int | None = None,
    stop: threading.Event | None = None,
    stats: BatchStats | None = None,
    scrub: Callable[[str], str] | None = None,
) -> BatchStats:
    """Run a ``lorax batch`` input file on Ray: the rows, resume and stats of :func:`lorax.batch.run_batch`.

    This process (the driver) checks the input (duplicate ids raise
    :class:`~lorax.batch.BatchInputError`), prepares the output for resuming, writes
    the rows of invalid lines, and hands the other lines not done yet to `workers`
    actors with `concurrency` requests in flight each. Rows are appended to the output
    as batches come back, so an interrupted job resumes from them. The lines to send
    are held in the driver's memory as Ray Data items (their raw bytes).

    Args:
        input_path, output_path: as for :func:`lorax.batch.run_batch`.
        endpoint, client_options: how each actor builds its client (:class:`ClientSpec`).
        workers, concurrency: actors, and requests in flight per actor.
        retry, generate_defaults, chat_defaults, full_response,
        max_connection_failures, stats, scrub: as for :func:`lorax.batch.run_batch`.
        address: the Ray cluster (``"auto"``, ``"ray://host:10001"``); None starts a
            local Ray runtime when none is running.
        num_cpus: CPUs reserved per actor.
        local_cpus: CPUs of a local runtime started here (None: all).
        stop: set it (from another thread or a signal handler) to stop between batches.

    Returns:
        The run's stats: ``unreachable`` and ``aborted`` when the server could not be
        reached, ``interrupted`` when `stop` was set.
    """
    source = Path(input_path)
    target = Path(output_path)
    stats = stats if stats is not None else BatchStats()
    stats.started = time.monotonic()
    if not source.is_file():
        raise FileNotFoundError(2, "No such file", os.fspath(source))
    if target.exists() and os.path.samefile(source, target):
        raise BatchOutputError("the output file must not be the input file")
    check = check_input(source, keep_ids=True)
    assert check is not None
    if check.duplicates:
        raise BatchInputError(check.duplicate_message(source))
    stats.total = check.lines
    writer = ResultWriter(target)
    try:
        done = writer.prepare(check.ids)
        del check
        recorder = Recorder(writer, stats, max_connection_failures=max_connection_failures, scrub=scrub)
        pending = list(_pending_lines(source, done, recorder, stats))
        del done
        if pending:
            config = _WorkerConfig(
                client=ClientSpec(endpoint, dict(client_options or {})),
                concurrency=concurrency,
                retry=retry,
                generate_defaults=dict(generate_defaults or {}),
                chat_defaults=dict(chat_defaults or {}),
                full_response=full_response,
                scrub=scrub,
            )
            _run_on_ray(pending, config, recorder, stats, workers, address, num_cpus, local_cpus, stop)
    finally:
        writer.close()
        stats.finished = time.monotonic()
    return stats


def _run_on_ray(
    pending: list[dict[str, Any]],
    config: _WorkerConfig,
    recorder: Recorder,
    stats: BatchStats,
    workers: int,
    address: str | None,
    num_cpus: float,
    local_cpus: int | None,
    stop: threading.Event | None,
) -> None:
    compute = _compute(workers, config.concurrency)
    _ensure_ray(address, local_cpus)
    _quiet_ray_data()
    batch_size = config.concurrency * BATCH_ROWS_PER_SLOT
    blocks = max(1, min(len(pending) // batch_size + 1, workers * 8))
    dataset = ray.data.from_items(pending, override_num_blocks=blocks).map_batches(
        _LineWorker,
        fn_constructor_args=(config,),
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=compute,
        num_cpus=num_cpus,
    )
    batches: Iterator[pa.Table] | None = None
    try:
        batches = iter(dataset.iter_batches(batch_format="pyarrow", batch_size=None))
        for item in batches:
            batch: pa.Table = item
            for row, invalid, lost in zip(
                batch.column("row").to_pylist(),
                batch.column("invalid").to_pylist(),
                batch.column("lost").to_pylist(),
                strict=True,
            ):
                record = orjson.loads(row)
                recorder.record(
                    LineOutcome(
                        record,
                        invalid=invalid,
                        connection_failure=lost,
                        prompt_tokens=record.get("prompt_tokens"),
                        generated_tokens=record.get("generated_tokens"),
                    )
                )
            if recorder.halted.is_set():
                return
            if stop is not None and stop.is_set():
                stats.interrupted = True
                return
    except Exception as exc:
        unreachable = _unreachable_in(exc)
        if unreachable is None:
            raise
        # The worker's message already says "cannot reach the server: ".
        recorder.unreachable(EndpointUnreachableError(unreachable.removeprefix("cannot reach the server: ")))
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()
