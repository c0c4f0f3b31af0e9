"""The places where LoRAX's JSON differs from what a protobuf-based client would do, one
group of tests per trap, against lorax.codec.

Each test states the LoRAX behaviour (docs/wire.md, with the LoRAX source it comes from)
and checks the exact bytes we print or the exact message we read. Traps 15 (the Authorization side effect) and 16
(the SSE prefix) are not codec matters: they are covered by the transport and SSE tests.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import msgspec
import orjson
import pytest
from google.protobuf.descriptor import FieldDescriptor

from lorax import codec, errors
from lorax import types as T
from lorax._convert import proto_class
from lorax._f32 import format_f32, to_f32
from lorax._message import UNSET, Message
from lorax.v1 import messages as M

SEED = 13442342353453453453  # a u64 above 2**63, as LoRAX picks them


def enc(message: Message) -> bytes:
    return codec.to_json(message)


def dec(cls: type[Message], data: bytes | str) -> Any:
    return codec.from_json(cls, data)


def chat(**fields: Any) -> Any:
    """A ChatCompletionRequest with its required fields at their empty values."""
    return T.ChatCompletionRequest(**{"model": "", "messages": [], **fields})


def token_json(logprob: bytes = b"-0.2544", extra: bytes = b"") -> bytes:
    return b'{"id":415,"text":" The","logprob":' + logprob + b',"special":false' + extra + b',"skipped":false}'


# ---------------------------------------------------------------------------------------------
# Trap 1: 64-bit integers are JSON numbers, both ways.


def test_u64_seed_is_printed_as_a_number() -> None:
    params = T.GenerateParameters(seed=SEED)
    assert enc(params) == b'{"seed":13442342353453453453}'
    assert enc(T.GenerateParameters(seed=42)) == b'{"seed":42}'
    assert b'"seed":"' not in enc(T.GenerateRequest(inputs="x", parameters=T.GenerateParameters(seed=42)))
    assert enc(T.GenerateParameters(seed=2**64 - 1)) == b'{"seed":18446744073709551615}'
    assert enc(T.GenerateParameters(seed=0)) == b'{"seed":0}'


def test_u64_seed_is_read_exactly_from_a_number() -> None:
    details = dec(
        T.StreamDetails, b'{"finish_reason":"length","prompt_tokens":1,"generated_tokens":2,"seed":%d}' % SEED
    )
    assert details.seed == SEED
    assert (
        enc(details) == b'{"finish_reason":"length","prompt_tokens":1,"generated_tokens":2,"seed":13442342353453453453}'
    )
    best = dec(T.BestOfSequence, b'{"seed":18446744073709551615}')
    assert best.seed == 2**64 - 1


def test_quoted_seed_is_refused_with_its_path() -> None:
    """LoRAX never sends "seed":"42" (and refuses it in requests); we do not read it as a number either."""
    with pytest.raises(errors.ResponseDecodeError, match=r"StreamResponse\.details\.seed: expected an integer"):
        dec(T.StreamResponse, b'{"token":' + token_json() + b',"generated_text":"x","details":{"seed":"42"}}')


def test_i64_created_is_a_number() -> None:
    r = T.ChatCompletionResponse(created=2**62 + 1, object="text_completion")
    assert b'"created":4611686018427387905,' in enc(r)
    assert dec(T.ChatCompletionResponse, enc(r)).created == 2**62 + 1
    assert b'"created":-5,' in enc(T.ChatCompletionResponse(created=-5))


def test_usize_fields_are_numbers() -> None:
    params = T.GenerateParameters(best_of=2, truncate=4_000_000_000, max_new_tokens=4_294_967_295)
    assert enc(params) == b'{"best_of":2,"max_new_tokens":4294967295,"truncate":4000000000}'


# ---------------------------------------------------------------------------------------------
# Trap 2: snake_case keys only.


def _every_field_set_parameters() -> Any:
    return T.GenerateParameters(
        adapter_id="a",
        adapter_source="hub",
        merged_adapters=T.MergedAdapters(
            ids=["a"],
            weights=[1.0],
            merge_strategy=T.MergeStrategy.MERGE_STRATEGY_LINEAR,
            density=0.5,
            majority_sign_method=T.MajoritySignMethod.MAJORITY_SIGN_METHOD_FREQUENCY,
        ),
        api_token="t",
        best_of=1,
        temperature=0.5,
        repetition_penalty=1.0,
        frequency_penalty=0.0,
        presence_penalty=0.0,
        top_k=1,
        top_p=1.0,
        typical_p=0.5,
        do_sample=True,
        max_new_tokens=1,
        ignore_eos_token=True,
        return_full_text=True,
        stop=["s"],
        truncate=1,
        watermark=True,
        details=True,
        decoder_input_details=True,
        return_k_alternatives=1,
        apply_chat_template=True,
        seed=1,
        response_format=T.ResponseFormat(type=T.ResponseFormatType.RESPONSE_FORMAT_TYPE_TEXT, schema=None),
    )


def _keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [k for k, v in value.items() for k in [k, *_keys(v)]]
    if isinstance(value, list):
        return [k for v in value for k in _keys(v)]
    return []


def test_keys_are_the_proto_field_names() -> None:
    params = _every_field_set_parameters()
    printed = orjson.loads(enc(params))
    assert list(printed) == [f.name for f in proto_class(T.GenerateParameters).DESCRIPTOR.fields]  # all, in order
    assert list(printed) == list(T.GenerateParameters.__struct_fields__)
    keys = _keys(printed)
    assert keys, "nothing printed"
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", k) for k in keys), keys
    assert "maxNewTokens" not in enc(params).decode()


def test_camel_case_keys_are_not_read() -> None:
    """LoRAX ignores {"maxNewTokens":5}; so does our decoder (json_format would accept it)."""
    params = dec(T.GenerateParameters, b'{"maxNewTokens":5,"doSample":true,"max_new_tokens":7}')
    assert params.max_new_tokens == 7
    assert params.do_sample is None
    only_camel = dec(T.GenerateParameters, b'{"maxNewTokens":5}')
    assert only_camel.max_new_tokens is None


def test_renamed_wire_keys() -> None:
    """merged_adapters, ids, type, entity_group and "Function" are LoRAX's spellings."""
    assert (
        enc(T.GenerateParameters(merged_adapters=T.MergedAdapters(ids=["x"]))) == b'{"merged_adapters":{"ids":["x"]}}'
    )
    assert enc(T.Entity(entity_group="PER")) == b'{"entity_group":"PER","score":0.0,"word":"","start":0,"end":0}'
    choice = T.ToolChoice(choice=T.NamedToolChoice(function=T.FunctionName(name="f")))
    assert enc(choice) == b'{"Function":{"name":"f"}}'
    assert enc(chat(tool_choice=choice.choice)) == b'{"model":"","messages":[],"tool_choice":{"Function":{"name":"f"}}}'
    lower = dec(T.ToolChoice, b'{"function":{"name":"f"}}')
    assert type(lower.choice) is T.NamedToolChoice  # the object member
    assert lower.choice.function is None  # "function" is not LoRAX's "Function"


# ---------------------------------------------------------------------------------------------
# Trap 3: Defaults that must be printed.


def test_required_empty_strings_are_printed() -> None:
    assert enc(chat()) == b'{"model":"","messages":[]}'
    assert enc(T.CompletionRequest(model="", prompt="")) == b'{"model":"","prompt":""}'
    assert enc(T.EmbeddingsRequest(model="")) == b'{"model":""}'
    assert enc(T.GenerateRequest(inputs="")) == b'{"inputs":""}'
    assert enc(T.EmbedRequest(inputs="")) == b'{"inputs":""}'
    assert enc(T.TokenizeRequest(inputs="")) == b'{"inputs":""}'
    assert enc(T.ClassifyRequest(inputs="")) == b'{"inputs":""}'


