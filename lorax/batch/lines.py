"""The input line format of a batch: parsing, checking a whole file, dry runs.

Input, one JSON object per line::

    {"id": "q1", "prompt": "Why is the sky blue?", "parameters": {"max_new_tokens": 64}}
    {"id": "q2", "messages": [{"role": "user", "content": "Hi"}], "adapter_id": "me/chat"}

A line has exactly these keys: ``id`` (optional), ``prompt`` or ``messages`` (one of
the two), ``parameters`` (optional) and ``adapter_id`` (optional). ``prompt`` goes to
``/generate`` and ``parameters`` are :meth:`lorax.AsyncClient.generate` keywords
(LoRAX's ``stop`` is accepted for ``stop_sequences``); ``messages`` goes to
``/v1/chat/completions`` and ``parameters`` are :meth:`lorax.AsyncClient.chat`
keywords. (A :class:`Request` of kind ``"embed"``, for ``/embed``, is built by the Ray
Data transform, :func:`lorax.batch.ray.process_dataset`; a file line cannot ask for one.)
``adapter_id`` at the top level wins over one in ``parameters``. Any other key fails the
line, naming the key (a generation setting at the top level is told to move under
``parameters``): nothing is silently ignored. Blank lines are ignored.

Ids are strings or integers (``1`` and ``"1"`` differ) and unique in the file: a
duplicate is refused, with its line numbers, before anything is sent
(:class:`BatchInputError`). A line without ``id`` gets ``"line:N"`` (N its line
number, from 1); explicit ids of that form are refused, so the two never collide.
"""

from __future__ import annotations

import codecs
import contextlib
import difflib
import inspect
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from lorax import _params
from lorax import _routes as routes
from lorax._message import Message
from lorax._redact import REDACTED
from lorax.codec import _type_name, to_json
from lorax.errors import LoraxError

__all__ = [
    "AUTO_ID_PREFIX",
    "DRY_RUN_LIST_INVALID",
    "DRY_RUN_SHOW",
    "INVALID_INPUT",
    "BatchInputError",
    "DryRun",
    "InputCheck",
    "InvalidLine",
    "Kind",
    "Request",
    "auto_id",
    "build_message",
    "build_request",
    "check_input",
    "count_lines",
    "dry_run",
    "is_parquet",
    "parse_line",
    "request_kwargs",
]

INVALID_INPUT = "InvalidInputLine"
AUTO_ID_PREFIX = "line:"
DRY_RUN_SHOW = 3
# Invalid lines listed by a dry run (the rest are counted).
DRY_RUN_LIST_INVALID = 20

#: What a line asks for: the key that holds its payload.
Kind = Literal["prompt", "messages", "embed"]
KINDS: tuple[Kind, ...] = ("prompt", "messages", "embed")

_LINE_KEYS = ("id", "prompt", "messages", "parameters", "adapter_id")
_AUTO_ID = re.compile(re.escape(AUTO_ID_PREFIX) + r"[0-9]+")
_ROUTE: dict[Kind, str] = {"prompt": "generate", "messages": "chat", "embed": "embed"}

_KEYS: dict[Kind, frozenset[str]] = {}


class BatchInputError(LoraxError, ValueError):
    """The input file cannot be run as a whole (duplicate ids); nothing was sent."""


def _keywords(function: Callable[..., Any], exclude: str) -> frozenset[str]:
    params = inspect.signature(function).parameters
    return frozenset(name for name in params if name not in ("self", exclude))


def _allowed_keys(kind: Kind) -> frozenset[str]:
    # From the client's own signatures, so the batch accepts whatever a newer client does.
    keys = _KEYS.get(kind)
    if keys is None:
        from lorax.client import AsyncClient

        if kind == "prompt":
            # "stop" is LoRAX's own name for stop_sequences.
            keys = _keywords(AsyncClient.generate, "prompt") | {"stop"}
        elif kind == "messages":
            keys = _keywords(AsyncClient.chat, "messages")
        else:
            keys = _keywords(AsyncClient.embed, "inputs")
        _KEYS[kind] = keys
    return keys


