"""Every public method of Client and AsyncClient over MockTransport.

Each test runs twice, once on Client and once on AsyncClient (the ``drv`` fixture in
conftest.py). Handlers assert on the typed request they receive and answer with
messages, so what is checked is the client: request building, result shaping, stream
rules, retries, options and metadata.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lorax import AsyncClient, AsyncStream, Client, RawResponse, RetryPolicy, Stream, Timeout, errors
from lorax._routes import Method
from lorax.transports.base import CallOptions, ResponseMeta
from lorax.transports.mock import MockTransport
from lorax.types import (
    AssistantMessage,
    ChatCompletionChoice,
    ChatCompletionResponse,
    ChatCompletionStreamChoice,
    ChatCompletionStreamResponse,
    ClassifyBatchResponse,
    ClassifyResponse,
    CompletionChoice,
    CompletionResponse,
    CompletionStreamResponse,
    Details,
    Embedding,
    EmbeddingsResponse,
    EmbedResponse,
    Entity,
    GenerateResponse,
    HealthRequest,
    HealthResponse,
    InfoRequest,
    InfoResponse,
    MetricFamily,
    MetricSample,
    MetricsResponse,
    PrefillToken,
    SimpleToken,
    StreamDetails,
    StreamResponse,
    Token,
    TokenizeResponse,
    Usage,
)

from .conftest import URL, Driver

FAST = RetryPolicy(backoff_base=0.25, backoff_max=100.0, jitter=0.0)


# ---------------------------------------------------------------------------------
# helpers


def tok(i: int, text: str, *, final: str | None = None, finish: str | None = None) -> StreamResponse:
    event = StreamResponse(token=Token(id=i, text=text, logprob=-0.5))
    if final is not None:
        event.generated_text = final
        if finish is not None:
            event.details = StreamDetails(finish_reason=finish, generated_tokens=i)
    return event


def chunk(text: str, finish: str | None = None) -> ChatCompletionStreamResponse:
    choice = ChatCompletionStreamChoice(index=0, delta=AssistantMessage(role="assistant", content=text))
    if finish is not None:
        choice.finish_reason = finish
    out = ChatCompletionStreamResponse(id="null", object="chat.completion.chunk", model="null", choices=[choice])
    if finish is not None:
        out.usage = Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    return out


def overloaded(*, in_stream: bool = False, retry_after: str | None = None) -> errors.OverloadedError:
    headers = {"retry-after": retry_after} if retry_after is not None else None
    return errors.OverloadedError(
        "Model is overloaded",
        status_code=None if in_stream else 429,
        error_type="overloaded",
        headers=headers,
    )


def connection_error(*, request_sent: bool | None) -> errors.APIConnectionError:
    exc = errors.APIConnectionError("connection refused")
    if request_sent is not None:
        exc.request_sent = request_sent  # type: ignore[attr-defined]
    return exc


class Script:
    """A stream handler: yields `events` (raising any exception among them), recording
    how many events were taken and whether its `finally` ran."""

    def __init__(self, *events: Any) -> None:
        self.events = events
        self.opened = 0
        self.taken = 0
        self.released = 0
        self.requests: list[Any] = []
        self.methods: list[str] = []

    def __call__(self, method: Method, request: Any) -> Iterator[Any]:
        self.opened += 1
        self.methods.append(method.name)
        self.requests.append(request)
        return self._run()

    def _run(self) -> Iterator[Any]:
        try:
            for event in self.events:
                if isinstance(event, BaseException):
                    raise event
                self.taken += 1
                yield event
        finally:
            self.released += 1


class Attempts:
    """A handler whose n-th call gets the n-th outcome: a message to return, an
    exception to raise, or a Script to stream."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self, method: Method, request: Any) -> Any:
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        if isinstance(outcome, BaseException):
            raise outcome
        if isinstance(outcome, Script):
            return outcome(method, request)
        return outcome


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the clients' backoff sleeps instead of sleeping."""
    recorded: list[float] = []

    def fake_sleep(seconds: float) -> None:
        recorded.append(seconds)

    async def fake_async_sleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(time, "sleep", fake_sleep)
    monkeypatch.setattr(asyncio, "sleep", fake_async_sleep)
    return recorded