@pytest.mark.parametrize(
    ("cls", "missing"),
    [
        (T.GenerateRequest, "inputs"),
        (T.ChatCompletionRequest, "model"),
        (T.CompletionRequest, "model"),
        (T.EmbedRequest, "inputs"),
        (T.ResponseFormat, "type"),
        (T.ChatMessage, "role"),
        (T.MergedAdapters, "ids"),
    ],
)
def test_required_request_fields_must_be_given(cls: type[Message], missing: str) -> None:
    with pytest.raises(TypeError, match=f"Missing required argument '{missing}'"):
        cls()


def test_zero_and_false_differ_from_absent_in_requests() -> None:
    assert enc(chat(temperature=0)) == b'{"model":"","messages":[],"temperature":0.0}'
    zeros = T.GenerateParameters(top_k=0, max_new_tokens=0, best_of=0, return_full_text=False, temperature=0.0)
    assert enc(zeros) == b'{"best_of":0,"temperature":0.0,"top_k":0,"max_new_tokens":0,"return_full_text":false}'
    assert enc(T.GenerateParameters()) == b"{}"
    assert enc(T.TokenizeRequest(inputs="x", add_special_tokens=False)) == b'{"inputs":"x","add_special_tokens":false}'
    assert enc(T.CompatGenerateRequest(inputs="x", stream=False)) == b'{"inputs":"x","stream":false}'


def test_response_defaults_are_printed() -> None:
    assert enc(T.Token()) == b'{"id":0,"text":"","logprob":null,"special":false,"skipped":false}'
    assert enc(T.Details()) == (
        b'{"finish_reason":"","prompt_tokens":0,"generated_tokens":0,"skipped_tokens":0,"seed":null,'
        b'"prefill":[],"tokens":[]}'
    )
    assert enc(T.CompletionChoice()) == b'{"index":0,"text":"","logprobs":null,"finish_reason":null}'
    assert enc(T.Usage(completion_tokens=0)) == b'{"prompt_tokens":0,"total_tokens":0,"completion_tokens":0}'
    assert enc(T.ChatCompletionStreamResponse()) == b'{"id":"","object":"","created":0,"model":"","choices":[]}'


# ---------------------------------------------------------------------------------------------
# Trap 4: null versus absent, per field, both ways.

# (message, exact bytes): unset fields print null or disappear exactly as LoRAX does.
NULL_OR_ABSENT = [
    (
        T.StreamResponse(token=T.Token(id=1, text="a", logprob=-1.0)),
        b'{"token":{"id":1,"text":"a","logprob":-1.0,"special":false,"skipped":false},'
        b'"generated_text":null,"details":null}',
    ),
    (T.GenerateResponse(generated_text="x"), b'{"generated_text":"x"}'),
    (
        T.StreamDetails(finish_reason="length", prompt_tokens=1, generated_tokens=1),
        b'{"finish_reason":"length","prompt_tokens":1,"generated_tokens":1,"seed":null}',
    ),
    (
        T.BestOfSequence(generated_text="x", finish_reason="length", generated_tokens=1),
        b'{"generated_text":"x","finish_reason":"length","generated_tokens":1,"seed":null,"prefill":[],"tokens":[]}',
    ),
    (T.PrefillToken(id=1, text="<s>"), b'{"id":1,"text":"<s>","logprob":null}'),
    (T.AlternativeToken(id=1, text="."), b'{"id":1,"text":".","logprob":null}'),
    (T.Usage(prompt_tokens=1, total_tokens=2), b'{"prompt_tokens":1,"total_tokens":2,"completion_tokens":null}'),
    (T.AssistantMessage(), b"{}"),
    (T.AssistantMessage(role="assistant", content=""), b'{"role":"assistant","content":""}'),
    (
        T.ToolCallFunction(name="f", arguments="{}"),
        b'{"description":null,"name":"f","arguments":"{}"}',
    ),
    (
        T.ChatCompletionStreamChoice(index=0, delta=T.AssistantMessage()),
        b'{"index":0,"delta":{},"finish_reason":null}',
    ),
    (
        T.CompletionStreamResponse(
            id="null", object="text_completion", model="null", usage=T.Usage(completion_tokens=0)
        ),
        b'{"id":"null","object":"text_completion","created":0,"model":"null","choices":[],'
        b'"usage":{"prompt_tokens":0,"total_tokens":0,"completion_tokens":0}}',
    ),
    (
        T.InfoResponse(model_id="m"),
        b'{"model_id":"m","model_sha":null,"model_dtype":"","model_device_type":"","model_pipeline_tag":null,'
        b'"max_concurrent_requests":0,"max_best_of":0,"max_stop_sequences":0,"max_input_length":0,'
        b'"max_total_tokens":0,"waiting_served_ratio":0.0,"max_batch_total_tokens":0,"max_waiting_tokens":0,'
        b'"validation_workers":0,"eager_prefill":false,"version":"","sha":null,"docker_label":null,'
        b'"request_logger_url":null}',
    ),
    (T.ChatMessage(role="user"), b'{"role":"user"}'),
]


@pytest.mark.parametrize(("message", "expected"), NULL_OR_ABSENT, ids=lambda x: type(x).__name__)
def test_null_or_absent_when_unset(message: Message, expected: bytes) -> None:
    assert enc(message) == expected
    assert dec(type(message), expected) == message


def test_omitted_keys_stay_omitted_on_reencode() -> None:
    token = dec(T.Token, token_json())
    assert token.alternative_tokens == []
    assert b"alternative_tokens" not in enc(token)
    details = dec(T.Details, b'{"finish_reason":"length","seed":null,"prefill":[],"tokens":[]}')
    assert b"best_of_sequences" not in enc(details)
    chunk = dec(
        T.ChatCompletionStreamResponse,
        b'{"id":"null","object":"chat.completion.chunk","created":0,"model":"null","choices":[]}',
    )
    assert chunk.usage is None
    assert b"usage" not in enc(chunk)


def test_null_and_absent_both_decode_to_unset() -> None:
    for body in (b'{"id":1}', b'{"id":1,"logprob":null}'):
        assert dec(T.Token, body).logprob is None
    for body in (b'{"token":{}}', b'{"token":{},"generated_text":null,"details":null}'):
        event = dec(T.StreamResponse, body)
        assert event.generated_text is None
        assert event.details is None
    for body in (b'{"inputs":"x","parameters":{}}', b'{"inputs":"x","parameters":{"adapter_id":null,"seed":null}}'):
        params = dec(T.GenerateRequest, body).parameters
        assert params.adapter_id is None
        assert params.seed is None
    assert dec(T.GenerateRequest, b'{"inputs":"x","parameters":null}').parameters is None
    assert dec(T.ChatMessage, b'{"role":"user","content":null}').content is None
    assert dec(T.Details, b'{"tokens":null}').tokens == []


def test_logprobs_null_is_unset() -> None:
    choice = dec(T.CompletionChoice, b'{"index":0,"text":"x","logprobs":null,"finish_reason":null}')
    assert choice.logprobs is None
    assert choice.finish_reason is None
    assert choice == T.CompletionChoice(text="x")


def test_empty_message_differs_from_unset_message() -> None:
    assert enc(T.GenerateRequest(inputs="x", parameters=T.GenerateParameters())) == b'{"inputs":"x","parameters":{}}'
    assert enc(T.StreamResponse(token=T.Token(), details=T.StreamDetails())).endswith(
        b'"generated_text":null,"details":{"finish_reason":"","prompt_tokens":0,"generated_tokens":0,"seed":null}}'
    )


# ---------------------------------------------------------------------------------------------
# Trap 5: Non-finite floats: null on the wire, never 0.0 when read.


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_print_as_null(value: float) -> None:
    assert enc(T.Token(id=1, logprob=value)) == b'{"id":1,"text":"","logprob":null,"special":false,"skipped":false}'
    assert enc(T.EmbedResponse(embeddings=[1.0, value])) == b'{"embeddings":[1.0,null]}'
    assert enc(T.MetricSample(key="k", value=value)) == b'{"key":"k","value":null}'  # an f64 field
    assert enc(T.Entity(score=value)) == b'{"entity_group":"","score":null,"word":"","start":0,"end":0}'


