"""The fake LoRAX router: an aiohttp application that answers with LoRAX's exact bytes.

Routes are those of ``run()`` in LoRAX's ``router/src/server.rs`` (docs/wire.md, "Routes"). Routing
is done here rather than by aiohttp so that unknown paths get axum's empty 404 and wrong
methods axum's empty 405 with an ``allow`` header. Every response gets tower-http's default
CORS headers; header names are lowercase and aiohttp's ``Server`` header is removed, as
hyper sends none.

Crash behaviour
---------------
Some inputs make the real router panic, and its release build aborts the whole process
(docs/wire.md, "Inputs that crash LoRAX"): an unknown ``merge_strategy`` or ``majority_sign_method`` (the adapter
loader unwraps the enum lookup, after validation), and a control character in the
``adapter_id``/``adapter_source`` of a generation request (the ``x-adapter-id`` header value
is unwrapped; on streams before anything is sent, on non-stream routes after generation).
The fake server cannot sensibly kill itself, so it gives the closest honest answer, chosen
by ``ServerConfig.crash_behaviour``:

* ``"abort"`` (default): the connection is aborted without a response, as a client of the
  real router sees it. On a stream whose head was already sent (an unknown merge strategy
  is only found after the 200 head went out), the stream is cut the same way.
* ``"http_500"``: a ``500`` ``text/plain`` body naming the reason, when nothing has been sent
  yet (streams past their head are still aborted).

Either way ``stats.crashes`` counts it, and the server keeps serving; the real one would be
gone until restarted, so a client should never send these inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from lorax import codec
from lorax.testing import _extract as ex
from lorax.testing import _openai as oa
from lorax.testing import _schemas as sc
from lorax.testing._config import CRASH_HTTP_500, ServerConfig
from lorax.testing._faults import FAULT_HEADER, FaultError, Faults, FaultSpec
from lorax.testing._inference import Crash, Drop, Engine, GenJob, render_stream_response
from lorax.testing._metrics import Metrics
from lorax.testing._recording import RecordedRequest, Recorder, Stats
from lorax.testing._sse import pump
from lorax.testing._validation import InferError, validate_input
from lorax.types import (
    ClassifyBatchResponse,
    ClassifyResponse,
    Embedding,
    EmbeddingsResponse,
    EmbedResponse,
    Entity,
    SimpleToken,
    StreamResponse,
    TokenizeResponse,
)

__all__ = ["LoraxServer"]

Handler = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]

_CORS = (
    ("access-control-allow-origin", "*"),
    ("vary", "origin, access-control-request-method, access-control-request-headers"),
)
_TEXT = "text/plain; charset=utf-8"
_BAD_GATEWAY_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>"
    b"\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


class LoraxServer:
    """The application and the state it shares across requests (config, faults, stats)."""

    def __init__(
        self,
        config: ServerConfig,
        faults: Faults | None = None,
        recorder: Recorder | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.config = config
        self.faults = faults or Faults()
        self.recorder = recorder or Recorder()
        self.stats = stats or Stats()
        self.metrics = Metrics()
        self.engine = Engine(config, self.metrics, self.stats)
        self._routes: dict[str, dict[str, Handler]] = {
            "/": {"GET": self._health, "POST": self._admitting(sc.COMPAT_GENERATE_REQUEST, self._compat_generate)},
            "/invocations": {"POST": self._admitting(sc.COMPAT_GENERATE_REQUEST, self._compat_generate)},
            "/generate": {"POST": self._admitting(sc.GENERATE_REQUEST, self._generate)},
            "/generate_stream": {"POST": self._admitting(sc.GENERATE_REQUEST, self._generate_stream)},
            "/v1/completions": {"POST": self._admitting(sc.COMPLETION_REQUEST, self._completions)},
            "/v1/chat/completions": {"POST": self._admitting(sc.CHAT_COMPLETION_REQUEST, self._chat)},
            "/embed": {"POST": self._admitting(sc.EMBED_REQUEST, self._embed, counted=True)},
            "/v1/embeddings": {"POST": self._admitting(sc.COMPAT_EMBED_REQUEST, self._v1_embeddings, counted=True)},
            "/classify": {"POST": self._admitting(sc.CLASSIFY_REQUEST, self._classify, counted=True)},
            "/classify_batch": {"POST": self._admitting(sc.BATCH_CLASSIFY_REQUEST, self._classify_batch, counted=True)},
            "/tokenize": {"POST": self._tokenize},
            "/health": {"GET": self._health},
            "/ping": {"GET": self._health},
            "/startup": {"GET": self._startup},
            "/info": {"GET": self._info},
            "/metrics": {"GET": self._metrics},
        }

    def make_app(self) -> web.Application:
        """A fresh aiohttp application serving every route."""
        # client_max_size is ours to enforce (axum's 2 MiB), so aiohttp's own cap is lifted.
        app = web.Application(client_max_size=ex.BODY_LIMIT * 4)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        app.on_response_prepare.append(_finish_headers)
        return app

    # -- plumbing

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.stats.add("requests")
        path = request.raw_path.split("?", 1)[0]
        body = b""
        too_large = False
        if request.body_exists:
            body, too_large = await _read_body(request)
        self.recorder.add(
            RecordedRequest(
                method=request.method,
                path=path,
                query=request.query_string,
                headers=tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers),
                body=body,
            )
        )
        if request.method == "OPTIONS" and "access-control-request-method" in request.headers:
            return web.Response(
                status=200,
                headers={"access-control-allow-methods": "GET,POST", "access-control-allow-headers": "content-type"},
            )
        routes = self._routes.get(path)
        if routes is None:
            return web.Response(status=404)
        handler = routes.get(request.method) or (routes.get("GET") if request.method == "HEAD" else None)
        if handler is None:
            allow = ",".join(m for m in ("GET", "HEAD", "POST") if m in routes or (m == "HEAD" and "GET" in routes))
            return web.Response(status=405, headers={"allow": allow})
        if request.method == "POST":
            if not ex.is_json_content_type(request.headers.get("Content-Type")):
                return _rejection(ex.unsupported_media_type())
            if too_large:
                return _rejection(ex.too_large())
        return await handler(request, body)

    async def _faults_or_response(self, request: web.Request) -> FaultSpec | web.StreamResponse:
        """Take this request's faults and apply the ones that act before LoRAX would."""
        try:
            faults = self.faults.take(request.headers.get(FAULT_HEADER))
        except FaultError as exc:
            return web.Response(
                status=400, body=f"invalid {FAULT_HEADER}: {exc}".encode(), headers={"content-type": _TEXT}
            )
        if faults.time_to_first_byte:
            await asyncio.sleep(faults.time_to_first_byte)
        if faults.stall == "all":
            await _forever()
        if faults.stall == "headers":
            resp = web.StreamResponse(status=200, headers={"content-type": "application/json"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            await _forever()
        if faults.bad_gateway:
            return web.Response(status=502, body=_BAD_GATEWAY_HTML, headers={"content-type": "text/html"})
        return faults

    def _crash(self, request: web.Request, exc: Crash) -> web.StreamResponse:
        self.stats.add("crashes")
        if self.config.crash_behaviour == CRASH_HTTP_500:
            text = f"lorax.testing: the LoRAX router would have aborted here ({exc})"
            return web.Response(status=500, body=text.encode(), headers={"content-type": _TEXT})
        _abort(request)
        return web.Response()

    def _drop(self, request: web.Request) -> web.StreamResponse:
        self.stats.add("dropped")
        _abort(request)
        return web.Response()

    def _error(self, err: InferError, faults: FaultSpec | None = None) -> web.StreamResponse:
        headers = {"content-type": "application/json"}
        if err.error_type == "overloaded" and faults is not None and faults.retry_after is not None:
            headers["retry-after"] = str(faults.retry_after)
        return web.Response(status=err.status, body=err.body(), headers=headers)

    # -- generation routes

    async def _run_generate(
        self,
        request: web.Request,
        job: GenJob,
        faults: FaultSpec,
        shape: Callable[[Any], bytes],
    ) -> web.StreamResponse:
        try:
            headers, response = await self.engine.generate(job, faults)
        except InferError as exc:
            return self._error(exc, faults)
        except Crash as exc:
            return self._crash(request, exc)
        except Drop:
            return self._drop(request)
        except asyncio.CancelledError:
            # The client went away (aiohttp cancels the handler): the generation stops here.
            self.stats.add("cancelled")
            raise
        body = shape(response)
        return web.Response(status=200, body=body, headers=[*headers, ("content-type", "application/json")])

    async def _run_stream(
        self,
        request: web.Request,
        job: GenJob,
        faults: FaultSpec,
        render: Callable[[StreamResponse], bytes],
        done_marker: bool,
    ) -> web.StreamResponse:
        try:
            head = self.engine.stream_headers(job)
        except Crash as exc:
            return self._crash(request, exc)
        resp = web.StreamResponse(
            status=200,
            headers=[("content-type", "text/event-stream"), ("cache-control", "no-cache"), *head],
        )
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        frames = self.engine.stream(job, faults, render, done_marker, lambda: self.stats.add("cancelled"))
        keep_alive = faults.keep_alive if faults.keep_alive is not None else 15.0
        try:
            await pump(resp, frames, keep_alive)
        except Drop:
            return self._drop(request)
        except Crash:
            self.stats.add("crashes")
            _abort(request)
            return resp
        except ConnectionError:
            return resp  # the client is gone; the generation was cancelled by pump
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp

    def _admitting(
        self,
        schema: Any,
        handler: Callable[[web.Request, FaultSpec, Any], Awaitable[web.StreamResponse]],
        *,
        counted: bool = False,
    ) -> Handler:
        """`handler`, called with the request's faults and its body checked against
        `schema`, unless a fault acting before LoRAX or a rejected body answers first.
        `counted` routes count into ``lorax_request_count`` once admitted."""

        async def admit(request: web.Request, body: bytes) -> web.StreamResponse:
            faults = await self._faults_or_response(request)
            if isinstance(faults, web.StreamResponse):
                return faults
            try:
                req = ex.extract_json(schema, body)
            except ex.Rejection as rej:
                return _rejection(rej)
            if counted:
                self.metrics.increment("lorax_request_count")
            return await handler(request, faults, req)

        return admit

    def _job(self, request: web.Request, inputs: str, params: dict[str, Any], **kw: Any) -> GenJob:
        return GenJob(inputs=inputs, params=params, authorization=request.headers.get("Authorization"), **kw)

    async def _generate(self, request: web.Request, faults: FaultSpec, req: Any) -> web.StreamResponse:
        job = self._job(request, req["inputs"], req["parameters"])
        return await self._run_generate(request, job, faults, codec.to_json)

    async def _generate_stream(self, request: web.Request, faults: FaultSpec, req: Any) -> web.StreamResponse:
        job = self._job(request, req["inputs"], req["parameters"])
        return await self._run_stream(request, job, faults, render_stream_response, False)

    async def _compat_generate(self, request: web.Request, faults: FaultSpec, req: Any) -> web.StreamResponse:
        params = req["parameters"]
        if params["return_full_text"] is None:
            params["return_full_text"] = self.config.compat_return_full_text
        job = self._job(request, req["inputs"], params)
        if req["stream"]:
            return await self._run_stream(request, job, faults, render_stream_response, False)
        return await self._run_generate(request, job, faults, lambda r: b"[" + codec.to_json(r) + b"]")

    async def _completions(self, request: web.Request, faults: FaultSpec, req: Any) -> web.StreamResponse:
        params, stream = oa.completion_to_generate(req, self.config)
        job = self._job(request, req["prompt"], params)
        if stream:
            return await self._run_stream(request, job, faults, oa.completion_stream_event, True)
        return await self._run_generate(request, job, faults, oa.completion_response)

    async def _chat(self, request: web.Request, faults: FaultSpec, req: Any) -> web.StreamResponse:
        try:
            prompt, params, stream, plan = oa.chat_to_generate(req, self.config)
        except InferError as exc:
            self.metrics.increment("lorax_request_failure", {"err": "template"})
            return self._error(exc)
        job = self._job(request, prompt, params, add_special_tokens=False, tools=plan)
        if stream:
            return await self._run_stream(request, job, faults, oa.chat_stream_event, True)
        using_tools = plan is not None

        def shape(resp: Any) -> bytes:
            return oa.chat_response(resp, self.config, using_tools)

        try:
            return await self._run_generate(request, job, faults, shape)
        except InferError as exc:  # tool output that does not parse (found after generation)
            return self._error(exc)

    # -- embeddings, classification, tokenization

    def _embed_one(self, text: str, params: dict[str, Any] | None) -> list[float]:
        validate_input(self.config, self.engine.tokenizer, text, True, 1)
        params = params or {}
        self.engine.check_loader_crash(params)
        merged = params.get("merged_adapters")
        key = (tuple(merged["ids"]), tuple(merged["weights"])) if merged else (params.get("adapter_id") or "",)
        return self.engine.model.embed(text, key)

    async def _with_permit(
        self, request: web.Request, faults: FaultSpec, work: Callable[[], web.StreamResponse]
    ) -> web.StreamResponse:
        try:
            self.engine.acquire(faults)
        except InferError as exc:
            return self._error(exc, faults)
        try:
            if faults.drop_after is not None:
                return self._drop(request)
            if faults.error_after is not None:
                return self._error(self.engine._injected_error(faults))
            if faults.token_latency:
                await asyncio.sleep(faults.token_latency)
            return work()
        except InferError as exc:
            if exc.error_type == "validation":
                self.metrics.increment("lorax_request_failure", {"err": "validation"})
            return self._error(exc)
        except Crash as exc:
            return self._crash(request, exc)
        except asyncio.CancelledError:
            self.stats.add("cancelled")
            raise
        finally:
            self.engine.release()

    async def _embed(self, request: web.Request, faults: FaultSpec, req: Any) -> web.StreamResponse:

        def work() -> web.StreamResponse:
            vector = self._embed_one(req["inputs"], req["parameters"])
            return _json(codec.to_json(EmbedResponse(embeddings=vector)))

        return await self._with_permit(request, faults, work)

    async def _v1_embeddings(self, request: web.Request, faults: FaultSpec, req: Any) -> web.StreamResponse:
        inputs = req["input"]

        def work() -> web.StreamResponse:
            texts = [inputs] if isinstance(inputs, str) else list(inputs)
            if not texts:
                raise InferError.embedding_failure()
            vectors = [self._embed_one(text, req["parameters"]) for text in texts]
            msg = EmbeddingsResponse(
                embeddings=[Embedding(index=i, embedding=v, object="embedding") for i, v in enumerate(vectors)]
            )
            return _json(codec.to_json(msg))

        return await self._with_permit(request, faults, work)

    def _entities(self, text: str) -> list[Entity]:
        validate_input(self.config, self.engine.tokenizer, text, True, 1)
        return [Entity(**e) for e in self.engine.model.classify(text)]

    async def _classify(self, request: web.Request, faults: FaultSpec, req: Any) -> web.StreamResponse:
        start = time.monotonic()

        def work() -> web.StreamResponse:
            msg = ClassifyResponse(entities=self._entities(req["inputs"]))
            return _json(codec.to_json(msg), _classify_headers(start, batch=False))

        return await self._with_permit(request, faults, work)

    async def _classify_batch(self, request: web.Request, faults: FaultSpec, req: Any) -> web.StreamResponse:
        start = time.monotonic()

        def work() -> web.StreamResponse:
            if not req["inputs"]:
                raise InferError.classification_failure()
            msg = ClassifyBatchResponse(results=[self._entities(t) for t in req["inputs"]])
            return _json(codec.to_json(msg), _classify_headers(start, batch=True))

        return await self._with_permit(request, faults, work)

    async def _tokenize(self, request: web.Request, body: bytes) -> web.StreamResponse:
        try:
            req = ex.extract_json(sc.TOKENIZE_REQUEST, body)
        except ex.Rejection as rej:
            return _rejection(rej)
        if not self.config.has_tokenizer:
            err = InferError(404, "no fast tokenizer", "No fast tokenizer or tokenizer.json for this model")
            return self._error(err)
        add_special = req["add_special_tokens"] if req["add_special_tokens"] is not None else True
        pieces = self.engine.tokenizer.encode(req["inputs"], add_special)
        msg = TokenizeResponse(tokens=[SimpleToken(id=p.id, text=p.vocab, start=p.start, stop=p.stop) for p in pieces])
        return _json(codec.to_json(msg))

    # -- operational routes

    async def _health(self, request: web.Request, body: bytes) -> web.StreamResponse:
        if not self.config.healthy:
            return self._error(InferError(503, "healthcheck", "unhealthy"))
        return web.Response(status=200)

    async def _startup(self, request: web.Request, body: bytes) -> web.StreamResponse:
        if not self.config.startup_ready:
            return self._error(InferError(500, "failed healthcheck", "Empty generation"))
        return web.Response(status=200)

    async def _info(self, request: web.Request, body: bytes) -> web.StreamResponse:
        return _json(codec.to_json(self.config.info()))

    async def _metrics(self, request: web.Request, body: bytes) -> web.StreamResponse:
        # Only Accept selects JSON: LoRAX's `?format=json` query never deserializes (`metrics` in
        # router/src/server.rs; docs/wire.md, "Metrics").
        if "application/json" in request.headers.get("Accept", ""):
            return _json(self.metrics.render_json())
        text = self.metrics.render_prometheus().encode()
        return web.Response(status=200, body=text, headers={"content-type": "text/plain"})


# ---------------------------------------------------------------------------------
# helpers


async def _read_body(request: web.Request) -> tuple[bytes, bool]:
    """Read at most BODY_LIMIT bytes; the flag says the body was longer."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            return b"".join(chunks), False
        size += len(chunk)
        if size > ex.BODY_LIMIT:
            return b"".join(chunks)[: ex.BODY_LIMIT], True
        chunks.append(chunk)


def _rejection(rej: ex.Rejection) -> web.Response:
    return web.Response(status=rej.status, body=rej.text.encode(), headers={"content-type": _TEXT})


def _json(body: bytes, headers: list[tuple[str, str]] | None = None) -> web.Response:
    return web.Response(status=200, body=body, headers=[*(headers or []), ("content-type", "application/json")])


def _classify_headers(start: float, batch: bool) -> list[tuple[str, str]]:
    elapsed = str(int((time.monotonic() - start) * 1000))
    return [
        ("x-compute-type", "gpu+optimized"),
        ("x-compute-time", elapsed),
        # classify_batch subtracts the instants the wrong way round, which saturates to 0.
        ("x-validation-time", "0"),
        ("x-queue-time", "0"),
        ("x-inference-time", "0" if batch else elapsed),
    ]


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


async def _forever() -> None:
    # A stalled upstream: wait until the client or the server gives up (cancellation).
    await asyncio.Event().wait()


async def _finish_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Make the head look like hyper's: lowercase names, no ``Server``, CORS on everything."""
    items = [(k.lower(), v) for k, v in response.headers.items() if k.lower() != "server"]
    response.headers.clear()
    for key, value in items:
        response.headers.add(key, value)
    if request.method != "OPTIONS" or "access-control-request-method" in request.headers:
        for key, value in _CORS:
            if key not in response.headers:
                response.headers[key] = value
