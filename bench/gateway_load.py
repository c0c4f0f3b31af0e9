"""Bounded load and abuse runs of ``lorax gateway`` on loopback (``tox -e load``).

Three processes: the fake LoRAX server (or ``bench/canned_server.py``), the gateway,
and this one, which drives the clients. The two servers are children of this script
(``_fake`` and ``_gateway`` modes below) so that they can answer ``stats`` on stdin
with their counters; they exit when their stdin closes, so nothing outlives a run.

Phases, each bounded in count and time:

1. ``steady``: CONNECTIONS WebSocket connections x STREAMS concurrent streams each,
   held for DURATION seconds (a stream that ends is replaced at once; at the end the
   streams still open are closed, which must cancel them upstream);
2. ``oversized``: frames above the gateway's frame limit: close 1009 each time, and
   the gateway keeps serving;
3. ``flood``: connections that start far more calls than the per-connection limit:
   typed 429 (``too_many_calls``) errors, no crash, every call accounted for;
4. ``slow-readers``: connections that start fast streams and stop reading: the
   gateway's memory must stay bounded (TCP backpressure reaches the upstream);
5. ``disconnects``: connections dropped (TCP abort, no close frame) mid-stream: every
   one of their upstream requests must be cancelled.

The gateway's resident memory (VmRSS from /proc/PID/status) is sampled every 0.5 s;
the report gives its peak per phase, streams completed, tokens delivered, errors by
type, and what was left at the end: calls in flight, upstream connections in use or
open, generations still running upstream.

Usage: ``python bench/gateway_load.py [--duration 30] [--connections 50] [--streams 100]``
(``--quick`` for a small smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------------------------
# Child processes


def _rss_kb(pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _serve_stats(ready: dict[str, Any], stats: Any) -> None:
    """Print `ready`, then answer each stdin line with a JSON line of `stats()`; stop at EOF."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    sys.stdout.write("ready " + json.dumps(ready) + "\n")
    sys.stdout.flush()
    while await reader.readline():
        sys.stdout.write(json.dumps(stats()) + "\n")
        sys.stdout.flush()


async def _fake_main(args: argparse.Namespace) -> None:
    from lorax.testing import AsyncFakeLorax, ServerConfig

    config = ServerConfig(max_concurrent_requests=1_000_000, max_total_tokens=1_000_000, max_input_length=1024)
    async with AsyncFakeLorax(config, token_latency=args.token_latency_ms / 1000) as server:
        s = server.stats
        await _serve_stats(
            {"url": server.url},
            lambda: {
                "requests": s.requests,
                "cancelled": s.cancelled,
                "in_flight": s.in_flight,
                "overloaded": s.overloaded,
                "rss_kb": _rss_kb(),
            },
        )


async def _gateway_main(args: argparse.Namespace) -> None:
    from lorax._timeout import Timeout
    from lorax.gateway import Gateway

    gateway = Gateway(
        args.upstream,
        port=0,
        max_frame_bytes=args.max_frame_bytes,
        max_calls_per_connection=args.max_calls,
        # The load phases measure capacity with many streams per connection, not the
        # fairness cap (whose default, 16, would queue them at the gateway).
        max_upstream_calls_per_connection=args.max_calls,
        max_connections=4096,
        idle_timeout=None,
        shutdown_grace=0,
        upstream_pool_size=args.pool,
        upstream_timeout=Timeout(connect=10, read=120),
    )
    await gateway.start()

    def stats() -> dict[str, Any]:
        upstream = gateway.upstream
        pool = upstream.pool_stats() if hasattr(upstream, "pool_stats") else {}
        return {
            "connections": gateway.connections,
            "calls": sum(len(session._calls) for session in list(gateway._sessions)),
            "upstream_in_use": pool.get("in_use", 0),
            "upstream_idle": pool.get("idle", 0),
            "upstream_streams": pool.get("streams", 0),
            "rss_kb": _rss_kb(),
            # The gateway process's CPU time (user + system), for CPU per token.
            "cpu_s": time.process_time(),
        }

    try:
        await _serve_stats({"url": gateway.url, "pid": os.getpid()}, stats)
    finally:
        await gateway.stop(grace=0)