def test_f32_overflow_prints_as_null() -> None:
    """A double past f32's range is inf as an f32, which LoRAX prints as null."""
    assert enc(T.Token(logprob=-1e39)) == b'{"id":0,"text":"","logprob":null,"special":false,"skipped":false}'


def test_null_logprob_never_reads_as_zero() -> None:
    event = dec(T.StreamResponse, b'{"token":' + token_json(b"null") + b',"generated_text":null,"details":null}')
    assert event.token.logprob is None
    zero = dec(T.StreamResponse, b'{"token":' + token_json(b"0.0") + b',"generated_text":null,"details":null}')
    assert zero.token.logprob is not None
    assert zero.token.logprob == 0.0
    assert event != zero
    assert enc(event).count(b'"logprob":null') == 1
    assert enc(zero).count(b'"logprob":0.0') == 1


def test_null_inside_a_float_array_is_nan() -> None:
    r = dec(T.EmbedResponse, b'{"embeddings":[0.5,null,-1.0]}')
    assert r.embeddings[0] == 0.5
    assert math.isnan(r.embeddings[1])
    assert enc(r) == b'{"embeddings":[0.5,null,-1.0]}'


# ---------------------------------------------------------------------------------------------
# Trap 6: Float formatting: ryu's shortest f32 text (these were printed by Rust's ryu crate).

RYU_F32 = [
    (-0.34, "-0.34"),
    (-1.2e-05, "-0.000012"),
    (-3.5762787e-07, "-3.5762787e-7"),
    (1e13, "1e13"),
    (-1.0, "-1.0"),
    (0.0, "0.0"),
    (-0.0, "-0.0"),
    (1e-06, "0.000001"),
    (9.999999e-07, "9.999999e-7"),
    (1.2e13, "1.2e13"),
    (123456.79, "123456.79"),
    (0.1, "0.1"),
    (1 / 3, "0.33333334"),
    (16777216.0, "16777216.0"),
    (16777217.0, "16777216.0"),
    (1.401298464324817e-45, "1e-45"),
    (1.1754943508222875e-38, "1.1754944e-38"),
    (0.3, "0.3"),
    (100.0, "100.0"),
    (1e7, "10000000.0"),
    (1e12, "1000000000000.0"),
    (9999999999999.0, "1e13"),
    (-0.0625, "-0.0625"),
    (-0.2544, "-0.2544"),
    (1.2, "1.2"),
    (0.7, "0.7"),
    (1.1, "1.1"),
    (0.95, "0.95"),
    (-9.789, "-9.789"),
    (5e-324, "0.0"),  # underflows to zero as an f32
    (-1e-300, "-0.0"),
    (65504.0, "65504.0"),
    (4294967296.0, "4294967300.0"),
    (1.5e-05, "0.000015"),
]

# Values where a shorter decimal than Python's nearest-digit search exists: at a power of two
# the gap below is half the gap above (ryu prints the one-digit-shorter decimal above), and
# values near f32's largest finite value, where a rounded-up candidate overflows f32.
RYU_F32_EDGES = [
    (2.0**-96, "1.2621775e-29"),
    (2.0**87, "1.5474251e26"),
    (2.0**90, "1.2379401e27"),
    (3.4028234663852886e38, "3.4028235e38"),
    (-3.4028234663852886e38, "-3.4028235e38"),
    (3.4026e38, "3.4026e38"),
    (3.4028232635611926e38, "3.4028233e38"),
]


@pytest.mark.parametrize(("value", "text"), RYU_F32, ids=[t for _, t in RYU_F32])
def test_f32_text_matches_ryu(value: float, text: str) -> None:
    assert format_f32(value) == text
    assert format_f32(to_f32(value)) == text  # the f32 itself (what a decoded f32 holds) prints the same
    assert enc(T.AlternativeToken(logprob=value)) == b'{"id":0,"text":"","logprob":' + text.encode() + b"}"


@pytest.mark.parametrize(("value", "text"), RYU_F32_EDGES, ids=[t for _, t in RYU_F32_EDGES])
def test_f32_text_matches_ryu_at_the_edges(value: float, text: str) -> None:
    assert format_f32(value) == text
    assert (
        enc(T.Entity(score=value)) == b'{"entity_group":"","score":' + text.encode() + b',"word":"","start":0,"end":0}'
    )


def test_f32_text_reads_back_as_the_same_f32() -> None:
    for value, text in RYU_F32 + RYU_F32_EDGES:
        assert to_f32(float(text)) == to_f32(value)


def test_widened_f32_prints_short() -> None:
    """-0.34 held as an f32 is -0.3400000035762787 as a double; LoRAX prints -0.34."""
    widened = to_f32(-0.34)
    assert widened == -0.3400000035762787
    assert enc(T.Token(logprob=widened)) == b'{"id":0,"text":"","logprob":-0.34,"special":false,"skipped":false}'


def test_request_floats_print_as_the_double_given() -> None:
    """Request classes print with msgspec's encoder: the double itself, shortest (ryu) form.
    A widened f32 prints its double, which LoRAX parses back into the same f32."""
    params = T.GenerateParameters(temperature=to_f32(0.7), top_p=to_f32(0.95))
    assert enc(params) == b'{"temperature":0.699999988079071,"top_p":0.949999988079071}'
    assert [to_f32(v) for v in orjson.loads(enc(params)).values()] == [to_f32(0.7), to_f32(0.95)]
    assert enc(T.GenerateParameters(temperature=0.7, top_p=0.95)) == b'{"temperature":0.7,"top_p":0.95}'
    assert enc(T.GenerateParameters(temperature=1e-7)) == b'{"temperature":1e-7}'  # never 1e-07


F64_SERDE = [
    (3.0, "3.0"),
    (0.0, "0.0"),
    (-0.0, "-0.0"),
    (1.099, "1.099"),
    (0.00015000000000000001, "0.00015000000000000001"),
    (1e-5, "0.00001"),
    (1e-7, "1e-7"),
    (1e15, "1000000000000000.0"),
    (1e16, "1e16"),
    (1.5e16, "1.5e16"),
    (1.2345678901234568e17, "1.2345678901234568e17"),
    (1.7976931348623157e308, "1.7976931348623157e308"),
    (5e-324, "5e-324"),
]


@pytest.mark.parametrize(("value", "text"), F64_SERDE, ids=[t for _, t in F64_SERDE])
def test_f64_text_matches_serde_json(value: float, text: str) -> None:
    """serde_json prints an f64 with ryu: no "+" in the exponent (1e16, not 1e+16)."""
    assert enc(T.MetricSample(key="", value=value)) == b'{"key":"","value":' + text.encode() + b"}"


def test_f64_fields_print_like_serde_json() -> None:
    samples = [T.MetricSample(key="", value=v) for v in (3.0, 0.0, 1.099, 1e16, 1e-7, 0.00015000000000000001)]
    assert [orjson.loads(enc(s))["value"] for s in samples] == [3.0, 0.0, 1.099, 1e16, 1e-7, 0.00015000000000000001]
    assert enc(samples[0]) == b'{"key":"","value":3.0}'
    assert enc(samples[5]) == b'{"key":"","value":0.00015000000000000001}'


def test_integers_are_accepted_for_float_fields() -> None:
    """LoRAX accepts "temperature":1 for an f32; integral numbers read fine."""
    params = dec(T.GenerateParameters, b'{"temperature":1,"top_p":1,"repetition_penalty":2}')
    assert (params.temperature, params.top_p, params.repetition_penalty) == (1.0, 1.0, 2.0)
    assert enc(params) == b'{"temperature":1.0,"repetition_penalty":2.0,"top_p":1.0}'
    assert dec(T.Token, b'{"logprob":-1}').logprob == -1.0
    assert dec(T.EmbedResponse, b'{"embeddings":[1,-2,0]}').embeddings == [1.0, -2.0, 0.0]
    assert dec(T.ChatCompletionRequest, b'{"model":"","messages":[],"temperature":0}').temperature == 0.0
    assert type(dec(T.ChatCompletionRequest, b'{"model":"","messages":[],"temperature":0}').temperature) is float


