"""Every client method, over every transport, against the fake LoRAX server.

The toy model is deterministic, so each transport must return exactly what direct HTTP
returns; the first test of each kind pins the HTTP answer and the others compare.
"""

from __future__ import annotations

import json

import pytest

from lorax import errors, logprob
from lorax.testing import FAULT_HEADER
from lorax.types import (
    ChatCompletionResponse,
    ClassifyResponse,
    EmbedResponse,
    GenerateResponse,
    InfoResponse,
    StreamResponse,
)

from .conftest import Driver

PROMPT = "Why is the sky blue?"


def test_generate_and_stream_agree(driver: Driver) -> None:
    full = driver.call("generate", PROMPT, max_new_tokens=12, seed=7, do_sample=True)
    assert isinstance(full, GenerateResponse)
    assert full.details.generated_tokens == len(full.details.tokens)
    assert full.details.finish_reason in ("length", "eos_token", "stop_sequence")
    # seed given and sampling on: LoRAX reports the seed back.
    assert full.details.seed == 7

    events = driver.stream("generate_stream", PROMPT, max_new_tokens=12, seed=7, do_sample=True)
    assert all(isinstance(e, StreamResponse) for e in events)
    assert [e.token.text for e in events] == [t.text for t in full.details.tokens]
    assert [e.generated_text is not None for e in events] == [False] * (len(events) - 1) + [True]
    assert events[-1].generated_text == full.generated_text
    assert events[-1].details.finish_reason == full.details.finish_reason


def test_generate_is_the_same_over_every_transport(driver: Driver, fake_server: object) -> None:
    from lorax import Client

    with Client(fake_server.url) as reference:  # type: ignore[attr-defined]
        expected = reference.generate(PROMPT, max_new_tokens=9, adapter_id="org/adapter", return_full_text=True)
    got = driver.call("generate", PROMPT, max_new_tokens=9, adapter_id="org/adapter", return_full_text=True)
    assert got == expected
    assert got.generated_text.startswith(PROMPT)


def test_greedy_seed_is_null_not_zero(driver: Driver) -> None:
    full = driver.call("generate", PROMPT, max_new_tokens=3)
    assert full.details.seed is None


def test_prefill_first_logprob_is_none(driver: Driver) -> None:
    full = driver.call("generate", PROMPT, max_new_tokens=2, decoder_input_details=True)
    assert len(full.details.prefill) > 1
    assert logprob(full.details.prefill[0]) is None
    assert all(logprob(t) is not None for t in full.details.prefill[1:])
    # The attribute itself, as code written for the official client reads it: None, not 0.0.
    assert full.details.prefill[0].logprob is None
    assert all(isinstance(t.logprob, float) for t in full.details.prefill[1:])


def test_structured_output(driver: Driver) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 10},
            "age": {"type": "integer"},
            "armor": {"type": "string", "enum": ["leather", "chainmail", "plate"]},
        },
        "required": ["name", "age", "armor"],
    }
    full = driver.call(
        "generate", "Make a character", max_new_tokens=64, response_format={"type": "json_object", "schema": schema}
    )
    value = json.loads(full.generated_text)
    assert set(value) == {"name", "age", "armor"}
    assert isinstance(value["age"], int)
    assert value["armor"] in ("leather", "chainmail", "plate")
    assert len(value["name"]) <= 10


def test_merged_adapters_change_the_output(driver: Driver) -> None:
    base = driver.call("generate", PROMPT, max_new_tokens=8)
    merged = driver.call(
        "generate",
        PROMPT,
        max_new_tokens=8,
        merged_adapters={"ids": ["a/one", "a/two"], "weights": [0.5, 0.5], "merge_strategy": "ties", "density": 0.5},
    )
    assert merged.generated_text != base.generated_text


def test_embed_classify_tokenize(driver: Driver) -> None:
    emb = driver.call("embed", "hello world")
    assert isinstance(emb, EmbedResponse)
    assert len(emb.embeddings) > 0

    ents = driver.call("classify", "Alice lives in Paris")
    assert isinstance(ents, ClassifyResponse)
    text = b"Alice lives in Paris"
    for ent in ents.entities:
        assert text[ent.start : ent.end].decode().lower() == ent.word

    batch = driver.call("classify_batch", ["Alice lives in Paris", "Bob"])
    assert len(batch) == 2
    assert batch[0] == ents

    tokens = driver.call("tokenize", "What is Deep Learning?")
    assert tokens
    assert all(t.stop >= t.start for t in tokens)


