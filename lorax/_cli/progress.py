"""Progress and summary lines for ``lorax batch``.

The engine only counts (:class:`BatchStats`); this module turns the counts into text.
On a terminal a single bar is redrawn in place a few times a second; when stderr is a
file or a pipe (CI logs) a plain line is printed every ``interval`` seconds instead,
so logs stay readable and small.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import IO

from lorax.batch.engine import BatchStats

__all__ = ["BatchStats", "ProgressReporter", "format_duration", "format_progress", "format_summary"]

BAR_WIDTH = 24
TTY_INTERVAL = 0.2
PLAIN_INTERVAL = 10.0


def format_duration(seconds: float) -> str:
    """``0:05``, ``12:34`` or ``1:02:03``."""
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_progress(stats: BatchStats, *, bar: bool, now: float | None = None) -> str:
    """One progress line: bar (on a terminal), counts, tokens/s and ETA when known."""
    parts: list[str] = []
    if stats.total:
        fraction = min(1.0, stats.handled / stats.total)
        counts = f"{fraction * 100:.0f}% {stats.handled}/{stats.total}"
        if bar:
            filled = int(fraction * BAR_WIDTH)
            counts = "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "] " + counts
        parts.append(counts)
    else:
        parts.append(f"{stats.handled} lines")
    parts.append(f"done {stats.done} failed {stats.failed} skipped {stats.skipped}")
    parts.append(f"{stats.tokens_per_second(now):.1f} tok/s")
    eta = stats.eta(now)
    if eta is not None:
        parts.append(f"ETA {format_duration(eta)}")
    return " | ".join(parts)


def format_summary(stats: BatchStats) -> str:
    """The final line: what happened, how much, how fast."""
    failed = f"failed {stats.failed}" + (f" ({stats.invalid} invalid)" if stats.invalid else "")
    elapsed = stats.elapsed()
    text = (
        f"lorax batch: done {stats.done}, {failed}, skipped {stats.skipped}, "
        f"tokens {stats.generated_tokens}, elapsed {elapsed:.2f} s, {stats.tokens_per_second():.1f} tokens/s"
    )
    if stats.interrupted:
        text += "; interrupted: rerun the same command to resume"
    elif stats.aborted:
        text += f"; stopped early: {stats.aborted}; rerun the same command to resume"
    elif stats.failed > stats.invalid:
        text += "; rerun the same command to retry the failed lines"
    if stats.invalid and not stats.interrupted:
        # A rerun reports them again but never sends them: only an edit helps.
        text += f"; fix the {stats.invalid} invalid line(s) in the input (their rows say why)"
    return text


class ProgressReporter:
    """Redraws the progress of a :class:`BatchStats` on `stream` until stopped."""

    def __init__(
        self,
        stats: BatchStats,
        stream: IO[str],
        *,
        tty: bool,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stats = stats
        self._stream = stream
        self._tty = tty
        self._interval = interval if interval is not None else (TTY_INTERVAL if tty else PLAIN_INTERVAL)
        self._clock = clock
        self._width = 0

    def draw(self) -> None:
        """Print the current state once: redrawn in place on a terminal, a new line otherwise."""
        line = format_progress(self._stats, bar=self._tty, now=self._clock())
        if self._tty:
            # \r plus padding to the previous width: no terminal escape codes needed.
            padded = line.ljust(self._width)
            self._width = len(line)
            self._stream.write("\r" + padded)
        else:
            self._stream.write("lorax batch: " + line + "\n")
        self._stream.flush()

    def clear(self) -> None:
        """Erase the bar (terminal only) so the summary starts on a clean line."""
        if self._tty and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0

    async def run(self) -> None:
        """Draw every interval until cancelled; erases the bar on the way out."""
        try:
            while True:
                await asyncio.sleep(self._interval)
                self.draw()
        finally:
            self.clear()
