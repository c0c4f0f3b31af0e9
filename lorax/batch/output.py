"""The output of a batch: one JSON row per input line, resumable, written durably.

Output, one row per input line::

    {"id": "q1", "ok": true, "result": {"generated_text": "...", "finish_reason": "length"},
     "prompt_tokens": 7, "generated_tokens": 64, "latency_ms": 812.3, "attempts": 1}
    {"id": "q2", "ok": false, "error": {"type": "OverloadedError", "message": "...", "status_code": 429},
     "latency_ms": 20512.0, "attempts": 9}

Resuming: the output is scanned first. Ids with an ``ok: true`` row are skipped. The
rows of lines that failed (and of invalid lines) are removed, by writing the rows kept
to a temporary file that then replaces the output (:func:`os.replace`), and those lines
are run again, so each input line has at most one row, ever. Rows whose id is not in
the input are kept. A line torn by a crash (no final newline) is cut off first.

Durability: each result is one ``write`` of one complete line to an unbuffered file
opened for appending, so a finished result is on its way to disk before the next one
starts, and an interrupted run never leaves half a line (short of a crash in the middle
of that write, which the next run repairs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from lorax.batch.lines import _is_id
from lorax.errors import LoraxError

__all__ = ["BatchOutputError", "ResultWriter", "scan_output"]

logger = logging.getLogger("lorax.batch")


class BatchOutputError(LoraxError, ValueError):
    """The output cannot be written by this run (it is the input, or another run holds it)."""


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


class ResultWriter:
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
        raise BatchOutputError(f"another lorax batch is writing to {os.fspath(path)}")

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
        raise BatchOutputError(f"another lorax batch is writing to {os.fspath(path)}") from None