def test_floats_are_refused_for_integer_fields() -> None:
    """LoRAX refuses "max_new_tokens":10.0 (422); we never print it and do not read it."""
    assert b"10.0" not in enc(T.GenerateParameters(max_new_tokens=10))
    with pytest.raises(errors.ResponseDecodeError, match=r"GenerateParameters\.max_new_tokens: expected an integer"):
        dec(T.GenerateParameters, b'{"max_new_tokens":10.0}')
    with pytest.raises(errors.ResponseDecodeError, match=r"StreamResponse\.token\.id: expected an integer"):
        dec(T.StreamResponse, b'{"token":{"id":1.0}}')


# ---------------------------------------------------------------------------------------------
# Trap 7: Enums in LoRAX's spelling.


def test_enums_print_lorax_spellings() -> None:
    merged = T.MergedAdapters(
        ids=["a", "b"],
        merge_strategy=T.MergeStrategy.MERGE_STRATEGY_DARE_TIES,
        majority_sign_method=T.MajoritySignMethod.MAJORITY_SIGN_METHOD_FREQUENCY,
    )
    assert enc(merged) == b'{"ids":["a","b"],"merge_strategy":"dare_ties","majority_sign_method":"frequency"}'
    spellings = {
        T.ResponseFormatType.RESPONSE_FORMAT_TYPE_TEXT: b"text",
        T.ResponseFormatType.RESPONSE_FORMAT_TYPE_JSON_OBJECT: b"json_object",
        T.ResponseFormatType.RESPONSE_FORMAT_TYPE_JSON_SCHEMA: b"json_schema",
    }
    for number, spelling in spellings.items():
        assert enc(T.ResponseFormat(type=number)) == b'{"type":"' + spelling + b'"}'
    strategies = [b"linear", b"ties", b"dare_linear", b"dare_ties"]
    for member, spelling in zip(T.MergeStrategy, strategies, strict=True):
        assert (
            enc(T.MergedAdapters(ids=[], merge_strategy=member)) == b'{"ids":[],"merge_strategy":"' + spelling + b'"}'
        )
        assert enc(T.MergedAdapters(ids=[], merge_strategy=spelling.decode())) == enc(
            T.MergedAdapters(ids=[], merge_strategy=member)
        )


@pytest.mark.parametrize(
    ("spelling", "member"),
    [
        ("json_object", T.ResponseFormatType.JSON_OBJECT),
        ("JsonObject", T.ResponseFormatType.JSON_OBJECT),
        ("JSON_OBJECT", T.ResponseFormatType.JSON_OBJECT),
        ("jsonobject", T.ResponseFormatType.JSON_OBJECT),
        ("Text", T.ResponseFormatType.TEXT),
        ("TEXT", T.ResponseFormatType.TEXT),
        ("JsonSchema", T.ResponseFormatType.JSON_SCHEMA),
        ("json_schema", T.ResponseFormatType.JSON_SCHEMA),
        ("RESPONSE_FORMAT_TYPE_JSON_SCHEMA", T.ResponseFormatType.JSON_SCHEMA),  # the proto name (json_format)
    ],
)
def test_enum_spellings_decode(spelling: str, member: T.ResponseFormatType) -> None:
    rf = dec(T.ResponseFormat, b'{"type":"' + spelling.encode() + b'"}')
    assert rf.type is member
    assert rf.type == member.value


@pytest.mark.parametrize("spelling", ["nonsense", ""])
def test_unknown_spelling_of_a_required_enum_is_refused(spelling: str) -> None:
    """ResponseFormat.type has no "unset": LoRAX answers 422, and we name the field."""
    with pytest.raises(
        errors.ResponseDecodeError, match=r"ResponseFormat\.type: expected one of text, json_object, json_schema"
    ):
        dec(T.ResponseFormat, b'{"type":"' + spelling.encode() + b'"}')


def test_merge_strategy_decodes_case_insensitively() -> None:
    cases = [
        ("TIES", T.MergeStrategy.TIES),
        ("Dare_Linear", T.MergeStrategy.DARE_LINEAR),
        ("linear", T.MergeStrategy.LINEAR),
        ("DARE_TIES", T.MergeStrategy.DARE_TIES),
        ("bogus", None),  # a spelling from a newer server: unset, never a wrong strategy
    ]
    for spelling, member in cases:
        merged = dec(T.MergedAdapters, b'{"ids":["a"],"merge_strategy":"' + spelling.encode() + b'"}')
        assert merged.merge_strategy is member


def test_unspecified_enum_cannot_be_sent() -> None:
    with pytest.raises(errors.InvalidRequestError, match=r"^type=0 is not one of: json_object, json_schema, text$"):
        T.ResponseFormat(type=0)
    with pytest.raises(TypeError, match="type"):
        T.GenerateRequest(inputs="x", parameters=T.GenerateParameters(response_format=T.ResponseFormat(schema={})))
    with pytest.raises(errors.InvalidRequestError, match="type"):
        T.GenerateRequest(inputs="x", parameters={"response_format": {"type": "MERGE_STRATEGY_UNSPECIFIED"}})
    with pytest.raises(errors.InvalidRequestError, match="merge_strategy"):
        T.MergedAdapters(ids=["a"], merge_strategy="MERGE_STRATEGY_UNSPECIFIED")
    with pytest.raises(errors.InvalidRequestError, match="majority_sign_method"):
        T.MergedAdapters(ids=["a"], majority_sign_method=7)  # an enum number is not a spelling


def test_invalid_request_error_is_a_validation_error_without_status() -> None:
    with pytest.raises(errors.ValidationError) as info:
        T.ChatResponseFormat(type="bogus")
    assert isinstance(info.value, errors.InvalidRequestError)
    assert info.value.status_code is None


def test_finish_reasons_are_open_strings() -> None:
    for reason in ("length", "eos_token", "stop_sequence", "something_newer"):
        details = dec(T.StreamDetails, b'{"finish_reason":"' + reason.encode() + b'","seed":null}')
        assert details.finish_reason == reason
        assert enc(details).startswith(b'{"finish_reason":"' + reason.encode() + b'",')
    for reason in ("stop", "length", "content_filter", "tool_calls"):
        choice = dec(T.ChatCompletionChoice, b'{"index":0,"message":{},"finish_reason":"' + reason.encode() + b'"}')
        assert choice.finish_reason == reason
    assert T.FinishReason.FINISH_REASON_EOS_TOKEN is T.FinishReason.EOS_TOKEN
    assert T.FinishReason("eos_token").name == "EOS_TOKEN"
    assert b"FINISH_REASON" not in enc(dec(T.StreamDetails, b'{"finish_reason":"eos_token"}'))


# ---------------------------------------------------------------------------------------------
# Trap 8: Free-form JSON: spliced byte for byte, integers stay integers, order is kept.

# Compact JSON texts as serde_json prints them: the parsed value is held, printed back to the
# very same text, and read back into the very same value.
FREE_FORM = [
    '{"maxLength":10}',
    '{"big":9007199254740993,"neg":-9223372036854775808,"u64":18446744073709551615}',
    '{"z":1,"a":2,"m":{"y":[1,2.5,"3",null,true,false],"b":{}}}',
    '{"minimum":0.1,"maximum":1e300,"exp":1.5e-7,"neg0":-0.0,"big":1.5e16,"tiny":5e-324}',
    '{"title":"caf\u00e9 \\" \\\\ \\n e+1 \u2028"}',
    "[]",
    '"just a string"',
    "12",
    "true",
]


@pytest.mark.parametrize("schema", FREE_FORM)
def test_response_format_schema_prints_exactly(schema: str) -> None:
    value = msgspec.json.decode(schema)
    rf = T.ResponseFormat(type=T.ResponseFormatType.RESPONSE_FORMAT_TYPE_JSON_OBJECT, schema=value)
    body = b'{"type":"json_object","schema":' + schema.encode() + b"}"
    assert enc(rf) == body
    back = dec(T.ResponseFormat, body)
    assert back.schema == value
    assert type(back.schema) is type(value)
    assert enc(back) == body


