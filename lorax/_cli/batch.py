"""``lorax batch``: run a JSONL file of prompts through LoRAX, resumably.

Input, one JSON object per line::

    {"id": "q1", "prompt": "Why is the sky blue?", "parameters": {"max_new_tokens": 64}}
    {"id": "q2", "messages": [{"role": "user", "content": "Hi"}], "adapter_id": "me/chat"}

A line has exactly these keys: ``id`` (optional), ``prompt`` or ``messages`` (one of
the two), ``parameters`` (optional) and ``adapter_id`` (optional). ``prompt`` goes to
``/generate`` and ``parameters`` are :meth:`lorax.AsyncClient.generate` keywords
(LoRAX's ``stop`` is accepted for ``stop_sequences``); ``messages`` goes to
``/v1/chat/completions`` and ``parameters`` are :meth:`lorax.AsyncClient.chat`
keywords. ``adapter_id`` at the top level wins over one in ``parameters``. Any other
key fails the line, naming the key (a generation setting at the top level is told to
move under ``parameters``): nothing is silently ignored. Blank lines are ignored.

Ids are strings or integers (``1`` and ``"1"`` differ) and unique in the file: a
duplicate is refused, with its line numbers, before anything is sent
(:class:`BatchInputError`). A line without ``id`` gets ``"line:N"`` (N its line
number, from 1); explicit ids of that form are refused, so the two never collide.

Output, one row per input line::

    {"id": "q1", "ok": true, "result": {"generated_text": "...", "finish_reason": "length"},
     "prompt_tokens": 7, "generated_tokens": 64, "latency_ms": 812.3, "attempts": 1}
    {"id": "q2", "ok": false, "error": {"type": "OverloadedError", "message": "...", "status_code": 429},
     "latency_ms": 20512.0, "attempts": 9}

Chat results are ``{"content", "finish_reason"}`` (plus ``tool_calls`` when there are
some); ``full_response=True`` puts LoRAX's whole response there instead. Lines that are
not valid requests fail with ``"type": "InvalidInputLine"`` and are never sent; the
batch goes on.

Resuming: the output is scanned first. Ids with an ``ok: true`` row are skipped. The
rows of lines that failed (and of invalid lines) are removed, by writing the rows kept
to a temporary file that then replaces the output (:func:`os.replace`), and those lines
are run again, so each input line has at most one row, ever. Rows whose id is not in
the input are kept. A line torn by a crash (no final newline) is cut off first.

Memory stays flat in the input size: lines are streamed through a bounded queue to
``concurrency`` workers. What grows is a set of ids: all the input's ids while the
input is checked before the run (for duplicates), then the ids already done. Ids are
kept as themselves; that costs about 60 bytes per integer id and 80 to 100 per short
string id, so a million lines take under 100 MB.

Durability: each result is one ``write`` of one complete line to an unbuffered file
opened for appending, so a finished result is on its way to disk before the next one
starts, and an interrupted run never leaves half a line (short of a crash in the middle
of that write, which the next run repairs). Stopping (:func:`run_batch`'s ``stop`` event,
Ctrl-C on the command line) cancels the lines in flight; they have written nothing
and are redone on resume.

An unreachable server (connection refused, DNS failure, TLS failure) stops the run at
once when no request has reached the server yet in this run (``stats.aborted`` and
``stats.unreachable`` are set; no row is written for the lines in flight). Once the
server has answered, the same failure is retried per the retry policy first, so a
restarting server is ridden out.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import contextlib
import difflib
import inspect
import logging
import os
import re
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from lorax import _params
from lorax import _routes as routes
from lorax._cli.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
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
from lorax._redact import REDACTED
from lorax._retry import RetryPolicy
from lorax.codec import to_json, to_obj
from lorax.errors import (
    APIConnectionError,
    APITimeoutError,
    ClientClosedError,
    LoraxError,
    StreamInterruptedError,
)

__all__ = [
    "AUTO_ID_PREFIX",
    "EXIT_UNREACHABLE",
    "INVALID_INPUT",
    "BatchInputError",
    "BatchStats",
    "DryRun",
    "InputCheck",
    "check_input",
    "count_lines",
    "dry_run",
    "register",
    "run_batch",
    "scan_output",
]

logger = logging.getLogger("lorax.batch")

INVALID_INPUT = "InvalidInputLine"
AUTO_ID_PREFIX = "line:"
DEFAULT_CONCURRENCY = 8
DEFAULT_MAX_RETRIES = 8
# Non-streaming generations send nothing until they are done; 60 s of silence is normal
# for a long generation on a busy server, so batch waits longer before calling it dead.
DEFAULT_TIMEOUT = 300.0
DEFAULT_MAX_CONNECTION_FAILURES = 10
# The statuses `lorax batch` retries: the client's (429, 503) plus a proxy's 502/504 in
# front of a busy server, which are transient too; re-running a generation costs only
# compute.
BATCH_RETRY_STATUS = frozenset({429, 502, 503, 504})
DRY_RUN_SHOW = 3
# Invalid lines listed by a dry run (the rest are counted).
DRY_RUN_LIST_INVALID = 20
EXIT_UNREACHABLE = 3  # the server could not be reached: stopped early, nothing lost

_LINE_KEYS = ("id", "prompt", "messages", "parameters", "adapter_id")
_AUTO_ID = re.compile(re.escape(AUTO_ID_PREFIX) + r"[0-9]+")
_ROUTE = {"prompt": "generate", "messages": "chat"}

_GENERATE_KEYS: frozenset[str] | None = None
_CHAT_KEYS: frozenset[str] | None = None


class BatchInputError(LoraxError, ValueError):
    """The input file cannot be run as a whole (duplicate ids); nothing was sent."""


def _keywords(function: Any, exclude: str) -> frozenset[str]:
    params = inspect.signature(function).parameters
    return frozenset(name for name in params if name not in ("self", exclude))


def _allowed_keys(kind: str) -> frozenset[str]:
    # From the client's own signatures, so the batch accepts whatever a newer client does.
    global _GENERATE_KEYS, _CHAT_KEYS
    from lorax.client import AsyncClient

    if kind == "prompt":
        if _GENERATE_KEYS is None:
            # "stop" is LoRAX's own name for stop_sequences.
            _GENERATE_KEYS = _keywords(AsyncClient.generate, "prompt") | {"stop"}
        return _GENERATE_KEYS
    if _CHAT_KEYS is None:
        _CHAT_KEYS = _keywords(AsyncClient.chat, "messages")
    return _CHAT_KEYS


def auto_id(line: int) -> str:
    """The id of an input line that has none: ``"line:N"``."""
    return f"{AUTO_ID_PREFIX}{line}"


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


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _close_match(name: str, choices: frozenset[str] | tuple[str, ...]) -> str | None:
    close = difflib.get_close_matches(name, sorted(choices), n=1)
    return close[0] if close else None


def _misplaced_keys(keys: list[str], kind: str | None, line: int) -> str:
    parts: list[str] = []
    unknown = False
    for key in keys:
        kinds = [kind] if kind is not None else ["prompt", "messages"]
        owner = next((k for k in kinds if key in _allowed_keys(k)), None)
        if owner is not None:
            parts.append(f"'{key}' is a {_ROUTE[owner]} parameter: put it under \"parameters\"")
        else:
            unknown = True
            close = _close_match(key, _LINE_KEYS)
            parts.append(f"unknown key '{key}'" + (f" (did you mean '{close}'?)" if close else ""))
    text = f"line {line}: " + "; ".join(parts)
    if unknown:
        text += "; a line's keys are id, prompt or messages, parameters, adapter_id"
    return text


def _unknown_parameters(names: list[str], kind: str, line: int) -> str:
    other = "messages" if kind == "prompt" else "prompt"
    parts = []
    for name in names:
        close = _close_match(name, _allowed_keys(kind))
        notes = [f"a {_ROUTE[other]} parameter"] if name in _allowed_keys(other) else []
        if close:
            notes.append(f"did you mean '{close}'?")
        parts.append(f"'{name}'" + (f" ({'; '.join(notes)})" if notes else ""))
    return f"line {line}: unknown {_ROUTE[kind]} parameter(s): {', '.join(parts)}"


def parse_line(raw: bytes, line: int) -> _Request | _Invalid | None:
    """Read one input line; None for a blank one."""
    if not raw.strip():
        return None
    if line == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]  # files saved by some Windows editors start with one
    fallback = auto_id(line)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _Invalid(line, fallback, f"line {line}: not valid JSON: {exc}")
    if not isinstance(obj, dict):
        return _Invalid(line, fallback, f"line {line}: expected a JSON object, got {_json_type(obj)}")
    ident: str | int = fallback
    if "id" in obj:
        ident = obj["id"]
        if not _is_id(ident):
            return _Invalid(line, fallback, f"line {line}: id must be a string or an integer, not {_json_type(ident)}")
        if isinstance(ident, str) and _AUTO_ID.fullmatch(ident):
            return _Invalid(
                line,
                fallback,
                f"line {line}: the id {ident!r} has the form '{AUTO_ID_PREFIX}N', "
                "which is reserved for lines without an id",
            )
    has_prompt, has_messages = "prompt" in obj, "messages" in obj
    extra = [key for key in obj if key not in _LINE_KEYS]
    if extra:
        guess = None if has_prompt == has_messages else ("prompt" if has_prompt else "messages")
        return _Invalid(line, ident, _misplaced_keys(extra, guess, line))
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
    unknown = sorted(set(parameters) - _allowed_keys(kind))
    if unknown:
        return _Invalid(line, ident, _unknown_parameters(unknown, kind, line))
    if kind == "prompt" and "stop" in parameters:
        if "stop_sequences" in parameters:
            return _Invalid(line, ident, f"line {line}: give 'stop' or 'stop_sequences', not both")
        parameters["stop_sequences"] = parameters.pop("stop")  # LoRAX's wire name
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


def _read_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as f:
        yield from enumerate(f, start=1)


@dataclass
class InputCheck:
    """What :func:`check_input` found in an input file.

    Attributes:
        lines: lines in the file, blank ones included.
        blank: empty lines (ignored).
        requests: lines that are valid requests.
        invalid: the invalid lines, up to the limit asked for, in file order.
        invalid_count: all the invalid lines.
        duplicates: each duplicated id with its line numbers (up to 10 per id, for
            the first 10 ids); empty when the ids are unique.
        duplicate_count: how many ids are duplicated.
        ids: every id in the file (only when asked for).
    """

    lines: int = 0
    blank: int = 0
    requests: int = 0
    invalid: list[_Invalid] = field(default_factory=list)
    invalid_count: int = 0
    duplicates: dict[str | int, list[int]] = field(default_factory=dict)
    duplicate_count: int = 0
    ids: set[str | int] | None = None

    def duplicate_message(self, path: str | os.PathLike[str]) -> str:
        """The error for duplicate ids: which ids, on which lines."""
        shown = "; ".join(
            f"id {orjson.dumps(ident).decode()} on lines {', '.join(map(str, lines))}"
            for ident, lines in self.duplicates.items()
        )
        more = self.duplicate_count - len(self.duplicates)
        if more > 0:
            shown += f"; and {more} more duplicated id(s)"
        return f"{os.fspath(path)} has duplicate ids (each line needs its own id; nothing was sent): {shown}"


_MAX_DUPLICATES_SHOWN = 10


def check_input(
    path: str | os.PathLike[str],
    *,
    cancel: threading.Event | None = None,
    keep_ids: bool = False,
    list_invalid: int = 0,
    on_request: Callable[[_Request], None] | None = None,
) -> InputCheck | None:
    """Read the whole input once: count it, find invalid lines and duplicate ids.

    Nothing is sent. `on_request` sees every valid line (the dry run builds its
    bodies there). Returns None when `cancel` is set before the end.
    """
    report = InputCheck()
    seen: set[str | int] = set()
    duplicated: set[str | int] = set()
    for number, raw in _read_lines(path):
        if cancel is not None and number % 4096 == 0 and cancel.is_set():
            return None
        report.lines = number
        parsed = parse_line(raw, number)
        if parsed is None:
            report.blank += 1
            continue
        if parsed.id in seen:
            duplicated.add(parsed.id)
        else:
            seen.add(parsed.id)
        if isinstance(parsed, _Invalid):
            report.invalid_count += 1
            if len(report.invalid) < list_invalid:
                report.invalid.append(parsed)
            continue
        report.requests += 1
        if on_request is not None:
            on_request(parsed)
    if duplicated:
        # Second pass for the line numbers, so the first one keeps only the ids.
        found: dict[str | int, list[int]] = {}
        for number, raw in _read_lines(path):
            parsed = parse_line(raw, number)
            if parsed is None or parsed.id not in duplicated:
                continue
            if parsed.id in found or len(found) < _MAX_DUPLICATES_SHOWN:
                lines = found.setdefault(parsed.id, [])
                if len(lines) < _MAX_DUPLICATES_SHOWN:
                    lines.append(number)
        report.duplicate_count = len(duplicated)
        report.duplicates = found
    if keep_ids:
        report.ids = seen
    return report


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


@dataclass
class _OutputScan:
    done: set[str | int]
    dropped: int  # rows that this run replaces (failed rows of input lines) or repeats
    torn: int  # bytes of a torn last line
    corrupt: int  # complete lines that are not JSON (kept)


def _scan_rows(source: IO[bytes], input_ids: set[str | int] | None, sink: IO[bytes] | None) -> _OutputScan:
    """Classify the rows of an output; with a `sink`, copy the ones kept to it.

    Kept: the first ``ok: true`` row of each id, rows of ids not in the input, and
    lines that are not rows (hand edits). Dropped: failed rows of input lines (this
    run writes them again) and repeated ``ok`` rows (left by older versions).
    """
    done: set[str | int] = set()
    dropped = torn = corrupt = 0
    for raw in source:
        if not raw.endswith(b"\n"):
            torn = len(raw)
            break
        keep = True
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            corrupt += 1
            record = None
        if isinstance(record, dict) and _is_id(record.get("id")):
            ident = record["id"]
            if record.get("ok") is True:
                if ident in done:
                    keep = False
                done.add(ident)
            elif input_ids is None or ident in input_ids:
                keep = False
        if keep:
            if sink is not None:
                sink.write(raw)
        else:
            dropped += 1
    # A failed row dropped before the ok row of the same id was seen is still dropped:
    # the ok row stays, which is the id's current state.
    return _OutputScan(done, dropped, torn, corrupt)


class _ResultWriter:
    """Appends result lines, each with one unbuffered write, holding the output's lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        for _ in range(5):
            file = open(path, "ab", buffering=0)  # noqa: SIM115 - closed by close()
            _lock_exclusively(file, path)
            # A run that finished between our open() and flock() may have replaced the
            # file: then we hold the lock of a file that is no longer the output.
            if _same_file(file, self.path):
                self._file = file
                return
            file.close()
        raise UsageError(f"another lorax batch is writing to {os.fspath(path)}")

    def write(self, record: Mapping[str, Any]) -> None:
        data = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        view = memoryview(data)
        # A regular file takes it in one write; the loop covers the rare short write.
        while view:
            written = self._file.write(view)
            if written is None:  # pragma: no cover - only for non-blocking files
                continue
            view = view[written:]

    def prepare(self, input_ids: set[str | int] | None) -> set[str | int]:
        """Repair and compact the output for this run; returns the ids already done."""
        with open(self.path, "rb") as f:
            scan = _scan_rows(f, input_ids, None)
        if scan.torn:
            logger.warning(
                "lorax batch: cut a torn last line (%d bytes) left by an earlier crash from %s", scan.torn, self.path
            )
        if scan.corrupt:
            logger.warning("lorax batch: kept %d line(s) of %s that are not JSON", scan.corrupt, self.path)
        if scan.dropped:
            self._rewrite(input_ids)
            logger.info("lorax batch: removed %d row(s) of %s that this run replaces", scan.dropped, self.path)
        elif scan.torn:
            size = os.fstat(self._file.fileno()).st_size
            os.truncate(self._file.fileno(), size - scan.torn)
        return scan.done

    def _rewrite(self, input_ids: set[str | int] | None) -> None:
        # The rows kept go to a new file, which then replaces the output in one
        # rename: a crash at any point leaves either the old output or the new one.
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        new = open(temp, "xb", buffering=0)  # noqa: SIM115 - becomes self._file
        try:
            _lock_exclusively(new, temp)
            with open(self.path, "rb") as f:
                _scan_rows(f, input_ids, new)
            os.fsync(new.fileno())
            with contextlib.suppress(OSError):
                os.chmod(temp, stat.S_IMODE(os.fstat(self._file.fileno()).st_mode))
            os.replace(temp, self.path)
        except BaseException:
            new.close()
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise
        _fsync_dir(self.path.parent)
        old, self._file = self._file, new
        old.close()

    def close(self) -> None:
        self._file.close()