def auto_id(line: int) -> str:
    """The id of an input line that has none: ``"line:N"``."""
    return f"{AUTO_ID_PREFIX}{line}"


# ---------------------------------------------------------------------------------
# Input lines


@dataclass(frozen=True)
class Request:
    """A valid input line, ready to send."""

    line: int
    id: str | int
    kind: Kind
    payload: Any
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class InvalidLine:
    """An input line that is not a request; reported in the output, never sent."""

    line: int
    id: str | int
    message: str


def _is_id(value: Any) -> bool:
    # Strings and integers only: they hash and compare exactly (1.0 == 1 == True would
    # make different ids one), and a set of them costs tens of bytes per id.
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def _close_match(name: str, choices: frozenset[str] | tuple[str, ...]) -> str | None:
    close = difflib.get_close_matches(name, sorted(choices), n=1)
    return close[0] if close else None


def _misplaced_keys(keys: list[str], kind: Kind | None, line: int) -> str:
    parts: list[str] = []
    unknown = False
    for key in keys:
        kinds: list[Kind] = [kind] if kind is not None else ["prompt", "messages"]
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


def _unknown_parameters(names: list[str], kind: Kind, line: int) -> str:
    other: Kind = "messages" if kind == "prompt" else "prompt"
    parts = []
    for name in names:
        close = _close_match(name, _allowed_keys(kind))
        notes = [f"a {_ROUTE[other]} parameter"] if name in _allowed_keys(other) else []
        if close:
            notes.append(f"did you mean '{close}'?")
        parts.append(f"'{name}'" + (f" ({'; '.join(notes)})" if notes else ""))
    return f"line {line}: unknown {_ROUTE[kind]} parameter(s): {', '.join(parts)}"


def parse_line(raw: bytes, line: int) -> Request | InvalidLine | None:
    """Read one input line; None for a blank one."""
    if not raw.strip():
        return None
    if line == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]  # files saved by some Windows editors start with one
    fallback = auto_id(line)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return InvalidLine(line, fallback, f"line {line}: not valid JSON: {exc}")
    if not isinstance(obj, dict):
        return InvalidLine(line, fallback, f"line {line}: expected a JSON object, got {_type_name(obj)}")
    ident: str | int = fallback
    if "id" in obj:
        ident = obj["id"]
        if not _is_id(ident):
            return InvalidLine(
                line, fallback, f"line {line}: id must be a string or an integer, not {_type_name(ident)}"
            )
        if isinstance(ident, str) and _AUTO_ID.fullmatch(ident):
            return InvalidLine(
                line,
                fallback,
                f"line {line}: the id {ident!r} has the form '{AUTO_ID_PREFIX}N', "
                "which is reserved for lines without an id",
            )
    has_prompt, has_messages = "prompt" in obj, "messages" in obj
    extra = [key for key in obj if key not in _LINE_KEYS]
    if extra:
        guess: Kind | None = None if has_prompt == has_messages else ("prompt" if has_prompt else "messages")
        return InvalidLine(line, ident, _misplaced_keys(extra, guess, line))
    if has_prompt == has_messages:
        what = "both 'prompt' and 'messages'" if has_prompt else "neither 'prompt' nor 'messages'"
        return InvalidLine(line, ident, f"line {line}: has {what}; give exactly one")
    kind: Kind = "prompt" if has_prompt else "messages"
    return build_request(line, ident, kind, obj[kind], obj.get("parameters", {}), obj.get("adapter_id"))


