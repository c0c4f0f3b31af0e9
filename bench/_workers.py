"""Benchmark workers: one contender running one case, round by round, in its own process.

``run_all.py`` starts ``python bench/_workers.py CONTENDER CASE PARAMS_JSON`` with this
project's interpreter (contenders ``floor`` and ``ours``), or with the interpreter of
``bench/.venv-official`` in isolated mode (contender ``official``), so that each side
imports its own ``lorax``. This module therefore imports only the standard library at
the top; each contender imports its libraries when its process starts (not timed).

Protocol, one JSON line each way:

- the worker prints ``{"ready": ...}`` once its imports are done;
- ``warm``: build a fresh client (a new pool or session) and run the warm-up with it;
  the answer is ``{"warm": true}``;
- ``run``: the measured part, with that client, which is then closed; the answer is
  the round's result (times, token counts, CPU time);
- end of input: exit.

Any failure (a wrong token count included) is printed as ``{"error": "..."}`` and ends
the worker, so a broken contender fails the benchmark instead of skewing it. Every loop
is bounded in count and in time.

Cases (PARAMS_JSON carries ``base``, the client's base URL, and the counts):

- ``seq_generate``: ``n`` sequential ``generate`` calls; per-call latencies.
- ``seq_stream``: ``n`` sequential streams read to the end; tokens per second.
- ``async_generate`` / ``async_stream``: ``batches`` batches of ``concurrency``
  concurrent calls (streams); the wall time of each batch, process CPU time, tokens.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
import traceback
from typing import Any

PROMPT = "Why is the sky blue?"
# What lorax.Client.generate(PROMPT) sends (run_all checks this): the floors send the same bytes.
BODY = b'{"inputs":"Why is the sky blue?","parameters":{"details":true}}'
JSON_HEADERS = {"content-type": "application/json"}


class Mismatch(Exception):
    pass


class GCWatch:
    """Collections per generation and the time spent in them, during a measured run."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._t0 = 0.0
        self._before: list[int] = []
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._t0

    def start(self) -> None:
        self.seconds = 0.0
        self._before = [s["collections"] for s in gc.get_stats()]

    def result(self) -> dict[str, Any]:
        after = [s["collections"] for s in gc.get_stats()]
        return {"gc_s": self.seconds, "gc_collections": [a - b for a, b in zip(after, self._before, strict=True)]}


GC = GCWatch()


def _check(got: int, want: int, what: str) -> None:
    if got != want:
        raise Mismatch(f"{what}: {got} tokens, expected {want}")


# ---------------------------------------------------------------------------------------------
# Sync contenders: generate() and stream() return the number of tokens received.


class FloorSync:
    """urllib3 PoolManager + orjson: the least a Python client can do."""

    def __init__(self, base: str, limit: int) -> None:
        import orjson
        import urllib3

        self.loads = orjson.loads
        self.pm = urllib3.PoolManager(maxsize=limit, retries=False)
        self.gen_url = base + "/generate"
        self.stream_url = base + "/generate_stream"

    def generate(self) -> int:
        resp = self.pm.request("POST", self.gen_url, body=BODY, headers=JSON_HEADERS)
        return len(self.loads(resp.data)["details"]["tokens"])

    def stream(self) -> int:
        loads = self.loads
        resp = self.pm.request("POST", self.stream_url, body=BODY, headers=JSON_HEADERS, preload_content=False)
        n = 0
        rest = b""
        for chunk in resp.stream(65536):
            lines = (rest + chunk).split(b"\n") if rest else chunk.split(b"\n")
            rest = lines.pop()
            for line in lines:
                if line.startswith(b"data:"):
                    loads(line[5:])["token"]
                    n += 1
        resp.release_conn()
        return n

    def close(self) -> None:
        self.pm.clear()


class OursSync:
    def __init__(self, base: str, limit: int) -> None:
        import lorax

        self.client = lorax.Client(base, pool_size=limit) if base.startswith("http") else lorax.Client(base)

    def generate(self) -> int:
        return len(self.client.generate(PROMPT).details.tokens)

    def stream(self) -> int:
        n = 0
        for event in self.client.generate_stream(PROMPT):
            event.token  # noqa: B018
            n += 1
        return n

    def close(self) -> None:
        self.client.close()


