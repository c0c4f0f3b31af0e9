"""Flow control, heartbeats, memory budgets and the read-timeout cap of the gateway.

Raw frames over a real WebSocket (websockets' sync client) against a GatewayThread in
front of the LoRAX-like upstream of conftest.py, and the real client transports for
what a caller sees. See websocket.proto: FLOW CONTROL, LIVENESS, LIMITS AND FAIRNESS.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from lorax import _routes, errors
from lorax._timeout import Timeout
from lorax.gateway import Gateway, GatewayThread
from lorax.transports import _ws_frames as wsf
from lorax.transports.base import CallOptions
from lorax.transports.websocket import AsyncWebSocketTransport, WebSocketTransport
from lorax.v1.generate_pb2 import GenerateParameters, GenerateRequest, GenerateResponse
from lorax.v1.websocket_pb2 import Frame
from tests.gateway._stalled import StalledClient

STREAM = _routes.GENERATE_STREAM.full_name


def raw(url: str, **kwargs: Any) -> ClientConnection:
    kwargs.setdefault("subprotocols", [wsf.SUBPROTOCOL])
    return connect(url, open_timeout=5, **kwargs)


def call(
    call_id: int,
    inputs: str,
    method: str = STREAM,
    *,
    read_timeout: float | None = None,
    request: GenerateRequest | None = None,
    **kwargs: Any,
) -> bytes:
    message = request if request is not None else GenerateRequest(inputs=inputs)
    return wsf.encode_call(
        call_id, method, message.SerializeToString(), {}, read_timeout=read_timeout, deadline=None, **kwargs
    )


def recv(ws: ClientConnection, timeout: float = 5.0) -> Frame:
    return Frame.FromString(ws.recv(timeout=timeout))


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def nothing_more(ws: ClientConnection, seconds: float = 0.5) -> bool:
    """No frame arrives for `seconds` (the gateway is waiting)."""
    try:
        ws.recv(timeout=seconds)
    except TimeoutError:
        return True
    return False


# ---------------------------------------------------------------------------------
# Flow control


def test_window_paces_a_stream_and_updates_resume_it(gateway: GatewayThread) -> None:
    with raw(gateway.url) as ws:
        ws.send(call(1, "tokens:40:0", window_bytes=100))
        headers = recv(ws)
        assert headers.WhichOneof("kind") == "headers"
        assert headers.headers.window_bytes == 100  # the gateway applies it
        sizes: list[int] = []
        while sum(sizes) < 100:
            frame = recv(ws)
            assert frame.WhichOneof("kind") == "message"
            sizes.append(len(frame.message.message))
        # The window went to zero or below with the last message: the gateway stops.
        assert sum(sizes[:-1]) < 100 <= sum(sizes)
        assert nothing_more(ws)
        # A grant of what was consumed lets exactly as much through again (at least
        # one message; the window was at 100 - sum(sizes) <= 0).
        window = 100 - sum(sizes)
        ws.send(wsf.encode_window_update(1, 60))
        window += 60
        more = 0
        if window > 0:
            while window > 0:
                frame = recv(ws)
                assert frame.WhichOneof("kind") == "message"
                window -= len(frame.message.message)
                more += 1
            assert nothing_more(ws)
        # A large grant: the rest of the stream, then the end.
        ws.send(wsf.encode_window_update(1, 1 << 40))
        kinds = []
        while True:
            frame = recv(ws)
            kinds.append(frame.WhichOneof("kind"))
            if kinds[-1] != "message":
                break
        assert kinds[-1] == "end"
        assert len(sizes) + more + len(kinds) - 1 == 40


def test_calls_without_a_window_are_not_paced(gateway: GatewayThread) -> None:
    """An older client (no window_bytes) gets every message, and no window in FrameHeaders."""
    with raw(gateway.url) as ws:
        ws.send(call(1, "tokens:40:0"))
        headers = recv(ws)
        assert not headers.headers.HasField("window_bytes")
        kinds = [recv(ws).WhichOneof("kind") for _ in range(41)]
        assert kinds == ["message"] * 40 + ["end"]


def test_window_updates_for_other_calls_are_ignored(gateway: GatewayThread) -> None:
    with raw(gateway.url) as ws:
        ws.send(wsf.encode_window_update(7, 100))  # never started
        ws.send(call(1, "tokens:3:0"))  # not flow-controlled
        ws.send(wsf.encode_window_update(1, 100))
        kinds = [recv(ws).WhichOneof("kind") for _ in range(5)]
        assert kinds == ["headers", "message", "message", "message", "end"]
        ws.send(wsf.encode_window_update(1, 100))  # finished
        ws.send(call(2, "x", _routes.GENERATE.full_name))
        kinds = [recv(ws).WhichOneof("kind") for _ in range(3)]
        assert kinds == ["headers", "message", "end"]


def _stream_queue(stream: Any) -> int:
    """Frames a client stream holds, received but not yet consumed."""
    return int(stream._call.queue.qsize())


@pytest.mark.parametrize("window", [64 * 1024, None], ids=["window", "no-window"])
def test_a_slow_reader_bounds_its_buffer_and_stalls_no_other_call(gateway: GatewayThread, window: int | None) -> None:
    """A stream read slowly holds about its window; a unary call on the same connection is not held up.

    Without a window (as before flow control) the same stream's buffer grows: the
    contrast shows the bound is the window's doing.
    """
    options = CallOptions(timeout=Timeout(connect=5, read=10))
    with WebSocketTransport(gateway.url, stream_window_bytes=window) as transport:
        stream = transport.stream(_routes.GENERATE_STREAM, GenerateRequest(inputs="firehose"), options)
        first = next(stream)
        assert len(first.token.text) == 32768
        if window is None:
            assert eventually(lambda: _stream_queue(stream) > 64)
        else:
            time.sleep(1.0)  # the firehose had every chance to overrun the window
            # Each message is 32 kB: the window (64 KiB) lets through 2, plus one more.
            assert _stream_queue(stream) <= 3
        started = time.monotonic()
        message, _ = transport.unary(_routes.GENERATE, GenerateRequest(inputs="alongside"), options)
        assert message.generated_text == "echo: alongside"
        assert time.monotonic() - started < 5
        for _ in range(50):  # reading on: the grants keep the stream going
            assert len(next(stream).token.text) == 32768
        if window is not None:
            assert _stream_queue(stream) <= 3
        stream.close()


def test_async_slow_reader_is_bounded_by_its_window(gateway: GatewayThread) -> None:
    async def main() -> None:
        options = CallOptions(timeout=Timeout(connect=5, read=10))
        async with AsyncWebSocketTransport(gateway.url, stream_window_bytes=64 * 1024) as transport:
            stream = await transport.stream_async(_routes.GENERATE_STREAM, GenerateRequest(inputs="firehose"), options)
            await stream.__anext__()
            await asyncio.sleep(1.0)
            assert _stream_queue(stream) <= 3
            message, _ = await asyncio.wait_for(
                transport.unary_async(_routes.GENERATE, GenerateRequest(inputs="alongside"), options), 5
            )
            assert message.generated_text == "echo: alongside"
            for _ in range(50):
                assert len((await stream.__anext__()).token.text) == 32768
            assert _stream_queue(stream) <= 3
            await stream.aclose()

    asyncio.run(main())


def test_a_reader_that_pauses_longer_than_the_read_timeout_is_not_timed_out(make_gateway: Any) -> None:
    """While a call waits for its window, LoRAX's silence is the client's doing, not LoRAX's."""
    gw = make_gateway(upstream_timeout=Timeout(connect=5, read=0.5))
    options = CallOptions(timeout=Timeout(connect=5, read=0.5))
    with WebSocketTransport(gw.url, stream_window_bytes=64 * 1024) as transport:
        stream = transport.stream(_routes.GENERATE_STREAM, GenerateRequest(inputs="firehose"), options)
        next(stream)
        time.sleep(2.0)  # four read timeouts without reading
        for _ in range(100):
            assert len(next(stream).token.text) == 32768
        stream.close()


