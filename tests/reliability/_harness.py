"""One client call over any of the four transports, timed and checked for leaks.

:func:`run` makes one call (``generate`` or a whole ``generate_stream``) with
:class:`lorax.Client` or :class:`lorax.AsyncClient`, straight to an HTTP server or
through a ``lorax gateway`` in front of it, and returns an :class:`Outcome`: the
result or the exception, the events delivered before it, and the time it took. Before
the client is closed it checks that nothing was left behind:

* HTTP: the pool has no connection checked out and no stream open;
* WebSocket: the client has no call registered, and the gateway has no call in flight
  and no upstream connection checked out.

Then it collects garbage, so that an unclosed socket warns (ResourceWarning is an
error in this suite) inside the test that leaked it.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from lorax import AsyncClient, Client, RetryPolicy, Timeout, errors
from lorax.gateway import GatewayThread

TRANSPORTS = ("http", "http-async", "ws", "ws-async")

#: Retries as the default policy makes them, with waits short enough for tests.
FAST_RETRY = RetryPolicy(max_retries=3, backoff_base=0.01, backoff_max=0.05)


@dataclass(frozen=True)
class Op:
    """What to call: ``generate`` (unary) or ``generate_stream`` read to its end."""

    stream: bool = False
    prompt: str = "Hi"
    max_new_tokens: int = 8
    headers: dict[str, str] = field(default_factory=dict)
    #: called with the number of events delivered so far, after each one
    on_event: Callable[[int], None] | None = None


@dataclass
class Outcome:
    transport: str
    value: Any = None
    events: list[Any] = field(default_factory=list)
    error: BaseException | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def label(self) -> str:
        what = "ok" if self.error is None else type(self.error).__name__
        return f"{what} {self.elapsed:.2f}s"

    def raise_foreign(self) -> None:
        """Fail when anything but a lorax error escaped the call."""
        if self.error is not None and not isinstance(self.error, errors.LoraxError):
            raise AssertionError(f"{self.transport}: a non-lorax exception escaped: {self.error!r}") from self.error


def eventually(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return condition()
        time.sleep(0.01)
    return True


async def aeventually(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return condition()
        await asyncio.sleep(0.01)
    return True


# ---------------------------------------------------------------------------------
# Gateways


def gateway_calls(gw: GatewayThread) -> int:
    """Calls in flight on every connection of the gateway."""
    gateway = gw.gateway
    assert gateway is not None
    return sum(len(session._calls) for session in list(gateway._sessions))


def gateway_upstream_in_use(gw: GatewayThread) -> int:
    gateway = gw.gateway
    assert gateway is not None
    upstream = gateway._upstream
    stats = getattr(upstream, "pool_stats", None)
    return int(stats()["in_use"]) if stats is not None else 0


def gateway_idle(gw: GatewayThread) -> bool:
    return gateway_calls(gw) == 0 and gateway_upstream_in_use(gw) == 0


@contextmanager
def gateway_process(upstream: str, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m lorax.gateway`` in a child process; yields it and its ws:// URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lorax.gateway", "--upstream", upstream, "--port", "0", "--log-level", "warning", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "lorax gateway on " in line, line
        url = line.split("lorax gateway on ", 1)[1].split(" ", 1)[0]
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


@contextmanager
def fake_server_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m lorax.testing`` in a child process; yields it and its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lorax.testing", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on " in line, line
        yield proc, line.rsplit(" ", 1)[1].strip()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


# ---------------------------------------------------------------------------------
# Running a call


def run(
    transport: str,
    upstream: str,
    op: Op,
    *,
    read: float | None = 5.0,
    retry: RetryPolicy | int | None = FAST_RETRY,
    ws_url: str | None = None,
    gateway_kwargs: dict[str, Any] | None = None,
    calls: int = 1,
    pause: float = 0.0,
    check_leaks: bool = True,
    **client_kwargs: Any,
) -> Outcome:
    """Make `calls` calls of `op` (`pause` seconds apart) over `transport` to `upstream`.

    For the WebSocket transports a gateway in front of `upstream` is started for the
    call (or `ws_url` is used as it is: no gateway checks then). Returns the outcome
    of the last call; the first failing call stops the run.
    """
    client_kwargs.setdefault("timeout", Timeout(connect=5.0, read=read))
    client_kwargs["max_retries"] = retry
    gw: GatewayThread | None = None
    url = upstream
    if transport.startswith("ws"):
        if ws_url is None:
            gw = GatewayThread(upstream=upstream, **(gateway_kwargs or {})).start()
            url = gw.url
        else:
            url = ws_url
    try:
        if transport.endswith("async"):
            outcome = asyncio.run(_run_async(transport, url, op, calls, pause, gw, check_leaks, client_kwargs))
        else:
            outcome = _run_sync(transport, url, op, calls, pause, gw, check_leaks, client_kwargs)
    finally:
        if gw is not None:
            gw.stop(grace=0)
    gc.collect()
    outcome.raise_foreign()
    return outcome


def _run_sync(
    transport: str,
    url: str,
    op: Op,
    calls: int,
    pause: float,
    gw: GatewayThread | None,
    check_leaks: bool,
    client_kwargs: dict[str, Any],
) -> Outcome:
    outcome = Outcome(transport)
    with Client(url, headers=op.headers or None, **client_kwargs) as client:
        for n in range(calls):
            if n and pause:
                time.sleep(pause)
            outcome = Outcome(transport)
            start = time.monotonic()
            try:
                if op.stream:
                    with client.generate_stream(op.prompt, max_new_tokens=op.max_new_tokens) as stream:
                        for event in stream:
                            outcome.events.append(event)
                            if op.on_event is not None:
                                op.on_event(len(outcome.events))
                    outcome.value = stream.final
                else:
                    outcome.value = client.generate(op.prompt, max_new_tokens=op.max_new_tokens)
            except Exception as exc:
                outcome.error = exc
            outcome.elapsed = time.monotonic() - start
            if check_leaks:
                _check_sync(client, gw)
            if outcome.error is not None:
                break
    return outcome


async def _run_async(
    transport: str,
    url: str,
    op: Op,
    calls: int,
    pause: float,
    gw: GatewayThread | None,
    check_leaks: bool,
    client_kwargs: dict[str, Any],
) -> Outcome:
    outcome = Outcome(transport)
    async with AsyncClient(url, headers=op.headers or None, **client_kwargs) as client:
        for n in range(calls):
            if n and pause:
                await asyncio.sleep(pause)
            outcome = Outcome(transport)
            start = time.monotonic()
            try:
                if op.stream:
                    async with client.generate_stream(op.prompt, max_new_tokens=op.max_new_tokens) as stream:
                        async for event in stream:
                            outcome.events.append(event)
                            if op.on_event is not None:
                                op.on_event(len(outcome.events))
                    outcome.value = stream.final
                else:
                    outcome.value = await client.generate(op.prompt, max_new_tokens=op.max_new_tokens)
            except Exception as exc:
                outcome.error = exc
            outcome.elapsed = time.monotonic() - start
            if check_leaks:
                await _check_async(client, gw)
            if outcome.error is not None:
                break
    return outcome


def _ws_client_calls(client: Client | AsyncClient) -> int:
    conn = getattr(client.transport, "_conn", None)
    if conn is None:
        return 0
    return len(conn._registry.calls)


def _check_sync(client: Client, gw: GatewayThread | None) -> None:
    stats = getattr(client.transport, "pool_stats", None)
    if stats is not None:
        assert eventually(lambda: stats()["in_use"] == 0 and stats()["streams"] == 0), f"HTTP pool leaked: {stats()}"
        return
    assert eventually(lambda: _ws_client_calls(client) == 0), "the WebSocket client kept a call registered"
    if gw is not None:
        assert eventually(lambda: gateway_idle(gw)), (
            f"the gateway leaked: {gateway_calls(gw)} calls in flight, "
            f"{gateway_upstream_in_use(gw)} upstream connections in use"
        )


async def _check_async(client: AsyncClient, gw: GatewayThread | None) -> None:
    stats = getattr(client.transport, "pool_stats", None)
    if stats is not None:
        assert await aeventually(lambda: stats()["in_use"] == 0 and stats()["streams"] == 0), (
            f"HTTP pool leaked: {stats()}"
        )
        return
    assert await aeventually(lambda: _ws_client_calls(client) == 0), "the WebSocket client kept a call registered"
    if gw is not None:
        assert await aeventually(lambda: gateway_idle(gw)), (
            f"the gateway leaked: {gateway_calls(gw)} calls in flight, "
            f"{gateway_upstream_in_use(gw)} upstream connections in use"
        )
