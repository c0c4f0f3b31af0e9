"""Golden tests of lorax.codec against LoRAX's bytes, route by route.

The response bodies come from the wire examples (``tests/fixtures/wire-examples.json``, derived from
the LoRAX source; a copy lives in ``tests/fixtures``). LoRAX writes compact JSON with keys in
Rust declaration order, so every response must decode to the right values and re-encode to
exactly the example's compact bytes.

Requests are built as messages and must encode to the literal bytes written below, in proto
declaration order (which is LoRAX's wire order). Some request examples spell out nulls and
defaults (the official client's body, ``"api_token":null``); our encoder leaves an unset
optional field out by design, so those examples are compared after dropping the null keys.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from lorax import codec
from lorax import types as T
from lorax._message import Message

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "wire-examples.json"


def _load_examples() -> dict[str, dict[str, Any]]:
    path = Path(os.environ.get("LORAX_WIRE_EXAMPLES", FIXTURE))
    examples: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return examples


EXAMPLES = _load_examples()


def body_bytes(key: str) -> bytes:
    """The example's body as LoRAX writes it: compact, raw UTF-8."""
    return json.dumps(EXAMPLES[key]["body"], separators=(",", ":"), ensure_ascii=False).encode()


def decode(cls: type[Message], key: str) -> Any:
    return codec.from_json(cls, body_bytes(key))


# ---------------------------------------------------------------------------------------------
# Responses: decode, then re-encode to exactly the example's bytes.

RESPONSES: dict[str, type[Message]] = {
    "generate.response.no_details": T.GenerateResponse,
    "generate.response.details": T.GenerateResponse,
    "generate.response.decoder_input_details": T.GenerateResponse,
    "generate.response.return_k_alternatives": T.GenerateResponse,
    "generate.response.best_of": T.GenerateResponse,
    "compat.response.non_stream": T.CompatGenerateResponse,
    "generate_stream.event.token": T.StreamResponse,
    "generate_stream.event.final_with_details": T.StreamResponse,
    "generate_stream.event.final_without_details": T.StreamResponse,
    "completions.response": T.CompletionResponse,
    "completions.stream.event.token": T.CompletionStreamResponse,
    "completions.stream.event.final_eos": T.CompletionStreamResponse,
    "chat.response.text": T.ChatCompletionResponse,
    "chat.response.tool_call": T.ChatCompletionResponse,
    "chat.response.n2": T.ChatCompletionResponse,
    "chat.stream.event.token": T.ChatCompletionStreamResponse,
    "chat.stream.event.final_eos": T.ChatCompletionStreamResponse,
    "chat.stream.event.final_length": T.ChatCompletionStreamResponse,
    "tokenize.response": T.TokenizeResponse,
    "embed.response": T.EmbedResponse,
    "v1_embeddings.response": T.EmbeddingsResponse,
    "classify.response": T.ClassifyResponse,
    "classify_batch.response": T.ClassifyBatchResponse,
    "info.response": T.InfoResponse,
}


def test_every_json_response_example_is_covered() -> None:
    """Each JSON success body in the examples has a golden test (errors are in test_codec_traps)."""
    json_responses = {
        key
        for key, ex in EXAMPLES.items()
        if not key.startswith("_")
        and "body" in ex
        and ex.get("status", 200 if ex.get("sse") else None) == 200
        and "error" not in ex["body"]
    }
    # metrics.response.json is a HashMap (random key order): compared by value below.
    assert json_responses - set(RESPONSES) == {"metrics.response.json"}


@pytest.mark.parametrize("key", sorted(RESPONSES))
def test_response_reencodes_to_exact_bytes(key: str) -> None:
    raw = body_bytes(key)
    message = codec.from_json(RESPONSES[key], raw)
    assert codec.to_json(message) == raw


@pytest.mark.parametrize("key", sorted(RESPONSES))
def test_response_decodes_from_str_and_memoryview(key: str) -> None:
    raw = body_bytes(key)
    expected = codec.from_json(RESPONSES[key], raw)
    assert codec.from_json(RESPONSES[key], raw.decode()) == expected
    assert codec.from_json(RESPONSES[key], memoryview(raw)) == expected
    assert codec.from_json(RESPONSES[key], bytearray(raw)) == expected