# ---------------------------------------------------------------------------------
# Heartbeats


def test_heartbeats_come_while_upstream_is_silent_and_stop_with_the_call(make_gateway: Any) -> None:
    gw = make_gateway(upstream_timeout=Timeout(connect=5, read=60))
    with raw(gw.url) as ws:
        # "slow" answers after 30 s; the call's read timeout of 0.8 s ends it first.
        ws.send(call(1, "slow", _routes.GENERATE.full_name, read_timeout=0.8, heartbeats=True))
        kinds = []
        while not kinds or kinds[-1] == "heartbeat":
            kinds.append(recv(ws).WhichOneof("kind"))
        # Every 0.2 s (a quarter of the read timeout) for 0.8 s: about 3.
        assert kinds[-1] == "error"
        assert kinds.count("heartbeat") >= 2, kinds
        assert nothing_more(ws, 0.6)  # none after the call's last frame


def test_calls_with_different_intervals_each_get_their_heartbeats_on_one_connection(make_gateway: Any) -> None:
    """The connection's one heartbeat timer serves calls of different intervals: each
    call gets its own, and none after its last frame."""
    gw = make_gateway(upstream_timeout=Timeout(connect=5, read=60))
    with raw(gw.url) as ws:
        # Intervals of 0.2 s and 0.4 s; both "slow" calls end with their read timeout.
        ws.send(call(1, "slow", _routes.GENERATE.full_name, read_timeout=0.8, heartbeats=True))
        ws.send(call(2, "slow", _routes.GENERATE.full_name, read_timeout=1.6, heartbeats=True))
        beats = {1: 0, 2: 0}
        ended: list[int] = []
        while len(ended) < 2:
            frame = recv(ws)
            kind = frame.WhichOneof("kind")
            assert frame.call_id not in ended, (frame.call_id, kind)  # nothing after the last frame
            if kind == "heartbeat":
                beats[frame.call_id] += 1
            else:
                assert kind == "error"
                assert frame.error.error_type == wsf.READ_TIMEOUT
                ended.append(frame.call_id)
        assert ended == [1, 2]
        assert beats[1] >= 2, beats
        assert beats[2] >= 2, beats
        assert nothing_more(ws, 0.6)