def _same_file(file: IO[bytes], path: Path) -> bool:
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(file.fileno())
    return (mine.st_dev, mine.st_ino) == (current.st_dev, current.st_ino)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename durable; not possible (nor needed) on every platform.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _lock_exclusively(file: IO[bytes], path: str | os.PathLike[str]) -> None:
    # Two runs writing one output would both redo the same ids. POSIX only: on
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
# Building requests


def _request_kwargs(
    request: _Request, generate_defaults: Mapping[str, Any], chat_defaults: Mapping[str, Any]
) -> dict[str, Any]:
    if request.kind == "prompt":
        return {"details": True, **generate_defaults, **request.parameters}
    return {**chat_defaults, **request.parameters}


@dataclass
class DryRun:
    """What :func:`dry_run` found: the input check and the first requests' bodies.

    Attributes:
        check: the :class:`InputCheck` of the whole file.
        shown: ``(line, id, "POST /generate", body)`` for the first valid lines;
            ``body`` is the exact JSON the client sends, except that an
            ``api_token`` value reads ``<redacted>``.
        generate, chat: valid lines per route.
    """

    check: InputCheck
    shown: list[tuple[int, str | int, str, bytes]]
    generate: int = 0
    chat: int = 0


def dry_run(
    input_path: str | os.PathLike[str],
    *,
    generate_defaults: Mapping[str, Any] | None = None,
    chat_defaults: Mapping[str, Any] | None = None,
    show: int = DRY_RUN_SHOW,
    list_invalid: int = DRY_RUN_LIST_INVALID,
) -> DryRun:
    """Check a whole input file and build its requests, sending nothing.

    Every valid line's request is built by the client's own request builder, so a
    parameter of the wrong type makes its line invalid here as it would in a run.
    """
    gen_defaults = dict(generate_defaults or {})
    chat_default = dict(chat_defaults or {})
    shown: list[tuple[int, str | int, str, bytes]] = []
    counts = {"prompt": 0, "messages": 0}
    late_invalid: list[_Invalid] = []

    def build(request: _Request) -> None:
        kwargs = _request_kwargs(request, gen_defaults, chat_default)
        if kwargs.get("api_token") is not None:
            kwargs["api_token"] = REDACTED  # never printed
        try:
            if request.kind == "prompt":
                message: Any = _params.generate(request.payload, **kwargs)
                method = routes.GENERATE
            else:
                message = _params.chat(request.payload, **kwargs)
                method = routes.CHAT_COMPLETIONS
        except (TypeError, ValueError, LoraxError) as exc:
            late_invalid.append(_Invalid(request.line, request.id, f"line {request.line}: {exc}"))
            return
        counts[request.kind] += 1
        if len(shown) < show:
            shown.append((request.line, request.id, f"{method.http_method} {method.path}", to_json(message)))

    check = check_input(input_path, list_invalid=list_invalid, on_request=build)
    assert check is not None
    if late_invalid:
        check.requests -= len(late_invalid)
        check.invalid_count += len(late_invalid)
        check.invalid = sorted([*check.invalid, *late_invalid], key=lambda item: item.line)[:list_invalid]
    return DryRun(check, shown, generate=counts["prompt"], chat=counts["messages"])