@pytest.mark.parametrize("key", sorted(RESPONSES))
def test_response_through_the_upb_twin_keeps_its_bytes(key: str) -> None:
    """The codec still reads into and prints from the upb classes (binary frames' edge)."""
    from lorax._convert import proto_class

    raw = body_bytes(key)
    struct = codec.from_json(RESPONSES[key], raw)
    pb = codec.from_json(proto_class(RESPONSES[key]), raw)
    assert pb == struct.to_proto()
    assert RESPONSES[key].from_proto(pb) == struct
    assert codec.to_json(pb) == raw


def test_generate_no_details() -> None:
    r = decode(T.GenerateResponse, "generate.response.no_details")
    assert r.generated_text == " The capital of France is Paris."
    assert r.details is None  # absent, not an empty Details


def test_generate_details() -> None:
    r = decode(T.GenerateResponse, "generate.response.details")
    d = r.details
    assert d is not None
    assert d.finish_reason == "eos_token"
    assert (d.prompt_tokens, d.generated_tokens, d.skipped_tokens) == (15, 8, 0)
    assert d.seed is None  # "seed":null (greedy)
    assert len(d.prefill) == 0
    assert len(d.best_of_sequences) == 0
    assert [t.id for t in d.tokens] == [415, 5565, 302, 4843, 349, 5465, 28723, 2]
    assert [t.text for t in d.tokens][-2:] == [".", "</s>"]
    assert [t.special for t in d.tokens] == [False] * 7 + [True]
    assert all(t.skipped is False for t in d.tokens)
    assert d.tokens[0].logprob == -0.2544
    assert d.tokens[2].logprob == -0.0003
    assert all(t.logprob is not None for t in d.tokens)
    assert all(len(t.alternative_tokens) == 0 for t in d.tokens)


def test_generate_decoder_input_details_null_first_prefill_logprob() -> None:
    d = decode(T.GenerateResponse, "generate.response.decoder_input_details").details
    assert len(d.prefill) == 15
    first = d.prefill[0]
    assert (first.id, first.text) == (1, "<s>")
    assert first.logprob is None  # null, never 0.0
    assert [p.logprob is not None for p in d.prefill[1:]] == [True] * 14
    assert d.prefill[1].logprob == -9.789
    assert d.prefill[2].logprob == -11.6406
    assert [p.text for p in d.prefill[4:7]] == ["What", "is", "the"]


def test_generate_return_k_alternatives() -> None:
    d = decode(T.GenerateResponse, "generate.response.return_k_alternatives").details
    assert d.finish_reason == "length"
    assert len(d.tokens) == 6
    assert all(len(t.alternative_tokens) == 3 for t in d.tokens)
    first = d.tokens[0].alternative_tokens
    assert [(a.id, a.text, a.logprob) for a in first] == [
        (415, " The", -0.2544),
        (5465, " Paris", -1.6875),
        (13, "\n", -3.3437),
    ]
    null_alt = d.tokens[1].alternative_tokens[2]
    assert (null_alt.id, null_alt.text) == (28723, ".")
    assert null_alt.logprob is None  # null reads None, never 0.0


def test_generate_best_of_seeds_above_2_53_are_exact() -> None:
    d = decode(T.GenerateResponse, "generate.response.best_of").details
    assert d.seed == 15828326327212539139
    assert d.seed > 2**53
    assert len(d.best_of_sequences) == 1
    other = d.best_of_sequences[0]
    assert other.seed == 4394836513658361802
    assert other.generated_text == " The Paris is the capital."
    assert other.finish_reason == "eos_token"
    assert other.generated_tokens == 7
    assert len(other.tokens) == 7
    assert b'"seed":15828326327212539139,' in codec.to_json(decode(T.GenerateResponse, "generate.response.best_of"))


