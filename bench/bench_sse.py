"""Benchmark of lorax._sse.SSEDecoder on LoRAX-shaped streams.

Run with ``python bench/bench_sse.py``. It prints the best of several runs for each
shape of input, per event (or per MiB for the large event).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lorax._sse import SSEDecoder

N_EVENTS = 100_000
REPEATS = 5


def token_event(i: int, *, sep: bytes = b"data: ", eol: bytes = b"\n") -> bytes:
    """A /generate_stream token event as LoRAX frames it (about 150 bytes)."""
    payload = (
        b'{"token":{"id":%d,"text":" tok%d","logprob":-0.0127,"special":false,"skipped":false},'
        b'"generated_text":null,"details":null}' % (i, i % 1000)
    )
    return sep + payload + eol + eol


def best_of(run: Callable[[], int]) -> tuple[float, int]:
    best = float("inf")
    count = 0
    for _ in range(REPEATS):
        start = time.perf_counter()
        count = run()
        best = min(best, time.perf_counter() - start)
    return best, count


def feed_all(chunks: list[bytes]) -> Callable[[], int]:
    def run() -> int:
        decoder = SSEDecoder()
        feed = decoder.feed
        n = 0
        for chunk in chunks:
            n += len(feed(chunk))
        decoder.close()
        return n

    return run


def report(label: str, chunks: list[bytes], expected: int) -> None:
    seconds, count = best_of(feed_all(chunks))
    assert count == expected, (label, count, expected)
    print(f"{label:<58} {seconds / count * 1e6:7.3f} µs/event  ({len(chunks)} chunks)")


def main() -> None:
    print(f"Python {sys.version.split()[0]}, {N_EVENTS} events, best of {REPEATS}")
    events = [token_event(i) for i in range(N_EVENTS)]
    size = sum(map(len, events)) / N_EVENTS
    print(f"typical event: {size:.0f} bytes")

    report("one event per chunk (fast path)", events, N_EVENTS)
    report(
        "one event per chunk, 'data:' without space (LoRAX <= 0.11)",
        [token_event(i, sep=b"data:") for i in range(N_EVENTS)],
        N_EVENTS,
    )
    report(
        "one event per chunk, CRLF (general path)",
        [token_event(i, eol=b"\r\n") for i in range(N_EVENTS)],
        N_EVENTS,
    )
    with_keepalives = [c for i, e in enumerate(events) for c in ((b":\n\n", e) if i % 10 == 0 else (e,))]
    report("one event per chunk, a ':' keep-alive every 10 events", with_keepalives, N_EVENTS)

    stream = b"".join(events)
    for per_chunk in (16, 400):
        step = int(size * per_chunk)
        chunks = [stream[i : i + step] for i in range(0, len(stream), step)]
        report(f"many events per chunk (~{per_chunk} per {step}-byte chunk)", chunks, N_EVENTS)
    for piece in (64, 16):
        chunks = [stream[i : i + piece] for i in range(0, len(stream), piece)]
        report(f"each event split over many chunks ({piece}-byte chunks)", chunks, N_EVENTS)

    # One huge event (a long generated_text in the final event) fed in 64 KiB chunks.
    big = b"data: " + b"x" * (8 * 1024 * 1024) + b"\n\n"
    step = 64 * 1024
    big_chunks = [big[i : i + step] for i in range(0, len(big), step)]
    seconds, count = best_of(feed_all(big_chunks))
    assert count == 1
    print(
        f"{'one 8 MiB event in 64 KiB chunks':<58} {seconds * 1e3:7.3f} ms total "
        f"({len(big) / seconds / 2**30:.2f} GiB/s)"
    )
    big = b"data: " + b"x" * (64 * 1024 * 1024 - 100) + b"\n\n"
    big_chunks = [big[i : i + step] for i in range(0, len(big), step)]
    seconds, count = best_of(feed_all(big_chunks))
    assert count == 1
    print(
        f"{'one 64 MiB event in 64 KiB chunks':<58} {seconds * 1e3:7.3f} ms total "
        f"({len(big) / seconds / 2**30:.2f} GiB/s, linear if ~8x the 8 MiB time)"
    )


if __name__ == "__main__":
    main()
