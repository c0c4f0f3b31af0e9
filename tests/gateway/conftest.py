"""Fixtures for the gateway tests: a small LoRAX-like HTTP upstream and gateways in threads.

The upstream is an aiohttp.web app on loopback that answers like LoRAX (JSON bodies
built with lorax.codec, ``data: {json}\\n\\n`` SSE events, LoRAX error bodies, axum's
text/plain rejections, a proxy's HTML page). What it does is chosen by the request's
``inputs``:

    "echo ..."         200, generated_text echoes the inputs (default)
    "headers"          200, generated_text is the JSON of the interesting request headers
    "big"              200, a 10 kB generated_text
    "validation"       422 LoRAX JSON validation error (stream: before the stream)
    "text-422"         422 text/plain (axum's deserialization rejection)
    "html-502"         502 text/html from a "proxy"
    "stream-error"     stream: one token, then an in-stream generation error event
    "slow"             waits 30 s before answering (for in-flight and timeout tests)
    "forever"          stream: a token every 20 ms until the client goes away
    "firehose"         stream: 32 kB events as fast as the connection takes them
    "tokens:N:MS"      stream: N tokens, MS milliseconds apart, then the final event
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from lorax import codec
from lorax.gateway import GatewayThread
from lorax.types import GenerateResponse, StreamDetails, StreamResponse, Token

VALIDATION_BODY = b'{"error":"Input validation error: `temperature` must be non-negative","error_type":"validation"}'
TEXT_422_BODY = b"Failed to deserialize the JSON body into the target type: missing field `inputs` at line 1 column 17"
HTML_502_BODY = b"<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"
STREAM_ERROR_EVENT = b'{"error":"Request failed during generation: Server error: boom","error_type":"generation"}'


# ---------------------------------------------------------------------------------
# The upstream


class Upstream:
    """The LoRAX-like app in a thread with its own loop."""

    def __init__(self) -> None:
        self.url = ""
        self._cond = threading.Condition()
        self.disconnects = 0
        self.requests = 0
        self.answered = 0  # /generate bodies handed to the server to write
        self.produced = 0  # events of "firehose" streams
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # -- state shared with the tests --

    def _note(self, name: str) -> None:
        with self._cond:
            setattr(self, name, getattr(self, name) + 1)
            self._cond.notify_all()

    def wait_disconnects(self, count: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.disconnects >= count, timeout)

    # -- lifecycle --

    def start(self) -> Upstream:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self._start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, name="test-upstream", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/generate", self._generate)
        app.router.add_post("/generate_stream", self._generate_stream)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, handler_cancellation=True)  # sees disconnects
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        assert self._loop is not None
        assert self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # -- handlers --

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _prelude(self, request: web.Request) -> tuple[str, Any, web.Response | None]:
        self._note("requests")
        body = await request.read()
        payload = orjson.loads(body)
        inputs: str = payload.get("inputs", "")
        if inputs == "validation":
            return inputs, payload, web.Response(status=422, body=VALIDATION_BODY, content_type="application/json")
        if inputs == "text-422":
            return inputs, payload, web.Response(status=422, body=TEXT_422_BODY, content_type="text/plain")
        if inputs == "html-502":
            return inputs, payload, web.Response(status=502, body=HTML_502_BODY, content_type="text/html")
        if inputs == "slow":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self._note("disconnects")
                raise
        return inputs, payload, None

    async def _generate(self, request: web.Request) -> web.Response:
        inputs, _payload, refusal = await self._prelude(request)
        if refusal is not None:
            return refusal
        if inputs == "headers":
            seen = {k.lower(): v for k, v in request.headers.items() if k.lower() in ("authorization", "x-upstream")}
            text = orjson.dumps(seen).decode()
        elif inputs == "big":
            text = "x" * 10_000
        else:
            text = f"echo: {inputs}"
        headers = {"x-model-id": "toy-model", "x-compute-time": "3"}
        self._note("answered")
        return web.Response(
            body=codec.to_json(GenerateResponse(generated_text=text)), headers=headers, content_type="application/json"
        )

    async def _generate_stream(self, request: web.Request) -> web.StreamResponse:
        inputs, _payload, refusal = await self._prelude(request)
        if refusal is not None:
            return refusal
        response = web.StreamResponse(headers={"content-type": "text/event-stream", "x-model-id": "toy-model"})
        await response.prepare(request)

        async def event(data: bytes) -> None:
            await response.write(b"data: " + data + b"\n\n")

        def token(i: int) -> bytes:
            return codec.to_json(StreamResponse(token=Token(id=i, text=f" t{i}", logprob=-0.5)))

        try:
            if inputs == "stream-error":
                await event(token(0))
                await event(STREAM_ERROR_EVENT)
            elif inputs == "firehose":
                big = codec.to_json(StreamResponse(token=Token(id=0, text="x" * 32768)))
                while True:
                    await event(big)
                    self._note("produced")
            elif inputs == "forever":
                i = 0
                while True:
                    await event(token(i))
                    i += 1
                    await asyncio.sleep(0.02)
            else:
                count, delay = 3, 0.0
                if inputs.startswith("tokens:"):
                    _, n, ms = inputs.split(":")
                    count, delay = int(n), int(ms) / 1000
                for i in range(count - 1):
                    await event(token(i))
                    if delay:
                        await asyncio.sleep(delay)
                final = StreamResponse(
                    token=Token(id=count - 1, text=f" t{count - 1}", logprob=-0.5),
                    generated_text="".join(f" t{i}" for i in range(count)),
                    details=StreamDetails(finish_reason="length", generated_tokens=count),
                )
                await event(codec.to_json(final))
        except asyncio.CancelledError:
            self._note("disconnects")
            raise
        except ConnectionResetError:  # aiohttp's ClientConnectionResetError too
            self._note("disconnects")
            return response
        await response.write_eof()
        return response


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    server = Upstream().start()
    yield server
    server.stop()


# ---------------------------------------------------------------------------------
# Gateways


@pytest.fixture
def make_gateway(upstream: Upstream) -> Iterator[Any]:
    """``make_gateway(**Gateway kwargs)`` starts a GatewayThread; all are stopped at the end."""
    started: list[GatewayThread] = []

    def make(**kwargs: Any) -> GatewayThread:
        kwargs.setdefault("upstream", upstream.url)
        thread = GatewayThread(**kwargs).start()
        started.append(thread)
        return thread

    yield make
    for thread in started:
        thread.stop(grace=0)


@pytest.fixture
def gateway(make_gateway: Any) -> GatewayThread:
    return make_gateway()  # type: ignore[no-any-return]