def test_compat_non_stream_is_a_one_element_array() -> None:
    r = decode(T.CompatGenerateResponse, "compat.response.non_stream")
    assert len(r.responses) == 1
    assert r.responses[0].generated_text == " The capital of France is Paris."
    assert r.responses[0].details.finish_reason == "eos_token"
    assert codec.to_json(r).startswith(b'[{"generated_text":')


def test_stream_token_event() -> None:
    e = decode(T.StreamResponse, "generate_stream.event.token")
    assert (e.token.id, e.token.text, e.token.logprob, e.token.special, e.token.skipped) == (
        415,
        " The",
        -0.2544,
        False,
        False,
    )
    assert e.generated_text is None
    assert e.details is None
    raw = EXAMPLES["generate_stream.event.token"]["raw"].encode()
    assert raw == b"data: " + codec.to_json(e) + b"\n\n"


def test_stream_final_events() -> None:
    with_details = decode(T.StreamResponse, "generate_stream.event.final_with_details")
    assert with_details.generated_text == " The capital of France is Paris."
    assert with_details.token.special is True
    assert with_details.details.finish_reason == "eos_token"
    assert (with_details.details.prompt_tokens, with_details.details.generated_tokens) == (15, 8)
    assert with_details.details.seed is None
    without = decode(T.StreamResponse, "generate_stream.event.final_without_details")
    assert without.generated_text is not None
    assert without.details is None
    assert without.token.logprob == -0.0089


def test_completions_response() -> None:
    r = decode(T.CompletionResponse, "completions.response")
    assert (r.id, r.object, r.created, r.model) == ("null", "text_completion", 0, "null")
    assert len(r.choices) == 1
    c = r.choices[0]
    assert c.index == 0
    assert c.text.startswith(" Mathematics is like a lighthouse")
    assert c.finish_reason == "content_filter"  # LoRAX's spelling for a stop sequence
    assert c.logprobs is None  # "logprobs":null
    assert (r.usage.prompt_tokens, r.usage.total_tokens, r.usage.completion_tokens) == (24, 57, 33)


def test_completions_stream_events() -> None:
    tok = decode(T.CompletionStreamResponse, "completions.stream.event.token")
    assert tok.choices[0].text == " Mathematics"
    assert tok.choices[0].finish_reason is None
    assert tok.usage is not None
    assert (tok.usage.prompt_tokens, tok.usage.total_tokens) == (0, 0)
    assert tok.usage.completion_tokens is not None
    assert tok.usage.completion_tokens == 0
    final = decode(T.CompletionStreamResponse, "completions.stream.event.final_eos")
    assert final.choices[0].text == ""
    assert final.choices[0].finish_reason == "stop"
    assert final.usage.completion_tokens == 33


def test_chat_text_response() -> None:
    r = decode(T.ChatCompletionResponse, "chat.response.text")
    assert r.object == "text_completion"
    assert r.created == 1748454712
    assert r.model == "mistralai/Mistral-7B-Instruct-v0.1"
    assert r.system_fingerprint == "0.1.0-native"
    m = r.choices[0].message
    assert (m.role, m.content) == ("assistant", " The capital of France is Paris.")
    assert len(m.tool_calls) == 0
    assert r.choices[0].finish_reason == "stop"


def test_chat_tool_call_response() -> None:
    r = decode(T.ChatCompletionResponse, "chat.response.tool_call")
    m = r.choices[0].message
    assert m.role == "assistant"
    assert m.content is None
    assert len(m.tool_calls) == 1
    call = m.tool_calls[0]
    assert (call.id, call.type, call.function.name) == ("0", "function", "get_current_weather")
    assert call.function.description is None
    assert call.function.arguments == '{"format":"celsius","location":"Paris, France"}'
    assert b'"description":null,' in codec.to_json(r)


def test_chat_n2_response() -> None:
    r = decode(T.ChatCompletionResponse, "chat.response.n2")
    assert [c.index for c in r.choices] == [0, 1]
    assert [c.finish_reason for c in r.choices] == ["stop", "stop"]
    assert r.choices[1].message.content == " Paris is the capital of France."


