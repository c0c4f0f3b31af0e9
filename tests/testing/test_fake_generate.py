"""/generate, / and /invocations: shapes, key order, headers, the toy model's knobs, validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from lorax import codec
from lorax.testing import FakeLorax
from lorax.types import GenerateResponse

from ._fake_http import post, request

TIMING_HEADERS = [
    "x-compute-type",
    "x-compute-time",
    "x-compute-characters",
    "x-total-time",
    "x-prompt-tokens",
    "x-generated-tokens",
    "x-skipped-tokens",
    "x-total-tokens",
    "x-validation-time",
    "x-queue-time",
    "x-inference-time",
    "x-time-per-token",
    "x-time-to-first-token",
    "x-time-per-output-token",
    "x-model-id",
]


def generate(server: FakeLorax, inputs: str = "What is the capital of France?", **params: Any) -> Any:
    raw = post(server.url, "/generate", {"inputs": inputs, "parameters": params})
    assert raw.status == 200, raw.body
    return raw


def test_minimal_response_has_only_generated_text(lorax_server: FakeLorax) -> None:
    raw = generate(lorax_server, max_new_tokens=5)
    body = raw.json()
    assert list(body) == ["generated_text"]
    assert raw.header("content-type") == "application/json"
    assert raw.header("content-length") == str(len(raw.body))


def test_details_key_order_and_bytes_round_trip(lorax_server: FakeLorax) -> None:
    raw = generate(lorax_server, max_new_tokens=6, details=True)
    body = raw.json()
    details = body["details"]
    assert list(details) == [
        "finish_reason",
        "prompt_tokens",
        "generated_tokens",
        "skipped_tokens",
        "seed",
        "prefill",
        "tokens",
    ]
    assert details["seed"] is None  # greedy
    assert details["prefill"] == []
    assert details["generated_tokens"] == len(details["tokens"]) == 6
    assert details["finish_reason"] == "length"
    assert list(details["tokens"][0]) == ["id", "text", "logprob", "special", "skipped"]
    # The bytes are exactly what the codec prints for the same message (compact, f32 form).
    assert codec.to_json(codec.from_json(GenerateResponse, raw.body)) == raw.body
    assert "".join(t["text"] for t in details["tokens"]) == body["generated_text"]


def test_timing_headers_and_no_adapter_headers(lorax_server: FakeLorax) -> None:
    raw = generate(lorax_server, "héllo wörld", max_new_tokens=3, details=True)
    names = raw.header_names
    for name in TIMING_HEADERS:
        assert name in names
        if name not in ("x-compute-type", "x-model-id"):
            assert raw.header(name).isdigit()
    assert raw.header("x-compute-characters") == "11"  # Unicode scalars, not bytes
    assert raw.header("x-model-id") == lorax_server.config.model_id
    assert raw.header("x-generated-tokens") == "3"
    assert "x-adapter-id" not in names
    assert raw.header("access-control-allow-origin") == "*"
    assert raw.header("vary") == "origin, access-control-request-method, access-control-request-headers"
    assert all(n == n.lower() for n in names)
    assert "server" not in names


def test_adapter_headers(lorax_server: FakeLorax) -> None:
    raw = generate(lorax_server, max_new_tokens=1, adapter_id="org/adapter-a")
    assert raw.header("x-adapter-id") == "org/adapter-a"
    assert raw.header("x-adapter-source") == "hub"
    raw = generate(lorax_server, max_new_tokens=1, adapter_id="a", adapter_source="s3")
    assert raw.header("x-adapter-source") == "s3"
    raw = generate(lorax_server, max_new_tokens=1, merged_adapters={"ids": ["a", "b"], "weights": [0.5, 0.5]})
    assert raw.header("x-adapter-id") == "a,b"
    raw = generate(lorax_server, max_new_tokens=1, adapter_id="")
    assert raw.header("x-adapter-id") is None


def test_deterministic_and_sensitive_to_inputs(lorax_server: FakeLorax) -> None:
    def text(**kw: Any) -> str:
        return str(generate(lorax_server, **{"max_new_tokens": 8, **kw}).json()["generated_text"])

    base = text()
    assert text() == base
    assert text(adapter_id="x") != base
    assert text(merged_adapters={"ids": ["x", "y"], "weights": [1.0, 2.0]}) != text(
        merged_adapters={"ids": ["x", "y"], "weights": [2.0, 1.0]}
    )
    assert text(seed=5) == base  # greedy ignores the seed
    assert text(do_sample=True, seed=5) == text(do_sample=True, seed=5)
    assert text(do_sample=True, seed=5) != text(do_sample=True, seed=6)
    assert text(temperature=0.7, seed=1) != text(temperature=0.9, seed=1)
    assert generate(lorax_server, "another prompt", max_new_tokens=8).json()["generated_text"] != base


def test_seeds(lorax_server: FakeLorax) -> None:
    d = generate(lorax_server, max_new_tokens=2, details=True, do_sample=True).json()["details"]
    assert isinstance(d["seed"], int)
    assert 2**53 < d["seed"] < 2**64
    raw = generate(lorax_server, max_new_tokens=2, details=True, do_sample=True, seed=18446744073709551615)
    assert b'"seed":18446744073709551615' in raw.body
    assert generate(lorax_server, max_new_tokens=2, details=True, temperature=0).json()["details"]["seed"] is None


def test_eos_and_special_token(lorax_server: FakeLorax) -> None:
    d = generate(lorax_server, details=True).json()["details"]
    assert d["finish_reason"] == "eos_token"
    last = d["tokens"][-1]
    assert (last["id"], last["text"], last["special"]) == (2, "</s>", True)
    assert all(not t["special"] for t in d["tokens"][:-1])


def test_ignore_eos_token_runs_to_max_new_tokens(lorax_server: FakeLorax) -> None:
    d = generate(lorax_server, details=True, ignore_eos_token=True, max_new_tokens=40).json()["details"]
    assert (d["finish_reason"], d["generated_tokens"]) == ("length", 40)
    assert not any(t["special"] for t in d["tokens"])


def test_stop_sequence(lorax_server: FakeLorax) -> None:
    full = generate(lorax_server, details=True).json()
    words = full["generated_text"].split(" ")
    stop = " " + words[3]
    cut = generate(lorax_server, details=True, stop=[stop]).json()
    assert cut["details"]["finish_reason"] == "stop_sequence"
    assert cut["generated_text"].endswith(stop)
    assert full["generated_text"].startswith(cut["generated_text"])


def test_return_full_text(lorax_server: FakeLorax) -> None:
    plain = generate(lorax_server, "Prompt:", max_new_tokens=3).json()["generated_text"]
    full = generate(lorax_server, "Prompt:", max_new_tokens=3, return_full_text=True).json()["generated_text"]
    assert full == "Prompt:" + plain


def test_decoder_input_details(lorax_server: FakeLorax) -> None:
    body = generate(lorax_server, "What is Deep Learning?", max_new_tokens=2, decoder_input_details=True).json()
    prefill = body["details"]["prefill"]
    assert prefill[0] == {"id": 1, "text": "<s>", "logprob": None}
    assert [p["text"] for p in prefill[1:]] == ["What", "is", "Deep", "Learning", "?"]
    assert all(isinstance(p["logprob"], float) for p in prefill[1:])


def test_return_k_alternatives(lorax_server: FakeLorax) -> None:
    tokens = generate(lorax_server, max_new_tokens=8, details=True, return_k_alternatives=3).json()["details"]["tokens"]
    for tok in tokens:
        assert list(tok) == ["id", "text", "logprob", "special", "alternative_tokens", "skipped"]
        alts = tok["alternative_tokens"]
        assert len(alts) == 3
        assert alts[0] == {"id": tok["id"], "text": tok["text"], "logprob": tok["logprob"]}
    assert any(a["logprob"] is None for tok in tokens for a in tok["alternative_tokens"])


def test_best_of(lorax_server: FakeLorax) -> None:
    d = generate(lorax_server, best_of=2, do_sample=True, details=True, max_new_tokens=5).json()["details"]
    assert list(d)[-1] == "best_of_sequences"
    (seq,) = d["best_of_sequences"]
    assert list(seq) == ["generated_text", "finish_reason", "generated_tokens", "seed", "prefill", "tokens"]
    assert seq["seed"] > 2**53
    assert d["seed"] > 2**53
    # best_of 0 is silently 1 on /generate
    assert (
        "best_of_sequences" not in generate(lorax_server, best_of=0, details=True, max_new_tokens=2).json()["details"]
    )


SCHEMA = {
    "$defs": {"Armor": {"enum": ["leather", "chainmail", "plate"], "title": "Armor", "type": "string"}},
    "properties": {
        "name": {"maxLength": 10, "title": "Name", "type": "string"},
        "age": {"title": "Age", "type": "integer", "minimum": 1, "maximum": 99},
        "armor": {"$ref": "#/$defs/Armor"},
        "strength": {"title": "Strength", "type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "stats": {"type": "object", "properties": {"hp": {"type": "number"}, "alive": {"type": "boolean"}}},
    },
    "required": ["name", "age", "armor", "strength"],
    "title": "Character",
    "type": "object",
}


def test_response_format_schema(lorax_server: FakeLorax) -> None:
    text = generate(lorax_server, response_format={"type": "json_object", "schema": SCHEMA}).json()["generated_text"]
    value = json.loads(text)
    assert list(value) == ["name", "age", "armor", "strength", "tags", "stats"]
    assert isinstance(value["name"], str)
    assert len(value["name"]) <= 10
    assert isinstance(value["age"], int)
    assert 1 <= value["age"] <= 99
    assert value["armor"] in ("leather", "chainmail", "plate")
    assert isinstance(value["strength"], int)
    assert len(value["tags"]) <= 2
    assert all(isinstance(t, str) for t in value["tags"])
    assert isinstance(value["stats"]["hp"], float)
    assert isinstance(value["stats"]["alive"], bool)


def test_response_format_default_and_null_schema(lorax_server: FakeLorax) -> None:
    arbitrary = generate(lorax_server, response_format={"type": "text"}).json()["generated_text"]
    assert isinstance(json.loads(arbitrary), dict)  # schema absent: ArbitraryJsonModel, even for "text"
    free = generate(lorax_server, response_format={"type": "json_object", "schema": None}).json()["generated_text"]
    with pytest.raises(ValueError):
        json.loads(free)  # schema null: unconstrained


def test_compat_route_array_and_defaults(lorax_server: FakeLorax) -> None:
    for path in ("/", "/invocations"):
        raw = post(lorax_server.url, path, {"inputs": "Hi", "parameters": {"max_new_tokens": 3}})
        assert raw.status == 200
        assert raw.body.startswith(b'[{"generated_text":')
        assert raw.body.endswith(b"}]")
        assert raw.header("x-model-id") == lorax_server.config.model_id
    # The official client's request, byte for byte (every parameter explicit, nulls included).
    body = {
        "inputs": "Hi",
        "parameters": {
            "adapter_id": None,
            "adapter_source": None,
            "merged_adapters": None,
            "api_token": None,
            "do_sample": False,
            "max_new_tokens": 4,
            "ignore_eos_token": False,
            "repetition_penalty": None,
            "return_full_text": False,
            "stop": [],
            "seed": None,
            "temperature": None,
            "top_k": None,
            "top_p": None,
            "truncate": None,
            "typical_p": None,
            "best_of": None,
            "watermark": False,
            "details": True,
            "decoder_input_details": False,
            "return_k_alternatives": None,
            "response_format": None,
        },
        "stream": False,
    }
    (item,) = post(lorax_server.url, "/", body).json()
    assert item["details"]["generated_tokens"] == 4


@pytest.mark.lorax_server(compat_return_full_text=True)
def test_compat_return_full_text_default(lorax_server: FakeLorax) -> None:
    (item,) = post(lorax_server.url, "/", {"inputs": "Hi:", "parameters": {"max_new_tokens": 2}}).json()
    assert item["generated_text"].startswith("Hi:")
    plain = post(lorax_server.url, "/generate", {"inputs": "Hi:", "parameters": {"max_new_tokens": 2}}).json()
    assert not plain["generated_text"].startswith("Hi:")


CONFLICT = "at most one of `adapter_id` or `adapters` may be provided"
VALIDATION = [
    ({"adapter_id": "a", "merged_adapters": {"ids": ["b"], "weights": [1]}}, CONFLICT),
    ({"adapter_id": "", "merged_adapters": {"ids": ["b"], "weights": [1]}}, CONFLICT),
    ({"merged_adapters": {"ids": []}}, "at least one adapter ID must be provided when setting `adapters`"),
    ({"merged_adapters": {"ids": ["a"]}}, "number of adapter IDs must match number of adapter weights"),
    ({"best_of": 2}, "you must use sampling when `best_of` is > 1"),
    ({"temperature": -0.1}, "`temperature` must be non-negative"),
    ({"repetition_penalty": 0}, "`repetition_penalty` must be strictly positive"),
    ({"frequency_penalty": 2.5}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
    ({"presence_penalty": -3}, "`presence_penalty` must be >= -2.0 and <= 2.0"),
    ({"top_p": 0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"top_p": 1.5}, "`top_p` must be > 0.0 and < 1.0"),
    ({"typical_p": 1.0}, "`typical_p` must be > 0.0 and < 1.0"),
    ({"top_k": 0}, "`top_k` must be strictly positive"),
    ({"return_k_alternatives": 0}, "`return_k_alternatives` must be strictly positive"),
    ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
    ({"best_of": 2, "do_sample": True, "seed": 1}, "`seed` must not be set when `best_of` > 1"),
    ({"truncate": 0}, "`truncate` must be strictly positive and less than 1024. Given: 0"),
    ({"truncate": 1025}, "`truncate` must be strictly positive and less than 1024. Given: 1025"),
    (
        {"max_new_tokens": 2041},
        "`inputs` tokens + `max_new_tokens` must be <= 2048. Given: 8 `inputs` tokens and 2041 `max_new_tokens`",
    ),
    ({"best_of": 3, "do_sample": True}, "`best_of` must be > 0 and <= 2. Given: 3"),
    # First failure wins (docs/wire.md, "Validation order"): temperature before top_k before stop.
    ({"temperature": -1, "top_k": 0, "stop": ["a"] * 9}, "`temperature` must be non-negative"),
    ({"top_k": 0, "stop": ["a"] * 9}, "`top_k` must be strictly positive"),
    ({"best_of": 3, "temperature": -1}, "`best_of` must be > 0 and <= 2. Given: 3"),
]  # fmt: skip


@pytest.mark.parametrize(("params", "message"), VALIDATION)
def test_validation_errors(lorax_server: FakeLorax, params: dict[str, Any], message: str) -> None:
    raw = post(lorax_server.url, "/generate", {"inputs": "What is the capital of France?", "parameters": params})
    assert raw.status == 422
    assert raw.header("content-type") == "application/json"
    assert raw.body == orjson.dumps({"error": f"Input validation error: {message}", "error_type": "validation"})
    assert not [n for n in raw.header_names if n.startswith("x-")]  # error responses carry no x-* headers


def test_empty_inputs_and_input_length(lorax_server: FakeLorax) -> None:
    raw = post(lorax_server.url, "/generate", {"inputs": ""})
    assert raw.json() == {"error": "Input validation error: `inputs` cannot be empty", "error_type": "validation"}
    long = " word" * 1100
    raw = post(lorax_server.url, "/generate", {"inputs": long})
    assert raw.json()["error"] == "Input validation error: `inputs` must have less than 1024 tokens. Given: 1101"


@pytest.mark.lorax_server(max_best_of=1)
def test_best_of_disabled(lorax_server: FakeLorax) -> None:
    raw = post(lorax_server.url, "/generate", {"inputs": "x", "parameters": {"best_of": 2, "do_sample": True}})
    assert raw.json()["error"] == "Input validation error: `best_of` != 1 is not allowed for this endpoint"


def test_wire_example_bodies_validate(lorax_server: FakeLorax) -> None:
    examples = json.loads((Path(__file__).parents[1] / "fixtures" / "wire-examples.json").read_text())
    for key in [
        "generate.request.minimal",
        "generate.request.all_parameters",
        "generate.request.response_format_schema",
        "generate.request.response_format_arbitrary_json",
        "generate.request.official_python_client",
    ]:
        ex = examples[key]
        path = "/" if ex["http"].startswith("POST /") and "base URL" in ex["http"] else "/generate"
        body = ex["body"]
        if key == "generate.request.all_parameters":
            body["parameters"]["adapter_id"] = None  # adapter downloads are not modelled; keep the base
        raw = post(lorax_server.url, path, body)
        assert raw.status == 200, (key, raw.body)
    merged = examples["generate.request.merged_adapters"]
    assert post(lorax_server.url, "/generate", merged["body"]).status == 200


def test_head_and_get_on_post_route(lorax_server: FakeLorax) -> None:
    raw = request(lorax_server.url, "GET", "/generate")
    assert (raw.status, raw.header("allow"), raw.body) == (405, "POST", b"")