# ---------------------------------------------------------------------------------
# The engine


def _unreachable(exc: LoraxError) -> bool:
    # Transports mark "nothing reached the server" (refused, DNS, TLS) with
    # request_sent = False; see lorax.transports.base.
    return (
        isinstance(exc, APIConnectionError)
        and not isinstance(exc, StreamInterruptedError)
        and getattr(exc, "request_sent", True) is False
    )


def _retryable(policy: RetryPolicy, exc: LoraxError) -> bool:
    # The policy decides which statuses and error types are transient. The one rule
    # added here: unlike an interactive call, a batch line is sent again after a
    # failure that might have reached the server, since the worst case is a generation
    # computed twice.
    if policy.is_retryable(exc, stream_started=False):
        return True
    if isinstance(exc, APITimeoutError):
        return exc.phase != "total"
    return isinstance(exc, APIConnectionError) and not isinstance(exc, StreamInterruptedError)


def _generate_result(response: Any, full: bool) -> tuple[Any, int | None, int | None]:
    details = response.details
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
        count_total: bool = True,
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
        self.count_total = count_total  # kept for callers; the input is always counted now
        self.stats = stats if stats is not None else BatchStats()
        self._scrub: Callable[[str], str] = scrub if scrub is not None else str
        self._done: set[str | int] = set()
        self._writer: _ResultWriter | None = None
        self._connection_failures = 0
        self._reached = False  # some request of this run got an answer from the server
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
        kwargs = _request_kwargs(request, self.generate_defaults, self.chat_defaults)
        if request.kind == "prompt":
            response = await self.client.generate(request.payload, **kwargs)
            return _generate_result(response, self.full_response)
        response = await self.client.chat(request.payload, **kwargs)
        return _chat_result(response, self.full_response)

    def _give_up_unreachable(self, exc: LoraxError) -> None:
        # The line is not written: it was never answered, and is redone on resume.
        if self.stats.aborted is None:
            self.stats.aborted = f"cannot reach the server: {self._scrub(str(exc))}"
            self.stats.unreachable = True
        self._halt.set()

    async def _process(self, request: _Request) -> None:
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            try:
                result, prompt_tokens, generated = await self._call(request)
                break
            except LoraxError as exc:
                unreachable = _unreachable(exc)
                if not unreachable and not isinstance(exc, APIConnectionError):
                    self._reached = True  # an HTTP status came back
                if unreachable and not self._reached:
                    # Nothing has reached the server in this run: the endpoint is wrong
                    # or down, and retrying every line would only delay saying so.
                    self._give_up_unreachable(exc)
                    return
                delay = None
                if attempts <= self.retry.max_retries and _retryable(self.retry, exc):
                    delay = self.retry.backoff(attempts, exc)
                if delay is None:
                    if unreachable:
                        self._give_up_unreachable(exc)
                    else:
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
        self._reached = True
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
            # Failures after the request may have been sent (connection reset, read
            # timeout): the server is there but not answering.
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

    async def _produce(self, queue: asyncio.Queue[_Request | None]) -> None:
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
            raise UsageError("the output file must not be the input file")
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
        self._writer = _ResultWriter(self.output_path)
        try:
            self._done = self._writer.prepare(check.ids)
        except BaseException:
            self._writer.close()
            raise
        del check  # the input's ids: only the done ones are needed from here on
        queue: asyncio.Queue[_Request | None] = asyncio.Queue(maxsize=self.concurrency * 2)
        work = [asyncio.create_task(self._produce(queue), name="lorax-batch-reader")]
        work += [asyncio.create_task(self._work(queue), name=f"lorax-batch-{i}") for i in range(self.concurrency)]
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
            # Stop reading and cancel the lines in flight: they have written nothing
            # and will be redone on resume.
            for task in [*work, *waiters]:
                task.cancel()
            await asyncio.gather(*work, *waiters, return_exceptions=True)
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
            '"parameters" and "adapter_id"; any other key fails the line. Ids must be unique (lines without one '
            'get "line:N"). OUTPUT gets one row per input line; rerunning skips the lines done and retries the '
            "failed ones, replacing their rows. Options given here are defaults that a line's parameters "
            "override. Exit code 0 when every line succeeded, 1 when some failed (rerun to retry them), 2 for "
            f"a bad command line or duplicate ids (nothing sent), {EXIT_UNREACHABLE} when the server could not "
            "be reached, 130 on Ctrl-C, 143 on SIGTERM."
        ),
    )
    parser.add_argument("input", metavar="INPUT.jsonl", help="the requests, one JSON object per line")
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
    if args.input == "-":
        raise UsageError("batch reads INPUT again when it resumes, so it must be a file, not stdin")
    generate_defaults = generate_kwargs(args)
    chat_defaults = chat_kwargs(args)
    if args.dry_run:
        return _dry_run_command(args, ctx, generate_defaults, chat_defaults)
    if args.output is None:
        raise UsageError("the following arguments are required: -o/--output")
    conn = ctx.connection(args)
    stats = BatchStats()
    received: list[int] = []  # the signals that stopped the run
    try:
        asyncio.run(_run(args, ctx, conn, generate_defaults, chat_defaults, stats, received))
    except KeyboardInterrupt:
        # A second Ctrl-C (or a platform without loop signal handlers).
        stats.interrupted = True
        received.append(int(signal.SIGINT))
    except BatchInputError as exc:
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


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
