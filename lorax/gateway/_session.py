"""One client connection of the gateway: its calls, their upstream requests, its limits.

A :class:`Session` reads frames, starts one task per call, and each task forwards its
call to LoRAX with the upstream transport and writes the answer back as frames.

Backpressure: a call's task waits whenever the connection's FrameWriter says the
transport holds bytes the kernel has not taken, before it reads the next message from
upstream, so a client that reads slowly slows its upstream streams down (through TCP)
instead of making the gateway buffer: beyond the frames queued for the current loop
iteration's write (at most 64 KiB), at most one frame per call is pending. A response
frame's bytes count against the memory budgets from its arrival until the kernel took
them (the writer gives them back). A call
with flow control (FrameCall.window_bytes) also waits for its window before it reads
the next upstream message, so one slow stream never stalls the connection's others.

Limits (see websocket.proto, LIMITS AND FAIRNESS): the call's read timeout is capped
at the gateway's; at most ``max_upstream_calls_per_connection`` calls of a connection
have an upstream request open, the others wait for a slot in order; the request and
response bytes held for a connection's calls count against its memory budget and the
gateway's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from lorax import errors
from lorax._convert import from_binary
from lorax._message import Message
from lorax._pbwire import encoder, frame_message, to_binary
from lorax._redact import Secrets
from lorax._routes import BY_FULL_NAME, Method
from lorax._timeout import Deadline, Timeout
from lorax.gateway._errors import GatewayRefusal, refusal_frame, upstream_error_frame
from lorax.gateway._limits import Flow, MemoryBudget
from lorax.gateway._log import log, logger, peer
from lorax.gateway._wire import end_frame, headers_frame, message_prefix, message_wires
from lorax.gateway._writer import FrameWriter
from lorax.transports import _ws_frames as wsf
from lorax.transports.base import AsyncTransport, CallOptions
from lorax.v1.websocket_pb2 import FrameCall, FrameError

if TYPE_CHECKING:
    from lorax.gateway.server import Gateway

__all__ = ["Session"]

# Headers that describe one HTTP hop, not the call: never forwarded upstream.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "host",
        "content-length",
    }
)
# How long the gateway waits for a connection to close at shutdown (websockets' own
# close_timeout, given in server.py, bounds the closing handshake itself).
CLOSE_TIMEOUT = 5.0
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(r"[\r\n\x00]")


def forward_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The call's headers to send upstream, lower-cased, hop-by-hop ones dropped.

    Raises:
        GatewayRefusal: 400 for a name that is not an HTTP token or a value with CR, LF
            or NUL (the message names the header, never its value).
    """
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise GatewayRefusal(400, "invalid_request", f"invalid header name {name[:64]!r}")
        if _BAD_VALUE.search(value):
            raise GatewayRefusal(400, "invalid_request", f"invalid value for header {name!r}")
        key = name.lower()
        if key not in _HOP_BY_HOP:
            out[key] = value
    return out


class _CallState:
    """How far one call got (for the error mapping and the log line), and its extras."""

    __slots__ = ("beats", "begun", "call_id", "flow", "messages", "request_bytes", "status")

    def __init__(self, call_id: int, request_bytes: int, flow: Flow | None) -> None:
        self.call_id = call_id
        self.begun = False  # FrameHeaders was sent
        self.status: int | None = None
        self.messages = 0
        # Held against the memory budgets until the call ends.
        self.request_bytes = request_bytes
        # The call's flow-control window; None without flow control.
        self.flow = flow
        # The connection's calls with heartbeats (Session._beats) while this one is among them.
        self.beats: dict[int, list[float]] | None = None

    def stop_heartbeat(self) -> None:
        """Stop the heartbeats: the call's last frame is about to be sent."""
        if self.beats is not None:
            self.beats.pop(self.call_id, None)
            self.beats = None


