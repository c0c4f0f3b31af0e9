"""The LoRAX REST surface over any transport, written once for both clients.

``lorax/_async_client.py`` is written by hand; ``lorax/_sync_client.py`` is generated
from it by ``python tools/unasync.py`` (the token substitutions listed there), so both
clients take the same arguments, have the same methods with the same signatures and
docstrings, raise the same errors and retry the same way. Each method builds its
request with one builder of :mod:`lorax._params`, hands it to the transport through
``_unary`` or ``_stream`` (the only places that call the transport), and shapes the
answer. What is not a client method lives in :mod:`lorax._client_base`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, overload

from lorax import _params
from lorax import _routes as routes
from lorax._client_base import (
    DEFAULT_POOL_SIZE,
    ClientBase,
    TimeoutLike,
    async_sleep,
    check_transport,
    metrics_result,
    open_transport,
)
from lorax._core import (
    RawResponse,
    StreamTracker,
    predibase_headers,
    predibase_url,
    report_meta,
    start_capture,
    stop_capture,
)
from lorax._message import Message
from lorax._redact import redact_url
from lorax._retry import RetryPolicy, RetryState
from lorax._stream import AsyncAttach, AsyncOpened, AsyncStream
from lorax._timeout import NOT_GIVEN, NotGiven
from lorax.errors import LoraxError, ServiceUnavailableError, UnhealthyError
from lorax.transports.base import (
    DEFAULT_MAX_RESPONSE_BYTES,
    AsyncMessageStream,
    AsyncTransport,
    ResponseMeta,
)
from lorax.types import (
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    ClassifyResponse,
    CompletionResponse,
    CompletionStreamResponse,
    EmbeddingsResponse,
    EmbedResponse,
    GenerateResponse,
    HealthRequest,
    InfoRequest,
    InfoResponse,
    MetricsRequest,
    SimpleToken,
    StreamResponse,
)

__all__ = ["AsyncClient"]


class AsyncClient(ClientBase):
    """An asyncio LoRAX client.

    Use it as ``async with AsyncClient(...) as client:``, or call
    ``await client.aclose()`` when done. Streaming methods return a
    :class:`lorax.AsyncStream`: ``async for r in client.generate_stream(...)``. The
    asyncio client is bound to the event loop it is first used on; the synchronous
    one may be shared by threads.

    Args:
        base_url: the LoRAX server, e.g. ``http://127.0.0.1:8080``. It may carry a path
            prefix (a Predibase deployment URL); routes are joined under it. A
            ``ws://`` or ``wss://`` URL talks to a ``lorax gateway`` over one
            multiplexed WebSocket instead.
        headers: sent with every request (for example ``Authorization``). Never logged.
        cookies: sent with every request as a ``Cookie`` header.
        timeout: seconds; ``60`` means 60 s to connect and at most 60 s of silence
            between bytes, as in the official client. A :class:`lorax.Timeout` sets
            connect, read and a total deadline separately; ``None`` disables them.
        session: not supported (the official client's ``requests.Session``); pass
            ``transport=AsyncHTTPTransport(...)`` to configure pooling, TLS and proxies.
        max_session_retries: the official client's retry count (default 2, as there);
            ``max_retries`` wins.
        transport: a :class:`lorax.transports.AsyncTransport`; by default an
            :class:`~lorax.transports.AsyncHTTPTransport` (or a WebSocket transport for
            ``ws://`` URLs) that the client owns and closes.
        max_retries: retries for connection failures before anything was sent, 429,
            503 and ``overloaded``; an int, a :class:`lorax.RetryPolicy` or ``None``.
        verify: TLS verification: True (default), False, a CA bundle path or an
            ``ssl.SSLContext``.
        cert: a client certificate (path, or ``(cert, key)``).
        proxy: an HTTP(S) proxy URL; by default the environment's ``HTTPS_PROXY`` etc.
        pool_size: the most connections open to the server (100 by default); more
            concurrent calls wait for a free one.
        on_response: called with each response's :class:`ResponseMeta`.
        gateway_headers: headers for the WebSocket handshake with a ``lorax gateway``
            (for example its bearer token); ``headers`` go with each call instead and
            are forwarded to LoRAX.
        max_response_bytes: the largest response body, and stream event, read over
            HTTP (64 MiB by default); a larger or compressed body raises
            :class:`~lorax.errors.ResponseTooLargeError`.
    """

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
        timeout: TimeoutLike | NotGiven = NOT_GIVEN,
        session: object | None = None,
        max_session_retries: int | None = 2,
        *,
        transport: AsyncTransport | None = None,
        max_retries: RetryPolicy | int | NotGiven | None = NOT_GIVEN,
        verify: Any = True,
        cert: str | tuple[str, str] | None = None,
        proxy: str | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        on_response: Callable[[ResponseMeta], None] | None = None,
        gateway_headers: Mapping[str, str] | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        scheme = self._setup(
            AsyncTransport, base_url, headers, cookies, timeout, session, max_session_retries, max_retries, on_response
        )
        if transport is not None:
            self._transport: AsyncTransport = check_transport(transport, AsyncTransport, type(self).__name__)
        else:
            self._transport = open_transport(
                AsyncTransport,
                scheme,
                base_url,
                verify=verify,
                cert=cert,
                proxy=proxy,
                pool_size=pool_size,
                gateway_headers=gateway_headers,
                max_response_bytes=max_response_bytes,
            )

    @classmethod
    def from_predibase(
        cls,
        tenant: str,
        deployment: str,
        *,
        api_token: str | None = None,
        headers: Mapping[str, str] | None = None,
        serving_url: str = "https://serving.app.predibase.com",
        **kwargs: Any,
    ) -> AsyncClient:
        """A client for a Predibase deployment.

        The token comes from `api_token` or the ``PREDIBASE_API_TOKEN`` environment
        variable (an ``Authorization`` header in `headers` wins over both) and is sent
        as ``Authorization: Bearer ...``.

        Raises:
            lorax.errors.MissingCredentialsError: no token from any of them (every
                Predibase deployment wants one; the call would fail with a 401).
        """
        url = predibase_url(tenant, deployment, serving_url=serving_url)
        auth_headers, source = predibase_headers(api_token, headers, owner=cls.__name__)
        client = cls(url, headers=auth_headers, **kwargs)
        client._auth_source = source
        return client

    @property
    def transport(self) -> AsyncTransport:
        """The transport calls go through."""
        return self._transport

    @property
    def with_raw_response(self) -> _AsyncRawClient:
        """Call any method through this to get a :class:`RawResponse` (result plus metadata)."""
        return _AsyncRawClient(self)

    # -- the transport calls -------------------------------------------------------

    async def _unary(self, method: routes.Method, request: Message) -> Any:
        options = self._call_options()
        state: RetryState | None = None  # made on the first failure: most calls need none
        while True:
            try:
                message, meta = await self._transport.unary_async(method, request, options)
            except LoraxError as exc:
                if state is None:
                    state = RetryState(self._config.retry, options.deadline)
                delay = self._retry_delay(state, exc, method)
                if delay is None:
                    raise
                await async_sleep(delay)
                continue
            report_meta(self._config, meta)
            return message

    def _stream(self, method: routes.Method, request: Message) -> AsyncStream[Any]:
        config = self._config

        async def open_stream(attach: AsyncAttach) -> AsyncOpened:
            options = self._call_options()
            state: RetryState | None = None
            while True:
                stream: AsyncMessageStream | None = None
                try:
                    attach(None)  # raises once the stream was closed: no new attempt
                    stream = await self._transport.stream_async(method, request, options)
                    attach(stream)  # closing can now interrupt the wait for the first event
                    try:
                        first = await anext(stream)
                    except StopAsyncIteration:
                        first = None
                except LoraxError as exc:
                    if stream is not None:
                        await stream.aclose()
                    if state is None:
                        state = RetryState(config.retry, options.deadline)
                    delay = self._retry_delay(state, exc, method)
                    if delay is None:
                        raise
                    await async_sleep(delay)
                    continue
                except BaseException:
                    if stream is not None:
                        await stream.aclose()
                    raise
                report_meta(config, stream.meta)
                return stream, first

        return AsyncStream(open_stream, StreamTracker(method))

    # -- native routes -------------------------------------------------------------

    async def generate(
        self,
        prompt: str,
        adapter_id: str | None = None,
        adapter_source: str | None = None,
        merged_adapters: _params.MergedAdaptersLike | None = None,
        api_token: str | None = None,
        do_sample: bool = False,
        max_new_tokens: int | None = None,
        ignore_eos_token: bool = False,
        best_of: int | None = None,
        repetition_penalty: float | None = None,
        return_full_text: bool = False,
        seed: int | None = None,
        stop_sequences: Sequence[str] | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        truncate: int | None = None,
        typical_p: float | None = None,
        watermark: bool = False,
        response_format: _params.ResponseFormatLike | None = None,
        decoder_input_details: bool = False,
        return_k_alternatives: int | None = None,
        details: bool = True,
        *,
        frequency_penalty: float | None = None,
        presence_penalty: float | None = None,
    ) -> GenerateResponse:
        """Generate text for `prompt` (POST /generate).

        Args:
            prompt: the input text.
            adapter_id: the LoRA adapter to apply (None: the base model, or the
                server's default adapter).
            adapter_source: where LoRAX loads the adapter from: "hub", "local",
                "s3" or "pbase".
            merged_adapters: several adapters merged for this request, as a dict
                (``{"ids": [...], "weights": [...], "merge_strategy": "ties",
                "density": 0.5}``) or a :class:`lorax.types.MergedAdapters`.
            api_token: token for downloading a private adapter.
            do_sample: sample instead of greedy decoding.
            max_new_tokens: at most this many tokens (None: up to the context limit).
            ignore_eos_token: keep generating past the end-of-sequence token.
            best_of: generate this many sequences and return the best.
            repetition_penalty: > 0; 1.0 means none.
            return_full_text: prepend the prompt to ``generated_text``.
            seed: random seed (up to 2**64-1).
            stop_sequences: stop when one of these is generated.
            temperature: sampling temperature (0 is allowed: greedy).
            top_k, top_p, typical_p: sampling filters (top_p=1.0 is allowed).
            truncate: keep only the last `truncate` prompt tokens.
            watermark: watermark the output.
            response_format: structured output: ``{"type": "json_object", "schema":
                {...}}``, a :class:`lorax.types.ResponseFormat`, or a pydantic model
                class.
            decoder_input_details: return the prompt's tokens in ``details.prefill``.
            return_k_alternatives: return the k most likely alternatives per token.
            details: return token details (default True, as in the official client).
            frequency_penalty, presence_penalty: in [-2, 2].

        Returns:
            :class:`lorax.types.GenerateResponse` with ``generated_text`` and ``details``.

        Raises:
            lorax.errors.LoraxError: a subclass naming what went wrong.
        """
        request = _params.generate(
            prompt,
            adapter_id=adapter_id,
            adapter_source=adapter_source,
            merged_adapters=merged_adapters,
            api_token=api_token,
            do_sample=do_sample,
            max_new_tokens=max_new_tokens,
            ignore_eos_token=ignore_eos_token,
            best_of=best_of,
            repetition_penalty=repetition_penalty,
            return_full_text=return_full_text,
            seed=seed,
            stop_sequences=stop_sequences,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            truncate=truncate,
            typical_p=typical_p,
            watermark=watermark,
            response_format=response_format,
            decoder_input_details=decoder_input_details,
            return_k_alternatives=return_k_alternatives,
            details=details,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
        )
        result: GenerateResponse = await self._unary(routes.GENERATE, request)
        return result

    def generate_stream(
        self,
        prompt: str,
        adapter_id: str | None = None,
        adapter_source: str | None = None,
        merged_adapters: _params.MergedAdaptersLike | None = None,
        api_token: str | None = None,
        do_sample: bool = False,
        max_new_tokens: int | None = None,
        ignore_eos_token: bool = False,
        repetition_penalty: float | None = None,
        return_full_text: bool = False,
        seed: int | None = None,
        stop_sequences: Sequence[str] | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        truncate: int | None = None,
        typical_p: float | None = None,
        watermark: bool = False,
        response_format: _params.ResponseFormatLike | None = None,
        details: bool = True,
        return_k_alternatives: int | None = None,
        *,
        frequency_penalty: float | None = None,
        presence_penalty: float | None = None,
    ) -> AsyncStream[StreamResponse]:
        """Stream the tokens of a generation (POST /generate_stream).

        Takes the arguments of :meth:`generate` except ``best_of`` and
        ``decoder_input_details``, which LoRAX refuses on streams. Returns a
        :class:`lorax.AsyncStream` of :class:`lorax.types.StreamResponse`; the last event
        has ``generated_text`` (and ``details``). A stream that ends before that event
        raises :class:`lorax.errors.IncompleteGenerationError`.
        """
        request = _params.generate(
            prompt,
            adapter_id=adapter_id,
            adapter_source=adapter_source,
            merged_adapters=merged_adapters,
            api_token=api_token,
            do_sample=do_sample,
            max_new_tokens=max_new_tokens,
            ignore_eos_token=ignore_eos_token,
            repetition_penalty=repetition_penalty,
            return_full_text=return_full_text,
            seed=seed,
            stop_sequences=stop_sequences,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            truncate=truncate,
            typical_p=typical_p,
            watermark=watermark,
            response_format=response_format,
            details=details,
            return_k_alternatives=return_k_alternatives,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
        )
        return self._stream(routes.GENERATE_STREAM, request)

    async def embed(
        self,
        inputs: str,
        *,
        adapter_id: str | None = None,
        adapter_source: str | None = None,
        merged_adapters: _params.MergedAdaptersLike | None = None,
        api_token: str | None = None,
    ) -> EmbedResponse:
        """Embed `inputs` (POST /embed); the result has ``.embeddings``, one vector."""
        request = _params.embed(
            inputs,
            adapter_id=adapter_id,
            adapter_source=adapter_source,
            merged_adapters=merged_adapters,
            api_token=api_token,
        )
        result: EmbedResponse = await self._unary(routes.EMBED, request)
        return result

    async def classify(self, inputs: str) -> ClassifyResponse:
        """Classify the tokens of `inputs` (POST /classify); the result has ``.entities``."""
        result: ClassifyResponse = await self._unary(routes.CLASSIFY, _params.classify(inputs))
        return result

    async def classify_batch(self, inputs: Sequence[str]) -> list[ClassifyResponse]:
        """Classify several inputs (POST /classify_batch); one result per input."""
        result = await self._unary(routes.CLASSIFY_BATCH, _params.classify_batch(inputs))
        return [ClassifyResponse(entities=entities) for entities in result.results]

    async def tokenize(self, inputs: str, add_special_tokens: bool | None = None) -> list[SimpleToken]:
        """Tokenize `inputs` with the server's tokenizer (POST /tokenize)."""
        result = await self._unary(routes.TOKENIZE, _params.tokenize(inputs, add_special_tokens))
        return list(result.tokens)

    async def info(self) -> InfoResponse:
        """The served model and the server's limits (GET /info)."""
        result: InfoResponse = await self._unary(routes.INFO, InfoRequest())
        return result

    async def health(self) -> bool:
        """True when the server answers its health check, False when it reports unhealthy.

        Connection failures raise (a server you cannot reach is not "unhealthy").
        """
        try:
            # An unhealthy answer is the answer: retrying it would only delay it.
            await self.with_options(max_retries=None)._unary(routes.HEALTH, HealthRequest())
        except (UnhealthyError, ServiceUnavailableError):
            return False
        return True

    async def wait_until_ready(self, timeout: float = 60.0, interval: float = 0.5) -> None:
        """Poll the health check until the server is up, or raise after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        probe = self.with_options(max_retries=None, timeout=min(max(interval, 1.0), timeout))
        while True:
            try:
                if await probe.health():
                    return
                last: LoraxError | None = None
            except LoraxError as exc:
                last = exc
            if time.monotonic() >= deadline:
                from lorax.errors import APITimeoutError

                raise APITimeoutError(
                    f"the server at {redact_url(self.base_url)} was not ready within {timeout} s"
                    + (f" (last error: {last})" if last else ""),
                    phase="total",
                )
            await async_sleep(interval)

    @overload
    async def metrics(self, format: Literal["prometheus"] = "prometheus") -> str: ...
    @overload
    async def metrics(self, format: Literal["json"]) -> dict[str, Any]: ...
    async def metrics(self, format: str = "prometheus") -> str | dict[str, Any]:
        """Server metrics: Prometheus text, or ``format="json"`` for LoRAX's JSON families."""
        if format not in ("prometheus", "json"):
            raise _params.invalid(f"format must be 'prometheus' or 'json', not {format!r}")
        result = await self._unary(routes.METRICS, MetricsRequest(format=format))
        return metrics_result(result, format)

    # -- OpenAI-compatible routes --------------------------------------------------

    async def chat(
        self,
        messages: Sequence[_params.MessageLike],
        *,
        adapter_id: str | None = None,
        adapter_source: str | None = None,
        api_token: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        n: int | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        repetition_penalty: float | None = None,
        ignore_eos_token: bool = False,
        response_format: _params.ChatResponseFormatLike | None = None,
        tools: Sequence[_params.ToolLike] | None = None,
        tool_choice: _params.ToolChoiceLike | None = None,
        tool_prompt: str | None = None,
        guideline: str | None = None,
        logit_bias: Mapping[str, float] | None = None,
        user: str | None = None,
    ) -> ChatCompletionResponse:
        """A chat completion (POST /v1/chat/completions), rendered with the model's template.

        `messages` are dicts (``{"role": "user", "content": "..."}``, content may be a
        list of text and image_url chunks) or :class:`lorax.types.ChatMessage`.
        `adapter_id` selects the adapter (sent as ``model``; None is the base model).
        LoRAX samples on this route unless ``temperature=0``. ``tool_choice`` in
        OpenAI's object form is rewritten to LoRAX's.
        """
        request = _params.chat(
            messages,
            adapter_id=adapter_id,
            adapter_source=adapter_source,
            api_token=api_token,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            n=n,
            stop=stop,
            seed=seed,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            repetition_penalty=repetition_penalty,
            ignore_eos_token=ignore_eos_token,
            response_format=response_format,
            tools=tools,
            tool_choice=tool_choice,
            tool_prompt=tool_prompt,
            guideline=guideline,
            logit_bias=logit_bias,
            user=user,
        )
        result: ChatCompletionResponse = await self._unary(routes.CHAT_COMPLETIONS, request)
        return result

    def chat_stream(
        self,
        messages: Sequence[_params.MessageLike],
        *,
        adapter_id: str | None = None,
        adapter_source: str | None = None,
        api_token: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        repetition_penalty: float | None = None,
        ignore_eos_token: bool = False,
        response_format: _params.ChatResponseFormatLike | None = None,
        tools: Sequence[_params.ToolLike] | None = None,
        tool_choice: _params.ToolChoiceLike | None = None,
        tool_prompt: str | None = None,
        guideline: str | None = None,
        logit_bias: Mapping[str, float] | None = None,
        user: str | None = None,
    ) -> AsyncStream[ChatCompletionStreamResponse]:
        """Stream a chat completion; the last chunk has ``finish_reason`` and ``usage``.

        Takes the arguments of :meth:`chat` except ``n`` (LoRAX streams one choice).
        """
        request = _params.chat(
            messages,
            adapter_id=adapter_id,
            adapter_source=adapter_source,
            api_token=api_token,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop=stop,
            seed=seed,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            repetition_penalty=repetition_penalty,
            ignore_eos_token=ignore_eos_token,
            response_format=response_format,
            tools=tools,
            tool_choice=tool_choice,
            tool_prompt=tool_prompt,
            guideline=guideline,
            logit_bias=logit_bias,
            user=user,
            stream=True,
        )
        return self._stream(routes.CHAT_COMPLETIONS_STREAM, request)

    async def completions(
        self,
        prompt: str,
        *,
        adapter_id: str | None = None,
        adapter_source: str | None = None,
        api_token: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        echo: bool = False,
        best_of: int | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        repetition_penalty: float | None = None,
        ignore_eos_token: bool = False,
        logit_bias: Mapping[str, float] | None = None,
        user: str | None = None,
    ) -> CompletionResponse:
        """A text completion (POST /v1/completions). `adapter_id` is sent as ``model``."""
        request = _params.completions(
            prompt,
            adapter_id=adapter_id,
            adapter_source=adapter_source,
            api_token=api_token,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop=stop,
            seed=seed,
            echo=echo,
            best_of=best_of,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            repetition_penalty=repetition_penalty,
            ignore_eos_token=ignore_eos_token,
            logit_bias=logit_bias,
            user=user,
        )
        result: CompletionResponse = await self._unary(routes.COMPLETIONS, request)
        return result

    def completions_stream(
        self,
        prompt: str,
        *,
        adapter_id: str | None = None,
        adapter_source: str | None = None,
        api_token: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        echo: bool = False,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        repetition_penalty: float | None = None,
        ignore_eos_token: bool = False,
        logit_bias: Mapping[str, float] | None = None,
        user: str | None = None,
    ) -> AsyncStream[CompletionStreamResponse]:
        """Stream a text completion. Takes the arguments of :meth:`completions` but ``best_of``."""
        request = _params.completions(
            prompt,
            adapter_id=adapter_id,
            adapter_source=adapter_source,
            api_token=api_token,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop=stop,
            seed=seed,
            echo=echo,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            repetition_penalty=repetition_penalty,
            ignore_eos_token=ignore_eos_token,
            logit_bias=logit_bias,
            user=user,
            stream=True,
        )
        return self._stream(routes.COMPLETIONS_STREAM, request)

    async def embeddings(
        self,
        input: str | Sequence[str],
        *,
        adapter_id: str | None = None,
        adapter_source: str | None = None,
        merged_adapters: _params.MergedAdaptersLike | None = None,
        api_token: str | None = None,
    ) -> EmbeddingsResponse:
        """Embed one string or a list (POST /v1/embeddings); ``.embeddings`` in input order."""
        request = _params.embeddings(
            input,
            adapter_id=adapter_id,
            adapter_source=adapter_source,
            merged_adapters=merged_adapters,
            api_token=api_token,
        )
        result: EmbeddingsResponse = await self._unary(routes.EMBEDDINGS, request)
        return result

    # -- lifecycle -----------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the transport and its connections. Idempotent."""
        if self._owns_transport:
            await self._transport.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class _AsyncRawClient:
    """``client.with_raw_response``: each method returns a :class:`RawResponse`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Callable[..., Any]:
        target = getattr(self._client, name)
        if name.startswith("_") or not callable(target):
            raise AttributeError(name)

        async def call(*args: Any, **kwargs: Any) -> RawResponse:
            sink, token = start_capture()
            try:
                pending = target(*args, **kwargs)
                if isinstance(pending, AsyncStream):
                    raise TypeError("streams carry their metadata already: use stream.meta")
                result = await pending
            finally:
                stop_capture(token)
            return RawResponse(result, sink[-1] if sink else ResponseMeta())

        return call