class Child:
    """A child process of this script that answers ``stats`` on stdin."""

    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a Ctrl-C of the run reaches the parent only; it stops us
        )
        self._lock = threading.Lock()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            self.stop()
            raise RuntimeError(f"{argv[0]} did not start: {line!r}")
        self.info: dict[str, Any] = json.loads(line[6:])
        self.pid = self.proc.pid

    def stats(self) -> dict[str, Any]:
        with self._lock:
            assert self.proc.stdin is not None
            assert self.proc.stdout is not None
            self.proc.stdin.write("stats\n")
            self.proc.stdin.flush()
            return json.loads(self.proc.stdout.readline())  # type: ignore[no-any-return]

    async def astats(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.stats)

    def stop(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # the child's stats loop ends, it shuts down
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


class CannedUpstream:
    """bench/canned_server.py as the upstream: fast, no counters."""

    def __init__(self, tokens: int, latency_ms: int) -> None:
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "canned_server.py")
        self.proc = subprocess.Popen(
            [sys.executable, script, "--port", "0"], stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        port = int(line.rsplit(" ", 1)[1])
        self.port = port
        self.info = {"url": f"http://127.0.0.1:{port}/t{tokens}p{latency_ms}"}

    def stats(self) -> dict[str, Any]:
        return {"rss_kb": _rss_kb(self.proc.pid), "established": established_to(self.port)}

    async def astats(self) -> dict[str, Any]:
        return self.stats()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _tcp_to(port: int) -> list[list[str]]:
    """The /proc/net/tcp rows of ESTABLISHED connections whose remote end is `port`."""
    rows = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as table:
                next(table)
                for line in table:
                    fields = line.split()
                    if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                        rows.append(fields)
        except OSError:
            pass
    return rows


def established_to(port: int) -> int:
    """ESTABLISHED TCP connections on loopback whose remote end is `port` (client side)."""
    return len(_tcp_to(port))


def unread_bytes_from(port: int) -> int:
    """Bytes received from `port` that their readers have not read (the rx queues)."""
    return sum(int(fields[4].split(":")[1], 16) for fields in _tcp_to(port))


class RSSSampler(threading.Thread):
    """Samples a process's VmRSS every `interval`; peaks per phase."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.interval = interval
        self.phase = "start"
        self.peaks: dict[str, int] = collections.defaultdict(int)
        self.first: dict[str, int] = {}
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def sample(self) -> int:
        rss = _rss_kb(self.pid)
        self.samples += 1
        phase = self.phase
        self.first.setdefault(phase, rss)
        self.peaks[phase] = max(self.peaks[phase], rss)
        self.peaks["overall"] = max(self.peaks["overall"], rss)
        return rss

    def enter(self, phase: str) -> None:
        self.phase = phase
        self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join(2)


# ---------------------------------------------------------------------------------
# The phases


@dataclass
class PhaseResult:
    name: str
    seconds: float = 0.0
    streams_completed: int = 0
    streams_closed_early: int = 0
    tokens: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    notes: list[str] = field(default_factory=list)
    checks: list[tuple[str, bool]] = field(default_factory=list)

    def check(self, what: str, ok: bool) -> None:
        self.checks.append((what, ok))


def _error_name(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    error_type = getattr(exc, "error_type", None)
    extra = f" {status}" if status else ""
    extra += f" {error_type}" if error_type else ""
    return f"{type(exc).__name__}{extra}"


async def _settle(gateway: Child, upstream: Any, timeout: float = 10.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Wait until the gateway has no call in flight and the upstream no generation running."""
    end = time.monotonic() + timeout
    while True:
        gw = await gateway.astats()
        up = await upstream.astats()
        if (gw["calls"] == 0 and gw["upstream_in_use"] == 0 and up.get("in_flight", 0) == 0) or time.monotonic() > end:
            return gw, up
        await asyncio.sleep(0.1)


async def phase_steady(args: argparse.Namespace, url: str, upstream: Any) -> PhaseResult:
    from lorax import AsyncClient, Timeout, errors

    result = PhaseResult("steady")
    before = await upstream.astats()
    gw_before = await args.gateway_child.astats()
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + args.duration
    opened = 0

    async def worker(client: AsyncClient, index: int) -> None:
        nonlocal opened
        await asyncio.sleep(index * args.ramp / max(1, args.connections * args.streams))
        while loop.time() < deadline:
            stream = client.generate_stream("load", max_new_tokens=args.tokens, ignore_eos_token=True)
            opened += 1
            try:
                async with stream:
                    async for _ in stream:
                        result.tokens += 1
                        if loop.time() >= deadline:
                            result.streams_closed_early += 1
                            break
                if stream.final is not None:
                    result.streams_completed += 1
            except errors.LoraxError as exc:
                result.errors[_error_name(exc)] += 1
                await asyncio.sleep(0.1)

    clients = [AsyncClient(url, max_retries=0, timeout=Timeout(connect=30, read=60)) for _ in range(args.connections)]
    try:
        await asyncio.wait_for(
            asyncio.gather(
                *(worker(client, c * args.streams + s) for c, client in enumerate(clients) for s in range(args.streams))
            ),
            args.duration + 60,
        )
    finally:
        for client in clients:
            await client.aclose()
    result.seconds = loop.time() - start
    gw, up = await _settle(args.gateway_child, upstream)
    concurrent = args.connections * args.streams
    result.notes.append(
        f"{concurrent} streams held on {args.connections} connections for {args.duration:g} s; {opened} opened, "
        f"{result.tokens / max(result.seconds, 1e-9):,.0f} tokens/s; gateway CPU "
        f"{(gw['cpu_s'] - gw_before['cpu_s']) / max(result.tokens, 1) * 1e6:.1f} µs/token (calls opened, "
        f"streamed and closed included)"
    )
    if "cancelled" in up:
        cancelled = up["cancelled"] - before["cancelled"]
        result.notes.append(
            f"streams closed at the deadline: {result.streams_closed_early}, generations cancelled upstream: "
            f"{cancelled} (the others had produced their last token already)"
        )
        result.check("no generation left running upstream", up["in_flight"] == 0)
    result.check("no errors", not result.errors)
    result.check("no call left in flight", gw["calls"] == 0)
    return result


async def phase_oversized(args: argparse.Namespace, url: str, upstream: Any) -> PhaseResult:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from lorax import AsyncClient
    from lorax.transports import _ws_frames as wsf

    result = PhaseResult("oversized")
    start = time.monotonic()
    codes: collections.Counter[int | None] = collections.Counter()
    payload = b"\x00" * (args.max_frame_bytes + 1024)
    for _ in range(args.oversized):
        async with connect(url, subprotocols=[wsf.SUBPROTOCOL], max_size=None, open_timeout=10) as ws:
            await ws.send(payload)
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as exc:
                codes[exc.rcvd.code if exc.rcvd is not None else None] += 1
    async with AsyncClient(url, max_retries=0) as client:
        text = (await client.generate("still there?", max_new_tokens=3)).generated_text
    result.seconds = time.monotonic() - start
    result.notes.append(
        f"{args.oversized} frames of {len(payload):,} bytes (limit {args.max_frame_bytes:,}): close codes {dict(codes)}"
    )
    result.check("every oversized frame closed with 1009", codes == {1009: args.oversized})
    result.check("the gateway still serves", bool(text))
    return result


async def phase_flood(args: argparse.Namespace, url: str, upstream: Any) -> PhaseResult:
    from lorax import AsyncClient, Timeout, errors

    result = PhaseResult("flood")
    start = time.monotonic()
    clients = [
        AsyncClient(url, max_retries=0, timeout=Timeout(connect=30, read=60)) for _ in range(args.flood_connections)
    ]
    admitted: list[Any] = []
    try:

        async def one(client: AsyncClient) -> None:
            stream = client.generate_stream("flood", max_new_tokens=500, ignore_eos_token=True)
            try:
                await stream.__anext__()
                admitted.append(stream)
            except errors.LoraxError as exc:
                result.errors[_error_name(exc)] += 1
                await stream.aclose()

        await asyncio.wait_for(
            asyncio.gather(*(one(client) for client in clients for _ in range(args.flood_calls))), 60
        )
        gw = await args.gateway_child.astats()
        result.notes.append(
            f"{args.flood_connections} connections x {args.flood_calls} calls (limit {args.max_calls} per "
            f"connection): {len(admitted)} admitted, {sum(result.errors.values())} refused; gateway calls in "
            f"flight {gw['calls']}"
        )
        for stream in admitted:
            await stream.aclose()
    finally:
        for client in clients:
            await client.aclose()
    result.streams_closed_early = len(admitted)
    gw, _ = await _settle(args.gateway_child, upstream)
    result.seconds = time.monotonic() - start
    limit = args.max_calls * args.flood_connections
    refused = result.errors.get("RateLimitExceededError 429 too_many_calls", 0)
    result.check("exactly the per-connection limit admitted", len(admitted) == limit)
    result.check(
        "every other call refused with a typed 429", refused == args.flood_calls * args.flood_connections - limit
    )
    result.check("the gateway kept serving (calls back to 0)", gw["calls"] == 0)
    return result


async def phase_slow_readers(args: argparse.Namespace, url: str, upstream: Any, sampler: RSSSampler) -> PhaseResult:
    from websockets.asyncio.client import connect

    from lorax import _routes
    from lorax.testing import FAULT_HEADER
    from lorax.transports import _ws_frames as wsf
    from lorax.v1.generate_pb2 import GenerateParameters, GenerateRequest

    result = PhaseResult("slow-readers")
    start = time.monotonic()
    before = await upstream.astats()
    baseline = sampler.sample()
    request = GenerateRequest(
        inputs="x" * 200,
        parameters=GenerateParameters(max_new_tokens=args.slow_tokens, ignore_eos_token=True, details=True),
    ).SerializeToString()
    headers = {FAULT_HEADER: "token-latency=0ms"}
    conns = []
    try:
        for _ in range(args.slow_connections):
            # max_queue=1 and a tiny read buffer: the client stops reading at once.
            ws = await connect(url, subprotocols=[wsf.SUBPROTOCOL], max_queue=1, open_timeout=10)
            conns.append(ws)
            for call_id in range(1, args.slow_streams + 1):
                await ws.send(
                    wsf.encode_call(
                        call_id, _routes.GENERATE_STREAM.full_name, request, headers, read_timeout=None, deadline=None
                    )
                )
        samples = []
        end = time.monotonic() + args.slow_seconds
        while time.monotonic() < end:
            await asyncio.sleep(0.5)
            samples.append(sampler.sample())
        gw = await args.gateway_child.astats()
        port = int(url.rsplit(":", 1)[1])
        stuck = unread_bytes_from(port)
        potential = args.slow_connections * args.slow_streams * args.slow_tokens * 110  # ~110 B per token frame
        result.notes.append(
            f"{args.slow_connections} connections x {args.slow_streams} streams of {args.slow_tokens} tokens at full "
            f"speed, never read for {args.slow_seconds:g} s (~{potential / 2**20:.0f} MiB if nothing pushed back); "
            f"{stuck / 2**20:.1f} MiB waiting unread in the clients' socket buffers; gateway calls in flight "
            f"{gw['calls']}"
        )
        result.check("the streams did flow until the readers' buffers filled", stuck > 0)
        growth = (max(samples) - baseline) / 1024
        last_half = samples[len(samples) // 2 :]
        trend = (last_half[-1] - last_half[0]) / 1024 if last_half else 0.0
        result.notes.append(
            f"gateway RSS: {baseline / 1024:.1f} MiB before, peak {max(samples) / 1024:.1f} MiB "
            f"(+{growth:.1f} MiB), change over the second half {trend:+.1f} MiB"
        )
        result.check("gateway memory bounded (< 64 MiB growth, flat in the second half)", growth < 64 and trend < 8)
    finally:
        for ws in conns:
            ws.transport.abort()
    gw, up = await _settle(args.gateway_child, upstream)
    result.seconds = time.monotonic() - start
    if "cancelled" in up:
        cancelled = up["cancelled"] - before["cancelled"]
        result.notes.append(f"upstream generations cancelled when the readers went away: {cancelled}")
        result.check("every stream cancelled upstream", cancelled >= args.slow_connections * args.slow_streams)
    result.check("no call left in flight", gw["calls"] == 0)
    return result


async def phase_disconnects(args: argparse.Namespace, url: str, upstream: Any) -> PhaseResult:
    from websockets.asyncio.client import connect

    from lorax import _routes
    from lorax.transports import _ws_frames as wsf
    from lorax.v1.generate_pb2 import GenerateParameters, GenerateRequest
    from lorax.v1.websocket_pb2 import Frame

    result = PhaseResult("disconnects")
    start = time.monotonic()
    before = await upstream.astats()
    request = GenerateRequest(
        inputs="bye", parameters=GenerateParameters(max_new_tokens=1000, ignore_eos_token=True)
    ).SerializeToString()

    async def one() -> None:
        ws = await connect(url, subprotocols=[wsf.SUBPROTOCOL], open_timeout=10)
        try:
            for call_id in range(1, args.disconnect_streams + 1):
                await ws.send(
                    wsf.encode_call(
                        call_id, _routes.GENERATE_STREAM.full_name, request, {}, read_timeout=None, deadline=None
                    )
                )
            seen: collections.Counter[int] = collections.Counter()
            while min((seen[i] for i in range(1, args.disconnect_streams + 1)), default=0) < 2:
                frame = Frame.FromString(await asyncio.wait_for(ws.recv(), 30))
                if frame.WhichOneof("kind") == "message":
                    seen[frame.call_id] += 1
                    result.tokens += 1
        finally:
            ws.transport.abort()  # gone, mid-stream, without a close frame

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(args.disconnect_connections))), 60)
    gw, up = await _settle(args.gateway_child, upstream)
    result.seconds = time.monotonic() - start
    dropped = args.disconnect_connections * args.disconnect_streams
    result.streams_closed_early = dropped
    if "cancelled" in up:
        cancelled = up["cancelled"] - before["cancelled"]
        result.notes.append(f"{dropped} streams dropped mid-stream (TCP abort); cancelled upstream: {cancelled}")
        result.check("every dropped stream cancelled upstream", cancelled >= dropped)
    result.check("no call left in flight", gw["calls"] == 0)
    result.check("no upstream connection left in use", gw["upstream_in_use"] == 0)
    return result