class RecordingMock(MockTransport):
    """A MockTransport that also keeps each call's CallOptions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.options: list[CallOptions] = []

    def _handle(self, method: Method, request: Any, options: CallOptions) -> Any:
        self.options.append(options)
        return super()._handle(method, request, options)


# ---------------------------------------------------------------------------------
# unary methods


def test_generate(drv: Driver) -> None:
    def handler(method: Method, request: Any) -> GenerateResponse:
        assert method.name == "Generate"
        assert method.path == "/generate"
        assert request.inputs == "Why is the sky blue?"
        params = request.parameters
        assert params.adapter_id == "some/adapter"
        assert params.max_new_tokens == 2
        assert list(params.stop) == ["\n"]
        assert params.details is True
        assert params.temperature == 0.0
        assert params.temperature is not None
        assert params.do_sample is None
        assert params.frequency_penalty == 0.5
        return GenerateResponse(
            generated_text=" Rayleigh",
            details=Details(finish_reason="length", generated_tokens=2, tokens=[Token(id=1, text=" Ray")]),
        )

    transport = MockTransport(handler)
    client = drv.client(transport)
    result = client.generate(
        "Why is the sky blue?",
        adapter_id="some/adapter",
        max_new_tokens=2,
        stop_sequences=["\n"],
        temperature=0,
        frequency_penalty=0.5,
    )
    assert type(result) is GenerateResponse
    assert result.generated_text == " Rayleigh"
    assert result.details.finish_reason == "length"
    assert [t.text for t in result.details.tokens] == [" Ray"]
    assert len(transport.calls) == 1


def test_generate_positional_arguments_follow_the_official_order(drv: Driver) -> None:
    transport = MockTransport(lambda m, r: GenerateResponse(generated_text="x"))
    client = drv.client(transport)
    client.generate("p", "ad", "hub", None, "tok", True, 7)
    params = transport.requests("Generate")[0].parameters
    assert (params.adapter_id, params.adapter_source, params.api_token) == ("ad", "hub", "tok")
    assert (params.do_sample, params.max_new_tokens) == (True, 7)


def test_generate_refuses_bad_arguments_before_sending(drv: Driver) -> None:
    transport = MockTransport(lambda m, r: GenerateResponse())
    client = drv.client(transport)
    with pytest.raises(errors.InvalidRequestError, match="adapter_id"):
        client.generate("hi", adapter_id="bad\nid")
    with pytest.raises(errors.InvalidRequestError, match="merge_strategy"):
        client.generate("hi", merged_adapters={"ids": ["a"], "merge_strategy": "nope"})
    assert transport.calls == []


def test_embed(drv: Driver) -> None:
    def handler(method: Method, request: Any) -> EmbedResponse:
        assert method.name == "Embed"
        assert request.inputs == "text"
        assert request.parameters.adapter_id == "emb/ad"
        assert request.parameters.api_token == "t"
        return EmbedResponse(embeddings=[0.5, -1.0, 0.25])

    result = drv.client(MockTransport(handler)).embed("text", adapter_id="emb/ad", api_token="t")
    assert type(result) is EmbedResponse
    assert list(result.embeddings) == [0.5, -1.0, 0.25]


def test_classify(drv: Driver) -> None:
    def handler(method: Method, request: Any) -> ClassifyResponse:
        assert method.name == "Classify"
        assert request.inputs == "Paris is nice"
        return ClassifyResponse(entities=[Entity(entity_group="LOC", score=0.9, word="Paris", start=0, end=5)])

    result = drv.client(MockTransport(handler)).classify("Paris is nice")
    assert type(result) is ClassifyResponse
    assert [(e.entity_group, e.word, e.start, e.end) for e in result.entities] == [("LOC", "Paris", 0, 5)]


def test_classify_batch(drv: Driver) -> None:
    def handler(method: Method, request: Any) -> ClassifyBatchResponse:
        assert method.name == "ClassifyBatch"
        assert list(request.inputs) == ["a", "b"]
        return ClassifyBatchResponse(results=[[Entity(word="a")], []])

    result = drv.client(MockTransport(handler)).classify_batch(["a", "b"])
    assert type(result) is list
    assert [type(r) for r in result] == [ClassifyResponse, ClassifyResponse]
    assert [[e.word for e in r.entities] for r in result] == [["a"], []]


def test_tokenize(drv: Driver) -> None:
    seen: list[Any] = []

    def handler(method: Method, request: Any) -> TokenizeResponse:
        assert method.name == "Tokenize"
        seen.append(request)
        return TokenizeResponse(tokens=[SimpleToken(id=1, text="he", start=0, stop=2)])

    client = drv.client(MockTransport(handler))
    result = client.tokenize("hello", add_special_tokens=False)
    assert type(result) is list
    assert [(t.id, t.text, t.start, t.stop) for t in result] == [(1, "he", 0, 2)]
    assert seen[0].inputs == "hello"
    assert seen[0].add_special_tokens is not None
    assert seen[0].add_special_tokens is False
    client.tokenize("hello")
    assert seen[1].add_special_tokens is None


def test_info(drv: Driver) -> None:
    def handler(method: Method, request: Any) -> InfoResponse:
        assert method.name == "Info"
        assert method.http_method == "GET"
        assert type(request) is InfoRequest
        return InfoResponse(model_id="mistral", max_total_tokens=2048, version="0.12.1")

    info = drv.client(MockTransport(handler)).info()
    assert type(info) is InfoResponse
    assert (info.model_id, info.max_total_tokens, info.version) == ("mistral", 2048, "0.12.1")


def test_health_true(drv: Driver) -> None:
    def handler(method: Method, request: Any) -> HealthResponse:
        assert method.name == "Health"
        assert type(request) is HealthRequest
        return HealthResponse()

    assert drv.client(MockTransport(handler)).health() is True


@pytest.mark.parametrize(
    "error",
    [
        errors.UnhealthyError("unhealthy", status_code=503, error_type="healthcheck"),
        errors.ServiceUnavailableError("bad gateway", status_code=502),
    ],
)
def test_health_false_when_unhealthy(drv: Driver, error: errors.LoraxError) -> None:
    handler = Attempts(error)
    assert drv.client(MockTransport(handler), max_retries=None).health() is False
    assert handler.calls == 1


def test_health_raises_when_unreachable(drv: Driver) -> None:
    client = drv.client(MockTransport(Attempts(connection_error(request_sent=True))), max_retries=None)
    with pytest.raises(errors.APIConnectionError):
        client.health()


def test_metrics_prometheus(drv: Driver) -> None:
    text = "# HELP lorax_request_count x\n# TYPE lorax_request_count counter\nlorax_request_count 3\n"

    def handler(method: Method, request: Any) -> MetricsResponse:
        assert method.name == "Metrics"
        assert request.format == "prometheus"
        return MetricsResponse(body=text)

    client = drv.client(MockTransport(handler))
    result = client.metrics()
    assert type(result) is str
    assert result == text
    assert client.metrics("prometheus") == text


def test_metrics_json(drv: Driver) -> None:
    def handler(method: Method, request: Any) -> MetricsResponse:
        assert request.format == "json"
        family = MetricFamily(type="counter", data=[MetricSample(key="", value=3.0)])
        return MetricsResponse(body={"lorax_request_count": family})

    result = drv.client(MockTransport(handler)).metrics(format="json")
    assert result == {"lorax_request_count": {"type": "counter", "data": [{"key": "", "value": 3.0}]}}
    assert type(result) is dict


def test_metrics_json_answered_with_text_is_a_decode_error(drv: Driver) -> None:
    client = drv.client(MockTransport(lambda m, r: MetricsResponse(body="x 1\n")))
    with pytest.raises(errors.ResponseDecodeError):
        client.metrics(format="json")


def test_metrics_unknown_format_is_refused_before_sending(drv: Driver) -> None:
    transport = MockTransport(lambda m, r: MetricsResponse(body=""))
    with pytest.raises(errors.InvalidRequestError, match="format"):
        drv.client(transport).metrics(format="xml")
    assert transport.calls == []


def test_chat(drv: Driver) -> None:
    def handler(method: Method, request: Any) -> ChatCompletionResponse:
        assert method.name == "ChatCompletions"
        assert method.path == "/v1/chat/completions"
        assert request.model == "my/adapter"
        assert [(m.role, m.content) for m in request.messages] == [("system", "Be brief."), ("user", "Hi")]
        assert request.temperature is not None
        assert request.temperature == 0.0
        assert request.stream is None
        assert request.tool_choice.function.name == "f"
        return ChatCompletionResponse(
            id="null",
            object="text_completion",
            model="base",
            choices=[
                ChatCompletionChoice(
                    index=0, message=AssistantMessage(role="assistant", content="Hello!"), finish_reason="stop"
                )
            ],
            usage=Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7),
        )

    result = drv.client(MockTransport(handler)).chat(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        adapter_id="my/adapter",
        temperature=0,
        tools=[{"type": "function", "function": {"name": "f"}}],
        tool_choice={"type": "function", "function": {"name": "f"}},
    )
    assert type(result) is ChatCompletionResponse
    assert result.choices[0].message.content == "Hello!"
    assert result.choices[0].finish_reason == "stop"
    assert result.usage.total_tokens == 7


def test_chat_without_adapter_selects_base_model(drv: Driver) -> None:
    transport = MockTransport(lambda m, r: ChatCompletionResponse())
    drv.client(transport).chat([{"role": "user", "content": "x"}])
    request = transport.requests("ChatCompletions")[0]
    assert request.model == ""


def test_completions(drv: Driver) -> None:
    def handler(method: Method, request: Any) -> CompletionResponse:
        assert method.name == "Completions"
        assert request.model == ""
        assert request.prompt == "Once"
        assert request.max_tokens == 4
        assert request.echo is True
        assert list(request.stop) == ["."]
        return CompletionResponse(
            choices=[CompletionChoice(index=0, text=" upon", finish_reason="length")],
            usage=Usage(prompt_tokens=1, completion_tokens=4, total_tokens=5),
        )

    result = drv.client(MockTransport(handler)).completions("Once", max_tokens=4, echo=True, stop=".")
    assert type(result) is CompletionResponse
    assert result.choices[0].text == " upon"
    assert result.choices[0].finish_reason == "length"


def test_embeddings(drv: Driver) -> None:
    def handler(method: Method, request: Any) -> EmbeddingsResponse:
        assert method.name == "Embeddings"
        assert request.input == ["a", "b"]
        assert request.parameters.adapter_id == "emb"
        return EmbeddingsResponse(
            embeddings=[
                Embedding(index=0, embedding=[0.5], object="embedding"),
                Embedding(index=1, embedding=[0.25], object="embedding"),
            ]
        )

    result = drv.client(MockTransport(handler)).embeddings(["a", "b"], adapter_id="emb")
    assert type(result) is EmbeddingsResponse
    assert [(e.index, list(e.embedding)) for e in result.embeddings] == [(0, [0.5]), (1, [0.25])]


def test_embeddings_single_string(drv: Driver) -> None:
    transport = MockTransport(lambda m, r: EmbeddingsResponse())
    drv.client(transport).embeddings("one")
    request = transport.requests("Embeddings")[0]
    assert request.input == "one"


def test_handler_error_reaches_caller_with_its_class(drv: Driver) -> None:
    error = errors.ValidationError("`inputs` cannot be empty", status_code=422, error_type="validation")
    client = drv.client(MockTransport(Attempts(error)))
    with pytest.raises(errors.ValidationError) as info:
        client.generate("")
    assert info.value is error


# ---------------------------------------------------------------------------------
# streams


def test_generate_stream_iterates_and_records_final_and_meta(drv: Driver) -> None:
    script = Script(tok(1, "a"), tok(2, "b"), tok(3, "c", final="abc", finish="eos_token"))
    transport = MockTransport(script, headers={"X-Model-Id": "base-model"})
    client = drv.client(transport)
    stream = client.generate_stream("hi", adapter_id="ad", max_new_tokens=3, return_k_alternatives=2)
    assert stream.meta is None
    assert stream.final is None
    assert transport.calls == []  # opens lazily, on the first event
    events = list(stream)
    assert [e.token.text for e in events] == ["a", "b", "c"]
    assert all(type(e) is StreamResponse for e in events)
    assert stream.final is events[-1]
    assert stream.final.generated_text == "abc"
    assert stream.final.details.finish_reason == "eos_token"
    assert stream.meta == ResponseMeta(status_code=200, headers={"x-model-id": "base-model"})
    assert script.methods == ["GenerateStream"]
    request = script.requests[0]
    assert request.parameters.adapter_id == "ad"
    assert request.parameters.return_k_alternatives == 2
    assert request.parameters.details is True
    assert script.released == 1
    assert "closed, 3 event(s)" in repr(stream)
    assert list(stream) == []  # exhausted stays exhausted


def test_stream_types(drv: Driver) -> None:
    client = drv.client(MockTransport(Script(tok(1, "a", final="a"))))
    stream = client.generate_stream("x")
    inner = getattr(stream, "_stream", stream)
    assert type(inner) is (AsyncStream if drv.is_async else Stream)


def test_stream_with_block_releases_the_handler(drv: Driver) -> None:
    script = Script(tok(1, "a"), tok(2, "b"), tok(3, "c", final="abc"))
    client = drv.client(MockTransport(script))
    with client.generate_stream("hi") as stream:
        first = next(stream)
        assert first.token.text == "a"
        assert script.released == 0
    assert script.released == 1
    assert script.taken == 1
    assert list(stream) == []
    assert stream.final is None


def test_stream_close_mid_stream_releases_and_ends_quietly(drv: Driver) -> None:
    script = Script(tok(1, "a"), tok(2, "b"), tok(3, "c", final="abc"))
    client = drv.client(MockTransport(script))
    stream = client.generate_stream("hi")
    assert next(stream).token.text == "a"
    assert next(stream).token.text == "b"
    stream.close()
    assert script.released == 1
    assert script.taken == 2
    with pytest.raises(StopIteration):
        next(stream)  # not IncompleteGenerationError: the caller stopped it
    stream.close()  # idempotent
    assert script.released == 1
    assert "closed, 2 event(s)" in repr(stream)


def test_stream_break_then_close(drv: Driver) -> None:
    script = Script(*[tok(i, str(i)) for i in range(1, 10)], tok(10, "z", final="done"))
    client = drv.client(MockTransport(script))
    stream = client.generate_stream("hi")
    seen = []
    for event in stream:
        seen.append(event.token.id)
        if event.token.id == 3:
            break
    stream.close()
    assert seen == [1, 2, 3]
    assert script.taken == 3
    assert script.released == 1


def test_stream_closed_before_start_never_calls_the_handler(drv: Driver) -> None:
    script = Script(tok(1, "a", final="a"))
    transport = MockTransport(script)
    stream = drv.client(transport).generate_stream("hi")
    stream.close()
    assert list(stream) == []
    assert transport.calls == []


def test_native_stream_without_generated_text_is_incomplete(drv: Driver) -> None:
    script = Script(tok(1, "a"), tok(2, "b"))
    stream = drv.client(MockTransport(script)).generate_stream("hi")
    seen = [next(stream).token.text, next(stream).token.text]
    with pytest.raises(errors.IncompleteGenerationError, match="GenerateStream"):
        next(stream)
    assert seen == ["a", "b"]
    assert stream.final is None
    assert script.released == 1


@pytest.mark.parametrize("method", ["generate_stream", "chat_stream", "completions_stream"])
def test_stream_with_zero_events_is_incomplete(drv: Driver, method: str) -> None:
    script = Script()
    client = drv.client(MockTransport(script))
    args: Any = [{"role": "user", "content": "x"}] if method == "chat_stream" else "x"
    stream = getattr(client, method)(args)
    with pytest.raises(errors.IncompleteGenerationError) as info:
        next(stream)
    assert type(info.value) is errors.IncompleteGenerationError
    assert "0 event(s)" in str(info.value)
    assert script.opened == 1


def test_chat_stream_ends_on_finish_reason(drv: Driver) -> None:
    script = Script(chunk("Hel"), chunk("lo"), chunk("", finish="stop"))
    client = drv.client(MockTransport(script))
    stream = client.chat_stream([{"role": "user", "content": "hi"}], adapter_id="ad", max_tokens=5)
    events = list(stream)
    assert [e.choices[0].delta.content for e in events] == ["Hel", "lo", ""]
    assert all(type(e) is ChatCompletionStreamResponse for e in events)
    assert stream.final is events[-1]
    assert stream.final.usage.total_tokens == 5
    request = script.requests[0]
    assert script.methods == ["ChatCompletionsStream"]
    assert request.stream is True
    assert request.model == "ad"
    assert request.max_tokens == 5


def test_chat_stream_without_finish_reason_is_incomplete(drv: Driver) -> None:
    script = Script(chunk("Hel"), chunk("lo"))
    stream = drv.client(MockTransport(script)).chat_stream([{"role": "user", "content": "hi"}])
    assert next(stream).choices[0].delta.content == "Hel"
    assert next(stream).choices[0].delta.content == "lo"
    with pytest.raises(errors.IncompleteGenerationError, match="ChatCompletionsStream"):
        next(stream)
    assert script.released == 1


def test_completions_stream(drv: Driver) -> None:
    def event(text: str, finish: str | None = None) -> CompletionStreamResponse:
        choice = CompletionChoice(index=0, text=text)
        if finish:
            choice.finish_reason = finish
        return CompletionStreamResponse(choices=[choice])

    script = Script(event(" a"), event(" b", finish="length"))
    stream = drv.client(MockTransport(script)).completions_stream("p", max_tokens=2)
    assert [e.choices[0].text for e in stream] == [" a", " b"]
    assert stream.final.choices[0].finish_reason == "length"
    assert script.methods == ["CompletionsStream"]
    assert script.requests[0].stream is True

    unfinished = drv.client(MockTransport(Script(event(" a")))).completions_stream("p")
    with pytest.raises(errors.IncompleteGenerationError):
        list(unfinished)


def test_events_after_the_final_one_are_dropped(drv: Driver, caplog: pytest.LogCaptureFixture) -> None:
    script = Script(tok(1, "a"), tok(2, "b", final="ab"), tok(3, "late"), tok(4, "later"))
    stream = drv.client(MockTransport(script)).generate_stream("hi")
    with caplog.at_level(logging.WARNING, logger="lorax"):
        events = list(stream)
    assert [e.token.text for e in events] == ["a", "b"]
    assert stream.final.generated_text == "ab"
    assert script.released == 1
    assert script.taken == 4  # read to the end so the connection can be reused
    assert sum("after the final event" in r.getMessage() for r in caplog.records) == 2


def test_an_error_after_the_final_event_does_not_change_the_answer(drv: Driver) -> None:
    script = Script(tok(1, "a", final="a"), errors.GenerationError("late"))
    stream = drv.client(MockTransport(script)).generate_stream("hi")
    assert [e.generated_text for e in stream] == ["a"]
    assert script.released == 1


def test_a_server_that_keeps_sending_after_the_final_event_is_cut_off(drv: Driver) -> None:
    script = Script(tok(1, "a", final="a"), *[tok(i, "x") for i in range(2, 100)])
    stream = drv.client(MockTransport(script)).generate_stream("hi")
    assert [e.token.text for e in stream] == ["a"]
    assert script.released == 1
    assert script.taken < 10


@pytest.mark.parametrize(
    "error",
    [
        errors.GenerationError("CUDA out of memory", error_type="generation"),
        errors.ValidationError("`best_of` != 1 is not supported when streaming", error_type="validation"),
        errors.OverloadedError("overloaded", error_type="overloaded"),
        errors.StreamInterruptedError("connection reset mid-stream"),
        errors.TemplateError("bad template", error_type="template_error"),
    ],
)
def test_error_mid_stream_propagates_with_its_class_and_is_not_retried(
    drv: Driver, error: errors.LoraxError, sleeps: list[float]
) -> None:
    handler = Attempts(Script(tok(1, "a"), error), Script(tok(1, "a"), tok(2, "b", final="ab")))
    stream = drv.client(MockTransport(handler), max_retries=FAST).generate_stream("hi")
    assert next(stream).token.text == "a"
    with pytest.raises(type(error)) as info:
        next(stream)
    assert info.value is error
    assert handler.calls == 1
    assert sleeps == []
    assert list(stream) == []


def test_error_from_the_handler_itself_surfaces_on_first_iteration(drv: Driver) -> None:
    error = errors.ValidationError("`decoder_input_details` == true is not supported when streaming tokens")
    transport = MockTransport(Attempts(error))
    stream = drv.client(transport).generate_stream("hi")
    assert transport.calls == []
    with pytest.raises(errors.ValidationError) as info:
        next(stream)
    assert info.value is error
    assert list(stream) == []


def test_stream_closes_the_transport_stream_when_the_first_event_fails_oddly(drv: Driver) -> None:
    # A failure that is not a LoraxError (a bug, an interrupt) while waiting for the
    # first event must still release the connection.
    closed: list[bool] = []

    class Events:
        def __iter__(self) -> Events:
            return self

        def __next__(self) -> Any:
            raise RuntimeError("transport bug")

        def close(self) -> None:
            closed.append(True)

    stream = drv.client(MockTransport(lambda m, r: Events())).generate_stream("hi")
    with pytest.raises(RuntimeError, match="transport bug"):
        next(stream)
    assert closed == [True]


def test_stream_handler_returning_wrong_type_is_reported(drv: Driver) -> None:
    script = Script(GenerateResponse(generated_text="not a stream event"))
    stream = drv.client(MockTransport(script)).generate_stream("hi")
    with pytest.raises(TypeError, match="StreamResponse"):
        next(stream)
    assert script.released == 1


# ---------------------------------------------------------------------------------
# retries


def test_overloaded_twice_then_success(drv: Driver, sleeps: list[float]) -> None:
    handler = Attempts(overloaded(), overloaded(), GenerateResponse(generated_text="ok"))
    client = drv.client(MockTransport(handler), max_retries=FAST)
    assert client.generate("hi").generated_text == "ok"
    assert handler.calls == 3
    assert sleeps == [0.25, 0.5]


def test_retry_after_is_honoured(drv: Driver, sleeps: list[float]) -> None:
    handler = Attempts(overloaded(retry_after="3"), GenerateResponse(generated_text="ok"))
    client = drv.client(MockTransport(handler), max_retries=FAST)
    assert client.generate("hi").generated_text == "ok"
    assert sleeps == [3.0]


def test_retries_give_up_after_max_retries(drv: Driver, sleeps: list[float]) -> None:
    last = overloaded()
    handler = Attempts(overloaded(), last)
    client = drv.client(MockTransport(handler), max_retries=1)
    with pytest.raises(errors.OverloadedError) as info:
        client.generate("hi")
    assert info.value is last
    assert handler.calls == 2
    assert len(sleeps) == 1


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (overloaded(), True),
        (errors.RateLimitExceededError("slow down", status_code=429), True),
        (errors.ServiceUnavailableError("scaling up", status_code=503), True),
        (connection_error(request_sent=False), True),
        (errors.APITimeoutError("connect timed out", phase="connect"), False),  # request_sent unknown
        (connection_error(request_sent=True), False),
        (connection_error(request_sent=None), False),
        (errors.ValidationError("bad", status_code=422, error_type="validation"), False),
        (errors.GenerationError("boom", status_code=424, error_type="generation"), False),
        (errors.UnknownError("oops", status_code=500), False),
        (errors.ClientClosedError("closed"), False),
    ],
)
def test_which_unary_errors_are_retried(
    drv: Driver, sleeps: list[float], error: errors.LoraxError, retried: bool
) -> None:
    handler = Attempts(error, GenerateResponse(generated_text="ok"))
    client = drv.client(MockTransport(handler), max_retries=RetryPolicy(max_retries=5, backoff_base=0.001))
    if retried:
        assert client.generate("hi").generated_text == "ok"
        assert handler.calls == 2
        assert len(sleeps) == 1
    else:
        with pytest.raises(type(error)) as info:
            client.generate("hi")
        assert info.value is error
        assert handler.calls == 1
        assert sleeps == []


def test_connect_timeout_before_sending_is_retried(drv: Driver, sleeps: list[float]) -> None:
    error = errors.APITimeoutError("connect timed out", phase="connect")
    error.request_sent = False  # type: ignore[attr-defined]
    handler = Attempts(error, GenerateResponse(generated_text="ok"))
    assert drv.client(MockTransport(handler), max_retries=FAST).generate("hi").generated_text == "ok"
    assert handler.calls == 2


def test_validation_error_is_never_retried_however_many_retries(drv: Driver, sleeps: list[float]) -> None:
    handler = Attempts(errors.ValidationError("bad", status_code=422, error_type="validation"))
    client = drv.client(MockTransport(handler), max_retries=50)
    with pytest.raises(errors.ValidationError):
        client.generate("hi")
    with pytest.raises(errors.ValidationError):
        list(client.generate_stream("hi"))
    assert handler.calls == 2
    assert sleeps == []


def test_max_retries_none_disables_retries(drv: Driver, sleeps: list[float]) -> None:
    handler = Attempts(overloaded(), GenerateResponse(generated_text="ok"))
    client = drv.client(MockTransport(handler), max_retries=None)
    assert client.retry_policy.max_retries == 0
    with pytest.raises(errors.OverloadedError):
        client.generate("hi")
    assert handler.calls == 1
    assert sleeps == []


def test_default_policy_retries_twice(drv: Driver, sleeps: list[float]) -> None:
    handler = Attempts(overloaded())
    client = drv.client(MockTransport(handler))
    assert client.retry_policy == RetryPolicy()
    with pytest.raises(errors.OverloadedError):
        client.generate("hi")
    assert handler.calls == 3
    assert len(sleeps) == 2
    assert 0.375 <= sleeps[0] <= 0.5
    assert 0.75 <= sleeps[1] <= 1.0


def test_total_deadline_caps_retries(drv: Driver, sleeps: list[float]) -> None:
    # Backoff 4, 8, 16, ...; a 10 s deadline leaves room for the first two waits only
    # (the fake sleep does not advance the clock), so the third failure is final.
    handler = Attempts(overloaded())
    policy = RetryPolicy(max_retries=10, backoff_base=4.0, backoff_max=100.0, jitter=0.0)
    client = drv.client(MockTransport(handler), max_retries=policy, timeout=Timeout(total=10))
    with pytest.raises(errors.OverloadedError):
        client.generate("hi")
    assert sleeps == [4.0, 8.0]
    assert handler.calls == 3

    sleeps.clear()
    unbounded = drv.client(MockTransport(Attempts(overloaded())), max_retries=policy)
    with pytest.raises(errors.OverloadedError):
        unbounded.generate("hi")
    assert len(sleeps) == 10


def test_stream_overloaded_on_first_event_is_retried(drv: Driver, sleeps: list[float]) -> None:
    final = Script(tok(1, "a"), tok(2, "b", final="ab"))
    handler = Attempts(Script(overloaded(in_stream=True)), final)
    stream = drv.client(MockTransport(handler), max_retries=FAST).generate_stream("hi")
    assert [e.token.text for e in stream] == ["a", "b"]
    assert handler.calls == 2
    assert sleeps == [0.25]
    assert final.released == 1


def test_stream_open_failure_is_retried(drv: Driver, sleeps: list[float]) -> None:
    handler = Attempts(overloaded(), connection_error(request_sent=False), Script(tok(1, "a", final="a")))
    stream = drv.client(MockTransport(handler), max_retries=FAST).generate_stream("hi")
    assert [e.generated_text for e in stream] == ["a"]
    assert handler.calls == 3
    assert sleeps == [0.25, 0.5]


def test_stream_connection_error_after_sending_is_not_retried(drv: Driver, sleeps: list[float]) -> None:
    handler = Attempts(Script(connection_error(request_sent=True)), Script(tok(1, "a", final="a")))
    stream = drv.client(MockTransport(handler), max_retries=FAST).generate_stream("hi")
    with pytest.raises(errors.APIConnectionError):
        next(stream)
    assert handler.calls == 1


def test_stream_retries_respect_max_retries_none(drv: Driver, sleeps: list[float]) -> None:
    handler = Attempts(Script(overloaded(in_stream=True)), Script(tok(1, "a", final="a")))
    stream = drv.client(MockTransport(handler), max_retries=None).generate_stream("hi")
    with pytest.raises(errors.OverloadedError):
        next(stream)
    assert handler.calls == 1


def test_retried_stream_releases_each_failed_attempt(drv: Driver, sleeps: list[float]) -> None:
    failed = Script(overloaded(in_stream=True))
    handler = Attempts(failed, failed, Script(tok(1, "a", final="a")))
    stream = drv.client(MockTransport(handler), max_retries=FAST).generate_stream("hi")
    assert len(list(stream)) == 1
    assert failed.opened == 2
    assert failed.released == 2


# ---------------------------------------------------------------------------------
# options, metadata, headers


def test_with_options_headers_and_timeout(drv: Driver) -> None:
    transport = RecordingMock(lambda m, r: GenerateResponse(generated_text="ok"))
    client = drv.client(transport, headers={"Authorization": "Bearer X"}, timeout=30)
    other = client.with_options(timeout=5, headers={"X-Trace": "t1"})
    assert other.timeout == Timeout(connect=5, read=5)
    assert client.timeout == Timeout(connect=30, read=30)

    other.generate("hi")
    client.generate("hi")
    assert transport.calls[0].headers == {"authorization": "Bearer X", "x-trace": "t1"}
    assert transport.calls[1].headers == {"authorization": "Bearer X"}
    assert transport.options[0].timeout == Timeout(connect=5, read=5)
    assert transport.options[1].timeout == Timeout(connect=30, read=30)

    other.close()
    assert transport.closed is False
    assert client.generate("hi").generated_text == "ok"
    client.close()
    assert transport.closed is True
    with pytest.raises(errors.ClientClosedError):
        client.generate("hi")


def test_with_options_total_timeout_reaches_the_transport(drv: Driver) -> None:
    transport = RecordingMock(lambda m, r: GenerateResponse())
    client = drv.client(transport)
    client.with_options(timeout=Timeout(connect=1, read=2, total=3)).generate("hi")
    client.generate("hi")
    assert transport.options[0].timeout == Timeout(connect=1, read=2, total=3)
    assert transport.options[0].deadline.total == 3
    assert transport.options[1].deadline.total is None


def test_with_options_max_retries(drv: Driver, sleeps: list[float]) -> None:
    handler = Attempts(overloaded())
    client = drv.client(MockTransport(handler), max_retries=5)
    with pytest.raises(errors.OverloadedError):
        client.with_options(max_retries=None).generate("hi")
    assert handler.calls == 1
    assert client.retry_policy.max_retries == 5


def test_with_raw_response(drv: Driver) -> None:
    transport = MockTransport(
        lambda m, r: GenerateResponse(generated_text="ok"),
        headers={"X-Compute-Time": "12", "x-prompt-tokens": "3", "x-request-id": "req-1"},
    )
    client = drv.client(transport)
    raw = client.with_raw_response.generate("hi", max_new_tokens=1)
    assert type(raw) is RawResponse
    assert type(raw.parsed) is GenerateResponse
    assert raw.parsed.generated_text == "ok"
    assert raw.status_code == 200
    assert raw.headers == {"x-compute-time": "12", "x-prompt-tokens": "3", "x-request-id": "req-1"}
    assert raw.meta.compute_time_ms == 12
    assert raw.meta.prompt_tokens == 3
    assert raw.meta.request_id == "req-1"
    assert transport.requests("Generate")[0].parameters.max_new_tokens == 1

    info = MockTransport(lambda m, r: InfoResponse(model_id="m"), status_code=203)
    raw_info = drv.client(info).with_raw_response.info()
    assert raw_info.parsed.model_id == "m"
    assert raw_info.status_code == 203


def test_with_raw_response_refuses_streams(drv: Driver) -> None:
    transport = MockTransport(Script(tok(1, "a", final="a")))
    with pytest.raises(TypeError, match=r"stream\.meta"):
        drv.client(transport).with_raw_response.generate_stream("hi")
    assert transport.calls == []


def test_on_response_hook(drv: Driver) -> None:
    seen: list[ResponseMeta] = []
    transport = MockTransport(
        {
            "Generate": lambda m, r: GenerateResponse(generated_text="ok"),
            "GenerateStream": Script(tok(1, "a", final="a")),
        },
        headers={"x-model-id": "m"},
    )
    client = drv.client(transport, on_response=seen.append)
    client.generate("hi")
    assert seen == [ResponseMeta(status_code=200, headers={"x-model-id": "m"})]
    stream = client.generate_stream("hi")
    assert seen == [ResponseMeta(status_code=200, headers={"x-model-id": "m"})]  # not opened yet
    list(stream)
    assert len(seen) == 2
    assert seen[1] is stream.meta


def test_on_response_not_called_for_failures(drv: Driver) -> None:
    seen: list[ResponseMeta] = []
    client = drv.client(MockTransport(Attempts(errors.GenerationError("x"))), on_response=seen.append)
    with pytest.raises(errors.GenerationError):
        client.generate("hi")
    assert seen == []


def test_headers_and_cookies_are_sent_and_never_shown(drv: Driver) -> None:
    transport = MockTransport(
        {
            "Generate": lambda m, r: GenerateResponse(generated_text="ok"),
            "GenerateStream": Script(tok(1, "a"), tok(2, "b", final="ab")),
        }
    )
    client = drv.client(
        transport,
        url="http://user:hunter2@lorax.test/prefix",
        headers={"Authorization": "Bearer X", "X-Custom": "v"},
        cookies={"a": "b", "session": "s3cr3t"},
    )
    client.generate("hi")
    assert transport.calls[0].headers == {
        "authorization": "Bearer X",
        "x-custom": "v",
        "cookie": "a=b; session=s3cr3t",
    }
    stream = client.generate_stream("hi")
    next(stream)
    assert transport.calls[1].headers == transport.calls[0].headers
    for text in (repr(client), repr(stream), repr(transport.calls[0]), repr(transport.calls[1])):
        assert "Bearer X" not in text
        assert "s3cr3t" not in text
        assert "hunter2" not in text
    assert "lorax.test" in repr(client)
    stream.close()


def test_cookies_join_an_existing_cookie_header(drv: Driver) -> None:
    transport = MockTransport(lambda m, r: GenerateResponse())
    client = drv.client(transport, headers={"Cookie": "x=1"}, cookies={"a": "b"})
    client.generate("hi")
    assert transport.calls[0].headers == {"cookie": "x=1; a=b"}


def test_client_context_manager_closes_transport(drv: Driver) -> None:
    transport = MockTransport(lambda m, r: GenerateResponse(generated_text="ok"))
    with drv.client(transport) as client:
        assert client.generate("hi").generated_text == "ok"
        assert transport.closed is False
    assert transport.closed is True
    with pytest.raises(errors.ClientClosedError):
        client.generate("hi")


def test_timeout_number_means_connect_and_read(drv: Driver) -> None:
    transport = MockTransport(lambda m, r: GenerateResponse())
    assert drv.client(transport, timeout=60).timeout == Timeout(connect=60, read=60, total=None)
    assert drv.client(transport).timeout == Timeout(connect=60, read=60, total=None)
    assert drv.client(transport, timeout=1).timeout == Timeout(connect=1, read=1)
    assert drv.client(transport, timeout=(2, None)).timeout == Timeout(connect=2, read=None)
    assert drv.client(transport, timeout=None).timeout == Timeout(connect=None, read=None, total=None, pool=None)


def test_max_session_retries_maps_to_max_retries(drv: Driver) -> None:
    transport = MockTransport(lambda m, r: GenerateResponse())
    assert drv.client(transport, max_session_retries=4).retry_policy.max_retries == 4
    assert drv.client(transport, max_session_retries=4, max_retries=1).retry_policy.max_retries == 1
    assert drv.client(transport).retry_policy == RetryPolicy()


def test_session_argument_is_refused(drv: Driver) -> None:
    with pytest.raises(TypeError, match="transport="):
        drv.cls(URL, session=object(), transport=MockTransport(lambda m, r: None))


def test_wrong_kind_of_transport_is_refused() -> None:
    from lorax.transports.aiohttp import AsyncHTTPTransport
    from lorax.transports.http import HTTPTransport

    with pytest.raises(TypeError, match="sync Transport, got AsyncHTTPTransport"):
        Client(URL, transport=AsyncHTTPTransport(URL))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AsyncTransport, got HTTPTransport"):
        AsyncClient(URL, transport=HTTPTransport(URL))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AsyncTransport, got object"):
        AsyncClient(URL, transport=object())  # type: ignore[arg-type]


def test_one_mock_serves_both_clients() -> None:
    # The sync and async seams have distinct method names (unary/stream and
    # unary_async/stream_async), so one MockTransport instance is both kinds.
    mock = MockTransport({"Generate": lambda m, r: GenerateResponse(generated_text=f"echo: {r.inputs}")})
    assert not hasattr(mock, "aio")
    assert Client(URL, transport=mock).transport is mock
    assert AsyncClient(URL, transport=mock).transport is mock
    assert Client(URL, transport=mock).generate("sync").generated_text == "echo: sync"
    assert asyncio.run(AsyncClient(URL, transport=mock).generate("async")).generated_text == "echo: async"
    assert [r.inputs for r in mock.requests("Generate")] == ["sync", "async"]


@pytest.mark.parametrize("url", ["lorax.test", "ftp://lorax.test", "http://", ""])
def test_bad_base_url_is_refused(drv: Driver, url: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        drv.cls(url, transport=MockTransport(lambda m, r: None))


def test_from_predibase(drv: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREDIBASE_API_TOKEN", raising=False)
    transport = MockTransport(lambda m, r: GenerateResponse())
    client = drv.wrap(drv.cls.from_predibase("tenant", "dep", api_token="T", transport=transport))
    assert client.base_url == "https://serving.app.predibase.com/tenant/deployments/v2/llms/dep"
    client.generate("hi")
    assert transport.calls[-1].headers == {"authorization": "Bearer T"}
    assert "Bearer T" not in repr(client)

    monkeypatch.setenv("PREDIBASE_API_TOKEN", "ENV")
    client = drv.wrap(drv.cls.from_predibase("tenant", "dep", transport=transport))
    client.generate("hi")
    assert transport.calls[-1].headers == {"authorization": "Bearer ENV"}

    client = drv.wrap(drv.cls.from_predibase("tenant", "dep", api_token="ARG", transport=transport))
    client.generate("hi")
    assert transport.calls[-1].headers == {"authorization": "Bearer ARG"}

    client = drv.wrap(drv.cls.from_predibase("t", "d", headers={"Authorization": "Bearer OWN"}, transport=transport))
    client.generate("hi")
    assert transport.calls[-1].headers == {"authorization": "Bearer OWN"}

    # No token at all: a typed error when the client is built, not a 401 on the first call.
    monkeypatch.delenv("PREDIBASE_API_TOKEN")
    calls = len(transport.calls)
    with pytest.raises(errors.MissingCredentialsError) as info:
        drv.cls.from_predibase("t", "d", transport=transport)
    assert str(info.value) == (
        f"{drv.cls.__name__}.from_predibase needs a Predibase API token: pass api_token=..., "
        "or set the PREDIBASE_API_TOKEN environment variable"
    )
    monkeypatch.setenv("PREDIBASE_API_TOKEN", "")
    with pytest.raises(
        errors.MissingCredentialsError, match=r"PREDIBASE_API_TOKEN environment variable \(it is set, but empty\)$"
    ):
        drv.cls.from_predibase("t", "d", transport=transport)
    with pytest.raises(errors.MissingCredentialsError, match="api_token is empty"):
        drv.cls.from_predibase("t", "d", api_token=" ", transport=transport)
    assert len(transport.calls) == calls


def test_from_predibase_quotes_path_segments(drv: Driver) -> None:
    transport = MockTransport(lambda m, r: GenerateResponse())
    client = drv.cls.from_predibase("a b", "x/y", api_token="T", transport=transport)
    assert client.base_url == "https://serving.app.predibase.com/a%20b/deployments/v2/llms/x%2Fy"
    with pytest.raises(ValueError, match="tenant"):
        drv.cls.from_predibase("", "d", transport=transport)


def _run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_lorax_is_lazy() -> None:
    out = _run_python(
        "import sys, lorax\n"
        "print(sorted(m for m in ('aiohttp', 'websockets', 'urllib3', 'lorax.transports.websocket',"
        " 'lorax.transports.aiohttp', 'lorax.transports.http') if m in sys.modules))"
    )
    assert out == "[]"


def test_ws_url_with_a_given_transport_imports_no_websocket_code() -> None:
    out = _run_python(
        "import sys\n"
        "from lorax import Client, AsyncClient\n"
        "from lorax.transports.mock import MockTransport\n"
        "from lorax.types import GenerateResponse\n"
        "t = MockTransport(lambda m, r: GenerateResponse(generated_text='ok'))\n"
        "c = Client('wss://gateway.test', transport=t)\n"
        "a = AsyncClient('ws://gateway.test', transport=t)\n"
        "print(c.generate('x').generated_text, 'websockets' in sys.modules,"
        " 'lorax.transports.websocket' in sys.modules)"
    )
    assert out == "ok False False"


def test_ws_url_selects_the_websocket_transport() -> None:
    websocket = pytest.importorskip("lorax.transports.websocket")
    client = Client("ws://gateway.test")
    try:
        assert isinstance(client.transport, websocket.WebSocketTransport)
    finally:
        client.close()


@pytest.mark.parametrize("pool_size", [None, 3])
def test_pool_size_reaches_either_default_transport(pool_size: int | None) -> None:
    # One option name and one default (100) on both clients, whatever the transport
    # calls it (urllib3's pool_maxsize, aiohttp's limit).
    kwargs = {} if pool_size is None else {"pool_size": pool_size}
    expected = 100 if pool_size is None else pool_size
    sync = Client("http://127.0.0.1:9", **kwargs)
    try:
        assert type(sync.transport).__name__ == "HTTPTransport"
        assert sync.transport.pool_stats()["maxsize"] == expected  # type: ignore[attr-defined]
    finally:
        sync.close()

    async def check_async() -> None:
        aio = AsyncClient("http://127.0.0.1:9", **kwargs)
        try:
            assert type(aio.transport).__name__ == "AsyncHTTPTransport"
            assert aio.transport.pool_stats()["limit"] == expected  # type: ignore[attr-defined]
        finally:
            await aio.aclose()

    asyncio.run(check_async())


# ---------------------------------------------------------------------------------
# async-only and thread behaviour (real `async for` / `async with`, cross-task close)


def test_async_for_needs_no_await() -> None:
    script = Script(tok(1, "a"), tok(2, "b", final="ab"))

    async def main() -> list[str]:
        async with AsyncClient(URL, transport=MockTransport(script)) as client:
            out = []
            async for event in client.generate_stream("hi"):
                out.append(event.token.text)
            async with client.generate_stream("hi") as stream:
                async for event in stream:
                    out.append(event.token.text)
                    break
            return out

    assert asyncio.run(main()) == ["a", "b", "a"]
    assert script.released == 2


def test_async_handler_and_async_generator_handler() -> None:
    async def unary(method: Method, request: Any) -> GenerateResponse:
        await asyncio.sleep(0)
        return GenerateResponse(generated_text=request.inputs.upper())

    async def stream(method: Method, request: Any) -> Any:
        for i, ch in enumerate(request.inputs):
            await asyncio.sleep(0)
            yield tok(i, ch, final=request.inputs if i == len(request.inputs) - 1 else None)

    async def main() -> tuple[str, list[str]]:
        client = AsyncClient(URL, transport=MockTransport({"Generate": unary, "GenerateStream": stream}))
        text = (await client.generate("abc")).generated_text
        tokens = [e.token.text async for e in client.generate_stream("xyz")]
        await client.aclose()
        return text, tokens

    assert asyncio.run(main()) == ("ABC", ["x", "y", "z"])


def test_async_stream_aclose_from_another_task() -> None:
    released: list[str] = []

    async def handler(method: Method, request: Any) -> Any:
        try:
            yield tok(1, "a")
            await asyncio.sleep(30)
            yield tok(2, "b", final="ab")
        finally:
            released.append("released")

    async def main() -> list[str]:
        client = AsyncClient(URL, transport=MockTransport(handler))
        stream = client.generate_stream("hi")
        got: list[str] = []

        async def consume() -> None:
            async for event in stream:
                got.append(event.token.text)

        task = asyncio.create_task(consume())
        while not got:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)  # the consumer is now waiting for the second event
        await stream.aclose()
        await asyncio.wait_for(task, 5)  # ends quietly, without IncompleteGenerationError
        return got

    start = time.monotonic()
    assert asyncio.run(main()) == ["a"]
    assert released == ["released"]
    assert time.monotonic() - start < 5


def test_async_stream_task_cancellation_releases() -> None:
    released: list[str] = []

    async def handler(method: Method, request: Any) -> Any:
        try:
            yield tok(1, "a")
            await asyncio.sleep(30)
            yield tok(2, "b", final="ab")
        finally:
            released.append("released")

    async def main() -> str:
        client = AsyncClient(URL, transport=MockTransport(handler))
        stream = client.generate_stream("hi")

        async def consume() -> None:
            async for _ in stream:
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return repr(stream)

    assert "closed" in asyncio.run(main())
    assert released == ["released"]


def test_sync_stream_close_from_another_thread() -> None:
    gate = threading.Event()
    waiting = threading.Event()
    released: list[str] = []

    def handler(method: Method, request: Any) -> Iterator[StreamResponse]:
        try:
            yield tok(1, "a")
            waiting.set()
            gate.wait(5)
            yield tok(2, "b")
            yield tok(3, "c", final="abc")
        finally:
            released.append("released")

    stream = Client(URL, transport=MockTransport(handler)).generate_stream("hi")
    assert next(stream).token.text == "a"
    got: list[str] = []
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            got.extend(e.token.text for e in stream)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=consume)
    thread.start()
    assert waiting.wait(5)  # the consumer is now inside the handler, waiting on the gate
    stream.close()  # must not raise, even though the handler is running
    gate.set()
    thread.join(5)
    assert not thread.is_alive()
    assert failure == []
    assert got == []
    assert released == ["released"]


def test_mock_transport_records_requests_per_method() -> None:
    transport = MockTransport(
        {
            "lorax.v1.LoraxService.Generate": lambda m, r: GenerateResponse(),
            "Info": lambda m, r: InfoResponse(),
        }
    )
    client = Client(URL, transport=transport)
    client.generate("one")
    client.info()
    client.generate("two")
    assert [r.inputs for r in transport.requests("Generate")] == ["one", "two"]
    assert len(transport.requests()) == 3
    with pytest.raises(errors.NotFoundError, match="Embed"):
        client.embed("x")


def test_recorded_request_is_a_copy() -> None:
    transport = MockTransport(lambda m, r: GenerateResponse())
    client = Client(URL, transport=transport)
    client.generate("hi", stop_sequences=["a"])
    recorded = transport.requests("Generate")[0]
    assert list(recorded.parameters.stop) == ["a"]


def test_handler_returning_wrong_type_is_a_type_error(drv: Driver) -> None:
    client = drv.client(MockTransport(lambda m, r: InfoResponse()))
    with pytest.raises(TypeError, match="GenerateResponse"):
        client.generate("hi")


def test_async_stream_aclose_while_waiting_for_the_first_event() -> None:
    # Time to first token can be long (queueing); a cancel button in another task must
    # stop the call at once, not when the first token finally arrives.
    released: list[str] = []

    async def handler(method: Method, request: Any) -> Any:
        try:
            await asyncio.sleep(30)
            yield tok(1, "a", final="a")
        finally:
            released.append("released")

    async def main() -> list[str]:
        client = AsyncClient(URL, transport=MockTransport(handler))
        stream = client.generate_stream("hi")
        got: list[str] = []

        async def consume() -> None:
            async for event in stream:
                got.append(event.token.text)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.02)
        await stream.aclose()
        await asyncio.wait_for(task, 2)  # ends quietly
        assert "closed" in repr(stream)
        return got

    assert asyncio.run(main()) == []
    assert released == ["released"]


def test_async_consumer_cancelled_while_waiting_for_the_first_event() -> None:
    released: list[str] = []

    async def handler(method: Method, request: Any) -> Any:
        try:
            await asyncio.sleep(30)
            yield tok(1, "a", final="a")
        finally:
            released.append("released")

    async def main() -> None:
        stream = AsyncClient(URL, transport=MockTransport(handler)).generate_stream("hi")

        async def consume() -> None:
            async for _ in stream:
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert released == ["released"]


class BlockingEvents:
    """A transport-level stream whose read blocks until it is closed, like a socket."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.reading = threading.Event()
        self.interrupted = False

    def __iter__(self) -> BlockingEvents:
        return self

    def __next__(self) -> Any:
        self.reading.set()
        if self.closed.wait(2):
            self.interrupted = True
            raise StopIteration  # the connection was closed under the read
        raise AssertionError("the stream was never closed")

    def close(self) -> None:
        self.closed.set()