def test_chat_stream_events() -> None:
    tok = decode(T.ChatCompletionStreamResponse, "chat.stream.event.token")
    assert (tok.object, tok.created, tok.model) == ("chat.completion.chunk", 0, "null")
    assert (tok.choices[0].delta.role, tok.choices[0].delta.content) == ("assistant", " The")
    assert tok.choices[0].finish_reason is None
    assert tok.usage is None
    eos = decode(T.ChatCompletionStreamResponse, "chat.stream.event.final_eos")
    assert eos.choices[0].delta is not None
    assert eos.choices[0].delta == T.AssistantMessage()
    assert eos.choices[0].delta.to_dict() == {"role": None, "content": None, "tool_calls": []}
    assert eos.choices[0].finish_reason == "stop"
    assert eos.usage.total_tokens == 23
    length = decode(T.ChatCompletionStreamResponse, "chat.stream.event.final_length")
    assert length.choices[0].delta.content == " Paris"
    assert length.choices[0].finish_reason == "length"


def test_tokenize_response_is_a_bare_array() -> None:
    r = decode(T.TokenizeResponse, "tokenize.response")
    assert [(t.id, t.text, t.start, t.stop) for t in r.tokens] == [
        (1, "<s>", 0, 0),
        (1824, "▁What", 0, 4),
        (349, "▁is", 4, 7),
        (23760, "▁Deep", 7, 12),
        (17504, "▁Learning", 12, 21),
        (28804, "?", 21, 22),
    ]


def test_embed_responses() -> None:
    r = decode(T.EmbedResponse, "embed.response")
    assert list(r.embeddings) == [-0.0231, 0.0457, 0.0118, -0.0719, 0.0302, 0.0046, -0.0158, 0.0623]
    v1 = decode(T.EmbeddingsResponse, "v1_embeddings.response")
    assert [(e.index, e.object, len(e.embedding)) for e in v1.embeddings] == [(0, "embedding", 8), (1, "embedding", 8)]
    assert v1.embeddings[1].embedding[0] == 0.0174


def test_classify_responses_are_bare_arrays() -> None:
    r = decode(T.ClassifyResponse, "classify.response")
    assert [e.entity_group for e in r.entities] == ["PER", "0", "ORG", "0", "LOC", "0"]
    assert (r.entities[2].word, r.entities[2].start, r.entities[2].end) == ("golden state warriors", 20, 41)
    assert r.entities[0].score == 0.9987
    batch = decode(T.ClassifyBatchResponse, "classify_batch.response")
    assert [len(x) for x in batch.results] == [6, 4]
    assert batch.results[1][0].word == "angela merkel"


def test_info_response() -> None:
    r = decode(T.InfoResponse, "info.response")
    assert r.model_sha == "7ad5799710574ba1c1d953eba3077af582f3a773"
    assert r.model_pipeline_tag == "text-generation"
    assert r.waiting_served_ratio == 1.2
    assert r.max_batch_total_tokens == 147456
    assert r.eager_prefill is False
    assert [r.sha, r.docker_label, r.request_logger_url] == [None, None, None]


def test_metrics_json_decodes_by_value() -> None:
    """A HashMap on the server: the key order is random, so only values are compared."""
    raw = body_bytes("metrics.response.json")
    families = codec.from_json(T.MetricFamilies, raw)
    assert sorted(families.families) == sorted(EXAMPLES["metrics.response.json"]["body"])
    duration = families.families["lorax_request_duration"]
    assert duration.type == "histogram"
    assert [(s.key, s.value) for s in duration.data][-2:] == [("sum", 1.099), ("count", 2.0)]
    assert orjson.loads(codec.to_json(families)) == EXAMPLES["metrics.response.json"]["body"]
    assert b'"value":3.0' in codec.to_json(families)  # f64 with its decimal point, like serde_json


# ---------------------------------------------------------------------------------------------
# Requests: built as messages, encoded to literal bytes (proto order = LoRAX order).