class Session:
    """The calls of one WebSocket connection."""

    def __init__(self, gateway: Gateway, ws: ServerConnection, number: int) -> None:
        self._gateway = gateway
        self._ws = ws
        # Every frame of the connection goes out through it: one socket write per loop
        # iteration; it gives a response frame's bytes back to the budgets once sent.
        self._writer = FrameWriter(ws, self._release)
        self.number = number
        self._loop = asyncio.get_running_loop()
        self._calls: dict[int, asyncio.Task[None]] = {}
        self._states: dict[int, _CallState] = {}
        # Bytes held for this connection's calls (the gateway's total is gateway.memory).
        self.memory = MemoryBudget(gateway.max_connection_bytes)
        # Calls of this connection with an upstream request open; FIFO, so no call waits forever.
        self._upstream_slots = asyncio.Semaphore(gateway.max_upstream_calls_per_connection)
        # Set while no call is in flight; the idle watchdog and the shutdown drain wait on it.
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_activity = self._loop.time()
        # The calls that asked for heartbeats: call id -> [next due time, interval], and
        # the connection's one timer that sends them (see _beat).
        self._beats: dict[int, list[float]] = {}
        self._beat_timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        """Serve the connection until it closes; then cancel its calls and wait for them."""
        gateway = self._gateway
        log(logging.INFO, "connection_open", conn=self.number, peer=peer(self._ws))
        watchdog = self._loop.create_task(self._watch_idle()) if gateway.idle_timeout is not None else None
        try:
            while True:
                try:
                    data = await self._ws.recv()
                except ConnectionClosed:
                    break
                self._last_activity = self._loop.time()
                try:
                    frame = wsf.parse_frame(data, sender="client")
                    kind = frame.WhichOneof("kind")
                    if kind == "call":
                        await self._start(frame.call_id, frame.call)
                    elif kind == "window_update":
                        self._grant(frame.call_id, frame.window_update.bytes)
                    else:
                        self._cancel(frame.call_id)
                except wsf.FrameViolation as violation:
                    log(
                        logging.WARNING,
                        "protocol_error",
                        conn=self.number,
                        code=violation.code,
                        reason=violation.reason,
                    )
                    await self._ws.close(violation.code, violation.close_reason)
                    break
        finally:
            if watchdog is not None:
                watchdog.cancel()
            tasks = list(self._calls.values())
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            # Calls cancelled before their task ever ran skipped its cleanup: do it here.
            for state in self._states.values():
                state.stop_heartbeat()
                self._release(state.request_bytes)
            self._states.clear()
            if self._beat_timer is not None:
                self._beat_timer.cancel()
                self._beat_timer = None
            # Frames the socket never took: their bytes are no longer held.
            self._writer.close()
            if watchdog is not None:
                await asyncio.gather(watchdog, return_exceptions=True)
            log(
                logging.INFO,
                "connection_closed",
                conn=self.number,
                # The sans-I/O protocol object has these in every websockets >= 13; the
                # connection's own shortcuts came later.
                code=self._ws.protocol.close_code,
                reason=self._ws.protocol.close_reason or None,
                cancelled_calls=len(tasks) or None,
            )

    async def drain(self, deadline: float) -> None:
        """Wait (until the loop time `deadline`) for the calls in flight, then close with 1001."""
        remaining = deadline - self._loop.time()
        if remaining > 0 and not self._idle.is_set():
            try:
                await asyncio.wait_for(self._idle.wait(), remaining)
            except asyncio.TimeoutError:
                log(logging.WARNING, "drain_timeout", conn=self.number, cancelled_calls=len(self._calls))
        ws = self._ws
        try:
            # websockets' close() first waits for the write buffer to drain, without a
            # timeout: a client that stopped reading would hold the shutdown until a
            # keepalive ping timed out (or forever without pings).
            await asyncio.wait_for(ws.close(wsf.CLOSE_GOING_AWAY, "the gateway is shutting down"), CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            log(logging.WARNING, "close_timeout", conn=self.number, seconds=CLOSE_TIMEOUT)
            ws.transport.abort()

    # -- calls --------------------------------------------------------------------

    async def _start(self, call_id: int, call: FrameCall) -> None:
        if call_id in self._calls:
            raise wsf.FrameViolation(wsf.CLOSE_PROTOCOL_ERROR, f"call id {call_id} is already in flight")
        try:
            method, request, options = self._prepare(call)
            request_bytes = len(call.request)
            self._reserve(request_bytes, "the request")
        except GatewayRefusal as refusal:
            log(
                logging.INFO,
                "call_refused",
                conn=self.number,
                call=call_id,
                status=refusal.status,
                error_type=refusal.error_type,
            )
            await self._send_error(call_id, refusal_frame(refusal))
            return
        flow = Flow(call.window_bytes) if call.window_bytes else None
        state = _CallState(call_id, request_bytes, flow)
        if call.heartbeats:
            self._beat(call_id, options.timeout.read, state)
        task = self._loop.create_task(self._run(call_id, method, request, options, state))
        self._calls[call_id] = task
        self._states[call_id] = state
        self._idle.clear()

    def _prepare(self, call: FrameCall) -> tuple[Method, Message, CallOptions]:
        gateway = self._gateway
        if gateway.draining:
            raise GatewayRefusal(503, "shutting_down", "the gateway is shutting down")
        method = BY_FULL_NAME.get(call.method)
        if method is None:
            raise GatewayRefusal(404, "unknown_method", f"no method {call.method[:200]!r} in lorax.v1.LoraxService")
        if len(self._calls) >= gateway.max_calls_per_connection:
            raise GatewayRefusal(
                429,
                "too_many_calls",
                f"this connection already has {gateway.max_calls_per_connection} calls in flight, the gateway's limit",
            )
        try:
            request = from_binary(method.input_type, call.request)
        except (DecodeError, UnicodeDecodeError):  # protobuf < 4 raises the latter for bad UTF-8
            raise GatewayRefusal(
                400, "invalid_request", f"the request is not a {method.input_type.__lorax_full_name__}"
            ) from None
        except errors.InvalidRequestError as exc:
            raise GatewayRefusal(400, "invalid_request", str(exc)) from None
        headers = forward_headers(call.headers)
        upstream = gateway.upstream_timeout
        read = call.read_timeout_ms / 1000 if call.read_timeout_ms else upstream.read
        if read is not None and upstream.read is not None:
            # The operator's read timeout is also the most a client may ask for: a longer
            # one would let a client hold upstream connections past what the operator allows.
            read = min(read, upstream.read)
        deadline = call.deadline_ms / 1000 if call.deadline_ms else None
        options = CallOptions(
            headers=headers,
            timeout=Timeout(connect=upstream.connect, read=read),
            deadline=Deadline(deadline),
        )
        return method, request, options

    def _cancel(self, call_id: int) -> None:
        task = self._calls.get(call_id)
        if task is not None:
            task.cancel()

    def _grant(self, call_id: int, size: int) -> None:
        state = self._states.get(call_id)
        if state is not None and state.flow is not None:
            state.flow.grant(size)

    def _reserve(self, size: int, what: str, status: int = 503) -> None:
        """Count `size` bytes against this connection's budget and the gateway's.

        Raises:
            GatewayRefusal: `status` ``memory_limit`` when either would go over its
                limit: 503 for a new call (nothing went upstream: clients may retry),
                502 for an answer that arrived (LoRAX did the work: no retry).
        """
        total = self._gateway.memory
        mine = self.memory
        if mine.held + size <= mine.limit and total.held + size <= total.limit:
            # Both fit (every message of a healthy gateway): the counts, nothing more.
            mine.held += size
            total.held += size
            return
        for budget, whose in ((self.memory, "this connection's"), (total, "the gateway's")):
            if not budget.fits(size):
                raise GatewayRefusal(
                    status,
                    "memory_limit",
                    f"{what} ({size} bytes) does not fit {whose} memory budget of {budget.limit} bytes "
                    f"({budget.held} bytes in use); retry later",
                )
        self.memory.take(size)
        total.take(size)

    def _release(self, size: int) -> None:
        self.memory.held -= size
        self._gateway.memory.held -= size

    def _beat(self, call_id: int, read_timeout: float | None, state: _CallState) -> None:
        """Send the call's FrameHeartbeat frames until state.stop_heartbeat() (see
        websocket.proto, LIVENESS): at most its interval apart, the first at most one
        interval after now.

        One timer for the connection's calls, not one per call (most calls end before
        their first heartbeat, and a timer per call costs its scheduling and its
        cancellation): it fires at the earliest due time and sends every heartbeat due
        within a quarter of its interval, so the calls' heartbeats go out together
        (one write) and the timer fires a few times per interval, however many calls.
        """
        interval = self._gateway.heartbeat_interval
        if read_timeout is not None:
            interval = min(interval, read_timeout / 4)
        due = self._loop.time() + interval
        self._beats[call_id] = [due, interval]
        state.beats = self._beats
        timer = self._beat_timer
        if timer is None or timer.when() > due:
            if timer is not None:
                timer.cancel()
            self._beat_timer = self._loop.call_at(due, self._send_heartbeats)

    def _send_heartbeats(self) -> None:
        self._beat_timer = None
        beats = self._beats
        if not beats:
            return
        now = self._loop.time()
        queue = self._writer.queue
        earliest = None
        for call_id, entry in beats.items():
            due, interval = entry
            if due - interval / 4 <= now:
                queue(wsf.encode_heartbeat(call_id))
                due = entry[0] = now + interval
            if earliest is None or due < earliest:
                earliest = due
        if earliest is not None:
            self._beat_timer = self._loop.call_at(earliest, self._send_heartbeats)

    async def _run(
        self, call_id: int, method: Method, request: Message, options: CallOptions, state: _CallState
    ) -> None:
        started = time.monotonic()
        outcome = "ok"
        error: FrameError | None = None
        try:
            try:
                await self._forward(call_id, method, request, options, state)
            except asyncio.CancelledError:
                outcome = "cancelled"
                raise
            except ConnectionClosed:
                outcome = "disconnected"
            except GatewayRefusal as refusal:
                error = refusal_frame(refusal)
            except errors.LoraxError as exc:
                error = upstream_error_frame(exc, begun=state.begun)
            except Exception:
                logger.exception("event=call_failed conn=%d call=%d", self.number, call_id)
                error = refusal_frame(GatewayRefusal(500, "internal_error", "internal gateway error"))
            if error is not None:
                outcome = "error"
                state.stop_heartbeat()
                await self._send_error(call_id, error)
        finally:
            state.stop_heartbeat()
            self._release(state.request_bytes)
            self._calls.pop(call_id, None)
            self._states.pop(call_id, None)
            if not self._calls:
                self._last_activity = self._loop.time()
                self._idle.set()
            log(
                logging.INFO,
                "call_end",
                conn=self.number,
                call=call_id,
                method=method.name,
                outcome=outcome,
                status=error.status if error is not None else state.status,
                error_type=error.error_type if error is not None and error.HasField("error_type") else None,
                messages=state.messages,
                ms=round((time.monotonic() - started) * 1000),
            )

    async def _forward(
        self, call_id: int, method: Method, request: Message, options: CallOptions, state: _CallState
    ) -> None:
        """Make the upstream request and send its answer as frames; raise its errors."""
        # Wait for one of the connection's upstream slots (in order), no longer than the
        # call's deadline: it stands for the time the call may take as a whole.
        slots = self._upstream_slots
        try:
            if slots.locked():
                await asyncio.wait_for(slots.acquire(), options.deadline.remaining())
            else:
                # A free slot (the usual case): take it without wait_for's task and timer.
                await slots.acquire()
        except asyncio.TimeoutError:
            raise errors.APITimeoutError(
                "the call's deadline ran out while it waited for an upstream slot", phase="total"
            ) from None
        try:
            await self._forward_upstream(call_id, method, request, options, state)
        finally:
            self._upstream_slots.release()
        state.stop_heartbeat()
        await self._send(end_frame(call_id))

    async def _forward_upstream(
        self, call_id: int, method: Method, request: Message, options: CallOptions, state: _CallState
    ) -> None:
        upstream: AsyncTransport = self._gateway.upstream
        flow = state.flow
        window = flow.initial if flow is not None else None
        if method.server_streaming:
            stream = await upstream.stream_async(method, request, options)
            try:
                state.status = stream.meta.status_code
                headers = self._scrub(stream.meta.headers, options, request)
                await self._send(headers_frame(call_id, stream.meta.status_code, headers, window))
                state.begun = True
                next_batch = stream.next_batch
                writer = self._writer
                limit = self._gateway.max_frame_bytes
                mine, total = self.memory, self._gateway.memory
                encode = encoder(method.output_type) or to_binary
                prefix = message_prefix(call_id)
                while True:
                    if flow is not None and flow.window <= 0:
                        # Wait for the window before reading on: LoRAX is slowed through
                        # TCP, and the gateway holds nothing for the call meanwhile.
                        await flow.wait_open()
                    try:
                        # Every message of one upstream read at once (see
                        # AsyncMessageStream.next_batch): one await per read, not per token.
                        batch = await next_batch()
                    except StopAsyncIteration:
                        break
                    payloads: list[bytes] = []
                    failure: BaseException | None = None
                    for message in batch:
                        try:
                            payloads.append(encode(message))
                        except Exception:
                            try:
                                payloads.append(to_binary(message))  # _pbwire's fallbacks and errors
                            except Exception as exc:
                                failure = exc  # raised once the messages before it went out
                                break
                    del batch  # only the frames are held (and counted) from here
                    if payloads:
                        # The frames in one pass; with one budget check for all of them
                        # when it is exact: every frame fits the limit, all fit both
                        # budgets, and the window lets each one go (it is above zero
                        # before the last), as one at a time would.
                        wires, sizes = message_wires(prefix, payloads)
                        spent = sum(map(len, payloads))
                        counted = sum(sizes)
                        if (
                            max(sizes) <= limit
                            and mine.held + counted <= mine.limit
                            and total.held + counted <= total.limit
                            and (flow is None or flow.window - (spent - len(payloads[-1])) > 0)
                        ):
                            mine.held += counted
                            total.held += counted
                            if flow is not None:
                                flow.spend(spent)
                            state.messages += len(wires)
                            stop = writer.put_many(wires, sizes)
                            if stop >= 0:
                                await self._put_rest(wires, sizes, stop)
                        else:
                            await self._put_one_by_one(wires, sizes, payloads, flow, state)
                    if failure is not None:
                        raise failure
            finally:
                # Closes the upstream HTTP response: LoRAX sees the disconnect and stops.
                await stream.aclose()
        else:
            message, meta = await upstream.unary_async(method, request, options)
            state.status = meta.status_code
            # Counted before anything is sent: a client that does not read would
            # otherwise leave the message held, uncounted, behind its FrameHeaders.
            if flow is not None:
                await flow.wait_open()  # open: nothing was sent yet
            data = self._take_message(call_id, message, flow)
            del message
            try:
                headers = self._scrub(meta.headers, options, request)
                await self._send(headers_frame(call_id, meta.status_code, headers, window))
                state.begun = True
            except BaseException:
                self._release(len(data))
                raise
            await self._send_taken(data)
            state.messages = 1

    async def _put_rest(self, wires: list[bytes], sizes: list[int], stop: int) -> None:
        """Hand the frames from `stop` on to the writer, waiting whenever it says so
        (see FrameWriter.put_many); their bytes are counted already."""
        writer = self._writer
        try:
            while True:
                await writer.wait()
                if stop >= len(wires):
                    return
                del wires[:stop], sizes[:stop]
                stop = writer.put_many(wires, sizes)
                if stop < 0:
                    return
        except BaseException:
            # The frames the writer never took: their bytes are no longer held.
            self._release(sum(sizes[stop:]))
            raise

    async def _put_one_by_one(
        self, wires: list[bytes], sizes: list[int], payloads: list[bytes], flow: Flow | None, state: _CallState
    ) -> None:
        """Send the frames of one upstream read one at a time: each waits for the call's
        window, is checked against the frame limit and counted against the budgets (the
        first that does not fit raises), then queued, waiting when the writer says so."""
        writer = self._writer
        for i, wire in enumerate(wires):
            if i and flow is not None and flow.window <= 0:
                await flow.wait_open()
            size = sizes[i]
            self._count_message(size, len(payloads[i]), flow)  # raises
            if not writer.put(wire, size):
                await writer.wait()
            state.messages += 1

    def _scrub(self, headers: Mapping[str, str], options: CallOptions, request: Message) -> dict[str, str]:
        """Upstream success headers with every credential value the gateway knows of
        replaced: its own (the upstream token, the client token) and the call's. The
        default upstream transport scrubs its own already; one given to the gateway
        may not."""
        secrets = Secrets.of(self._gateway.secret_values, options.headers, request)
        return secrets.scrub_headers(dict(headers))

    def _take_message(self, call_id: int, message: Message, flow: Flow | None) -> bytes:
        """The message's frame, counted against the memory budgets and the call's window.

        Raises GatewayRefusal: ``response_too_large`` above the frame limit,
        ``memory_limit`` when a budget has no room for it. The caller must hand the
        frame to :meth:`_send_taken`, which gives the bytes back.
        """
        # Written straight from the Struct, no upb message (see lorax/_pbwire.py).
        payload = to_binary(message)
        data = frame_message(call_id, payload)
        self._count_message(len(data), len(payload), flow)
        return data

    def _count_message(self, size: int, payload: int, flow: Flow | None) -> None:
        """Check a message frame of `size` bytes against the frame limit, count it
        against the memory budgets and its `payload` bytes against the call's window.

        Raises GatewayRefusal: ``response_too_large``, ``memory_limit``.
        """
        limit = self._gateway.max_frame_bytes
        if size > limit:
            raise GatewayRefusal(
                502,
                "response_too_large",
                f"a response frame of {size} bytes exceeds the gateway's frame limit of {limit} bytes",
            )
        self._reserve(size, "a response message", 502)
        if flow is not None:
            flow.spend(payload)

    async def _send_taken(self, data: bytes) -> None:
        """Send a frame from :meth:`_take_message`; the writer holds its bytes against the
        budgets until the kernel took them (a client that does not read leaves them counted)."""
        await self._writer.send(data, len(data))

    async def _send(self, data: bytes) -> None:
        """Send a frame, waiting for the write buffer to drain (the backpressure).

        Raises GatewayRefusal (502 ``response_too_large``) for a frame above the limit.
        """
        self._check_size(data)
        await self._writer.send(data)

    def _check_size(self, data: bytes) -> None:
        limit = self._gateway.max_frame_bytes
        if len(data) > limit:
            raise GatewayRefusal(
                502,
                "response_too_large",
                f"a response frame of {len(data)} bytes exceeds the gateway's frame limit of {limit} bytes",
            )

    async def _send_error(self, call_id: int, error: FrameError) -> None:
        """Send a FrameError unless the client is gone; shrink it to fit the frame limit."""
        data = wsf.encode_error(call_id, error)
        if len(data) > self._gateway.max_frame_bytes:
            error.ClearField("headers")
            error.ClearField("body")
            error.message = error.message[: self._gateway.max_frame_bytes // 4]
            data = wsf.encode_error(call_id, error)
        with contextlib.suppress(ConnectionClosed):
            await self._writer.send(data)

    # -- idle ---------------------------------------------------------------------

    async def _watch_idle(self) -> None:
        timeout = self._gateway.idle_timeout
        assert timeout is not None
        while True:
            await self._idle.wait()
            remaining = self._last_activity + timeout - self._loop.time()
            if remaining <= 0:
                log(logging.INFO, "idle_timeout", conn=self.number, seconds=timeout)
                await self._ws.close(wsf.CLOSE_IDLE_TIMEOUT, "idle timeout")
                return
            await asyncio.sleep(remaining)