def build_request(
    line: int, ident: str | int, kind: Kind, payload: Any, parameters: Any, adapter: Any = None
) -> Request | InvalidLine:
    """Check one request's parts (as :func:`parse_line` does for a file line).

    `line` numbers the request in messages ("line 3: ..."); `parameters` are client
    keywords (None for none); `adapter` wins over ``parameters["adapter_id"]``.
    """
    if kind in ("prompt", "embed") and not isinstance(payload, str):
        return InvalidLine(line, ident, f"line {line}: '{kind}' must be a string")
    if kind == "messages" and not (isinstance(payload, list) and payload):
        return InvalidLine(line, ident, f"line {line}: 'messages' must be a non-empty list")
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        return InvalidLine(line, ident, f"line {line}: 'parameters' must be an object")
    parameters = dict(parameters)
    unknown = sorted(set(parameters) - _allowed_keys(kind))
    if unknown:
        return InvalidLine(line, ident, _unknown_parameters(unknown, kind, line))
    if kind == "prompt" and "stop" in parameters:
        if "stop_sequences" in parameters:
            return InvalidLine(line, ident, f"line {line}: give 'stop' or 'stop_sequences', not both")
        parameters["stop_sequences"] = parameters.pop("stop")  # LoRAX's wire name
    if adapter is not None:
        if not isinstance(adapter, str):
            return InvalidLine(line, ident, f"line {line}: 'adapter_id' must be a string")
        parameters["adapter_id"] = adapter
    return Request(line, ident, kind, payload, parameters)


def count_lines(path: str | os.PathLike[str], cancel: threading.Event | None = None) -> int | None:
    """Count the lines of a file by its newlines, in 1 MiB reads (no parsing).

    Returns None when `cancel` is set before the end. A last line without a newline
    counts too.
    """
    if is_parquet(path):
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    count = 0
    last = b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            if cancel is not None and cancel.is_set():
                return None
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (0 if last == b"\n" else 1)


def is_parquet(path: str | os.PathLike[str]) -> bool:
    """Whether the file name says Parquet (``.parquet`` or ``.pq``)."""
    return os.fspath(path).lower().endswith((".parquet", ".pq"))


def _read_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    if is_parquet(path):
        yield from _parquet_lines(path)
        return
    with open(path, "rb") as f:
        yield from enumerate(f, start=1)


def _parquet_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    # A Parquet row is a line: its columns are the line's keys. Arrow fills the keys a
    # row lacks with nulls (a table has both prompt and messages columns; a struct of
    # parameters has every key any row used), and a null means "not given".
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise BatchInputError(
            f"{os.fspath(path)}: reading Parquet needs pyarrow (pip install 'lorax-client[ray]')"
        ) from None
    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            obj = {key: value for key, value in row.items() if value is not None}
            parameters = obj.get("parameters")
            if isinstance(parameters, str):
                with contextlib.suppress(orjson.JSONDecodeError):
                    parameters = orjson.loads(parameters)  # a JSON text column
            if isinstance(parameters, dict):
                obj["parameters"] = {key: value for key, value in parameters.items() if value is not None}
            yield number, orjson.dumps(obj) + b"\n"


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
    invalid: list[InvalidLine] = field(default_factory=list)
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
    on_request: Callable[[Request], None] | None = None,
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
        if isinstance(parsed, InvalidLine):
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
# Building requests


def request_kwargs(
    request: Request, generate_defaults: Mapping[str, Any], chat_defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """The client keywords for `request`: the defaults, then the line's own parameters."""
    if request.kind == "prompt":
        return {"details": True, **generate_defaults, **request.parameters}
    if request.kind == "embed":
        return dict(request.parameters)
    return {**chat_defaults, **request.parameters}


def build_message(request: Request, kwargs: Mapping[str, Any]) -> tuple[routes.Method, Message]:
    """The route and request message the client sends for `request` (by its own builders)."""
    if request.kind == "prompt":
        return routes.GENERATE, _params.generate(request.payload, **kwargs)
    if request.kind == "embed":
        return routes.EMBED, _params.embed(request.payload, **kwargs)
    return routes.CHAT_COMPLETIONS, _params.chat(request.payload, **kwargs)


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
    counts = {"prompt": 0, "messages": 0, "embed": 0}
    late_invalid: list[InvalidLine] = []

    def build(request: Request) -> None:
        kwargs = request_kwargs(request, gen_defaults, chat_default)
        if kwargs.get("api_token") is not None:
            kwargs["api_token"] = REDACTED  # never printed
        try:
            method, message = build_message(request, kwargs)
        except (TypeError, ValueError, LoraxError) as exc:
            late_invalid.append(InvalidLine(request.line, request.id, f"line {request.line}: {exc}"))
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