def test_sync_stream_close_from_another_thread_while_waiting_for_the_first_event() -> None:
    events = BlockingEvents()
    stream = Client(URL, transport=MockTransport(lambda m, r: events)).generate_stream("hi")
    got: list[Any] = []
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            got.extend(stream)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=consume)
    thread.start()
    assert events.reading.wait(5)  # the consumer is now blocked on the first event
    stream.close()
    thread.join(5)
    assert events.interrupted  # closed while the read was blocked, not after it gave up
    assert failure == []
    assert got == []


def test_stream_closed_during_retry_backoff_makes_no_further_attempt(drv: Driver) -> None:
    handler = Attempts(overloaded(), Script(tok(1, "a", final="a")))
    box: list[Any] = []

    real_sleep = asyncio.sleep

    def close_while_sleeping(seconds: float) -> None:
        box[0].close()  # as another thread would, during the backoff

    async def close_while_sleeping_async(seconds: float) -> None:
        # Another task closes the stream while the opener sleeps before its retry.
        box.append(asyncio.ensure_future(box[0]._stream.aclose()))
        await real_sleep(5)

    client = drv.client(MockTransport(handler), max_retries=FAST)
    stream = client.generate_stream("hi")
    box.append(stream)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(time, "sleep", close_while_sleeping)
        mp.setattr(asyncio, "sleep", close_while_sleeping_async)
        assert list(stream) == []
    assert handler.calls == 1


def test_a_null_logprob_reads_none_through_the_mock(drv: Driver) -> None:
    # A handler answers with LoRAX's null (None) logprob; the client hands back None, never 0.0.
    def handler(method: Method, request: Any) -> GenerateResponse:
        return GenerateResponse(
            generated_text="x",
            details=Details(
                finish_reason="length",
                generated_tokens=1,
                prefill=[PrefillToken(id=1, text="<s>", logprob=None)],
                tokens=[Token(id=2, text="x", logprob=None)],
            ),
        )

    result = drv.client(MockTransport(handler)).generate("hi", decoder_input_details=True)
    assert result.details.prefill[0].logprob is None
    assert result.details.tokens[0].logprob is None
    assert result.details.seed is None