@pytest.mark.parametrize("schema", FREE_FORM)
def test_tool_parameters_print_exactly(schema: str) -> None:
    value = msgspec.json.decode(schema)
    fn = T.FunctionDefinition(name="f", parameters=value)
    body = b'{"name":"f","parameters":' + schema.encode() + b"}"
    assert enc(fn) == body
    assert dec(T.FunctionDefinition, body).parameters == value


# Texts that are valid JSON but not in serde_json's form: read into a value, printed back the way
# LoRAX itself re-prints them (`Value::to_string()`: compact, raw UTF-8, shortest floats).
NON_CANONICAL = [
    ('{ "a" : 1 ,\n "b": [ ] }', '{"a":1,"b":[]}'),
    ('{"t":"\\u00e9\\/"}', '{"t":"\u00e9/"}'),
    ('{"n":1E5,"m":1.50e2,"k":12e20}', '{"n":100000.0,"m":150.0,"k":1.2e21}'),
]


@pytest.mark.parametrize(("text", "canonical"), NON_CANONICAL)
def test_non_canonical_free_form_is_read_and_printed_canonically(text: str, canonical: str) -> None:
    body = b'{"name":"f","parameters":' + text.encode() + b"}"
    back = dec(T.FunctionDefinition, body)
    assert back.parameters == orjson.loads(text)
    assert enc(back) == b'{"name":"f","parameters":' + canonical.encode() + b"}"
    assert orjson.loads(canonical) == orjson.loads(text)


def test_free_form_json_read_from_the_wire_keeps_order_and_integers() -> None:
    body = b'{"name":"f","parameters":{"b":{"maxLength":10},"a":9007199254740993,"c":[1.0,2]}}'
    fn = dec(T.FunctionDefinition, body)
    assert fn.parameters == {"b": {"maxLength": 10}, "a": 9007199254740993, "c": [1.0, 2]}
    assert list(fn.parameters) == ["b", "a", "c"]
    assert [type(v) for v in fn.parameters["c"]] == [float, int]
    assert enc(fn) == body


def test_json_text_is_parsed_and_other_strings_are_json_strings() -> None:
    """Object or array text (what the 0.8 API took) is parsed; any other string is a JSON string."""
    fn = T.FunctionDefinition(name="f", parameters='{ "a" : 1 }')
    assert fn.parameters == {"a": 1}
    assert enc(fn) == b'{"name":"f","parameters":{"a":1}}'
    assert T.ResponseFormat(type="json_object", schema=" [1, 2.5]").schema == [1, 2.5]
    for value in ("just a string", "12", "true", "null", ""):
        rf = T.ResponseFormat(type="json_object", schema=value)
        assert rf.schema == value  # not 12, True or None
        body = b'{"type":"json_object","schema":' + orjson.dumps(value) + b"}"
        assert enc(rf) == body
        assert dec(T.ResponseFormat, body) == rf
        assert T.ResponseFormat.from_proto(rf.to_proto()) == rf


def test_schema_absent_versus_null() -> None:
    """Absent: LoRAX forces arbitrary JSON. null: no constraint. They print differently."""
    absent = T.ResponseFormat(type=T.ResponseFormatType.RESPONSE_FORMAT_TYPE_TEXT)
    null = T.ResponseFormat(type=T.ResponseFormatType.RESPONSE_FORMAT_TYPE_TEXT, schema=None)
    assert absent.schema is UNSET
    assert absent != null
    assert enc(absent) == b'{"type":"text"}'
    assert enc(null) == b'{"type":"text","schema":null}'
    read_null = dec(T.ResponseFormat, b'{"type":"text","schema":null}')
    assert read_null.schema is None
    assert read_null == null
    assert dec(T.ResponseFormat, b'{"type":"text"}').schema is UNSET
    assert dec(T.ChatResponseFormat, b'{"type":"json_object","schema":null}').schema is None
    assert dec(T.JsonSchema, b'{"name":"n"}').schema is UNSET
    # Through the upb twin too (a binary frame): null stays null, absent stays absent.
    assert T.ResponseFormat.from_proto(null.to_proto()) == null
    assert T.ResponseFormat.from_proto(absent.to_proto()) == absent


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        (object(), "schema: cannot be written as JSON: object is not a JSON type"),
        ({"a": 1 + 2j}, "schema: cannot be written as JSON: complex is not a JSON type"),
        ({1: "a"}, "schema: cannot be written as JSON: key 1 is not a string"),
        ({"minimum": math.nan}, "schema: cannot be written as JSON: nan is not finite"),
        ([1.0, math.inf], "schema: cannot be written as JSON: inf is not finite"),
        ("{", "schema: not valid JSON text"),
        ('{"a":}', "schema: not valid JSON text"),
        ("{'a':1}", "schema: not valid JSON text"),
        ('{"a":1} x', "schema: not valid JSON text"),
        ("[NaN]", "schema: not valid JSON text"),
    ],
)
def test_invalid_free_form_json_is_refused(bad: Any, where: str) -> None:
    with pytest.raises(errors.InvalidRequestError, match=f"^{re.escape(where)}"):
        T.ResponseFormat(type=T.ResponseFormatType.RESPONSE_FORMAT_TYPE_TEXT, schema=bad)
    with pytest.raises(errors.InvalidRequestError, match=f"^{re.escape(where.replace('schema', 'parameters'))}"):
        T.FunctionDefinition(name="f", parameters=bad)
    with pytest.raises(errors.InvalidRequestError, match="parameters"):
        chat(tools=[{"type": "function", "function": {"name": "f", "parameters": bad}}])


def test_tool_call_arguments_are_a_json_string() -> None:
    call = T.ToolCall(id="0", type="function", function=T.ToolCallFunction(name="f", arguments='{"b":1,"a":2}'))
    expected = b'{"id":"0","type":"function","function":{"description":null,"name":"f",'
    expected += b'"arguments":"{\\"b\\":1,\\"a\\":2}"}}'
    assert enc(call) == expected


def test_logit_bias_is_a_map_of_floats() -> None:
    req = T.CompletionRequest(model="", prompt="p", logit_bias={"50256": -100.0})
    assert enc(req) == b'{"model":"","prompt":"p","logit_bias":{"50256":-100.0}}'
    assert dec(T.CompletionRequest, b'{"model":"","prompt":"p","logit_bias":{"1":-0.34,"2":5}}').logit_bias == {
        "1": -0.34,
        "2": 5.0,
    }
    assert enc(T.CompletionRequest(model="", prompt="")) == b'{"model":"","prompt":""}'  # omit_empty


# ---------------------------------------------------------------------------------------------
# Trap 9: String versus list (oneofs).


def test_chat_content_string_or_chunks() -> None:
    text = T.ChatMessage(role="user", content="hi")
    assert enc(text) == b'{"role":"user","content":"hi"}'
    empty = T.ChatMessage(role="user", content="")
    assert enc(empty) == b'{"role":"user","content":""}'
    parts = T.ChatMessage(
        role="user",
        content=[
            T.ContentPart(type="text", text="a"),
            T.ContentPart(type="image_url", image_url=T.ImageUrl(url="data:image/png;base64,AAAA")),
        ],
    )
    parts_json = (
        b'{"role":"user","content":[{"type":"text","text":"a"},'
        b'{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}'
    )
    assert enc(parts) == parts_json
    no_parts = T.ChatMessage(role="user", content=[])
    assert enc(no_parts) == b'{"role":"user","content":[]}'
    for message, body in ((text, enc(text)), (empty, enc(empty)), (parts, parts_json), (no_parts, enc(no_parts))):
        back = dec(T.ChatMessage, body)
        assert back == message
        assert type(back.content) is type(message.content)
        assert T.ChatMessage.from_proto(message.to_proto()) == message