def test_no_heartbeats_unless_asked(make_gateway: Any) -> None:
    """An older client never gets a frame kind it does not know."""
    gw = make_gateway()
    with raw(gw.url) as ws:
        ws.send(call(1, "slow", _routes.GENERATE.full_name, read_timeout=0.8))
        frame = recv(ws)
        assert frame.WhichOneof("kind") == "error"
        assert frame.error.error_type == wsf.READ_TIMEOUT


# ---------------------------------------------------------------------------------
# The read timeout cap


def test_a_clients_read_timeout_is_capped_at_the_gateways(make_gateway: Any) -> None:
    gw = make_gateway(upstream_timeout=Timeout(connect=5, read=0.5))
    with raw(gw.url) as ws:
        started = time.monotonic()
        ws.send(call(1, "slow", _routes.GENERATE.full_name, read_timeout=3600))
        frame = recv(ws, timeout=10)
        assert frame.WhichOneof("kind") == "error"
        assert frame.error.error_type == wsf.READ_TIMEOUT
        assert time.monotonic() - started < 5  # 0.5 s, not the hour asked for


# ---------------------------------------------------------------------------------
# Memory budgets


def padded(size: int) -> GenerateRequest:
    """A "slow" request whose serialized form is `size` bytes."""
    request = GenerateRequest(inputs="slow", parameters=GenerateParameters(adapter_id=""))
    request.parameters.adapter_id = "a" * (size - request.ByteSize() - 2)
    assert request.ByteSize() == size
    return request


def test_memory_budgets_refuse_new_calls_with_memory_limit(make_gateway: Any) -> None:
    gw = make_gateway(max_frame_bytes=4096, max_connection_bytes=8000, max_total_bytes=10000)
    gateway = gw.gateway
    assert gateway is not None
    request = padded(3000)

    def slow(call_id: int) -> bytes:
        return call(call_id, "slow", _routes.GENERATE.full_name, request=request)

    with raw(gw.url) as a, raw(gw.url) as b:
        a.send(slow(1))
        a.send(slow(2))
        assert eventually(lambda: gateway.memory.held == 6000)
        a.send(slow(3))  # 9000 bytes would be over the connection's 8000
        frame = recv(a)
        assert frame.call_id == 3
        assert (frame.error.status, frame.error.error_type) == (503, "memory_limit")
        assert frame.error.message == (
            "the request (3000 bytes) does not fit this connection's memory budget of 8000 bytes "
            "(6000 bytes in use); retry later"
        )
        b.send(slow(1))
        assert eventually(lambda: gateway.memory.held == 9000)
        b.send(slow(2))  # 12000 bytes would be over the gateway's 10000
        frame = recv(b)
        assert (frame.call_id, frame.error.status, frame.error.error_type) == (2, 503, "memory_limit")
        assert "the gateway's memory budget of 10000 bytes (9000 bytes in use)" in frame.error.message
        # Bytes come back when calls end: a cancel makes room again.
        a.send(wsf.encode_cancel(1))
        assert eventually(lambda: gateway.memory.held == 6000)
        b.send(slow(3))
        assert eventually(lambda: gateway.memory.held == 9000)
        assert nothing_more(b, 0.3)  # accepted: in flight, not refused
    assert eventually(lambda: gateway.memory.held == 0)