class OfficialSync:
    """The official client (requests + pydantic); it posts to the base URL (LoRAX's ``/``)."""

    def __init__(self, base: str, limit: int) -> None:
        import lorax

        self.client: Any = lorax.Client(base)

    def generate(self) -> int:
        return len(self.client.generate(PROMPT).details.tokens)

    def stream(self) -> int:
        n = 0
        for event in self.client.generate_stream(PROMPT):
            event.token  # noqa: B018
            n += 1
        return n

    def close(self) -> None:
        if self.client.session is not None:
            self.client.session.close()


# ---------------------------------------------------------------------------------------------
# Async contenders.


class FloorAsync:
    """One aiohttp ClientSession (pooled, keep-alive) + orjson."""

    def __init__(self, base: str, limit: int) -> None:
        import aiohttp
        import orjson

        self.loads = orjson.loads
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit))
        self.gen_url = base + "/generate"
        self.stream_url = base + "/generate_stream"

    async def generate(self) -> int:
        async with self.session.post(self.gen_url, data=BODY, headers=JSON_HEADERS) as resp:
            return len(self.loads(await resp.read())["details"]["tokens"])

    async def stream(self) -> int:
        loads = self.loads
        n = 0
        async with self.session.post(self.stream_url, data=BODY, headers=JSON_HEADERS) as resp:
            async for line in resp.content:
                if line.startswith(b"data:"):
                    loads(line[5:])["token"]
                    n += 1
        return n

    async def close(self) -> None:
        await self.session.close()


class OursAsync:
    def __init__(self, base: str, limit: int) -> None:
        import lorax

        self.client = lorax.AsyncClient(base, pool_size=limit) if base.startswith("http") else lorax.AsyncClient(base)

    async def generate(self) -> int:
        return len((await self.client.generate(PROMPT)).details.tokens)

    async def stream(self) -> int:
        n = 0
        async for event in self.client.generate_stream(PROMPT):
            event.token  # noqa: B018
            n += 1
        return n

    async def close(self) -> None:
        await self.client.aclose()


class OfficialAsync:
    """The official AsyncClient: a new aiohttp session (and connection) for every call."""

    def __init__(self, base: str, limit: int) -> None:
        import lorax

        self.client = lorax.AsyncClient(base)

    async def generate(self) -> int:
        return len((await self.client.generate(PROMPT)).details.tokens)

    async def stream(self) -> int:
        n = 0
        async for event in self.client.generate_stream(PROMPT):
            event.token  # noqa: B018
            n += 1
        return n

    async def close(self) -> None:
        pass


SYNC = {"floor": FloorSync, "ours": OursSync, "official": OfficialSync}
ASYNC = {"floor": FloorAsync, "ours": OursAsync, "official": OfficialAsync}


# ---------------------------------------------------------------------------------------------
# Cases.


class SeqCase:
    def __init__(self, contender: str, case: str, p: dict[str, Any]) -> None:
        self.cls = SYNC[contender]
        self.case = case
        self.p = p
        self.client: Any = None

    def one(self) -> int:
        got: int = self.client.generate() if self.case == "seq_generate" else self.client.stream()
        return got

    def warm(self) -> dict[str, Any]:
        self.client = self.cls(self.p["base"], self.p.get("limit", 10))
        want = self.p["tokens"]
        for _ in range(self.p["warm"]):
            _check(self.one(), want, self.case)
        return {"warm": True}

    def run(self) -> dict[str, Any]:
        p = self.p
        want = p["tokens"]
        stop_at = time.perf_counter() + p["max_seconds"]
        one = self.one
        perf = time.perf_counter
        times: list[float] = []
        tokens = 0
        GC.start()
        cpu0 = time.process_time()
        start = perf()
        try:
            for _ in range(p["n"]):
                t0 = perf()
                got = one()
                times.append(perf() - t0)
                _check(got, want, self.case)
                tokens += got
                if t0 > stop_at:
                    break
            wall = perf() - start
            cpu = time.process_time() - cpu0
            gc_result = GC.result()
        finally:
            self.client.close()
            self.client = None
        return {"times": times, "wall": wall, "cpu": cpu, "tokens": tokens, "calls": len(times), **gc_result}