PROMPT = "[INST] What is the capital of France? [/INST]"
SCHEMA = (
    '{"$defs":{"Armor":{"enum":["leather","chainmail","plate"],"title":"Armor","type":"string"}},'
    '"properties":{"name":{"maxLength":10,"title":"Name","type":"string"},"age":{"title":"Age","type":"integer"},'
    '"armor":{"$ref":"#/$defs/Armor"},"strength":{"title":"Strength","type":"integer"}},'
    '"required":["name","age","armor","strength"],"title":"Character","type":"object"}'
)
CHAT_SCHEMA = (
    '{"properties":{"name":{"maxLength":10,"title":"Name","type":"string"},"age":{"title":"Age","type":"integer"},'
    '"armor":{"enum":["leather","chainmail","plate"],"title":"Armor","type":"string"},'
    '"strength":{"title":"Strength","type":"integer"}},"required":["name","age","armor","strength"],'
    '"title":"Character","type":"object"}'
)
WEATHER_PARAMS = (
    '{"type":"object","properties":{"location":{"type":"string","description":"The city and country, e.g. Paris, '
    'France"},"format":{"type":"string","enum":["celsius","fahrenheit"]}},"required":["location","format"]}'
)
WEATHER_TOOL = T.Tool(
    type="function",
    function=T.FunctionDefinition(
        name="get_current_weather",
        description="Get the current weather in a given location",
        parameters=json.loads(WEATHER_PARAMS),
    ),
)
WEATHER_TOOL_JSON = (
    b'{"type":"function","function":{"description":"Get the current weather in a given location",'
    b'"name":"get_current_weather","parameters":' + WEATHER_PARAMS.encode() + b"}}"
)
MERGE_INPUTS = (
    "Table: 2-11365528-2\nColumns: ['Team', 'Head Coach', 'President', 'Home Ground', 'Location']\n"
    "Natural Query: Who is the Head Coach of the team whose President is Mario Volarevic?\nSQL Query:"
)

