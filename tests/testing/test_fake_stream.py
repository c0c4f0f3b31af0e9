"""SSE routes: framing (one chunk per event), keep-alives, error events under 200, [DONE]."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from lorax import codec
from lorax.testing import FakeLorax
from lorax.types import StreamResponse

from ._fake_http import post, sse_events

EXAMPLES = json.loads((Path(__file__).parents[1] / "fixtures" / "wire-examples.json").read_text())
STREAM_HEAD = [
    "content-type",
    "cache-control",
    "x-compute-type",
    "x-compute-characters",
    "x-accel-buffering",
    "x-model-id",
]


def stream(
    server: FakeLorax, path: str = "/generate_stream", headers: dict[str, str] | None = None, **body: Any
) -> Any:
    body.setdefault("inputs", "What is the capital of France?")
    return post(server.url, path, body, headers=headers)


def test_generate_stream_framing(lorax_server: FakeLorax) -> None:
    raw = stream(lorax_server, parameters={"max_new_tokens": 4, "details": True})
    assert raw.status == 200
    assert raw.complete
    for name in STREAM_HEAD:
        assert name in raw.header_names
    assert raw.header("content-type") == "text/event-stream"
    assert raw.header("cache-control") == "no-cache"
    assert raw.header("x-accel-buffering") == "no"
    assert raw.header("transfer-encoding") == "chunked"
    assert "x-total-time" not in raw.header_names  # no timing headers on streams
    # Each event is exactly one chunk: b"data: " + compact JSON + b"\n\n".
    assert len(raw.chunks) == 4
    for chunk in raw.chunks:
        assert chunk.startswith(b"data: {")
        assert chunk.endswith(b"}\n\n")
        assert chunk.count(b"\n") == 2
    events = [orjson.loads(c[6:]) for c in raw.chunks]
    for event in events[:-1]:
        assert list(event) == ["token", "generated_text", "details"]
        assert event["generated_text"] is None
        assert event["details"] is None
    last = events[-1]
    assert last["generated_text"] == "".join(e["token"]["text"] for e in events)
    assert last["details"] == {"finish_reason": "length", "prompt_tokens": 8, "generated_tokens": 4, "seed": None}
    for chunk in raw.chunks:
        assert codec.to_json(codec.from_json(StreamResponse, chunk[6:-2])) == chunk[6:-2]


def test_stream_matches_non_stream_and_eos(lorax_server: FakeLorax) -> None:
    raw = stream(lorax_server, parameters={"details": True})
    events = [orjson.loads(e) for e in sse_events(raw.body)]
    last = events[-1]
    assert last["token"]["special"] is True
    assert last["token"]["text"] == "</s>"
    assert last["details"]["finish_reason"] == "eos_token"
    whole = post(lorax_server.url, "/generate", {"inputs": "What is the capital of France?"}).json()
    assert last["generated_text"] == whole["generated_text"]
    no_details = stream(lorax_server, parameters={"max_new_tokens": 2})
    assert orjson.loads(sse_events(no_details.body)[-1])["details"] is None
    full = stream(lorax_server, inputs="Q:", parameters={"max_new_tokens": 2, "return_full_text": True})
    texts = [orjson.loads(e) for e in sse_events(full.body)]
    assert texts[-1]["generated_text"].startswith("Q:")
    assert not texts[0]["token"]["text"].startswith("Q:")


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"best_of": 2}, "generate_stream.event.error_validation"),
        ({"best_of": 0}, "generate_stream.event.error_validation"),
    ],
)
def test_stream_validation_event_bytes(lorax_server: FakeLorax, params: dict[str, Any], key: str) -> None:
    raw = stream(lorax_server, parameters=params)
    assert raw.status == 200
    assert raw.complete
    assert raw.body == EXAMPLES[key]["raw"].encode()


def test_stream_error_events(lorax_server: FakeLorax) -> None:
    raw = stream(lorax_server, parameters={"decoder_input_details": True})
    assert raw.body == (
        b'data: {"error":"Input validation error: `decoder_input_details` == true is not supported when streaming '
        b'tokens","error_type":"validation"}\n\n'
    )
    raw = stream(lorax_server, parameters={"temperature": -1})
    assert raw.status == 200
    assert raw.body == (
        b'data: {"error":"Input validation error: `temperature` must be non-negative","error_type":"validation"}\n\n'
    )
    # Extraction failures are still plain HTTP errors before the stream starts.
    raw = post(lorax_server.url, "/generate_stream", {"inputs": 1})
    assert raw.status == 422
    assert raw.header("content-type") == "text/plain; charset=utf-8"


def test_compat_stream(lorax_server: FakeLorax) -> None:
    raw = post(lorax_server.url, "/", {"inputs": "Hi", "parameters": {"max_new_tokens": 3}, "stream": True})
    assert raw.header("content-type") == "text/event-stream"
    assert len(sse_events(raw.body)) == 3
    assert b"[DONE]" not in raw.body


def test_keep_alive_comments(lorax_server: FakeLorax) -> None:
    headers = {"x-lorax-fake-fault": "keep-alive=20ms; token-latency=70ms"}
    raw = stream(lorax_server, headers=headers, parameters={"max_new_tokens": 2})
    assert EXAMPLES["sse.keepalive"]["raw"].encode() in raw.chunks
    assert raw.chunks[0] == b":\n\n"  # before the first token too
    assert len(sse_events(raw.body)) == 2
    # Comments are whole chunks of their own, never glued to an event.
    assert all(c == b":\n\n" or c.startswith(b"data: ") for c in raw.chunks)


def test_completions_stream(lorax_server: FakeLorax) -> None:
    raw = stream(lorax_server, "/v1/completions", model="", prompt="Say", stream=True)
    assert raw.complete
    *events, done = raw.chunks
    assert done == b"data: [DONE]\n\n"
    first = orjson.loads(events[0][6:])
    assert first == {
        "id": "null",
        "object": "text_completion",
        "created": 0,
        "model": "null",
        "choices": [{"index": 0, "text": first["choices"][0]["text"], "logprobs": None, "finish_reason": None}],
        "usage": {"prompt_tokens": 0, "total_tokens": 0, "completion_tokens": 0},
    }
    last = orjson.loads(events[-1][6:])
    assert last["choices"][0] == {"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}
    usage = last["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] == 2 + len(events)


def test_completions_stream_length_and_logprobs(lorax_server: FakeLorax) -> None:
    raw = stream(lorax_server, "/v1/completions", model="", prompt="Say", stream=True, max_tokens=2)
    last = orjson.loads(sse_events(raw.body)[-2])
    assert last["choices"][0]["finish_reason"] == "length"
    assert last["choices"][0]["text"]
    raw = stream(lorax_server, "/v1/completions", model="", prompt="Say", stream=True, logprobs=1)
    assert raw.body.endswith(b'"error_type":"validation"}\n\n')  # PrefillDetailsStream, no [DONE]
    assert b"[DONE]" not in raw.body


def test_chat_stream(lorax_server: FakeLorax) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    raw = stream(lorax_server, "/v1/chat/completions", model="", messages=messages, stream=True, temperature=0)
    *events, done = sse_events(raw.body)
    assert done == b"[DONE]"
    first = orjson.loads(events[0])
    assert list(first) == ["id", "object", "created", "model", "choices"]
    assert first["object"] == "chat.completion.chunk"
    assert first["model"] == "null"
    assert first["created"] == 0
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert first["choices"][0]["finish_reason"] is None
    last = orjson.loads(events[-1])
    assert last["choices"][0]["delta"] == {}
    assert last["choices"][0]["finish_reason"] == "stop"
    assert list(last["usage"]) == ["prompt_tokens", "total_tokens", "completion_tokens"]
    raw = stream(lorax_server, "/v1/chat/completions", model="", messages=messages, stream=True, max_tokens=2)
    last = orjson.loads(sse_events(raw.body)[-2])
    assert last["choices"][0]["finish_reason"] == "length"
    assert last["choices"][0]["delta"]["role"] == "assistant"
    assert last["choices"][0]["delta"]["content"]


def test_chat_template_error_is_http_even_when_streaming(lorax_server: FakeLorax) -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    raw = stream(lorax_server, "/v1/chat/completions", model="", messages=messages, stream=True)
    assert raw.status == 422
    assert raw.header("content-type") == "application/json"
    assert raw.body == orjson.dumps(EXAMPLES["chat.error.template"]["body"])


def test_v1_stream_error_has_no_done(lorax_server: FakeLorax) -> None:
    raw = stream(lorax_server, "/v1/completions", model="", prompt="x", stream=True, temperature=-1)
    assert raw.chunks == [
        b'data: {"error":"Input validation error: `temperature` must be non-negative","error_type":"validation"}\n\n'
    ]