def test_memory_limit_is_a_service_unavailable_error_for_the_client(make_gateway: Any) -> None:
    gw = make_gateway(max_frame_bytes=4096, max_connection_bytes=4096, max_total_bytes=4096)
    options = CallOptions(timeout=Timeout(connect=5, read=10))
    with WebSocketTransport(gw.url) as transport, raw(gw.url) as hog:
        hog.send(call(1, "slow", _routes.GENERATE.full_name, request=padded(3000)))
        assert eventually(lambda: gw.gateway is not None and gw.gateway.memory.held == 3000)
        with pytest.raises(errors.ServiceUnavailableError) as info:
            transport.unary(_routes.GENERATE, padded(2000), options)
    assert info.value.status_code == 503
    assert info.value.error_type == "memory_limit"


def test_a_client_that_stops_reading_cannot_make_the_gateway_hold_more_than_its_budget(
    make_gateway: Any, upstream: Any
) -> None:
    """Response frames waiting for a stalled socket count; calls that would go over fail.

    A client (StalledClient) starts 6 firehose streams, reads until each has begun,
    then stops reading: each stream ends up blocked with what is left of one or two
    ~32 kB frames counted, so at most three fit
    in 100,000 bytes; the others fail (502 memory_limit) and their upstream requests are
    closed. Without the budget, nothing ever fails: the frames just pile up.
    """
    limit = 100_000
    gw = make_gateway(max_frame_bytes=65536, max_connection_bytes=limit, max_total_bytes=limit)
    gateway = gw.gateway
    assert gateway is not None
    before = upstream.disconnects
    peak = 0
    with StalledClient(gw.url) as client:
        assert eventually(lambda: len(gateway._sessions) == 1)
        session = _only_session(gateway)
        session._ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        for call_id in range(1, 7):
            client.send(call(call_id, "firehose"))
        frames = client.frames()
        begun: set[int] = set()
        failed: dict[int, Frame] = {}
        while len(begun) < 6:  # every stream past its FrameHeaders; then stop reading
            frame = next(frames)
            if frame.WhichOneof("kind") == "headers":
                begun.add(frame.call_id)
            elif frame.WhichOneof("kind") == "error":
                failed[frame.call_id] = frame

        def settled() -> bool:
            nonlocal peak
            peak = max(peak, gateway.memory.held)
            return upstream.disconnects - before >= 3

        assert eventually(settled, timeout=15), (upstream.disconnects - before, gateway.memory.held)
        assert peak <= limit
        assert gateway.memory.held <= limit
        # Reading again: the refusals come out (the other streams flow on meanwhile).
        for count, frame in enumerate(frames):
            if len(failed) >= 3 or count > 10_000:
                break
            if frame.WhichOneof("kind") == "error":
                failed[frame.call_id] = frame
        assert len(failed) >= 3
        for frame in failed.values():
            assert (frame.error.status, frame.error.error_type) == (502, "memory_limit")
            assert frame.error.message.startswith("a response message (")


def _only_session(gateway: Gateway) -> Any:
    (session,) = gateway._sessions
    return session


