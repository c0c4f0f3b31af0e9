"""/v1/completions and /v1/chat/completions non-stream: LoRAX's shapes, tools, templates, errors."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from lorax.testing import FakeLorax

from ._fake_http import post

EXAMPLES = json.loads((Path(__file__).parents[1] / "fixtures" / "wire-examples.json").read_text())
WEATHER_TOOL = EXAMPLES["chat.request.tools"]["body"]["tools"][0]


def chat(server: FakeLorax, **body: Any) -> Any:
    body.setdefault("model", "")
    body.setdefault("messages", [{"role": "user", "content": "What is the capital of France?"}])
    return post(server.url, "/v1/chat/completions", body)


def test_completions_shape(lorax_server: FakeLorax) -> None:
    raw = post(lorax_server.url, "/v1/completions", EXAMPLES["completions.request"]["body"])
    body = raw.json()
    assert list(body) == ["id", "object", "created", "model", "choices", "usage"]
    assert (body["id"], body["object"], body["created"], body["model"]) == ("null", "text_completion", 0, "null")
    (choice,) = body["choices"]
    assert list(choice) == ["index", "text", "logprobs", "finish_reason"]
    assert choice["logprobs"] is None
    assert choice["finish_reason"] in ("stop", "length", "content_filter")
    assert list(body["usage"]) == ["prompt_tokens", "total_tokens", "completion_tokens"]
    assert raw.header("x-generated-tokens") is not None


def test_completions_mapping(lorax_server: FakeLorax) -> None:
    base = post(lorax_server.url, "/v1/completions", {"model": "", "prompt": "Say"}).json()
    same = post(lorax_server.url, "/v1/completions", {"model": lorax_server.config.model_id, "prompt": "Say"}).json()
    assert base["choices"] == same["choices"]
    echo = post(lorax_server.url, "/v1/completions", {"model": "", "prompt": "Say", "echo": True}).json()
    assert echo["choices"][0]["text"] == "Say" + base["choices"][0]["text"]
    words = base["choices"][0]["text"].split(" ")
    stopped = post(lorax_server.url, "/v1/completions", {"model": "", "prompt": "Say", "stop": [" " + words[2]]}).json()
    assert stopped["choices"][0]["finish_reason"] == "content_filter"
    adapter = post(lorax_server.url, "/v1/completions", {"model": "my/adapter", "prompt": "Say", "max_tokens": 1})
    assert adapter.header("x-adapter-id") == "my/adapter"
    # A negative max_tokens wraps to a huge u32.
    neg = post(lorax_server.url, "/v1/completions", {"model": "", "prompt": "Say", "max_tokens": -1}).json()
    assert neg["error"].endswith("Given: 2 `inputs` tokens and 4294967295 `max_new_tokens`")
    missing = post(lorax_server.url, "/v1/completions", {"prompt": "Say"})
    assert missing.status == 422
    assert missing.body.endswith(b"missing field `model` at line 1 column 16")


def test_chat_text_response(lorax_server: FakeLorax) -> None:
    before = int(time.time())
    raw = chat(lorax_server, temperature=0, max_tokens=64)
    body = raw.json()
    assert list(body) == ["id", "object", "created", "model", "choices", "usage", "system_fingerprint"]
    assert body["object"] == "text_completion"
    assert body["id"] == "null"
    assert body["model"] == lorax_server.config.model_id
    assert before <= body["created"] <= int(time.time())
    assert body["system_fingerprint"] == "0.1.0-native"
    (choice,) = body["choices"]
    assert list(choice) == ["index", "message", "finish_reason"]
    assert list(choice["message"]) == ["role", "content"]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "stop"
    # x-compute-characters counts the templated prompt.
    prompt = "<s>[INST] What is the capital of France? [/INST]"
    assert raw.header("x-compute-characters") == str(len(prompt))
    assert body["usage"]["prompt_tokens"] == 15  # like the Mistral example in wire-examples


def test_chat_sampling_default_and_greedy(lorax_server: FakeLorax) -> None:
    greedy = [chat(lorax_server, temperature=0).json()["choices"][0]["message"]["content"] for _ in range(2)]
    assert greedy[0] == greedy[1]
    sampled = {chat(lorax_server).json()["choices"][0]["message"]["content"] for _ in range(4)}
    assert len(sampled) > 1  # absent temperature samples, with a random seed


def test_chat_n2(lorax_server: FakeLorax) -> None:
    body = chat(lorax_server, n=2).json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["choices"][0]["finish_reason"] == body["choices"][1]["finish_reason"]
    err = chat(lorax_server, n=2, seed=1).json()
    assert err["error"] == "Input validation error: `seed` must not be set when `best_of` > 1"


def test_chat_tool_call(lorax_server: FakeLorax) -> None:
    body = chat(lorax_server, **EXAMPLES["chat.request.tools"]["body"]).json()
    (choice,) = body["choices"]
    message = choice["message"]
    assert list(message) == ["role", "tool_calls"]
    (call,) = message["tool_calls"]
    assert list(call) == ["id", "type", "function"]
    assert (call["id"], call["type"]) == ("0", "function")
    assert list(call["function"]) == ["description", "name", "arguments"]
    assert call["function"]["description"] is None
    assert call["function"]["name"] == "get_current_weather"
    args = call["function"]["arguments"]
    assert isinstance(args, str)
    # swap_remove of "_name": the last argument moves to the front.
    assert list(json.loads(args)) == ["format", "location"]
    assert json.loads(args)["format"] in ("celsius", "fahrenheit")
    assert choice["finish_reason"] == "stop"


def test_chat_tool_choice_forms(lorax_server: FakeLorax) -> None:
    body = EXAMPLES["chat.request.tool_choice_specific_function"]["body"]
    call = chat(lorax_server, **body).json()["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_current_weather"
    none = chat(lorax_server, tools=[WEATHER_TOOL], tool_choice="none", temperature=0).json()
    assert list(none["choices"][0]["message"]) == ["role", "content"]
    no_tool = chat(lorax_server, tools=[WEATHER_TOOL], tool_choice="no_tool").json()
    assert isinstance(no_tool["choices"][0]["message"]["content"], str)
    unrelated = chat(
        lorax_server, messages=[{"role": "user", "content": "Tell me a joke"}], tools=[WEATHER_TOOL]
    ).json()
    assert "content" in unrelated["choices"][0]["message"]  # picked no_tool


def test_chat_tool_errors(lorax_server: FakeLorax) -> None:
    raw = chat(lorax_server, tools=[WEATHER_TOOL], tool_choice="required")
    assert raw.status == 422
    assert raw.body == orjson.dumps(EXAMPLES["chat.error.tool_choice_required"]["body"])
    raw = chat(lorax_server, tools=[WEATHER_TOOL], response_format={"type": "json_object"})
    assert raw.body == orjson.dumps(EXAMPLES["chat.error.tools_and_response_format"]["body"])
    truncated = chat(lorax_server, tools=[WEATHER_TOOL], tool_choice="get_current_weather", max_tokens=3)
    error = truncated.json()["error"]
    assert error.startswith("Tool error: Failed to parse generated text: EOF while parsing")
    assert truncated.json()["error_type"] == "tool_error"


def test_chat_template_errors(lorax_server: FakeLorax) -> None:
    raw = chat(lorax_server, messages=[{"role": "assistant", "content": "hi"}])
    assert raw.body == orjson.dumps(EXAMPLES["chat.error.template"]["body"])
    raw = chat(lorax_server, messages=[{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}])
    assert raw.json()["error"].endswith("Only user and assistant roles are supported! (in <string>:1)")


@pytest.mark.lorax_server(chat_template=None)
def test_no_template(lorax_server: FakeLorax) -> None:
    assert chat(lorax_server).body == orjson.dumps(EXAMPLES["chat.error.no_template"]["body"])


@pytest.mark.lorax_server(chat_template="guideline")
def test_guideline_template(lorax_server: FakeLorax) -> None:
    assert chat(lorax_server).body == orjson.dumps(EXAMPLES["chat.error.missing_guideline"]["body"])
    assert chat(lorax_server, guideline="Be brief.").status == 200


@pytest.mark.lorax_server(chat_template="chatml")
def test_chatml_template_accepts_any_role(lorax_server: FakeLorax) -> None:
    raw = chat(lorax_server, messages=[{"role": "system", "content": "S"}, {"role": "tool", "content": "T"}])
    expected = "<|im_start|>system\nS<|im_end|>\n<|im_start|>tool\nT<|im_end|>\n<|im_start|>assistant\n"
    assert raw.header("x-compute-characters") == str(len(expected))


def test_chat_multimodal_and_system(lorax_server: FakeLorax) -> None:
    raw = chat(lorax_server, **EXAMPLES["chat.request.multimodal_chunks"]["body"])
    assert raw.status == 200
    prompt = (
        "<s>[INST] You are a helpful assistant.\n\nWhat animal is in this picture?"
        "![](https://upload.wikimedia.org/wikipedia/commons/3/3a/Cat03.jpg) [/INST]"
    )
    assert raw.header("x-compute-characters") == str(len(prompt))


def test_chat_tools_text_only_reaches_chunk_content(lorax_server: FakeLorax) -> None:
    # LoRAX's MessageContent::push drops the tools text for plain-string content (upstream bug).
    plain = chat(lorax_server, tools=[WEATHER_TOOL], tool_choice="none", temperature=0)
    no_tools = chat(lorax_server, temperature=0)
    assert plain.header("x-compute-characters") == no_tools.header("x-compute-characters")
    chunks = chat(
        lorax_server,
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}],
        tools=[WEATHER_TOOL],
        tool_choice="none",
        temperature=0,
    )
    assert int(chunks.header("x-compute-characters")) > int(no_tools.header("x-compute-characters"))


def test_chat_json_schema_and_object(lorax_server: FakeLorax) -> None:
    body = chat(lorax_server, **EXAMPLES["chat.request.json_schema"]["body"]).json()
    value = json.loads(body["choices"][0]["message"]["content"])
    assert list(value) == ["name", "age", "armor", "strength"]
    assert value["armor"] in ("leather", "chainmail", "plate")
    assert len(value["name"]) <= 10
    obj = chat(lorax_server, **EXAMPLES["chat.request.json_object"]["body"]).json()
    assert isinstance(json.loads(obj["choices"][0]["message"]["content"]), dict)
    text = chat(lorax_server, response_format={"type": "text"}, temperature=0).json()
    with pytest.raises(ValueError):
        json.loads(text["choices"][0]["message"]["content"])