def test_info_health_metrics(driver: Driver) -> None:
    info = driver.call("info")
    assert isinstance(info, InfoResponse)
    assert info.model_id
    assert info.max_total_tokens > info.max_input_length > 0
    assert driver.call("health") is True
    text = driver.call("metrics")
    assert "lorax_request_count" in text
    families = driver.call("metrics", format="json")
    assert families["lorax_request_count"]["type"] == "counter"


def test_chat_and_chat_stream(driver: Driver) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    reply = driver.call("chat", messages, max_tokens=6, temperature=0)
    assert isinstance(reply, ChatCompletionResponse)
    assert reply.choices[0].message.role == "assistant"
    content = reply.choices[0].message.content

    chunks = driver.stream("chat_stream", messages, max_tokens=6, temperature=0)
    assert chunks[-1].choices[0].finish_reason is not None
    assert chunks[-1].usage is not None
    streamed = "".join(c.choices[0].delta.content for c in chunks)
    assert streamed == content


def test_chat_tool_call(driver: Driver) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
                    "required": ["location", "unit"],
                },
            },
        }
    ]
    reply = driver.call(
        "chat",
        [{"role": "user", "content": "Weather in Paris?"}],
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=64,
    )
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert set(json.loads(call.function.arguments)) == {"location", "unit"}


def test_completions_and_stream(driver: Driver) -> None:
    full = driver.call("completions", "Once upon a time", max_tokens=7, temperature=0)
    chunks = driver.stream("completions_stream", "Once upon a time", max_tokens=7, temperature=0)
    assert "".join(c.choices[0].text for c in chunks) == full.choices[0].text
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_embeddings_list(driver: Driver) -> None:
    out = driver.call("embeddings", ["one", "two", "three"])
    assert [e.index for e in out.embeddings] == [0, 1, 2]
    single = driver.call("embed", "two")
    assert list(out.embeddings[1].embedding) == list(single.embeddings)


def test_validation_error_same_class_stream_and_unary(driver: Driver) -> None:
    with pytest.raises(errors.ValidationError) as unary:
        driver.call("generate", PROMPT, temperature=-1.0)
    assert unary.value.error_type == "validation"
    assert unary.value.status_code == 422
    assert "temperature" in unary.value.message

    with pytest.raises(errors.ValidationError) as streamed:
        driver.stream("generate_stream", PROMPT, temperature=-1.0)
    assert streamed.value.error_type == "validation"
    assert streamed.value.message == unary.value.message


def test_overloaded_is_retried_then_succeeds(driver: Driver, fake_server: object) -> None:
    fake_server.faults.push("overloaded", times=2)  # type: ignore[attr-defined]
    full = driver.call("generate", PROMPT, max_new_tokens=3)
    assert full.details.generated_tokens == 3


def test_overloaded_past_retries_raises(make: object, fake_server: object) -> None:
    for kind in ("http", "ws-async"):
        d = make(kind, max_retries=None)  # type: ignore[operator]
        fake_server.faults.push("overloaded", times=1)  # type: ignore[attr-defined]
        with pytest.raises(errors.OverloadedError) as info:
            d.call("generate", PROMPT, max_new_tokens=3)
        assert info.value.status_code == 429


def test_error_event_mid_stream_is_typed_and_not_retried(driver: Driver) -> None:
    faulty = driver.with_options(headers={FAULT_HEADER: "error-after=3"})
    with pytest.raises(errors.GenerationError) as info:
        faulty.stream("generate_stream", PROMPT, max_new_tokens=10)
    assert info.value.status_code is None
    assert info.value.error_type == "generation"


def test_connection_dropped_mid_stream(driver: Driver) -> None:
    faulty = driver.with_options(headers={FAULT_HEADER: "drop-after=2"})
    with pytest.raises(errors.IncompleteGenerationError):
        faulty.stream("generate_stream", PROMPT, max_new_tokens=10)


def test_html_502_from_a_proxy(driver: Driver) -> None:
    faulty = driver.with_options(headers={FAULT_HEADER: "bad-gateway"}, max_retries=None)
    with pytest.raises(errors.UnknownError) as info:
        faulty.call("generate", PROMPT, max_new_tokens=3)
    assert info.value.status_code == 502


def test_stalled_server_read_timeout(driver: Driver) -> None:
    faulty = driver.with_options(headers={FAULT_HEADER: "stall=headers"}, timeout=(5, 0.5), max_retries=None)
    with pytest.raises(errors.APITimeoutError):
        faulty.stream("generate_stream", PROMPT, max_new_tokens=5)


def test_break_early_then_more_calls(driver: Driver) -> None:
    for _ in range(12):
        events = driver.stream("generate_stream", PROMPT, max_new_tokens=50, limit=1)
        assert len(events) == 1
    assert driver.call("generate", PROMPT, max_new_tokens=2).details.generated_tokens == 2
