"""One client connection of the gateway: its calls, their upstream requests, its limits.

A :class:`Session` reads frames, starts one task per call, and each task forwards its
call to LoRAX with the upstream transport and writes the answer back as frames.

Backpressure: a call's task awaits every ``send`` (websockets waits until the write
buffer drains below its high-water mark) before it reads the next message from
upstream, so a client that reads slowly slows its upstream streams down (through TCP)
instead of making the gateway buffer: at most one frame per call is pending.
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
from lorax._convert import from_binary, to_binary
from lorax._message import Message
from lorax._routes import BY_FULL_NAME, Method
from lorax._timeout import Deadline, Timeout
from lorax.gateway._errors import GatewayRefusal, refusal_frame, upstream_error_frame
from lorax.gateway._log import log, logger, peer
from lorax.transports import _ws_frames as wsf
from lorax.transports._http_common import Secrets
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
    """How far one call got (for the error mapping and the log line)."""

    __slots__ = ("begun", "messages", "status")

    def __init__(self) -> None:
        self.begun = False  # FrameHeaders was sent
        self.status: int | None = None
        self.messages = 0


class Session:
    """The calls of one WebSocket connection."""

    def __init__(self, gateway: Gateway, ws: ServerConnection, number: int) -> None:
        self._gateway = gateway
        self._ws = ws
        self.number = number
        self._loop = asyncio.get_running_loop()
        self._calls: dict[int, asyncio.Task[None]] = {}
        # Set while no call is in flight; the idle watchdog and the shutdown drain wait on it.
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_activity = self._loop.time()

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
                    if frame.WhichOneof("kind") == "call":
                        await self._start(frame.call_id, frame.call)
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
            if watchdog is not None:
                await asyncio.gather(watchdog, return_exceptions=True)
            log(
                logging.INFO,
                "connection_closed",
                conn=self.number,
                code=self._ws.close_code,
                reason=self._ws.close_reason or None,
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
        await self._ws.close(wsf.CLOSE_GOING_AWAY, "the gateway is shutting down")

    # -- calls --------------------------------------------------------------------

    async def _start(self, call_id: int, call: FrameCall) -> None:
        if call_id in self._calls:
            raise wsf.FrameViolation(wsf.CLOSE_PROTOCOL_ERROR, f"call id {call_id} is already in flight")
        try:
            method, request, options = self._prepare(call)
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
        task = self._loop.create_task(self._run(call_id, method, request, options))
        self._calls[call_id] = task
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
        except DecodeError:
            raise GatewayRefusal(
                400, "invalid_request", f"the request is not a {method.input_type.__lorax_full_name__}"
            ) from None
        except errors.InvalidRequestError as exc:
            raise GatewayRefusal(400, "invalid_request", str(exc)) from None
        headers = forward_headers(call.headers)
        upstream = gateway.upstream_timeout
        read = call.read_timeout_ms / 1000 if call.read_timeout_ms else upstream.read
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

    async def _run(self, call_id: int, method: Method, request: Message, options: CallOptions) -> None:
        started = time.monotonic()
        state = _CallState()
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
                await self._send_error(call_id, error)
        finally:
            self._calls.pop(call_id, None)
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
        upstream: AsyncTransport = self._gateway.upstream
        if method.server_streaming:
            stream = await upstream.stream(method, request, options)
            try:
                state.status = stream.meta.status_code
                headers = self._scrub(stream.meta.headers, options, request)
                await self._send(wsf.encode_headers(call_id, stream.meta.status_code, headers))
                state.begun = True
                async for message in stream:
                    await self._send_message(call_id, message)
                    state.messages += 1
            finally:
                # Closes the upstream HTTP response: LoRAX sees the disconnect and stops.
                await stream.aclose()
        else:
            message, meta = await upstream.unary(method, request, options)
            state.status = meta.status_code
            await self._send(wsf.encode_headers(call_id, meta.status_code, self._scrub(meta.headers, options, request)))
            state.begun = True
            await self._send_message(call_id, message)
            state.messages = 1
        await self._send(wsf.encode_end(call_id))

    def _scrub(self, headers: Mapping[str, str], options: CallOptions, request: Message) -> dict[str, str]:
        """Upstream success headers with every credential value the gateway knows of
        replaced: its own (the upstream token, the client token) and the call's. The
        default upstream transport scrubs its own already; one given to the gateway
        may not."""
        secrets = Secrets.of(self._gateway.secret_values, options.headers, request)
        return secrets.scrub_headers(dict(headers))

    async def _send_message(self, call_id: int, message: Message) -> None:
        await self._send(wsf.encode_message(call_id, to_binary(message)))

    async def _send(self, data: bytes) -> None:
        """Send a frame, waiting for the write buffer to drain (the backpressure).

        Raises GatewayRefusal (502 ``response_too_large``) for a frame above the limit.
        """
        limit = self._gateway.max_frame_bytes
        if len(data) > limit:
            raise GatewayRefusal(
                502,
                "response_too_large",
                f"a response frame of {len(data)} bytes exceeds the gateway's frame limit of {limit} bytes",
            )
        await self._ws.send(data)

    async def _send_error(self, call_id: int, error: FrameError) -> None:
        """Send a FrameError unless the client is gone; shrink it to fit the frame limit."""
        data = wsf.encode_error(call_id, error)
        if len(data) > self._gateway.max_frame_bytes:
            error.ClearField("headers")
            error.ClearField("body")
            error.message = error.message[: self._gateway.max_frame_bytes // 4]
            data = wsf.encode_error(call_id, error)
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(data)

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