def test_tool_choice_string_or_function_object() -> None:
    for mode in ("auto", "none", "get_weather", "required"):
        req = chat(tool_choice=mode)
        body = b'{"model":"","messages":[],"tool_choice":"' + mode.encode() + b'"}'
        assert enc(req) == body
        assert dec(T.ChatCompletionRequest, body).tool_choice == mode
    named = chat(tool_choice=T.NamedToolChoice(function=T.FunctionName(name="get_weather")))
    body = b'{"model":"","messages":[],"tool_choice":{"Function":{"name":"get_weather"}}}'
    assert enc(named) == body
    back = dec(T.ChatCompletionRequest, body)
    assert type(back.tool_choice) is T.NamedToolChoice
    assert back.tool_choice.function.name == "get_weather"
    assert back == named
    assert dec(T.ChatCompletionRequest, b'{"model":"","messages":[],"tool_choice":null}').tool_choice is None


def test_embeddings_input_string_or_list() -> None:
    one = T.EmbeddingsRequest(model="m", input="a")
    many = T.EmbeddingsRequest(model="m", input=["a", "b"])
    assert enc(one) == b'{"input":"a","model":"m"}'
    assert enc(many) == b'{"input":["a","b"],"model":"m"}'
    assert dec(T.EmbeddingsRequest, b'{"model":"m","input":"a"}') == one
    assert dec(T.EmbeddingsRequest, b'{"model":"m","input":["a","b"]}') == many
    assert dec(T.EmbeddingsRequest, b'{"model":"m","input":[]}').input == []


def test_wrong_json_type_for_a_oneof_is_refused_with_its_path() -> None:
    with pytest.raises(errors.ResponseDecodeError, match=r"ChatMessage\.content"):
        dec(T.ChatMessage, b'{"role":"user","content":5}')
    with pytest.raises(errors.ResponseDecodeError, match=r"EmbeddingsRequest\.input\[1\]"):
        dec(T.EmbeddingsRequest, b'{"input":["a",1]}')
    with pytest.raises(errors.ResponseDecodeError, match=r"ToolChoice"):
        dec(T.ToolChoice, b"5")


def test_stop_is_always_a_list() -> None:
    assert enc(T.GenerateParameters(stop=["\n"])) == b'{"stop":["\\n"]}'
    assert enc(chat(stop=["x"])) == b'{"model":"","messages":[],"stop":["x"]}'
    with pytest.raises(errors.ResponseDecodeError, match=r"GenerateParameters\.stop: expected an array"):
        dec(T.GenerateParameters, b'{"stop":"\\n"}')


def test_a_string_is_not_a_list_of_strings() -> None:
    """/classify_batch takes a list; a string must not turn into a list of its characters."""
    with pytest.raises(errors.ResponseDecodeError, match=r"ClassifyBatchRequest\.inputs: expected an array"):
        dec(T.ClassifyBatchRequest, b'{"inputs":"abc"}')
    with pytest.raises(errors.ResponseDecodeError, match=r"ClassifyBatchRequest\.inputs: expected an array"):
        dec(T.ClassifyBatchRequest, b'{"inputs":{"a":1}}')
    with pytest.raises(errors.ResponseDecodeError, match=r"TokenizeRequest\.inputs: expected a string"):
        dec(T.TokenizeRequest, b'{"inputs":["a"]}')


# ---------------------------------------------------------------------------------------------
# Trap 10: Bare top-level arrays.


def test_bare_arrays_both_ways() -> None:
    entity = T.Entity(entity_group="PER", score=0.5, word="w", start=0, end=1)
    entity_json = b'{"entity_group":"PER","score":0.5,"word":"w","start":0,"end":1}'
    cases: list[tuple[Message, bytes]] = [
        (T.ClassifyResponse(entities=[entity]), b"[" + entity_json + b"]"),
        (
            T.ClassifyBatchResponse(results=[[entity], []]),
            b"[[" + entity_json + b"],[]]",
        ),
        (T.TokenizeResponse(tokens=[T.SimpleToken(id=1, text="<s>")]), b'[{"id":1,"text":"<s>","start":0,"stop":0}]'),
        (T.CompatGenerateResponse(responses=[T.GenerateResponse(generated_text="x")]), b'[{"generated_text":"x"}]'),
        (T.ClassifyResponse(), b"[]"),
        (T.StringList(values=["a"]), b'["a"]'),
    ]
    for message, body in cases:
        assert enc(message) == body
        assert dec(type(message), body) == message


def test_an_object_where_a_bare_array_belongs_is_refused() -> None:
    with pytest.raises(errors.ResponseDecodeError, match=r"ClassifyResponse: expected an array"):
        dec(T.ClassifyResponse, b'{"entities":[]}')
    with pytest.raises(errors.ResponseDecodeError, match=r"TokenizeResponse\[0\]: expected an object"):
        dec(T.TokenizeResponse, b"[null]")


# ---------------------------------------------------------------------------------------------
# Trap 11: OpenAI look-alikes that are not OpenAI.


def test_v1_embeddings_shape() -> None:
    r = T.EmbeddingsResponse(embeddings=[T.Embedding(index=0, embedding=[0.5], object="embedding")])
    assert enc(r) == b'{"embeddings":[{"index":0,"embedding":[0.5],"object":"embedding"}]}'
    openai_shape = b'{"object":"list","data":[{"index":0,"embedding":[0.5],"object":"embedding"}],"model":"m"}'
    assert dec(T.EmbeddingsResponse, openai_shape) == T.EmbeddingsResponse()  # unknown keys, nothing read


def test_final_eos_chat_delta_is_an_empty_object() -> None:
    chunk = T.ChatCompletionStreamResponse(
        id="null",
        object="chat.completion.chunk",
        model="null",
        choices=[T.ChatCompletionStreamChoice(index=0, delta=T.AssistantMessage(), finish_reason="stop")],
        usage=T.Usage(prompt_tokens=15, total_tokens=23, completion_tokens=8),
    )
    assert enc(chunk) == (
        b'{"id":"null","object":"chat.completion.chunk","created":0,"model":"null","choices":[{"index":0,'
        b'"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":15,"total_tokens":23,"completion_tokens":8}}'
    )


# ---------------------------------------------------------------------------------------------
# Trap 12: Optional versus defaulted booleans.


def test_optional_booleans_print_when_set() -> None:
    assert enc(T.GenerateParameters(return_full_text=False)) == b'{"return_full_text":false}'
    assert enc(T.GenerateParameters(return_full_text=True)) == b'{"return_full_text":true}'
    assert enc(T.CompletionRequest(model="", prompt="", echo=False)) == b'{"model":"","prompt":"","echo":false}'
    assert dec(T.GenerateParameters, b'{"return_full_text":false}').return_full_text is False
    assert dec(T.GenerateParameters, b"{}").return_full_text is None


# ---------------------------------------------------------------------------------------------
# Trap 13: Inputs that crash the server: only known merge strategies can be spelled.


def test_only_known_merge_strategies_can_be_sent() -> None:
    for bad in (0, 5, 99, "bogus", "", "MERGE_STRATEGY_UNSPECIFIED"):
        with pytest.raises(errors.InvalidRequestError, match="merge_strategy"):
            T.GenerateParameters(merged_adapters=T.MergedAdapters(ids=["a"], merge_strategy=bad))
        with pytest.raises(errors.InvalidRequestError, match="merge_strategy"):
            T.GenerateParameters(merged_adapters={"ids": ["a"], "merge_strategy": bad})


def test_string_escaping_matches_serde_json() -> None:
    """Control characters are escaped with lowercase hex; non-ASCII is raw UTF-8."""
    token = T.Token(text='\x00\x1f\n\r\t\b\f"\\/é€😀\u2028')
    expected_text = '"\\u0000\\u001f\\n\\r\\t\\b\\f\\"\\\\/é€😀\u2028"'.encode()
    assert enc(token) == b'{"id":0,"text":' + expected_text + b',"logprob":null,"special":false,"skipped":false}'
    assert dec(T.Token, enc(token)).text == token.text


# ---------------------------------------------------------------------------------------------
# Trap 14: Error bodies wherever a message was expected (status 200 inside streams).