# key -> (message, exact bytes we send)
REQUESTS: dict[str, tuple[Message, bytes]] = {
    "generate.request.minimal": (
        T.GenerateRequest(inputs=PROMPT, parameters=T.GenerateParameters(max_new_tokens=64)),
        b'{"inputs":"[INST] What is the capital of France? [/INST]","parameters":{"max_new_tokens":64}}',
    ),
    "generate.request.all_parameters": (
        T.GenerateRequest(
            inputs=PROMPT,
            parameters=T.GenerateParameters(
                adapter_id="vineetsharma/qlora-adapter-Mistral-7B-Instruct-v0.1-gsm8k",
                adapter_source="hub",
                best_of=1,
                temperature=0.7,
                repetition_penalty=1.1,
                frequency_penalty=0.0,
                presence_penalty=0.0,
                top_k=50,
                top_p=0.95,
                do_sample=True,
                max_new_tokens=64,
                ignore_eos_token=False,
                return_full_text=False,
                stop=["</s>", "\n\n"],
                watermark=False,
                details=True,
                decoder_input_details=False,
                apply_chat_template=False,
                seed=42,
            ),
        ),
        b'{"inputs":"[INST] What is the capital of France? [/INST]","parameters":{'
        b'"adapter_id":"vineetsharma/qlora-adapter-Mistral-7B-Instruct-v0.1-gsm8k","adapter_source":"hub",'
        b'"best_of":1,"temperature":0.7,"repetition_penalty":1.1,"frequency_penalty":0.0,"presence_penalty":0.0,'
        b'"top_k":50,"top_p":0.95,"do_sample":true,"max_new_tokens":64,"ignore_eos_token":false,'
        b'"return_full_text":false,"stop":["</s>","\\n\\n"],"watermark":false,"details":true,'
        b'"decoder_input_details":false,"apply_chat_template":false,"seed":42}}',
    ),
    "generate.request.merged_adapters": (
        T.GenerateRequest(
            inputs=MERGE_INPUTS,
            parameters=T.GenerateParameters(
                max_new_tokens=64,
                merged_adapters=T.MergedAdapters(
                    ids=[
                        "smangrul/tinyllama_lora_norobots",
                        "smangrul/tinyllama_lora_sql",
                        "smangrul/tinyllama_lora_adcopy",
                    ],
                    weights=[2.0, 0.3, 0.7],
                    merge_strategy=T.MergeStrategy.MERGE_STRATEGY_TIES,
                    density=0.2,
                    majority_sign_method=T.MajoritySignMethod.MAJORITY_SIGN_METHOD_TOTAL,
                ),
            ),
        ),
        b"{\"inputs\":\"Table: 2-11365528-2\\nColumns: ['Team', 'Head Coach', 'President', 'Home Ground', "
        b"'Location']\\nNatural Query: Who is the Head Coach of the team whose President is Mario Volarevic?\\n"
        b'SQL Query:","parameters":{"merged_adapters":{"ids":["smangrul/tinyllama_lora_norobots",'
        b'"smangrul/tinyllama_lora_sql","smangrul/tinyllama_lora_adcopy"],"weights":[2.0,0.3,0.7],'
        b'"merge_strategy":"ties","density":0.2,"majority_sign_method":"total"},"max_new_tokens":64}}',
    ),
    "generate.request.response_format_schema": (
        T.GenerateRequest(
            inputs="Generate a new character for my awesome game: name, age (between 1 and 99), armor and strength.",
            parameters=T.GenerateParameters(
                max_new_tokens=100,
                response_format=T.ResponseFormat(
                    type=T.ResponseFormatType.RESPONSE_FORMAT_TYPE_JSON_OBJECT, schema=json.loads(SCHEMA)
                ),
            ),
        ),
        b'{"inputs":"Generate a new character for my awesome game: name, age (between 1 and 99), armor and '
        b'strength.","parameters":{"max_new_tokens":100,"response_format":{"type":"json_object","schema":'
        + SCHEMA.encode()
        + b"}}}",
    ),
    "generate.request.response_format_arbitrary_json": (
        T.GenerateRequest(
            inputs="Describe a medieval knight as JSON.",
            parameters=T.GenerateParameters(
                max_new_tokens=100,
                response_format=T.ResponseFormat(type=T.ResponseFormatType.RESPONSE_FORMAT_TYPE_JSON_OBJECT),
            ),
        ),
        b'{"inputs":"Describe a medieval knight as JSON.","parameters":{"max_new_tokens":100,'
        b'"response_format":{"type":"json_object"}}}',
    ),
    "generate.request.official_python_client": (
        T.CompatGenerateRequest(
            inputs=PROMPT,
            parameters=T.GenerateParameters(
                do_sample=False,
                max_new_tokens=64,
                ignore_eos_token=False,
                return_full_text=False,
                watermark=False,
                details=True,
                decoder_input_details=False,
            ),
            stream=False,
        ),
        b'{"inputs":"[INST] What is the capital of France? [/INST]","parameters":{"do_sample":false,'
        b'"max_new_tokens":64,"ignore_eos_token":false,"return_full_text":false,"watermark":false,'
        b'"details":true,"decoder_input_details":false},"stream":false}',
    ),
    "compat.request.stream": (
        T.CompatGenerateRequest(
            inputs=PROMPT, parameters=T.GenerateParameters(max_new_tokens=64, details=True), stream=True
        ),
        b'{"inputs":"[INST] What is the capital of France? [/INST]","parameters":{"max_new_tokens":64,'
        b'"details":true},"stream":true}',
    ),
    "generate_stream.request": (
        T.GenerateRequest(inputs=PROMPT, parameters=T.GenerateParameters(max_new_tokens=64, details=True)),
        b'{"inputs":"[INST] What is the capital of France? [/INST]","parameters":{"max_new_tokens":64,"details":true}}',
    ),
    "completions.request": (
        T.CompletionRequest(
            model="",
            prompt="Instruct: Write a detailed analogy between mathematics and a lighthouse.\nOutput:",
            max_tokens=100,
            temperature=0.7,
            stop=["\n\n"],
            stream=False,
        ),
        b'{"model":"","prompt":"Instruct: Write a detailed analogy between mathematics and a lighthouse.\\n'
        b'Output:","max_tokens":100,"temperature":0.7,"stream":false,"stop":["\\n\\n"]}',
    ),
    "chat.request.basic": (
        T.ChatCompletionRequest(
            model="",
            messages=[T.ChatMessage(role="user", content="What is the capital of France?")],
            max_tokens=64,
            temperature=0,
        ),
        b'{"model":"","messages":[{"role":"user","content":"What is the capital of France?"}],'
        b'"temperature":0.0,"max_tokens":64}',
    ),
    "chat.request.multimodal_chunks": (
        T.ChatCompletionRequest(
            model="",
            messages=[
                T.ChatMessage(role="system", content="You are a helpful assistant."),
                T.ChatMessage(
                    role="user",
                    content=[
                        T.ContentPart(type="text", text="What animal is in this picture?"),
                        T.ContentPart(
                            type="image_url",
                            image_url=T.ImageUrl(
                                url="https://upload.wikimedia.org/wikipedia/commons/3/3a/Cat03.jpg", detail="auto"
                            ),
                        ),
                    ],
                ),
            ],
            max_tokens=50,
        ),
        b'{"model":"","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user",'
        b'"content":[{"type":"text","text":"What animal is in this picture?"},{"type":"image_url","image_url":'
        b'{"url":"https://upload.wikimedia.org/wikipedia/commons/3/3a/Cat03.jpg","detail":"auto"}}]}],'
        b'"max_tokens":50}',
    ),
    "chat.request.tools": (
        T.ChatCompletionRequest(
            model="",
            messages=[T.ChatMessage(role="user", content="What's the weather like in Paris today?")],
            tools=[WEATHER_TOOL],
            tool_choice="auto",
            max_tokens=100,
            temperature=0,
        ),
        b'{"model":"","messages":[{"role":"user","content":"What\'s the weather like in Paris today?"}],'
        b'"temperature":0.0,"max_tokens":100,"tools":[' + WEATHER_TOOL_JSON + b'],"tool_choice":"auto"}',
    ),
    "chat.request.tool_choice_specific_function": (
        T.ChatCompletionRequest(
            model="",
            messages=[T.ChatMessage(role="user", content="Weather in Paris?")],
            tools=[WEATHER_TOOL],
            tool_choice=T.NamedToolChoice(function=T.FunctionName(name="get_current_weather")),
        ),
        b'{"model":"","messages":[{"role":"user","content":"Weather in Paris?"}],"tools":['
        + WEATHER_TOOL_JSON
        + b'],"tool_choice":{"Function":{"name":"get_current_weather"}}}',
    ),
    "chat.request.json_schema": (
        T.ChatCompletionRequest(
            model="",
            messages=[
                T.ChatMessage(
                    role="user",
                    content="Generate a new character for my game: name, age (between 1 and 99), armor, and strength.",
                )
            ],
            max_tokens=100,
            response_format=T.ChatResponseFormat(
                type=T.ResponseFormatType.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
                json_schema=T.JsonSchema(name="Character", schema=json.loads(CHAT_SCHEMA)),
            ),
        ),
        b'{"model":"","messages":[{"role":"user","content":"Generate a new character for my game: name, age '
        b'(between 1 and 99), armor, and strength."}],"max_tokens":100,"response_format":{"type":"json_schema",'
        b'"json_schema":{"name":"Character","schema":' + CHAT_SCHEMA.encode() + b"}}}",
    ),
    "chat.request.json_object": (
        T.ChatCompletionRequest(
            model="",
            messages=[
                T.ChatMessage(
                    role="user", content="Generate a new character for my game: name, age, armor type, and strength."
                )
            ],
            max_tokens=100,
            response_format=T.ChatResponseFormat(type=T.ResponseFormatType.RESPONSE_FORMAT_TYPE_JSON_OBJECT),
        ),
        b'{"model":"","messages":[{"role":"user","content":"Generate a new character for my game: name, age, '
        b'armor type, and strength."}],"max_tokens":100,"response_format":{"type":"json_object"}}',
    ),
    "tokenize.request": (
        T.TokenizeRequest(inputs="What is Deep Learning?", add_special_tokens=True),
        b'{"inputs":"What is Deep Learning?","add_special_tokens":true}',
    ),
    "embed.request": (T.EmbedRequest(inputs="Hello, world!"), b'{"inputs":"Hello, world!"}'),
    "embed.request.with_adapter": (
        T.EmbedRequest(
            inputs="Hello, world!",
            parameters=T.EmbedParameters(adapter_id="my-org/uae-large-finetune", adapter_source="hub"),
        ),
        b'{"inputs":"Hello, world!","parameters":{"adapter_id":"my-org/uae-large-finetune","adapter_source":"hub"}}',
    ),
    "v1_embeddings.request.string": (
        T.EmbeddingsRequest(model="WhereIsAI/UAE-Large-V1", input="Hello, world!"),
        b'{"input":"Hello, world!","model":"WhereIsAI/UAE-Large-V1"}',
    ),
    "v1_embeddings.request.list": (
        T.EmbeddingsRequest(
            model="WhereIsAI/UAE-Large-V1",
            input=["Hello, world!", "LoRAX serves many adapters."],
            parameters=T.EmbedParameters(),
        ),
        b'{"input":["Hello, world!","LoRAX serves many adapters."],"model":"WhereIsAI/UAE-Large-V1","parameters":{}}',
    ),
    "classify.request": (
        T.ClassifyRequest(inputs="Johnny supports the Golden State Warriors. He lives in London."),
        b'{"inputs":"Johnny supports the Golden State Warriors. He lives in London."}',
    ),
    "classify_batch.request": (
        T.ClassifyBatchRequest(
            inputs=["Johnny supports the Golden State Warriors. He lives in London.", "Angela Merkel visited Paris."]
        ),
        b'{"inputs":["Johnny supports the Golden State Warriors. He lives in London.","Angela Merkel visited Paris."]}',
    ),
}