# ---------------------------------------------------------------------------------
# The run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds the steady load is held (default 10)")
    p.add_argument("--connections", type=int, default=50, help="WebSocket connections of the steady load")
    p.add_argument("--streams", type=int, default=100, help="concurrent streams per connection")
    p.add_argument("--tokens", type=int, default=8, help="tokens per stream of the steady load")
    p.add_argument("--token-latency-ms", type=int, default=1000, help="the upstream's time per token")
    p.add_argument("--ramp", type=float, default=3.0, help="seconds over which the steady streams start")
    p.add_argument("--upstream", choices=("fake", "canned"), default="fake")
    p.add_argument("--max-calls", type=int, default=128, help="the gateway's calls per connection")
    p.add_argument("--max-frame-bytes", type=int, default=1 << 20, help="the gateway's frame limit")
    p.add_argument("--pool", type=int, default=8192, help="the gateway's upstream connection limit")
    p.add_argument("--oversized", type=int, default=10)
    p.add_argument("--flood-connections", type=int, default=4)
    p.add_argument("--flood-calls", type=int, default=400)
    p.add_argument("--slow-connections", type=int, default=10)
    p.add_argument("--slow-streams", type=int, default=10)
    p.add_argument("--slow-seconds", type=float, default=8.0)
    p.add_argument("--slow-tokens", type=int, default=5000, help="tokens per slow-reader stream (sent at full speed)")
    p.add_argument("--disconnect-connections", type=int, default=20)
    p.add_argument("--disconnect-streams", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="a small smoke run (a few seconds)")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_fake"]:
        p = argparse.ArgumentParser()
        p.add_argument("--token-latency-ms", type=float, default=0)
        _raise_fd_limit()
        asyncio.run(_fake_main(p.parse_args(argv[1:])))
        return 0
    if argv[:1] == ["_gateway"]:
        p = argparse.ArgumentParser()
        p.add_argument("--upstream", required=True)
        p.add_argument("--max-frame-bytes", type=int, required=True)
        p.add_argument("--max-calls", type=int, required=True)
        p.add_argument("--pool", type=int, required=True)
        _raise_fd_limit()
        asyncio.run(_gateway_main(p.parse_args(argv[1:])))
        return 0
    args = build_parser().parse_args(argv)
    # The abusive clients below drop connections on purpose; asyncio's "socket.send()
    # raised exception" warnings about them are expected noise.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    if args.quick:
        args.duration = min(args.duration, 3.0)
        args.connections, args.streams, args.ramp = 5, 20, 0.5
        args.token_latency_ms = min(args.token_latency_ms, 100)
        args.flood_connections, args.flood_calls = 2, 200
        args.slow_connections, args.slow_streams, args.slow_seconds = 3, 5, 3.0
        args.disconnect_connections, args.disconnect_streams = 5, 5
    _raise_fd_limit()
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    upstream: Any
    if args.upstream == "fake":
        upstream = await asyncio.to_thread(Child, "_fake", "--token-latency-ms", str(args.token_latency_ms))
    else:
        upstream = CannedUpstream(args.tokens, args.token_latency_ms)
    gateway: Child | None = None
    sampler: RSSSampler | None = None
    results: list[PhaseResult] = []
    gw_end: dict[str, Any] = {}
    up_end: dict[str, Any] = {}
    open_upstream = -1
    try:
        gateway = await asyncio.to_thread(
            Child,
            "_gateway",
            "--upstream",
            upstream.info["url"],
            "--max-frame-bytes",
            str(args.max_frame_bytes),
            "--max-calls",
            str(args.max_calls),
            "--pool",
            str(args.pool),
        )
        args.gateway_child = gateway
        url = gateway.info["url"]
        sampler = RSSSampler(gateway.pid)
        sampler.start()
        print(f"gateway {url} (pid {gateway.pid}) -> {args.upstream} upstream {upstream.info['url']}", flush=True)
        phases = [
            ("steady", lambda: phase_steady(args, url, upstream)),
            ("oversized", lambda: phase_oversized(args, url, upstream)),
            ("flood", lambda: phase_flood(args, url, upstream)),
            ("slow-readers", lambda: phase_slow_readers(args, url, upstream, sampler)),
            ("disconnects", lambda: phase_disconnects(args, url, upstream)),
        ]
        for name, phase in phases:
            if args.upstream == "canned" and name in ("flood", "slow-readers", "disconnects"):
                continue  # they need the fake server's knobs and counters
            sampler.enter(name)
            print(f"-- {name} ...", flush=True)
            try:
                result = await phase()
            except Exception as exc:  # a phase that breaks is reported, the others still run
                result = PhaseResult(name)
                result.check(f"phase ran ({type(exc).__name__}: {exc})", False)
            results.append(result)
        sampler.enter("end")
        gw_end, up_end = await _settle(gateway, upstream)
        await asyncio.sleep(0.5)
        gw_end = await gateway.astats()
        up_end = await upstream.astats()
        up_port = int(upstream.info["url"].split(":")[2].split("/")[0])
        open_upstream = established_to(up_port)
    finally:
        if sampler is not None:
            sampler.stop()
        if gateway is not None:
            gateway.stop()
        upstream.stop()
    return _report(args, results, sampler, gw_end, up_end, open_upstream, time.monotonic() - started)


