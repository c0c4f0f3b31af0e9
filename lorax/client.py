"""`Client` and `AsyncClient`: the LoRAX REST surface over any transport.

Both classes take the same arguments, have the same methods with the same signatures,
raise the same errors and retry the same way; a test compares them. Each method builds
its request with :mod:`lorax._params`, hands it to the transport, and shapes the
answer; the only differences are ``await`` and how the retry loop sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

from lorax import _params
from lorax import _routes as routes
from lorax._core import (
    ClientConfig,
    RawResponse,
    StreamTracker,
    auth_source,
    build_headers,
    call_args,
    check_base_url,
    explain_auth,
    predibase_headers,
    predibase_url,
    report_meta,
    start_capture,
    stop_capture,
)
from lorax._message import Message
from lorax._redact import redact_url
from lorax._retry import RetryPolicy, RetryState
from lorax._stream import AsyncStream, Stream
from lorax._timeout import NOT_GIVEN, NotGiven, Timeout
from lorax.errors import LoraxError, ServiceUnavailableError, UnhealthyError
from lorax.transports.base import (
    DEFAULT_MAX_RESPONSE_BYTES,
    AsyncMessageStream,
    AsyncTransport,
    MessageStream,
    ResponseMeta,
    Transport,
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

__all__ = ["AsyncClient", "Client"]

logger = logging.getLogger("lorax")

TimeoutLike = Timeout | float | tuple[float | None, float | None] | None
M = TypeVar("M", bound=Message)
C = TypeVar("C", bound="_ClientBase")


class _ClientBase:
    """Construction and configuration shared by both clients."""

    _config: ClientConfig

    def _setup(
        self,
        base_url: str,
        headers: Mapping[str, str] | None,
        cookies: Mapping[str, str] | None,
        timeout: TimeoutLike | NotGiven,
        max_retries: RetryPolicy | int | NotGiven | None,
        on_response: Callable[[ResponseMeta], None] | None,
    ) -> str:
        scheme = check_base_url(base_url)
        self._config = ClientConfig(
            base_url=base_url,
            headers=build_headers(headers, cookies),
            timeout=Timeout.coerce(timeout),
            retry=RetryPolicy.coerce(max_retries),
            on_response=on_response,
        )
        # Named in the message of a 401/403 (never the token itself).
        self._auth_source: str | None = auth_source(self._config.headers)
        return scheme

    @property
    def base_url(self) -> str:
        """The server (or gateway) URL this client talks to."""
        return self._config.base_url

    @property
    def timeout(self) -> Timeout:
        """The timeouts applied to each call."""
        return self._config.timeout

    @property
    def retry_policy(self) -> RetryPolicy:
        """When and how failed calls are retried."""
        return self._config.retry

    def _copy_with(self: C, config: ClientConfig) -> C:
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._config = config
        clone.__dict__["_owns_transport"] = False  # the original closes the shared transport
        return clone

    def with_options(
        self: C,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: TimeoutLike | NotGiven = NOT_GIVEN,
        max_retries: RetryPolicy | int | NotGiven | None = NOT_GIVEN,
    ) -> C:
        """A client sharing this one's connections, with some settings changed.

        ``client.with_options(timeout=5).generate(...)`` sets a timeout for one call;
        closing the copy does not close the shared transport.
        """
        clone = self._copy_with(self._config.changed(headers=headers, timeout=timeout, max_retries=max_retries))
        if headers and auth_source(headers) is not None:
            clone._auth_source = "the Authorization header given in with_options(headers=)"
        return clone

    def __repr__(self) -> str:
        transport = getattr(self, "_transport", None)
        described = transport.describe() if transport is not None else "?"
        return f"{type(self).__name__}({redact_url(self._config.base_url)!r}, transport={described})"


class Client(_ClientBase):
    """A synchronous LoRAX client.

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
            ``transport=HTTPTransport(...)`` to configure pooling, TLS and proxies.
        max_session_retries: the official client's retry count (default 2, as there);
            ``max_retries`` wins.
        transport: a :class:`lorax.transports.Transport`; by default an
            :class:`~lorax.transports.HTTPTransport` (or a WebSocket transport for
            ``ws://`` URLs) that the client owns and closes.
        max_retries: retries for connection failures before anything was sent, 429,
            503 and ``overloaded``; an int, a :class:`lorax.RetryPolicy` or ``None``.
        verify: TLS verification: True (default), False, a CA bundle path or an
            ``ssl.SSLContext``.
        cert: a client certificate (path, or ``(cert, key)``).
        proxy: an HTTP(S) proxy URL; by default the environment's ``HTTPS_PROXY`` etc.
        pool_size: connections kept open to the server.
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
        transport: Transport | None = None,
        max_retries: RetryPolicy | int | NotGiven | None = NOT_GIVEN,
        verify: Any = True,
        cert: str | tuple[str, str] | None = None,
        proxy: str | None = None,
        pool_size: int = 10,
        on_response: Callable[[ResponseMeta], None] | None = None,
        gateway_headers: Mapping[str, str] | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if session is not None:
            raise TypeError(
                "lorax.Client does not take a requests.Session; pass transport=HTTPTransport(...) "
                "to configure pooling, TLS and proxies"
            )
        if max_retries is NOT_GIVEN and max_session_retries is not None:
            max_retries = max_session_retries
        scheme = self._setup(base_url, headers, cookies, timeout, max_retries, on_response)
        self._owns_transport = True
        if transport is not None:
            if not isinstance(transport, Transport):
                raise TypeError(f"Client needs a sync Transport, got {type(transport).__name__}")
            self._transport: Transport = transport
        elif scheme in ("ws", "wss"):
            from lorax.transports.websocket import WebSocketTransport

            # The handshake authenticates to the gateway; the client's headers travel with
            # each call and are forwarded upstream.
            self._transport = WebSocketTransport(base_url, headers=gateway_headers, verify=verify)
        else:
            from lorax.transports.http import HTTPTransport

            self._transport = HTTPTransport(
                base_url,
                verify=verify,
                cert=cert,
                proxy=proxy,
                pool_maxsize=pool_size,
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
    ) -> Client:
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
    def transport(self) -> Transport:
        """The transport calls go through."""
        return self._transport

    @property
    def with_raw_response(self) -> _RawClient:
        """Call any method through this to get a :class:`RawResponse` (result plus metadata)."""
        return _RawClient(self)

    # -- plumbing ------------------------------------------------------------------

    def _unary(self, method: routes.Method, request: Message) -> Any:
        config = self._config
        options = config.call_options()
        state = RetryState(config.retry, options.deadline)
        while True:
            try:
                message, meta = self._transport.unary(method, request, options)
            except LoraxError as exc:
                delay = state.next_delay(exc, stream_started=False)
                if delay is None:
                    explain_auth(exc, self._auth_source)
                    raise
                logger.info(
                    "lorax: %s failed (%s); retry %d in %.2fs", method.name, type(exc).__name__, state.attempts, delay
                )
                time.sleep(delay)
                continue
            report_meta(config, meta)
            return message

    def _stream(self, method: routes.Method, request: Message) -> Stream[Any]:
        config = self._config

        def open_stream(attach: Callable[[MessageStream | None], None]) -> tuple[MessageStream, Any]:
            options = config.call_options()
            state = RetryState(config.retry, options.deadline)
            while True:
                stream: MessageStream | None = None
                try:
                    attach(None)  # raises once the stream was closed: no new attempt
                    stream = self._transport.stream(method, request, options)
                    attach(stream)  # close() can now interrupt the wait for the first event
                    try:
                        first = next(stream)
                    except StopIteration:
                        first = None
                except LoraxError as exc:
                    if stream is not None:
                        stream.close()
                    delay = state.next_delay(exc, stream_started=False)
                    if delay is None:
                        explain_auth(exc, self._auth_source)
                        raise
                    logger.info(
                        "lorax: %s failed (%s); retry %d in %.2fs",
                        method.name,
                        type(exc).__name__,
                        state.attempts,
                        delay,
                    )
                    time.sleep(delay)
                    continue
                except BaseException:
                    if stream is not None:
                        stream.close()
                    raise
                report_meta(config, stream.meta)
                return stream, first

        return Stream(open_stream, StreamTracker(method))

    # -- native routes -------------------------------------------------------------

    def generate(
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
        request = _params.generate(**call_args(locals()))
        result: GenerateResponse = self._unary(routes.GENERATE, request)
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
    ) -> Stream[StreamResponse]:
        """Stream the tokens of a generation (POST /generate_stream).

        Takes the arguments of :meth:`generate` except ``best_of`` and
        ``decoder_input_details``, which LoRAX refuses on streams. Returns a
        :class:`lorax.Stream` of :class:`lorax.types.StreamResponse`; the last event
        has ``generated_text`` (and ``details``). A stream that ends before that event
        raises :class:`lorax.errors.IncompleteGenerationError`.
        """
        request = _params.generate(**call_args(locals()))
        return self._stream(routes.GENERATE_STREAM, request)

    def embed(
        self,
        inputs: str,
        *,
        adapter_id: str | None = None,
        adapter_source: str | None = None,
        merged_adapters: _params.MergedAdaptersLike | None = None,
        api_token: str | None = None,
    ) -> EmbedResponse:
        """Embed `inputs` (POST /embed); the result has ``.embeddings``, one vector."""
        request = _params.embed(**call_args(locals()))
        result: EmbedResponse = self._unary(routes.EMBED, request)
        return result

    def classify(self, inputs: str) -> ClassifyResponse:
        """Classify the tokens of `inputs` (POST /classify); the result has ``.entities``."""
        result: ClassifyResponse = self._unary(routes.CLASSIFY, _params.classify(inputs))
        return result

    def classify_batch(self, inputs: Sequence[str]) -> list[ClassifyResponse]:
        """Classify several inputs (POST /classify_batch); one result per input."""
        result = self._unary(routes.CLASSIFY_BATCH, _params.classify_batch(inputs))
        return [ClassifyResponse(entities=entities) for entities in result.results]

    def tokenize(self, inputs: str, add_special_tokens: bool | None = None) -> list[SimpleToken]:
        """Tokenize `inputs` with the server's tokenizer (POST /tokenize)."""
        result = self._unary(routes.TOKENIZE, _params.tokenize(inputs, add_special_tokens))
        return list(result.tokens)

    def info(self) -> InfoResponse:
        """The served model and the server's limits (GET /info)."""
        result: InfoResponse = self._unary(routes.INFO, InfoRequest())
        return result

    def health(self) -> bool:
        """True when the server answers its health check, False when it reports unhealthy.

        Connection failures raise (a server you cannot reach is not "unhealthy").
        """
        try:
            # An unhealthy answer is the answer: retrying it would only delay it.
            self.with_options(max_retries=None)._unary(routes.HEALTH, HealthRequest())
        except (UnhealthyError, ServiceUnavailableError):
            return False
        return True

    def wait_until_ready(self, timeout: float = 60.0, interval: float = 0.5) -> None:
        """Poll the health check until the server is up, or raise after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        probe = self.with_options(max_retries=None, timeout=min(max(interval, 1.0), timeout))
        while True:
            try:
                if probe.health():
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
            time.sleep(interval)

    @overload
    def metrics(self, format: Literal["prometheus"] = "prometheus") -> str: ...
    @overload
    def metrics(self, format: Literal["json"]) -> dict[str, Any]: ...
    def metrics(self, format: str = "prometheus") -> str | dict[str, Any]:
        """Server metrics: Prometheus text, or ``format="json"`` for LoRAX's JSON families."""
        if format not in ("prometheus", "json"):
            raise _params.invalid(f"format must be 'prometheus' or 'json', not {format!r}")
        result = self._unary(routes.METRICS, MetricsRequest(format=format))
        return _metrics_result(result, format)

    # -- OpenAI-compatible routes --------------------------------------------------

    def chat(
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
        request = _params.chat(**call_args(locals()))
        result: ChatCompletionResponse = self._unary(routes.CHAT_COMPLETIONS, request)
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
    ) -> Stream[ChatCompletionStreamResponse]:
        """Stream a chat completion; the last chunk has ``finish_reason`` and ``usage``.

        Takes the arguments of :meth:`chat` except ``n`` (LoRAX streams one choice).
        """
        request = _params.chat(**call_args(locals()), stream=True)
        return self._stream(routes.CHAT_COMPLETIONS_STREAM, request)

    def completions(
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
        request = _params.completions(**call_args(locals()))
        result: CompletionResponse = self._unary(routes.COMPLETIONS, request)
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
    ) -> Stream[CompletionStreamResponse]:
        """Stream a text completion. Takes the arguments of :meth:`completions` but ``best_of``."""
        request = _params.completions(**call_args(locals()), stream=True)
        return self._stream(routes.COMPLETIONS_STREAM, request)

    def embeddings(
        self,
        input: str | Sequence[str],
        *,
        adapter_id: str | None = None,
        adapter_source: str | None = None,
        merged_adapters: _params.MergedAdaptersLike | None = None,
        api_token: str | None = None,
    ) -> EmbeddingsResponse:
        """Embed one string or a list (POST /v1/embeddings); ``.embeddings`` in input order."""
        request = _params.embeddings(**call_args(locals()))
        result: EmbeddingsResponse = self._unary(routes.EMBEDDINGS, request)
        return result

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Close the transport and its connections. Idempotent."""
        if self._owns_transport:
            self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient(_ClientBase):
    """The asyncio twin of :class:`Client`: same arguments, methods, errors and retries.

    ``timeout=60`` means 60 seconds here too. Use it as ``async with AsyncClient(...)``
    or call ``await client.aclose()``. Streaming methods return an
    :class:`lorax.AsyncStream` directly: ``async for r in client.generate_stream(...)``.
    A client is bound to the event loop it is first used on.
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
        pool_size: int = 100,
        on_response: Callable[[ResponseMeta], None] | None = None,
        gateway_headers: Mapping[str, str] | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if session is not None:
            raise TypeError(
                "lorax.AsyncClient does not take a session; pass transport=AsyncHTTPTransport(...) "
                "to configure pooling, TLS and proxies"
            )
        if max_retries is NOT_GIVEN and max_session_retries is not None:
            max_retries = max_session_retries
        scheme = self._setup(base_url, headers, cookies, timeout, max_retries, on_response)
        self._owns_transport = True
        if transport is not None:
            if not isinstance(transport, AsyncTransport):
                raise TypeError(f"AsyncClient needs an AsyncTransport, got {type(transport).__name__}")
            self._transport: AsyncTransport = transport
        elif scheme in ("ws", "wss"):
            from lorax.transports.websocket import AsyncWebSocketTransport

            self._transport = AsyncWebSocketTransport(base_url, headers=gateway_headers, verify=verify)
        else:
            from lorax.transports.aiohttp import AsyncHTTPTransport

            self._transport = AsyncHTTPTransport(
                base_url, verify=verify, cert=cert, proxy=proxy, limit=pool_size, max_response_bytes=max_response_bytes
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
        url = predibase_url(tenant, deployment, serving_url=serving_url)
        auth_headers, source = predibase_headers(api_token, headers, owner=cls.__name__)
        client = cls(url, headers=auth_headers, **kwargs)
        client._auth_source = source
        return client

    @property
    def transport(self) -> AsyncTransport:
        return self._transport

    @property
    def with_raw_response(self) -> _AsyncRawClient:
        return _AsyncRawClient(self)

    # -- plumbing ------------------------------------------------------------------

    async def _unary(self, method: routes.Method, request: Message) -> Any:
        config = self._config
        options = config.call_options()
        state = RetryState(config.retry, options.deadline)
        while True:
            try:
                message, meta = await self._transport.unary_async(method, request, options)
            except LoraxError as exc:
                delay = state.next_delay(exc, stream_started=False)
                if delay is None:
                    explain_auth(exc, self._auth_source)
                    raise
                logger.info(
                    "lorax: %s failed (%s); retry %d in %.2fs", method.name, type(exc).__name__, state.attempts, delay
                )
                await asyncio.sleep(delay)
                continue
            report_meta(config, meta)
            return message

    def _stream(self, method: routes.Method, request: Message) -> AsyncStream[Any]:
        config = self._config

        async def open_stream() -> tuple[AsyncMessageStream, Any]:
            options = config.call_options()
            state = RetryState(config.retry, options.deadline)
            while True:
                stream: AsyncMessageStream | None = None
                try:
                    stream = await self._transport.stream_async(method, request, options)
                    try:
                        first = await stream.__anext__()
                    except StopAsyncIteration:
                        first = None
                except LoraxError as exc:
                    if stream is not None:
                        await stream.aclose()
                    delay = state.next_delay(exc, stream_started=False)
                    if delay is None:
                        explain_auth(exc, self._auth_source)
                        raise
                    logger.info(
                        "lorax: %s failed (%s); retry %d in %.2fs",
                        method.name,
                        type(exc).__name__,
                        state.attempts,
                        delay,
                    )
                    await asyncio.sleep(delay)
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
        request = _params.generate(**call_args(locals()))
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
        request = _params.generate(**call_args(locals()))
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
        request = _params.embed(**call_args(locals()))
        result: EmbedResponse = await self._unary(routes.EMBED, request)
        return result

    async def classify(self, inputs: str) -> ClassifyResponse:
        result: ClassifyResponse = await self._unary(routes.CLASSIFY, _params.classify(inputs))
        return result

    async def classify_batch(self, inputs: Sequence[str]) -> list[ClassifyResponse]:
        result = await self._unary(routes.CLASSIFY_BATCH, _params.classify_batch(inputs))
        return [ClassifyResponse(entities=entities) for entities in result.results]

    async def tokenize(self, inputs: str, add_special_tokens: bool | None = None) -> list[SimpleToken]:
        result = await self._unary(routes.TOKENIZE, _params.tokenize(inputs, add_special_tokens))
        return list(result.tokens)

    async def info(self) -> InfoResponse:
        result: InfoResponse = await self._unary(routes.INFO, InfoRequest())
        return result

    async def health(self) -> bool:
        try:
            await self.with_options(max_retries=None)._unary(routes.HEALTH, HealthRequest())
        except (UnhealthyError, ServiceUnavailableError):
            return False
        return True

    async def wait_until_ready(self, timeout: float = 60.0, interval: float = 0.5) -> None:
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
            await asyncio.sleep(interval)

    @overload
    async def metrics(self, format: Literal["prometheus"] = "prometheus") -> str: ...
    @overload
    async def metrics(self, format: Literal["json"]) -> dict[str, Any]: ...
    async def metrics(self, format: str = "prometheus") -> str | dict[str, Any]:
        if format not in ("prometheus", "json"):
            raise _params.invalid(f"format must be 'prometheus' or 'json', not {format!r}")
        result = await self._unary(routes.METRICS, MetricsRequest(format=format))
        return _metrics_result(result, format)

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
        request = _params.chat(**call_args(locals()))
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
        request = _params.chat(**call_args(locals()), stream=True)
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
        request = _params.completions(**call_args(locals()))
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
        request = _params.completions(**call_args(locals()), stream=True)
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
        request = _params.embeddings(**call_args(locals()))
        result: EmbeddingsResponse = await self._unary(routes.EMBEDDINGS, request)
        return result

    # -- lifecycle -----------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the transport and its connections. Idempotent."""
        if self._owns_transport:
            await self._transport.aclose()

    async def close(self) -> None:
        """Alias of :meth:`aclose`."""
        await self.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _metrics_result(result: Any, format: str) -> str | dict[str, Any]:
    body = result.body
    if format == "json":
        if isinstance(body, dict):
            families: dict[str, Any] = {name: family.to_dict() for name, family in body.items()}
            return families
        from lorax.errors import ResponseDecodeError

        raise ResponseDecodeError("asked /metrics for JSON but the server answered Prometheus text")
    return body if isinstance(body, str) else ""


class _RawClient:
    """``client.with_raw_response``: each method returns a :class:`RawResponse`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Callable[..., RawResponse]:
        target = getattr(self._client, name)
        if name.startswith("_") or not callable(target):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> RawResponse:
            sink, token = start_capture()
            try:
                result = target(*args, **kwargs)
                if isinstance(result, Stream):
                    raise TypeError("streams carry their metadata already: use stream.meta")
            finally:
                stop_capture(token)
            return RawResponse(result, sink[-1] if sink else ResponseMeta())

        return call


class _AsyncRawClient:
    """``async_client.with_raw_response``: each method returns a :class:`RawResponse`."""

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


def _share_docstrings() -> None:
    # The async methods mean the same thing; one docstring each, kept on Client.
    for name, attr in vars(Client).items():
        value, twin = attr, vars(AsyncClient).get(name)
        if isinstance(value, classmethod) and isinstance(twin, classmethod):
            # The docstring users see is the function's, not the wrapper's.
            value, twin = value.__func__, twin.__func__
        doc = getattr(value, "__doc__", None)
        if twin is not None and doc and not getattr(twin, "__doc__", None):
            try:
                twin.__doc__ = doc
            except (AttributeError, TypeError):
                pass


_share_docstrings()
