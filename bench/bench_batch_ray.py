"""Lines per second of ``lorax batch``'s local engine and its Ray engine, same total concurrency.

``python bench/bench_batch_ray.py [--lines 2000] [--workers 2] [--concurrency 8]
[--token-latency-ms 10] [--max-new-tokens 8]`` (needs ``pip install 'lorax-client[ray]'``).

A paced fake server (``python -m lorax.testing``, its own process: it delays each
token, so a request takes about ``max_new_tokens x token_latency``) answers:

1. the local engine, :func:`lorax.batch.run_batch`, with ``workers x concurrency``
   requests in flight in this one process;
2. the Ray engine, :func:`lorax.batch.ray.run_batch_ray`, with ``workers`` actors of
   ``concurrency`` each, on a local Ray runtime; reported twice: the job alone (Ray
   already running), and with ``ray.init`` counted, which is what a one-off
   ``lorax batch --engine ray`` pays;
3. the two actor designs on the same Ray Data pipeline (``map_batches`` of the same
   rows): the async client inside the actor (what lorax.batch.ray does) and a sync
   :class:`lorax.Client` over a thread pool of ``concurrency`` threads.

The ideal rate is ``total concurrency / request time``; each row also says how far from
it the run was. On one machine Ray cannot win: the point is its overhead, and that the
pipeline keeps every slot busy so that on a cluster throughput is workers x concurrency
against the server's capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from lorax import AsyncClient, Client, RetryPolicy
from lorax.batch import run_batch


def start_server(token_latency_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lorax.testing", "--port", str(port), "--token-latency-ms", str(token_latency_ms)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    with Client(url) as client:
        client.wait_until_ready(timeout=30)
    return proc, url


def write_input(path: Path, lines: int, max_new_tokens: int) -> None:
    with open(path, "wb") as f:
        for i in range(lines):
            f.write(orjson.dumps({"id": i, "prompt": f"prompt {i}", "parameters": {"max_new_tokens": max_new_tokens}}))
            f.write(b"\n")


class SyncThreadWorker:
    """The alternative design: a sync client in each actor, `concurrency` threads."""

    def __init__(self, url: str, concurrency: int, max_new_tokens: int) -> None:
        self.client = Client(url, max_retries=RetryPolicy(max_retries=8))
        self.pool = ThreadPoolExecutor(concurrency)
        self.max_new_tokens = max_new_tokens

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        def one(prompt: str) -> str:
            return self.client.generate(prompt, max_new_tokens=self.max_new_tokens).generated_text

        texts = list(self.pool.map(one, batch.column("prompt").to_pylist()))
        return batch.append_column("text", pa.array(texts, type=pa.string()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--concurrency", type=int, default=8, help="per Ray worker; the local engine gets workers x this"
    )
    parser.add_argument("--token-latency-ms", type=float, default=10.0)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args()

    import ray
    import ray.data

    from lorax.batch.ray import BATCH_ROWS_PER_SLOT, CALLS_PER_ACTOR, DEFAULT_NUM_CPUS, process_dataset, run_batch_ray

    total = args.workers * args.concurrency
    request_s = args.max_new_tokens * args.token_latency_ms / 1000
    ideal = total / request_s
    work = Path(tempfile.mkdtemp(prefix="bench-batch-ray-"))
    proc, url = start_server(args.token_latency_ms)
    results: list[tuple[str, float, str]] = []
    try:
        src = work / "in.jsonl"
        write_input(src, args.lines, args.max_new_tokens)

        async def local() -> None:
            async with AsyncClient(url) as client:
                await run_batch(client, src, work / "local.jsonl", concurrency=total)

        started = time.perf_counter()
        asyncio.run(local())
        results.append((f"local engine, concurrency {total}", time.perf_counter() - started, ""))

        started = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - started
        ray.data.DataContext.get_current().enable_progress_bars = False

        started = time.perf_counter()
        stats = run_batch_ray(src, work / "ray.jsonl", url, workers=args.workers, concurrency=args.concurrency)
        job_s = time.perf_counter() - started
        assert stats.done == args.lines, stats
        results.append((f"Ray engine, {args.workers} x {args.concurrency}, job only", job_s, ""))
        results.append(
            (f"Ray engine, {args.workers} x {args.concurrency}, with ray.init", job_s + init_s, f"init {init_s:.1f} s")
        )
        # A second job on the warm runtime: actors start again, the runtime does not.
        (work / "ray.jsonl").unlink()
        started = time.perf_counter()
        run_batch_ray(src, work / "ray.jsonl", url, workers=args.workers, concurrency=args.concurrency)
        results.append(
            (f"Ray engine, {args.workers} x {args.concurrency}, second job", time.perf_counter() - started, "")
        )

        rows = [{"prompt": f"prompt {i}"} for i in range(args.lines)]
        from ray.data import ActorPoolStrategy

        def async_actors() -> int:
            return process_dataset(
                ray.data.from_items(rows, override_num_blocks=args.workers * 8),
                url,
                workers=args.workers,
                concurrency=args.concurrency,
                defaults={"max_new_tokens": args.max_new_tokens},
            ).count()

        def sync_actors() -> int:
            return (
                ray.data.from_items(rows, override_num_blocks=args.workers * 8)
                .map_batches(
                    SyncThreadWorker,
                    fn_constructor_args=(url, args.concurrency, args.max_new_tokens),
                    batch_size=args.concurrency * BATCH_ROWS_PER_SLOT,
                    batch_format="pyarrow",
                    compute=ActorPoolStrategy(size=args.workers),
                    num_cpus=DEFAULT_NUM_CPUS,
                )
                .count()
            )

        # Alternated, twice each: the first pipeline of a runtime also pays for warming
        # Ray's worker processes, and the machine's load changes over a minute.
        for round_ in (1, 2):
            for name, run in (("async client in actor", async_actors), ("sync client + thread pool", sync_actors)):
                started = time.perf_counter()
                assert run() == args.lines
                results.append((f"Ray Data map_batches, {name}", time.perf_counter() - started, f"round {round_}"))
        ray.shutdown()
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"{args.lines} lines, max_new_tokens {args.max_new_tokens}, token latency {args.token_latency_ms:g} ms "
        f"(a request takes ~{request_s * 1000:.0f} ms), total concurrency {total}: ideal {ideal:.0f} lines/s; "
        f"{os.cpu_count()} CPUs; Ray actors: batch {args.concurrency * BATCH_ROWS_PER_SLOT} rows, "
        f"{CALLS_PER_ACTOR} calls per actor"
    )
    print("| run | seconds | lines/s | of ideal | note |\n|---|---|---|---|---|")
    for name, seconds, note in results:
        rate = args.lines / seconds
        print(f"| {name} | {seconds:.2f} | {rate:.0f} | {rate / ideal:.0%} | {note} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