def _report(
    args: argparse.Namespace,
    results: list[PhaseResult],
    sampler: RSSSampler | None,
    gw_end: dict[str, Any],
    up_end: dict[str, Any],
    open_upstream: int,
    seconds: float,
) -> int:
    peaks = sampler.peaks if sampler is not None else {}
    lines = ["", "gateway load report", "=" * 19]
    lines.append(f"{'phase':<14}{'time':>8}{'completed':>11}{'closed early':>14}{'tokens':>10}  peak RSS   errors")
    for r in results:
        errs = ", ".join(f"{k}: {v}" for k, v in sorted(r.errors.items())) or "-"
        lines.append(
            f"{r.name:<14}{r.seconds:>7.1f}s{r.streams_completed:>11,}{r.streams_closed_early:>14,}{r.tokens:>10,}"
            f"  {peaks.get(r.name, 0) / 1024:>6.1f} MiB  {errs}"
        )
    lines.append("")
    for r in results:
        for note in r.notes:
            lines.append(f"[{r.name}] {note}")
    lines.append("")
    lines.append(
        f"gateway peak RSS {peaks.get('overall', 0) / 1024:.1f} MiB ({sampler.samples if sampler else 0} samples, "
        f"every 0.5 s); at the end {gw_end.get('rss_kb', 0) / 1024:.1f} MiB"
    )
    lines.append(
        f"left at the end: gateway connections {gw_end.get('connections')}, calls in flight {gw_end.get('calls')}, "
        f"upstream connections in use {gw_end.get('upstream_in_use')}, idle upstream connections pooled "
        f"{gw_end.get('upstream_idle')}, established to the upstream {open_upstream}, upstream generations "
        f"running {up_end.get('in_flight', 'n/a')}"
    )
    end_checks = [
        ("no gateway call left in flight", gw_end.get("calls") == 0),
        ("no upstream connection left in use", gw_end.get("upstream_in_use") == 0),
        ("no generation left running upstream", up_end.get("in_flight", 0) == 0),
        ("upstream connections open <= the gateway's idle pool", open_upstream <= gw_end.get("upstream_idle", 0)),
    ]
    failed = 0
    lines.append("")
    for r in results:
        for what, ok in r.checks:
            failed += not ok
            lines.append(f"{'PASS' if ok else 'FAIL'}  [{r.name}] {what}")
    for what, ok in end_checks:
        failed += not ok
        lines.append(f"{'PASS' if ok else 'FAIL'}  [end] {what}")
    lines.append(f"\n{'all checks passed' if not failed else f'{failed} check(s) FAILED'} in {seconds:.1f} s")
    print("\n".join(lines), flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {
                    "phases": [
                        {
                            "name": r.name,
                            "seconds": r.seconds,
                            "completed": r.streams_completed,
                            "closed_early": r.streams_closed_early,
                            "tokens": r.tokens,
                            "errors": dict(r.errors),
                            "notes": r.notes,
                            "checks": r.checks,
                            "peak_rss_kb": peaks.get(r.name, 0),
                        }
                        for r in results
                    ],
                    "peak_rss_kb": peaks.get("overall", 0),
                    "end": {"gateway": gw_end, "upstream": up_end, "established_upstream": open_upstream},
                },
                out,
                indent=2,
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