def test_an_answer_waiting_behind_a_stalled_socket_is_counted(make_gateway: Any, upstream: Any) -> None:
    """A response frame counts against the memory budget from its arrival until the
    kernel took its bytes; an answer that does not fit fails with 502 memory_limit.

    A client that never reads (StalledClient) starts a firehose stream, which fills
    the socket's buffers and then waits in the gateway with what is left of its
    frames counted; then 8 unary calls whose 10 kB answers can only wait behind it.
    Together they are more than the budget (8 answers alone are), so some answers are
    refused, each because it did not fit next to what was held when it arrived (the
    gateway's message says how much); the others wait, counted, and are delivered once
    the client reads. Without the accounting, every answer would wait uncounted.
    """
    limit = 70_000
    gw = make_gateway(max_frame_bytes=40_000, max_connection_bytes=limit, max_total_bytes=limit)
    gateway = gw.gateway
    assert gateway is not None
    requests_before, answered_before = upstream.requests, upstream.answered
    answer = len(wsf.encode_message(2, GenerateResponse(generated_text="x" * 10_000).SerializeToString()))
    assert 8 * answer > limit
    request = len(GenerateRequest(inputs="big").SerializeToString())
    peak = 0

    def watching(condition: Callable[[], bool]) -> Callable[[], bool]:
        def check() -> bool:
            nonlocal peak
            peak = max(peak, gateway.memory.held)
            return condition()

        return check

    with StalledClient(gw.url) as client:
        assert eventually(lambda: len(gateway._sessions) == 1)
        session = _only_session(gateway)
        # The gateway's side of the socket gets a small fixed send buffer too, so the
        # kernel does not grow it while the firehose writes.
        session._ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        client.send(call(1, "firehose"))
        writer = session._writer
        # Stalled: the kernel's buffers are full, the transport holds the rest and the
        # firehose waits for it to drain.
        assert eventually(watching(lambda: writer.waiting == 1), timeout=20)
        for call_id in range(2, 10):
            client.send(call(call_id, "big", _routes.GENERATE.full_name))
        assert eventually(watching(lambda: upstream.answered - answered_before == 8))

        def arrived() -> bool:
            # Each call's status is set as its answer arrives, right before it is counted.
            states = session._states
            return all(i in states and states[i].status == 200 for i in range(2, 10))

        assert eventually(watching(arrived))
        held = gateway.memory.held
        assert peak <= limit

        client.send(wsf.encode_cancel(1))  # the firehose goes; then read everything
        answers: dict[int, list[Frame]] = {}
        ended: set[int] = set()
        for frame in client.frames():
            if frame.call_id == 1:
                continue
            answers.setdefault(frame.call_id, []).append(frame)
            if frame.WhichOneof("kind") in ("end", "error"):
                ended.add(frame.call_id)
                if len(ended) == 8:
                    break
    assert upstream.requests - requests_before == 9
    refused = [frames for frames in answers.values() if frames[-1].WhichOneof("kind") == "error"]
    delivered = [frames for frames in answers.values() if frames[-1].WhichOneof("kind") == "end"]
    assert len(delivered) + len(refused) == 8
    assert refused  # 8 answers do not fit
    # The delivered answers all waited behind the stalled socket, counted (with the
    # 8 calls' requests) on top of what was left of the firehose's frames.
    assert held >= len(delivered) * answer + 8 * request
    for frames in delivered:
        assert [f.WhichOneof("kind") for f in frames] == ["headers", "message", "end"]
        assert frames[0].headers.status == 200
        assert len(frames[1].SerializeToString()) == answer
        assert GenerateResponse.FromString(frames[1].message.message).generated_text == "x" * 10_000
    for (error,) in refused:
        assert (error.error.status, error.error.error_type) == (502, "memory_limit")
        match = re.fullmatch(
            rf"a response message \({answer} bytes\) does not fit this connection's memory budget of {limit} "
            r"bytes \((\d+) bytes in use\); retry later",
            error.error.message,
        )
        assert match is not None, error.error.message
        assert int(match[1]) + answer > limit  # refused because it did not fit, and only then
    assert eventually(lambda: gateway.memory.held == 0)


# ---------------------------------------------------------------------------------
# The command line


def test_cli_flags_for_the_limits() -> None:
    helptext = subprocess.run(
        [sys.executable, "-m", "lorax.gateway", "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    for flag, default in (
        ("--max-calls-per-connection", "256"),
        ("--max-upstream-calls-per-connection", "16"),
        ("--max-connection-bytes", "134217728"),
        ("--max-total-bytes", "1073741824"),
        ("--upstream-pool-size", "100"),
    ):
        options = helptext.split("options:", 1)[1]
        section = options.split(f"\n  {flag} ", 1)[1].split("\n  --", 1)[0]
        assert f"(default {default})" in " ".join(section.split()), (flag, section)
    # A frame limit above the memory budget could never be used: refused at start.
    proc = subprocess.run(
        [sys.executable, "-m", "lorax.gateway", "--upstream", "http://127.0.0.1:9", "--max-frame-bytes", "200000000"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "lorax gateway: max_connection_bytes (134217728) must be at least max_frame_bytes (200000000)\n"
    )


def test_shutdown_does_not_wait_for_a_client_that_stopped_reading(make_gateway: Any) -> None:
    """The close frame of a shutdown cannot get past a stalled socket: after the close
    timeout (5 s) the gateway drops the connection instead of waiting for the client."""
    gw = make_gateway(ping_interval=None)  # no keepalive to end it otherwise
    gateway = gw.gateway
    assert gateway is not None
    with StalledClient(gw.url) as client:
        assert eventually(lambda: len(gateway._sessions) == 1)
        session = _only_session(gateway)
        client.send(call(1, "firehose"))
        assert eventually(lambda: session._writer.waiting == 1, timeout=20)
        # In a thread: without the bound, stop() would wait until the client goes away.
        stopper = threading.Thread(target=gw.stop, kwargs={"grace": 0})
        stopper.start()
        stopper.join(30)  # 5 s
        stopped = not stopper.is_alive()
    stopper.join(30)  # the client went away: it ends now in any case
    assert stopped
    assert gateway.connections == 0