class AsyncCase:
    def __init__(self, contender: str, case: str, p: dict[str, Any]) -> None:
        self.cls = ASYNC[contender]
        self.case = case
        self.p = p
        self.client: Any = None
        self.loop = asyncio.new_event_loop()

    async def batch(self, concurrency: int) -> int:
        one = self.client.generate if self.case == "async_generate" else self.client.stream
        results = await asyncio.wait_for(
            asyncio.gather(*(one() for _ in range(concurrency))), timeout=self.p["max_seconds"]
        )
        want = self.p["tokens"]
        for got in results:
            _check(got, want, self.case)
        return sum(results)

    async def _warm(self) -> None:
        self.client = self.cls(self.p["base"], self.p["limit"])
        for _ in range(self.p["warm"]):
            await self.batch(self.p.get("warm_concurrency", self.p["concurrency"]))

    async def _run(self) -> dict[str, Any]:
        p = self.p
        walls: list[float] = []
        tokens = 0
        GC.start()
        cpu0 = time.process_time()
        try:
            for _ in range(p["batches"]):
                t0 = time.perf_counter()
                tokens += await self.batch(p["concurrency"])
                walls.append(time.perf_counter() - t0)
            cpu = time.process_time() - cpu0
            gc_result = GC.result()
        finally:
            await self.client.close()
            self.client = None
        return {"walls": walls, "cpu": cpu, "tokens": tokens, "calls": p["batches"] * p["concurrency"], **gc_result}

    def warm(self) -> dict[str, Any]:
        self.loop.run_until_complete(self._warm())
        return {"warm": True}

    def run(self) -> dict[str, Any]:
        return self.loop.run_until_complete(self._run())


def _package(filename: str) -> str:
    for marker, name in (
        ("/lorax/", "lorax"),
        ("/aiohttp/", "aiohttp"),
        ("/urllib3/", "urllib3"),
        ("/yarl/", "yarl"),
        ("/multidict/", "multidict"),
        ("/websockets/", "websockets"),
        ("/asyncio/", "asyncio"),
        ("/http/", "http.client"),
        ("/google/protobuf/", "protobuf"),
        ("/requests/", "requests"),
        ("/pydantic", "pydantic"),
    ):
        if marker in filename:
            return name
    if filename == "~":
        return "builtins (C)"
    if "/bench/" in filename:
        return "bench"
    return "other stdlib"


def profile(runner: SeqCase | AsyncCase, top: int) -> dict[str, Any]:
    """One run under cProfile: the costliest functions by own time, and own time by package."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    result = prof.runcall(runner.run)
    stats = pstats.Stats(prof)
    entries = []
    by_package: dict[str, float] = {}
    for (filename, line, func), (cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        entries.append((tt, ct, nc, cc, filename, line, func))
        pkg = _package(filename)
        by_package[pkg] = by_package.get(pkg, 0.0) + tt
    entries.sort(reverse=True)
    total = sum(by_package.values()) or 1.0
    out = []
    for tt, ct, nc, cc, filename, line, func in entries[:top]:
        short = filename.split("/site-packages/")[-1].split("/work/main/")[-1]
        where = f"{short}:{line}({func})" if filename != "~" else func
        out.append({"func": where, "ncalls": nc if nc == cc else f"{nc}/{cc}", "tottime": tt, "cumtime": ct})
    shares = ", ".join(
        f"{k} {v / total:.0%}" for k, v in sorted(by_package.items(), key=lambda kv: -kv[1]) if v / total >= 0.02
    )
    return {"top": out, "by_package": shares, "calls": result["calls"], "tokens": result["tokens"]}


def main() -> None:
    contender, case, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    if contender != "official":
        # "ours" is the checkout this script is in, not whatever `lorax` the interpreter
        # has installed (workers run without PYTHONPATH; an editable install elsewhere
        # would otherwise be measured). The official client runs isolated (-I) in its venv.
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    try:
        runner: SeqCase | AsyncCase = (
            SeqCase(contender, case, params) if case.startswith("seq_") else AsyncCase(contender, case, params)
        )
    except BaseException:
        print(json.dumps({"error": traceback.format_exc()}), flush=True)
        raise SystemExit(1) from None
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        try:
            if command == "warm":
                answer = runner.warm()
            elif command == "run":
                gc.collect()
                answer = runner.run()
            elif command == "profile":
                gc.collect()
                answer = profile(runner, params.get("profile_top", 14))
            else:
                break
        except BaseException:
            print(json.dumps({"error": traceback.format_exc()}), flush=True)
            raise SystemExit(1) from None
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