def test_every_request_example_is_covered() -> None:
    requests = {key for key, ex in EXAMPLES.items() if ".request" in key and "body" in ex and "http" in ex}
    requests.discard("request_logger.outbound")  # sent by the router, not to it
    assert requests == set(REQUESTS)


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _drop_omitted_defaults(value: Any) -> Any:
    """The example body minus what our encoder omits by design: nulls and an empty `stop`."""
    value = _drop_nulls(value)
    if isinstance(value, dict):
        return {k: _drop_omitted_defaults(v) for k, v in value.items() if not (k == "stop" and v == [])}
    return value


@pytest.mark.parametrize("key", sorted(REQUESTS))
def test_request_message_encodes_to_exact_bytes(key: str) -> None:
    message, expected = REQUESTS[key]
    assert codec.to_json(message) == expected


@pytest.mark.parametrize("key", sorted(REQUESTS))
def test_request_bytes_mean_the_example(key: str) -> None:
    """Our canonical bytes carry the example's meaning (nulls dropped; `0` and `0.0` are equal)."""
    _, expected = REQUESTS[key]
    assert orjson.loads(expected) == _drop_omitted_defaults(EXAMPLES[key]["body"])


@pytest.mark.parametrize("key", sorted(REQUESTS))
def test_request_example_decodes_to_the_message(key: str) -> None:
    """What a server emulator reads from the example is the message we built."""
    message, _ = REQUESTS[key]
    assert codec.from_json(type(message), body_bytes(key)) == message


@pytest.mark.parametrize(
    "key",
    sorted(k for k in REQUESTS if body_bytes(k) == REQUESTS[k][1]),
)
def test_request_examples_already_in_wire_order_roundtrip_exactly(key: str) -> None:
    message = codec.from_json(type(REQUESTS[key][0]), body_bytes(key))
    assert codec.to_json(message) == body_bytes(key)


def test_requests_in_wire_order_are_most_of_them() -> None:
    same = sorted(k for k in REQUESTS if body_bytes(k) == REQUESTS[k][1])
    assert same == [
        "chat.request.json_object",
        "chat.request.json_schema",
        "chat.request.multimodal_chunks",
        "classify.request",
        "classify_batch.request",
        "compat.request.stream",
        "embed.request",
        "generate.request.minimal",
        "generate.request.response_format_arbitrary_json",
        "generate.request.response_format_schema",
        "generate_stream.request",
        "tokenize.request",
    ]