ERROR_CLASSES = {
    "validation": errors.ValidationError,
    "generation": errors.GenerationError,
    "overloaded": errors.OverloadedError,
    "incomplete_generation": errors.IncompleteGenerationError,
    "template_error": errors.TemplateError,
    "tool_error": errors.ToolError,
    "missing_template_variable": errors.MissingTemplateVariableError,
    "embedding_failure": errors.EmbeddingFailureError,
    "classification_failure": errors.ClassificationFailureError,
    "healthcheck": errors.UnhealthyError,
    "no fast tokenizer": errors.NotFoundError,
    "failed healthcheck": errors.UnknownError,
    "something_newer": errors.UnknownError,
}


def _response_types() -> list[type[Message]]:
    """Every route's output type, the nested stream types, and the bare-array types."""
    types: dict[str, type[Message]] = {}
    for route in M.ROUTES:
        types[route.output_type.__name__] = route.output_type
    for extra in (T.MetricFamilies, T.GenerateResponse, T.Token, T.Details):
        types[extra.__name__] = extra
    return [types[k] for k in sorted(types)]


RESPONSE_TYPES = _response_types()


def _examples() -> dict[str, dict[str, Any]]:
    from pathlib import Path

    path = Path(__file__).resolve().parent / "fixtures" / "wire-examples.json"
    examples: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return examples


ERROR_BODIES = sorted(
    (key, json.dumps(ex["body"], separators=(",", ":"), ensure_ascii=False).encode())
    for key, ex in _examples().items()
    if isinstance(ex.get("body"), dict) and set(ex["body"]) == {"error", "error_type"}
)


def test_error_examples_are_found() -> None:
    assert len(ERROR_BODIES) >= 17
    assert {orjson.loads(b)["error_type"] for _, b in ERROR_BODIES} >= set(ERROR_CLASSES) - {"something_newer"}


def test_response_types_include_bare_arrays_and_stream_events() -> None:
    names = {cls.__name__ for cls in RESPONSE_TYPES}
    assert {
        "ClassifyResponse",
        "ClassifyBatchResponse",
        "TokenizeResponse",
        "CompatGenerateResponse",
        "StreamResponse",
        "CompletionStreamResponse",
        "ChatCompletionStreamResponse",
        "MetricFamilies",
    } <= names


@pytest.mark.parametrize("cls", RESPONSE_TYPES, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("key", "body"), ERROR_BODIES, ids=[k for k, _ in ERROR_BODIES])
def test_error_body_raises_for_every_response_type(cls: type[Message], key: str, body: bytes) -> None:
    payload = orjson.loads(body)
    with pytest.raises(errors.APIStatusError) as info:
        dec(cls, body)
    err = info.value
    assert type(err) is ERROR_CLASSES[payload["error_type"]]
    assert err.status_code is None
    assert err.message == payload["error"]
    assert err.error_type == payload["error_type"]


@pytest.mark.parametrize("error_type", sorted(ERROR_CLASSES))
def test_error_types_map_to_classes(error_type: str) -> None:
    body = orjson.dumps({"error": "boom", "error_type": error_type})
    for cls in (T.StreamResponse, T.ClassifyResponse, T.ChatCompletionStreamResponse):
        with pytest.raises(ERROR_CLASSES[error_type]) as info:
            dec(cls, body)
        assert type(info.value) is ERROR_CLASSES[error_type]
        assert info.value.status_code is None


def test_error_event_is_not_swallowed_by_unknown_key_tolerance() -> None:
    """An error event decoded as a StreamResponse would be an empty event; it must raise."""
    with pytest.raises(errors.GenerationError):
        dec(T.StreamResponse, b'{"error":"Request failed during generation: x","error_type":"generation"}')
    with pytest.raises(errors.UnknownError):
        dec(T.StreamResponse, b'{"error":"no type"}')


def test_error_body_laid_out_otherwise_raises() -> None:
    """The decoder reads an error body as the class's empty message, then looks again: any layout raises."""
    with pytest.raises(errors.GenerationError) as info:
        dec(T.StreamResponse, b'{ "error_type": "generation",\n  "error": "Request failed during generation: x" }')
    assert info.value.message == "Request failed during generation: x"
    with pytest.raises(errors.OverloadedError):
        dec(T.GenerateResponse, '{"error_type":"overloaded","error":"Model is overloaded"}')
    # An empty but legal message still decodes (through the same second look).
    assert dec(T.StreamResponse, b"{}") == T.StreamResponse()
    assert dec(T.StreamResponse, b'{"token":null,"generated_text":null,"details":null}') == T.StreamResponse()


def test_openai_shaped_error_object_raises() -> None:
    with pytest.raises(errors.ValidationError) as info:
        dec(T.ChatCompletionStreamResponse, b'{"error":{"message":"bad","type":"validation"}}')
    assert info.value.message == "bad"
    assert info.value.status_code is None


def test_error_response_itself_decodes() -> None:
    body = b'{"error":"Model is overloaded","error_type":"overloaded"}'
    err = dec(T.ErrorResponse, body)
    assert (err.error, err.error_type) == ("Model is overloaded", "overloaded")
    assert enc(err) == body


# ---------------------------------------------------------------------------------------------
# Forward and backward compatibility: unknown keys, missing keys.


def test_tgi_token_without_skipped_parses() -> None:
    event = dec(T.StreamResponse, b'{"token":{"id":1,"text":"a","logprob":-0.5,"special":false},"generated_text":null}')
    assert (event.token.id, event.token.text, event.token.logprob, event.token.skipped) == (1, "a", -0.5, False)
    assert event.details is None


def test_unknown_keys_are_ignored_at_every_level() -> None:
    body = (
        b'{"generated_text":"x","new_top":[1,{"a":null}],"details":{"finish_reason":"length","prompt_tokens":1,'
        b'"generated_tokens":1,"skipped_tokens":0,"seed":5,"new_details":{"x":1},"prefill":[{"id":1,"text":"a",'
        b'"logprob":null,"top":3}],"tokens":[{"id":2,"text":"b","logprob":-1.0,"special":false,'
        b'"top_tokens":[{"id":3}],"skipped":false,"zz":null}]}}'
    )
    r = dec(T.GenerateResponse, body)
    assert r.details.seed == 5
    assert r.details.prefill[0].logprob is None
    assert r.details.tokens[0].logprob == -1.0
    assert enc(r) == (
        b'{"generated_text":"x","details":{"finish_reason":"length","prompt_tokens":1,"generated_tokens":1,'
        b'"skipped_tokens":0,"seed":5,"prefill":[{"id":1,"text":"a","logprob":null}],"tokens":[{"id":2,'
        b'"text":"b","logprob":-1.0,"special":false,"skipped":false}]}}'
    )
    event = dec(
        T.StreamResponse,
        b'{"token":' + token_json(extra=b',"top_tokens":[]') + b',"generated_text":null,"details":null,"x":{}}',
    )
    assert event == dec(T.StreamResponse, b'{"token":' + token_json() + b',"generated_text":null,"details":null}')
    chat_request = dec(
        T.ChatCompletionRequest,
        b'{"model":"","messages":[{"role":"user","content":"hi","tool_call_id":"9","x":1}],"stream_options":{}}',
    )
    assert chat_request == chat(messages=[T.ChatMessage(role="user", content="hi")])


def test_missing_fields_are_tolerated() -> None:
    assert dec(T.StreamResponse, b"{}") == T.StreamResponse()
    assert dec(T.GenerateResponse, b'{"details":{}}') == T.GenerateResponse(details=T.Details())
    assert dec(T.ChatCompletionResponse, b'{"choices":[{}]}').choices[0].message is None
    assert dec(T.InfoResponse, b'{"model_id":"m"}').model_sha is None


# ---------------------------------------------------------------------------------------------
# Decode errors.


