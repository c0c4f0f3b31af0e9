"""Sans-I/O tests of lorax._params: keyword arguments to the exact JSON bytes LoRAX receives.

Every expected body is written out literally. The rules behind them are in
docs/wire.md (request bodies: null, absent and zero; inputs that crash LoRAX).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from lorax import _params as p
from lorax.codec import to_json
from lorax.errors import InvalidRequestError, ValidationError
from lorax.types import (
    ChatCompletionRequest,
    ChatMessage,
    ChatResponseFormat,
    ClassifyBatchRequest,
    ClassifyRequest,
    CompletionRequest,
    EmbeddingsRequest,
    EmbedRequest,
    FunctionDefinition,
    GenerateRequest,
    MergedAdapters,
    MergeStrategy,
    ResponseFormat,
    ResponseFormatType,
    TokenizeRequest,
    Tool,
    ToolChoice,
)

# The rejection tests pass wrong types on purpose.
P: Any = p


class FakeModel:
    """Stands for a pydantic model class: the builders only call model_json_schema()."""

    @classmethod
    def model_json_schema(cls) -> dict[str, Any]:
        return {"properties": {"x": {"type": "integer"}}, "required": ["x"], "title": "FakeModel", "type": "object"}


CASES: list[Any] = [
    # ---- generate: defaults and flags
    pytest.param(lambda: p.generate("hi"), b'{"inputs":"hi","parameters":{"details":true}}', id="generate-defaults"),
    pytest.param(lambda: p.generate("hi", details=False), b'{"inputs":"hi","parameters":{}}', id="generate-no-details"),
    pytest.param(
        lambda: p.generate(
            "hi",
            do_sample=False,
            ignore_eos_token=False,
            return_full_text=False,
            watermark=False,
            decoder_input_details=False,
            details=False,
        ),
        b'{"inputs":"hi","parameters":{}}',
        id="generate-false-flags-omitted",
    ),
    pytest.param(
        lambda: p.generate(
            "hi",
            do_sample=True,
            ignore_eos_token=True,
            return_full_text=True,
            watermark=True,
            decoder_input_details=True,
            details=True,
        ),
        b'{"inputs":"hi","parameters":{"do_sample":true,"ignore_eos_token":true,"return_full_text":true,'
        b'"watermark":true,"details":true,"decoder_input_details":true}}',
        id="generate-true-flags",
    ),
    pytest.param(
        lambda: p.generate("hi", seed=2**64 - 1, details=False),
        b'{"inputs":"hi","parameters":{"seed":18446744073709551615}}',
        id="generate-seed-u64-max-as-number",
    ),
    pytest.param(
        lambda: p.generate("hi", seed=0, details=False),
        b'{"inputs":"hi","parameters":{"seed":0}}',
        id="generate-seed-zero-present",
    ),
    pytest.param(
        lambda: p.generate("hi", stop_sequences=["a"], details=False),
        b'{"inputs":"hi","parameters":{"stop":["a"]}}',
        id="generate-stop_sequences-as-stop",
    ),
    pytest.param(
        lambda: p.generate("hi", stop_sequences=("x", "y"), details=False),
        b'{"inputs":"hi","parameters":{"stop":["x","y"]}}',
        id="generate-stop-tuple",
    ),
    pytest.param(
        lambda: p.generate("hi", stop_sequences="\n", details=False),
        b'{"inputs":"hi","parameters":{"stop":["\\n"]}}',
        id="generate-stop-bare-string-wrapped",
    ),
    pytest.param(
        lambda: p.generate("hi", stop_sequences=[], details=False),
        b'{"inputs":"hi","parameters":{}}',
        id="generate-stop-empty-omitted",
    ),
    pytest.param(
        lambda: p.generate("hi", temperature=0, details=False),
        b'{"inputs":"hi","parameters":{"temperature":0.0}}',
        id="generate-temperature-zero-printed",
    ),
    pytest.param(
        lambda: p.generate("hi", top_p=1.0, details=False),
        b'{"inputs":"hi","parameters":{"top_p":1.0}}',
        id="generate-top_p-one-allowed",
    ),
    pytest.param(
        lambda: p.generate("hi", max_new_tokens=0, details=False),
        b'{"inputs":"hi","parameters":{"max_new_tokens":0}}',
        id="generate-max_new_tokens-zero-left-to-server",
    ),
    pytest.param(
        lambda: p.generate("", details=False),
        b'{"inputs":"","parameters":{}}',
        id="generate-empty-prompt-kept",
    ),
    pytest.param(
        lambda: p.generate('\u65e5\u672c "q"\n', details=False),
        b'{"inputs":"\xe6\x97\xa5\xe6\x9c\xac \\"q\\"\\n","parameters":{}}',
        id="generate-utf8-raw-and-escapes",
    ),
    pytest.param(
        lambda: p.generate(
            "hi",
            adapter_id="me/ad",
            adapter_source="hub",
            api_token="tok",
            do_sample=True,
            max_new_tokens=20,
            ignore_eos_token=True,
            best_of=1,
            repetition_penalty=1.2,
            return_full_text=True,
            seed=42,
            stop_sequences=["a", "b"],
            temperature=0.7,
            top_k=50,
            top_p=0.95,
            truncate=100,
            typical_p=0.9,
            watermark=True,
            decoder_input_details=True,
            return_k_alternatives=3,
            details=True,
            frequency_penalty=0.1,
            presence_penalty=-0.1,
        ),
        b'{"inputs":"hi","parameters":{"adapter_id":"me/ad","adapter_source":"hub","api_token":"tok","best_of":1,'
        b'"temperature":0.7,"repetition_penalty":1.2,"frequency_penalty":0.1,"presence_penalty":-0.1,"top_k":50,'
        b'"top_p":0.95,"typical_p":0.9,"do_sample":true,"max_new_tokens":20,"ignore_eos_token":true,'
        b'"return_full_text":true,"stop":["a","b"],"truncate":100,"watermark":true,"details":true,'
        b'"decoder_input_details":true,"return_k_alternatives":3,"seed":42}}',
        id="generate-every-field-in-wire-order",
    ),
    pytest.param(
        lambda: p.generate("hi", adapter_id="a\tb", details=False),
        b'{"inputs":"hi","parameters":{"adapter_id":"a\\tb"}}',
        id="generate-tab-is-header-safe",
    ),
    pytest.param(
        lambda: p.generate("hi", adapter_id="", details=False),
        b'{"inputs":"hi","parameters":{"adapter_id":""}}',
        id="generate-empty-adapter-id-kept",
    ),
    pytest.param(
        lambda: p.generate(
            "hi",
            merged_adapters={"ids": ["a", "b"], "weights": [0.5, 0.5], "merge_strategy": "TIES", "density": 0.3},
            details=False,
        ),
        b'{"inputs":"hi","parameters":{"merged_adapters":{"ids":["a","b"],"weights":[0.5,0.5],'
        b'"merge_strategy":"ties","density":0.3}}}',
        id="generate-merged-adapters-dict",
    ),
    pytest.param(
        lambda: p.generate("hi", response_format={"type": "json_object"}, details=False),
        b'{"inputs":"hi","parameters":{"response_format":{"type":"json_object"}}}',
        id="generate-response-format-no-schema-key",
    ),
    pytest.param(
        lambda: p.generate("hi", response_format={"type": "json_object", "schema": None}, details=False),
        b'{"inputs":"hi","parameters":{"response_format":{"type":"json_object","schema":null}}}',
        id="generate-response-format-schema-null",
    ),
    # ---- merged_adapters
    pytest.param(
        lambda: p.to_merged_adapters(
            {
                "ids": ["a", "b"],
                "weights": [0.1, 0.9],
                "merge_strategy": "dare_linear",
                "density": 0.5,
                "majority_sign_method": "TOTAL",
            }
        ),
        b'{"ids":["a","b"],"weights":[0.1,0.9],"merge_strategy":"dare_linear","density":0.5,'
        b'"majority_sign_method":"total"}',
        id="merged-all-keys",
    ),
    pytest.param(
        lambda: p.to_merged_adapters(
            {"ids": ["a"], "merge_strategy": "Dare_Ties", "majority_sign_method": "frequency"}
        ),
        b'{"ids":["a"],"merge_strategy":"dare_ties","majority_sign_method":"frequency"}',
        id="merged-case-insensitive",
    ),
    pytest.param(
        lambda: p.to_merged_adapters({"ids": ["a"], "merge_strategy": "MERGE_STRATEGY_LINEAR"}),
        b'{"ids":["a"],"merge_strategy":"linear"}',
        id="merged-proto-enum-name",
    ),
    pytest.param(
        lambda: p.to_merged_adapters({"ids": ["a", "b"], "weights": [1, 2]}),
        b'{"ids":["a","b"],"weights":[1.0,2.0]}',
        id="merged-int-weights-as-floats",
    ),
    pytest.param(
        lambda: p.to_merged_adapters({"ids": ["a"], "density": 0}),
        b'{"ids":["a"],"density":0.0}',
        id="merged-density-zero-printed",
    ),
    pytest.param(
        lambda: p.to_merged_adapters(MergedAdapters(ids=["x"], weights=[1.0], merge_strategy=MergeStrategy.TIES)),
        b'{"ids":["x"],"weights":[1.0],"merge_strategy":"ties"}',
        id="merged-message",
    ),
    # ---- response_format (native routes)
    pytest.param(
        lambda: p.to_response_format({"type": "json_object"}),
        b'{"type":"json_object"}',
        id="format-json-object-no-schema",
    ),
    pytest.param(
        lambda: p.to_response_format({"type": "json_object", "schema": None}),
        b'{"type":"json_object","schema":null}',
        id="format-schema-none-is-null",
    ),
    pytest.param(
        lambda: p.to_response_format(
            {"type": "json_object", "schema": {"z": 1, "a": {"maxLength": 10, "big": 2**60, "f": 1.5}}}
        ),
        b'{"type":"json_object","schema":{"z":1,"a":{"maxLength":10,"big":1152921504606846976,"f":1.5}}}',
        id="format-schema-order-and-ints",
    ),
    pytest.param(
        lambda: p.to_response_format({"type": "json_object", "schema": '{"b":1,"a":2}'}),
        b'{"type":"json_object","schema":{"b":1,"a":2}}',
        id="format-schema-json-text-spliced",
    ),
    pytest.param(
        lambda: p.to_response_format({"schema": {"a": 1}}),
        b'{"type":"json_object","schema":{"a":1}}',
        id="format-type-defaults-to-json-object",
    ),
    pytest.param(lambda: p.to_response_format({"type": "text"}), b'{"type":"text"}', id="format-text"),
    pytest.param(lambda: p.to_response_format({"type": "Text"}), b'{"type":"text"}', id="format-text-alias"),
    pytest.param(
        lambda: p.to_response_format({"type": "json_schema", "json_schema": {"name": "n", "schema": {"a": 1}}}),
        b'{"type":"json_schema","schema":{"a":1}}',
        id="format-openai-json-schema-form",
    ),
    pytest.param(
        lambda: p.to_response_format(ResponseFormat(type=ResponseFormatType.JSON_OBJECT, schema={"a": 1})),
        b'{"type":"json_object","schema":{"a":1}}',
        id="format-message",
    ),
    pytest.param(
        lambda: p.to_response_format(FakeModel),
        b'{"type":"json_object","schema":{"properties":{"x":{"type":"integer"}},"required":["x"],'
        b'"title":"FakeModel","type":"object"}}',
        id="format-model-class",
    ),
    # ---- chat_response_format (/v1/chat/completions)
    pytest.param(
        lambda: p.to_chat_response_format({"type": "json_object"}), b'{"type":"json_object"}', id="chat-format-json"
    ),
    pytest.param(
        lambda: p.to_chat_response_format({"type": "json_object", "schema": None}),
        b'{"type":"json_object","schema":null}',
        id="chat-format-schema-null",
    ),
    pytest.param(
        lambda: p.to_chat_response_format(
            {
                "type": "json_schema",
                "json_schema": {"name": "n", "description": "d", "schema": {"b": 1, "a": [1, 2]}, "strict": True},
            }
        ),
        b'{"type":"json_schema","json_schema":{"description":"d","name":"n","schema":{"b":1,"a":[1,2]},"strict":true}}',
        id="chat-format-json-schema",
    ),
    pytest.param(lambda: p.to_chat_response_format({"type": "text"}), b'{"type":"text"}', id="chat-format-text"),
    pytest.param(
        lambda: p.to_chat_response_format(FakeModel),
        b'{"type":"json_schema","json_schema":{"name":"FakeModel","schema":{"properties":{"x":{"type":"integer"}},'
        b'"required":["x"],"title":"FakeModel","type":"object"}}}',
        id="chat-format-model-class",
    ),
    # ---- tool, tool_choice
    pytest.param(
        lambda: p.to_tool(
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "d",
                    "parameters": {"type": "object", "properties": {"loc": {"type": "string"}}, "required": ["loc"]},
                },
            }
        ),
        b'{"type":"function","function":{"description":"d","name":"get_weather","parameters":{"type":"object",'
        b'"properties":{"loc":{"type":"string"}},"required":["loc"]}}}',
        id="tool-full",
    ),
    pytest.param(
        lambda: p.to_tool({"type": "function", "function": {"name": "f"}}),
        b'{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{}}}}',
        id="tool-without-parameters-gets-empty-schema",
    ),
    pytest.param(
        lambda: p.to_tool({"function": {"name": "f", "parameters": {}}}),
        b'{"type":"function","function":{"name":"f","parameters":{}}}',
        id="tool-type-defaults-to-function",
    ),
    pytest.param(
        lambda: p.to_tool(Tool(type="function", function=FunctionDefinition(name="f", parameters='{"type":"object"}'))),
        b'{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}',
        id="tool-message",
    ),
    pytest.param(lambda: p.to_tool_choice("auto"), b'"auto"', id="tool-choice-auto"),
    pytest.param(lambda: p.to_tool_choice("none"), b'"none"', id="tool-choice-none"),
    pytest.param(lambda: p.to_tool_choice("get_weather"), b'"get_weather"', id="tool-choice-name"),
    pytest.param(
        lambda: p.to_tool_choice({"type": "function", "function": {"name": "get_weather"}}),
        b'{"Function":{"name":"get_weather"}}',
        id="tool-choice-openai-form-rewritten",
    ),
    pytest.param(
        lambda: p.to_tool_choice({"Function": {"name": "g"}}),
        b'{"Function":{"name":"g"}}',
        id="tool-choice-lorax-form",
    ),
    # ---- chat_message
    pytest.param(
        lambda: p.to_chat_message({"role": "user", "content": "hi", "name": "bob"}),
        b'{"role":"user","content":"hi","name":"bob"}',
        id="message-text",
    ),
    pytest.param(lambda: p.to_chat_message({"role": "assistant"}), b'{"role":"assistant"}', id="message-no-content"),
    pytest.param(
        lambda: p.to_chat_message({"role": "assistant", "content": None}),
        b'{"role":"assistant"}',
        id="message-null-content-omitted",
    ),
    pytest.param(
        lambda: p.to_chat_message(
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    "plain",
                    {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
                    {"type": "image_url", "image_url": "data:image/png;base64,AAA"},
                ],
            }
        ),
        b'{"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"text","text":"plain"},'
        b'{"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"}},'
        b'{"type":"image_url","image_url":{"url":"data:image/png;base64,AAA"}}]}',
        id="message-multimodal-chunks",
    ),
    # ---- chat
    pytest.param(
        lambda: p.chat([{"role": "user", "content": "hi"}]),
        b'{"model":"","messages":[{"role":"user","content":"hi"}]}',
        id="chat-base-model-empty-model",
    ),
    pytest.param(
        lambda: p.chat([{"role": "user", "content": "hi"}], adapter_id=None, temperature=0),
        b'{"model":"","messages":[{"role":"user","content":"hi"}],"temperature":0.0}',
        id="chat-greedy-temperature-zero",
    ),
    pytest.param(
        lambda: p.chat([{"role": "user", "content": "hi"}], stream=True),
        b'{"model":"","messages":[{"role":"user","content":"hi"}],"stream":true}',
        id="chat-stream",
    ),
    pytest.param(
        lambda: p.chat(
            [{"role": "user", "content": "x"}],
            adapter_id="ad",
            adapter_source="hub",
            api_token="t",
            max_tokens=5,
            temperature=0.5,
            top_p=0.9,
            top_k=3,
            n=2,
            stop="\n",
            seed=7,
            presence_penalty=0.5,
            frequency_penalty=-0.5,
            repetition_penalty=1.1,
            ignore_eos_token=True,
            tool_prompt="tp",
            guideline="g",
            logit_bias={"1": -100},
            user="u",
        ),
        b'{"model":"ad","messages":[{"role":"user","content":"x"}],"temperature":0.5,"top_p":0.9,"n":2,'
        b'"max_tokens":5,"stop":["\\n"],"presence_penalty":0.5,"frequency_penalty":-0.5,"logit_bias":{"1":-100.0},'
        b'"user":"u","seed":7,"repetition_penalty":1.1,"top_k":3,"ignore_eos_token":true,"tool_prompt":"tp",'
        b'"guideline":"g","adapter_source":"hub","api_token":"t"}',
        id="chat-every-scalar",
    ),
    pytest.param(
        lambda: p.chat(
            [ChatMessage(role="user", content="w?")],
            tools=[{"type": "function", "function": {"name": "f"}}],
            tool_choice={"type": "function", "function": {"name": "f"}},
        ),
        b'{"model":"","messages":[{"role":"user","content":"w?"}],"tools":[{"type":"function","function":'
        b'{"name":"f","parameters":{"type":"object","properties":{}}}}],"tool_choice":{"Function":{"name":"f"}}}',
        id="chat-tools",
    ),
    pytest.param(
        lambda: p.chat([{"role": "user", "content": "x"}], response_format={"type": "json_object", "schema": {"a": 1}}),
        b'{"model":"","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object",'
        b'"schema":{"a":1}}}',
        id="chat-response-format",
    ),
    # ---- completions
    pytest.param(lambda: p.completions("p"), b'{"model":"","prompt":"p"}', id="completions-minimal"),
    pytest.param(
        lambda: p.completions(
            "x",
            adapter_id="ad",
            adapter_source="s3",
            api_token="t",
            max_tokens=5,
            temperature=0,
            top_p=1.0,
            top_k=1,
            stop=["a", "b"],
            seed=2**64 - 1,
            echo=True,
            best_of=2,
            presence_penalty=2.0,
            frequency_penalty=-2.0,
            repetition_penalty=1.5,
            ignore_eos_token=True,
            logit_bias={"5": 1.5},
            user="u",
            stream=True,
        ),
        b'{"model":"ad","prompt":"x","max_tokens":5,"temperature":0.0,"top_p":1.0,"stream":true,"echo":true,'
        b'"stop":["a","b"],"presence_penalty":2.0,"frequency_penalty":-2.0,"best_of":2,"logit_bias":{"5":1.5},'
        b'"user":"u","seed":18446744073709551615,"repetition_penalty":1.5,"top_k":1,"ignore_eos_token":true,'
        b'"adapter_source":"s3","api_token":"t"}',
        id="completions-every-field",
    ),
    pytest.param(
        lambda: p.completions("x", echo=False, ignore_eos_token=False),
        b'{"model":"","prompt":"x"}',
        id="completions-false-flags-omitted",
    ),
    # ---- embed, embeddings, classify, classify_batch, tokenize
    pytest.param(lambda: p.embed("p"), b'{"inputs":"p"}', id="embed-minimal"),
    pytest.param(
        lambda: p.embed("p", adapter_id="a", adapter_source="hub", api_token="t"),
        b'{"inputs":"p","parameters":{"adapter_id":"a","adapter_source":"hub","api_token":"t"}}',
        id="embed-adapter",
    ),
    pytest.param(
        lambda: p.embed("p", merged_adapters={"ids": ["a", "b"], "weights": [0.5, 0.5]}),
        b'{"inputs":"p","parameters":{"merged_adapters":{"ids":["a","b"],"weights":[0.5,0.5]}}}',
        id="embed-merged",
    ),
    pytest.param(lambda: p.embeddings(["a", "b"]), b'{"input":["a","b"],"model":""}', id="embeddings-list"),
    pytest.param(lambda: p.embeddings("a"), b'{"input":"a","model":""}', id="embeddings-string"),
    pytest.param(lambda: p.embeddings([]), b'{"input":[],"model":""}', id="embeddings-empty-list"),
    pytest.param(
        lambda: p.embeddings(("a",), adapter_id="x"),
        b'{"input":["a"],"model":"x","parameters":{"adapter_id":"x"}}',
        id="embeddings-adapter-in-parameters",
    ),
    pytest.param(lambda: p.classify("p"), b'{"inputs":"p"}', id="classify"),
    pytest.param(lambda: p.classify_batch(["p", "q"]), b'{"inputs":["p","q"]}', id="classify-batch"),
    pytest.param(lambda: p.tokenize("p"), b'{"inputs":"p"}', id="tokenize-default"),
    pytest.param(lambda: p.tokenize("p", False), b'{"inputs":"p","add_special_tokens":false}', id="tokenize-false"),
    pytest.param(lambda: p.tokenize("p", True), b'{"inputs":"p","add_special_tokens":true}', id="tokenize-true"),
]


@pytest.mark.parametrize(("build", "expected"), CASES)
def test_exact_json_bytes(build: Callable[[], Any], expected: bytes) -> None:
    assert to_json(build()) == expected


@pytest.mark.parametrize(
    ("build", "cls"),
    [
        (lambda: p.generate("x"), GenerateRequest),
        (lambda: p.embed("x"), EmbedRequest),
        (lambda: p.classify("x"), ClassifyRequest),
        (lambda: p.classify_batch(["x"]), ClassifyBatchRequest),
        (lambda: p.tokenize("x"), TokenizeRequest),
        (lambda: p.chat([{"role": "user", "content": "x"}]), ChatCompletionRequest),
        (lambda: p.completions("x"), CompletionRequest),
        (lambda: p.embeddings("x"), EmbeddingsRequest),
        (lambda: p.to_merged_adapters({"ids": ["a"]}), MergedAdapters),
        (lambda: p.to_response_format({"type": "text"}), ResponseFormat),
        (lambda: p.to_chat_response_format({"type": "text"}), ChatResponseFormat),
        (lambda: p.to_tool({"function": {"name": "f"}}), Tool),
        (lambda: p.to_tool_choice("auto"), ToolChoice),
        (lambda: p.to_chat_message({"role": "user"}), ChatMessage),
    ],
)
def test_builders_return_their_message_type(build: Callable[[], Any], cls: type) -> None:
    assert type(build()) is cls


@pytest.mark.parametrize(
    "build",
    [p.to_merged_adapters, p.to_response_format, p.to_chat_response_format, p.to_tool_choice],
)
def test_none_builds_nothing(build: Callable[[Any], Any]) -> None:
    assert build(None) is None


def test_message_inputs_are_copied_not_aliased() -> None:
    original = MergedAdapters(ids=["a"])
    built = p.to_merged_adapters(original)
    assert built is not original
    built.ids.append("b")
    assert list(original.ids) == ["a"]
    fmt = ResponseFormat(type=ResponseFormatType.TEXT)
    assert p.to_response_format(fmt) is not fmt


def test_pydantic_model_as_schema() -> None:
    pydantic: Any = pytest.importorskip("pydantic")

    class Person(pydantic.BaseModel):  # type: ignore[misc]
        name: str
        age: int

    assert to_json(p.to_response_format(Person)) == (
        b'{"type":"json_object","schema":{"properties":{"name":{"title":"Name","type":"string"},'
        b'"age":{"title":"Age","type":"integer"}},"required":["name","age"],"title":"Person","type":"object"}}'
    )
    chat = to_json(p.to_chat_response_format(Person))
    assert chat.startswith(b'{"type":"json_schema","json_schema":{"name":"Person","schema":{"properties":')


# ---------------------------------------------------------------------------------
# Rejections: the exact class, and a message that names the field.

REJECTIONS: list[Any] = [
    # docs/wire.md, inputs that crash LoRAX: control characters in header-bound fields crash the router
    pytest.param(lambda: P.generate("hi", adapter_id="a\nb"), "adapter_id", id="generate-adapter_id-newline"),
    pytest.param(lambda: P.generate("hi", adapter_id="a\x7fb"), "adapter_id", id="generate-adapter_id-del"),
    pytest.param(lambda: P.generate("hi", adapter_source="hub\x00"), "adapter_source", id="generate-source-nul"),
    pytest.param(lambda: P.embed("hi", adapter_id="a\rb"), "adapter_id", id="embed-adapter_id-cr"),
    pytest.param(lambda: P.embeddings("hi", adapter_source="\x1b"), "adapter_source", id="embeddings-source-esc"),
    pytest.param(
        lambda: P.chat([{"role": "user", "content": "x"}], adapter_id="a\nb"), "adapter_id", id="chat-adapter_id"
    ),
    pytest.param(
        lambda: P.chat([{"role": "user", "content": "x"}], adapter_source="s\n3"),
        "adapter_source",
        id="chat-adapter_source",
    ),
    pytest.param(lambda: P.completions("x", adapter_id="\x01"), "adapter_id", id="completions-adapter_id"),
    pytest.param(lambda: P.generate("hi", adapter_id=5), "adapter_id", id="generate-adapter_id-not-str"),
    # docs/wire.md, inputs that crash LoRAX: unknown merge strategies and sign methods crash the router
    pytest.param(
        lambda: P.generate("hi", merged_adapters={"ids": ["a"], "merge_strategy": "bogus"}),
        "merge_strategy",
        id="merge_strategy-unknown",
    ),
    pytest.param(
        lambda: P.to_merged_adapters({"ids": ["a"], "merge_strategy": ""}), "merge_strategy", id="merge_strategy-empty"
    ),
    pytest.param(
        lambda: P.to_merged_adapters({"ids": ["a"], "merge_strategy": 0}),
        "merge_strategy",
        id="merge_strategy-unspecified-number",
    ),
    pytest.param(
        lambda: P.to_merged_adapters(MergedAdapters(ids=["a"], merge_strategy=9)),
        "merge_strategy",
        id="merge_strategy-unknown-number-in-message",
    ),
    pytest.param(
        lambda: P.embed("x", merged_adapters={"ids": ["a"], "majority_sign_method": "bogus"}),
        "majority_sign_method",
        id="majority_sign_method-unknown",
    ),
    pytest.param(lambda: P.to_merged_adapters({"idz": ["a"]}), "idz", id="merged-unknown-key"),
    pytest.param(lambda: P.to_merged_adapters(["a"]), "merged_adapters", id="merged-not-a-dict"),
    pytest.param(lambda: P.to_merged_adapters({"ids": ["a"], "weights": ["x"]}), "weights", id="merged-weights-str"),
    pytest.param(lambda: P.to_merged_adapters({"ids": ["a"], "density": "x"}), "density", id="merged-density-str"),
    pytest.param(lambda: P.to_merged_adapters({"ids": [1]}), "ids", id="merged-ids-not-str"),
    # chunk types LoRAX does not know
    pytest.param(
        lambda: P.chat([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]),
        "messages[0].content[0]",
        id="chunk-input_audio",
    ),
    pytest.param(
        lambda: P.to_chat_message({"role": "user", "content": [{"type": "file"}]}, 2),
        "messages[2].content[0]",
        id="chunk-file",
    ),
    pytest.param(
        lambda: P.to_chat_message({"role": "user", "content": [{"type": "text"}]}), "'text'", id="chunk-text-missing"
    ),
    pytest.param(
        lambda: P.to_chat_message({"role": "user", "content": [{"type": "image_url"}]}),
        "image_url.url",
        id="chunk-image-missing-url",
    ),
    pytest.param(lambda: P.to_chat_message({"role": "user", "content": 5}), "content", id="content-int"),
    pytest.param(lambda: P.to_chat_message({"content": "x"}), "role", id="message-no-role"),
    pytest.param(lambda: P.to_chat_message("x"), "messages[0]", id="message-str"),
    pytest.param(lambda: P.chat({"role": "user", "content": "x"}), "messages", id="chat-messages-dict"),
    pytest.param(lambda: P.chat("hello"), "messages", id="chat-messages-str"),
    # unsigned and ranged integer fields
    pytest.param(lambda: P.generate("hi", max_new_tokens=-1), "max_new_tokens", id="max_new_tokens-negative"),
    pytest.param(lambda: P.generate("hi", max_new_tokens=10.0), "max_new_tokens", id="max_new_tokens-float"),
    pytest.param(lambda: P.generate("hi", seed=-1), "seed", id="seed-negative"),
    pytest.param(lambda: P.generate("hi", seed=2**64), "seed", id="seed-too-big"),
    pytest.param(lambda: P.generate("hi", top_k=2**31), "top_k", id="top_k-beyond-i32"),
    pytest.param(lambda: P.generate("hi", best_of=-1), "best_of", id="best_of-negative"),
    pytest.param(lambda: P.generate("hi", truncate=-5), "truncate", id="truncate-negative"),
    pytest.param(lambda: P.chat([], max_tokens="5"), "max_tokens", id="chat-max_tokens-str"),
    pytest.param(lambda: P.generate("hi", temperature="x"), "temperature", id="temperature-str"),
    # non-finite floats cannot be written as JSON (the codec would send null = "server default")
    pytest.param(lambda: P.generate("hi", temperature=math.nan), "temperature", id="temperature-nan"),
    pytest.param(lambda: P.generate("hi", top_p=math.inf), "top_p", id="top_p-inf"),
    pytest.param(lambda: P.chat([], temperature=-math.inf), "temperature", id="chat-temperature-inf"),
    pytest.param(
        lambda: P.to_merged_adapters({"ids": ["a"], "weights": [math.nan]}), "weights", id="merged-weights-nan"
    ),
    pytest.param(lambda: P.to_merged_adapters({"ids": ["a"], "density": math.inf}), "density", id="merged-density-inf"),
    # flags
    pytest.param(lambda: P.generate("hi", do_sample=1), "do_sample", id="do_sample-int"),
    pytest.param(lambda: P.generate("hi", details="yes"), "details", id="details-str"),
    pytest.param(lambda: P.completions("x", echo=1), "echo", id="echo-int"),
    # non-string prompts and inputs
    pytest.param(lambda: P.generate(["hi"]), "prompt", id="generate-prompt-list"),
    pytest.param(lambda: P.generate(None), "prompt", id="generate-prompt-none"),
    pytest.param(lambda: P.completions(["hi"]), "prompt", id="completions-prompt-list"),
    pytest.param(lambda: P.embed(["hi"]), "inputs", id="embed-inputs-list"),
    pytest.param(lambda: P.classify(["hi"]), "inputs", id="classify-inputs-list"),
    pytest.param(lambda: P.classify_batch("hi"), "inputs", id="classify_batch-str"),
    pytest.param(lambda: P.classify_batch(["a", 1]), "inputs", id="classify_batch-int-item"),
    pytest.param(lambda: P.tokenize(b"hi"), "inputs", id="tokenize-bytes"),
    pytest.param(lambda: P.embeddings(["a", 1]), "input", id="embeddings-int-item"),
    pytest.param(lambda: P.embeddings(5), "input", id="embeddings-int"),
    pytest.param(lambda: P.generate("hi", stop_sequences=[1]), "stop_sequences", id="stop-int-item"),
    pytest.param(lambda: P.chat([], stop=[None]), "stop", id="chat-stop-none-item"),
    # response formats
    pytest.param(lambda: P.to_response_format({"type": "bogus"}), "response_format.type", id="format-type-bogus"),
    pytest.param(lambda: P.generate("hi", response_format={"type": None}), "response_format.type", id="format-none"),
    pytest.param(lambda: P.to_response_format("json"), "response_format", id="format-str"),
    pytest.param(
        lambda: P.to_response_format({"type": "json_object", "schema": "{bad"}),
        "response_format.schema",
        id="format-schema-bad-json-text",
    ),
    pytest.param(
        lambda: P.to_response_format({"type": "json_object", "schema": {"a": {1, 2}}}),
        "response_format.schema",
        id="format-schema-not-json",
    ),
    pytest.param(lambda: P.to_chat_response_format({}), "response_format.type", id="chat-format-no-type"),
    pytest.param(lambda: P.to_chat_response_format({"type": "xml"}), "response_format.type", id="chat-format-xml"),
    pytest.param(
        lambda: P.to_chat_response_format({"type": "json_schema", "json_schema": {"schema": {}}}),
        "name",
        id="chat-format-json-schema-without-name",
    ),
    pytest.param(
        lambda: P.to_chat_response_format({"type": "json_schema", "json_schema": "x"}),
        "json_schema",
        id="chat-format-json-schema-str",
    ),
    pytest.param(lambda: P.to_chat_response_format(3), "response_format", id="chat-format-int"),
    # tools
    pytest.param(lambda: P.to_tool({"type": "function"}), "tools[0]", id="tool-without-function"),
    pytest.param(lambda: P.to_tool({"function": {"parameters": {}}}, 3), "tools[3].function", id="tool-without-name"),
    pytest.param(
        lambda: P.to_tool({"function": {"name": "f", "parameters": "{no"}}),
        "tools[0].function.parameters",
        id="tool-parameters-bad-json",
    ),
    pytest.param(lambda: P.to_tool_choice({"type": "function"}), "tool_choice", id="tool-choice-no-name"),
    pytest.param(lambda: P.to_tool_choice(3), "tool_choice", id="tool-choice-int"),
]


@pytest.mark.parametrize(("build", "field"), REJECTIONS)
def test_rejected_with_invalid_request_error_naming_the_field(build: Callable[[], Any], field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        build()
    assert type(info.value) is InvalidRequestError
    assert field in str(info.value)
    # Existing `except ValidationError` clauses (the official name) catch it too, and it
    # is not something the server said.
    assert isinstance(info.value, ValidationError)
    assert info.value.status_code is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": 0},
        {"temperature": 0.0},
        {"top_p": 1.0},
        {"frequency_penalty": 2.0},
        {"frequency_penalty": -2.0},
        {"presence_penalty": 2.0},
        {"top_k": 1},
        {"best_of": 2},
        {"typical_p": 0.5},
        {"repetition_penalty": 1.0},
        {"return_k_alternatives": 1},
        {"truncate": 1},
        {"max_new_tokens": 1},
        {"adapter_source": "somewhere-new"},
        {"adapter_id": "org/repo@checkpoint"},
        {"merged_adapters": {"ids": ["a", "b"]}},
    ],
)
def test_client_validation_is_never_stricter_than_the_server(kwargs: dict[str, Any]) -> None:
    request = p.generate("hi", **kwargs)
    params = request.parameters
    for name, value in kwargs.items():
        if name == "merged_adapters":
            assert list(params.merged_adapters.ids) == value["ids"]  # type: ignore[index]
        else:
            assert getattr(params, name) is not None
            assert getattr(params, name) == value


def test_chat_and_completions_accept_server_edge_values() -> None:
    chat = p.chat([{"role": "user", "content": "x"}], temperature=0, top_p=1.0, frequency_penalty=2.0, top_k=1, n=2)
    assert (chat.temperature, chat.top_p, chat.frequency_penalty, chat.top_k, chat.n) == (0.0, 1.0, 2.0, 1, 2)
    done = p.completions("x", temperature=0, top_p=1.0, presence_penalty=-2.0, best_of=2)
    assert (done.temperature, done.top_p, done.presence_penalty, done.best_of) == (0.0, 1.0, -2.0, 2)