@pytest.mark.parametrize("data", [b"", b"nul", b"{", b'{"token":}', b"\xff", b'{"a":1} x', b"NaN"])
@pytest.mark.parametrize(
    "cls", [T.StreamResponse, T.ClassifyResponse, T.ChatCompletionResponse], ids=lambda c: c.__name__
)
def test_invalid_json_raises_naming_the_type(cls: type[Message], data: bytes) -> None:
    with pytest.raises(errors.ResponseDecodeError, match=rf"^{cls.__name__}: invalid JSON") as info:
        dec(cls, data)
    assert isinstance(info.value, errors.ProtocolError)
    assert info.value.status_code is None


WRONG_TYPES = [
    (T.StreamResponse, b'{"token":{"id":"1"}}', r"StreamResponse\.token\.id: expected an integer, got a string"),
    (T.StreamResponse, b'{"token":{"text":5}}', r"StreamResponse\.token\.text: expected a string, got a number"),
    (T.StreamResponse, b'{"token":{"special":"no"}}', r"StreamResponse\.token\.special: expected a boolean"),
    (T.StreamResponse, b'{"token":{"logprob":"x"}}', r"StreamResponse\.token\.logprob: expected a number"),
    (T.StreamResponse, b'{"token":[]}', r"StreamResponse\.token: expected an object"),
    (T.StreamResponse, b"[]", r"StreamResponse: expected an object"),
    (T.StreamResponse, b'"x"', r"StreamResponse: expected an object"),
    (T.GenerateResponse, b'{"details":{"tokens":[{"id":1},7]}}', r"GenerateResponse\.details\.tokens\[1\]"),
    (T.GenerateResponse, b'{"details":{"prefill":{"a":1}}}', r"GenerateResponse\.details\.prefill: expected an array"),
    (T.ClassifyResponse, b'[{"score":"high"}]', r"ClassifyResponse\[0\]\.score: expected a number"),
    (
        T.ClassifyBatchResponse,
        b'[[{"start":1}],[{"start":-1.5}]]',
        r"ClassifyBatchResponse\[1\]\[0\]\.start: expected an integer",
    ),
    (T.ChatCompletionResponse, b'{"choices":[{"message":{"tool_calls":[{"id":0}]}}]}', r"choices\[0\]\.message"),
    (T.ChatCompletionStreamResponse, b'{"usage":{"prompt_tokens":true}}', r"usage\.prompt_tokens"),
    (T.EmbedResponse, b'{"embeddings":[1,"2"]}', r"EmbedResponse\.embeddings\[1\]: expected a number"),
    (T.CompletionRequest, b'{"logit_bias":{"1":"x"}}', r"CompletionRequest\.logit_bias\.1: expected a number"),
    (T.CompletionRequest, b'{"logit_bias":"x"}', r"CompletionRequest\.logit_bias: expected an object"),
    (T.ResponseFormat, b'{"type":1.5}', r"ResponseFormat\.type: expected a lorax\.v1\.ResponseFormatType string"),
    (T.InfoResponse, b'{"max_best_of":null,"eager_prefill":"yes"}', r"InfoResponse\.eager_prefill: expected a boolean"),
]


@pytest.mark.parametrize(("cls", "data", "pattern"), WRONG_TYPES, ids=[p for _, _, p in WRONG_TYPES])
def test_wrong_types_raise_naming_the_path(cls: type[Message], data: bytes, pattern: str) -> None:
    with pytest.raises(errors.ResponseDecodeError, match=pattern):
        dec(cls, data)


OUT_OF_RANGE = [
    (T.StreamResponse, b'{"token":{"id":-1}}', r"StreamResponse\.token\.id"),
    (T.StreamResponse, b'{"token":{"id":4294967296}}', r"StreamResponse\.token\.id"),
    (T.StreamDetails, b'{"seed":-1}', r"StreamDetails\.seed"),
    (T.ChatCompletionChoice, b'{"index":2147483648}', r"ChatCompletionChoice\.index"),
    (T.CompletionResponse, b'{"created":9223372036854775808}', r"CompletionResponse\.created"),
]


@pytest.mark.parametrize(("cls", "data", "path"), OUT_OF_RANGE, ids=[p for _, _, p in OUT_OF_RANGE])
def test_out_of_range_integers_raise_naming_the_path(cls: type[Message], data: bytes, path: str) -> None:
    with pytest.raises(errors.ResponseDecodeError, match=path):
        dec(cls, data)


def test_integer_ranges_at_the_limits_decode() -> None:
    assert dec(T.Token, b'{"id":4294967295}').id == 2**32 - 1
    assert dec(T.ChatCompletionChoice, b'{"index":-2147483648}').index == -(2**31)
    assert dec(T.CompletionResponse, b'{"created":-9223372036854775808}').created == -(2**63)
    assert dec(T.StreamDetails, b'{"seed":18446744073709551615}').seed == 2**64 - 1


def test_field_kinds_of_every_message_are_known() -> None:
    """The codec handles every field type used by the protos (no bytes, no groups)."""
    from lorax._message import (
        KIND_BOOL,
        KIND_ENUM,
        KIND_FLOAT,
        KIND_INT,
        KIND_MESSAGE,
        KIND_ONEOF,
        KIND_OPEN_ENUM,
        KIND_RAW,
        KIND_STRING,
    )
    from lorax.v1 import embed_pb2, generate_pb2, openai_pb2, server_pb2, tokenize_pb2

    seen = set()
    for module in (generate_pb2, embed_pb2, openai_pb2, server_pb2, tokenize_pb2):
        for descriptor in module.DESCRIPTOR.message_types_by_name.values():
            seen.update(f.type for f in descriptor.fields)
    assert FieldDescriptor.TYPE_BYTES not in seen
    assert FieldDescriptor.TYPE_GROUP not in seen
    known = {
        KIND_BOOL,
        KIND_ENUM,
        KIND_FLOAT,
        KIND_INT,
        KIND_MESSAGE,
        KIND_ONEOF,
        KIND_OPEN_ENUM,
        KIND_RAW,
        KIND_STRING,
    }
    classes = [c for c in vars(M).values() if isinstance(c, type) and issubclass(c, Message) and c is not Message]
    kinds = {s.kind for c in classes for spec in c.__lorax_fields__ for s in (spec, *spec.members)}
    assert kinds == known


def test_a_request_read_back_that_fails_its_checks_is_a_decode_error() -> None:
    """What a server emulator reads: the request class's own checks name the field, as a decode error."""
    with pytest.raises(errors.ResponseDecodeError, match=r"^GenerateParameters: adapter_id contains the control"):
        dec(T.GenerateParameters, b'{"adapter_id":"a\\nb"}')
    with pytest.raises(errors.ResponseDecodeError, match=r"^GenerateParameters: seed=18446744073709551616 does not"):
        dec(T.GenerateParameters, b'{"seed":18446744073709551616}')
    with pytest.raises(errors.ResponseDecodeError, match=r"GenerateRequest"):
        dec(T.GenerateRequest, b'{"inputs":"x","parameters":{"adapter_source":"hub\\r"}}')


def test_an_unknown_merge_strategy_assigned_later_is_not_sent() -> None:
    """Assignment is not checked, so the encoder checks closed enums before LoRAX's router sees them."""
    request = T.GenerateRequest(
        inputs="x", parameters=T.GenerateParameters(merged_adapters=T.MergedAdapters(ids=["a"], merge_strategy="ties"))
    )
    assert enc(request) == b'{"inputs":"x","parameters":{"merged_adapters":{"ids":["a"],"merge_strategy":"ties"}}}'
    request.parameters.merged_adapters.merge_strategy = "bogus"
    with pytest.raises(errors.InvalidRequestError, match=r"^merge_strategy='bogus' is not one of: dare_linear, dare_"):
        enc(request)
    request.parameters.merged_adapters.merge_strategy = None
    request.parameters.merged_adapters.majority_sign_method = "TOTAL"  # a spelling, not the member
    with pytest.raises(errors.InvalidRequestError, match=r"^majority_sign_method='TOTAL' is not one of"):
        enc(request)
    rf = T.ChatResponseFormat(type="json_object")
    rf.type = "json"
    with pytest.raises(errors.InvalidRequestError, match=r"^type='json' is not one of"):
        enc(T.ChatCompletionRequest(model="", messages=[], response_format=rf))
