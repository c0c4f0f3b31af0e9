"""LoRAX JSON between Python (lorax.codec) and Node (interop/loraxjson.mjs).

The Node codec reads the same custom options from the protobuf-es descriptors that
lorax.codec reads from the Python ones. Every body in tests/fixtures/wire-examples.json
goes Python -> LoRAX JSON -> Node -> binary and LoRAX JSON -> Python, and must come back
equal (the JSON byte for byte). The last test checks the table of differences between
LoRAX JSON and protobuf-es' canonical proto3 JSON in README.md against what protobuf-es
actually does, so the table cannot drift.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from interop_fixtures import generate_request, generate_request_struct, stream_responses, stream_responses_struct
from interop_helpers import ROOT, run_node, unb64

from lorax import codec, errors
from lorax import types as T
from lorax._convert import from_proto, proto_class
from lorax._message import Message
from lorax.v1 import messages as M

EXAMPLES = json.loads((ROOT / "tests" / "fixtures" / "wire-examples.json").read_text(encoding="utf-8"))

# Example name prefix -> the message its body is. Longest prefix wins.
TYPES = {
    "generate.request": "GenerateRequest",
    "generate.request.official_python_client": "CompatGenerateRequest",
    "compat.request": "CompatGenerateRequest",
    "generate_stream.request": "GenerateRequest",
    "generate.response": "GenerateResponse",
    "compat.response": "CompatGenerateResponse",
    "generate_stream.event": "StreamResponse",
    "completions.request": "CompletionRequest",
    "completions.response": "CompletionResponse",
    "completions.stream.event": "CompletionStreamResponse",
    "chat.request": "ChatCompletionRequest",
    "chat.response": "ChatCompletionResponse",
    "chat.stream.event": "ChatCompletionStreamResponse",
    "chat.error": "ChatCompletionResponse",
    "tokenize.request": "TokenizeRequest",
    "tokenize.response": "TokenizeResponse",
    "tokenize.error": "TokenizeResponse",
    "embed.request": "EmbedRequest",
    "embed.response": "EmbedResponse",
    "embed.error": "EmbeddingsResponse",
    "v1_embeddings.request": "EmbeddingsRequest",
    "v1_embeddings.response": "EmbeddingsResponse",
    "classify.request": "ClassifyRequest",
    "classify.response": "ClassifyResponse",
    "classify.error": "ClassifyBatchResponse",
    "classify_batch.request": "ClassifyBatchRequest",
    "classify_batch.response": "ClassifyBatchResponse",
    "info.response": "InfoResponse",
    "health.response.unhealthy": "HealthResponse",
    "metrics.response.json": "MetricFamilies",
    "error.validation": "GenerateResponse",
    "error.overloaded": "GenerateResponse",
    "error.generation": "GenerateResponse",
    "error.incomplete_generation": "GenerateResponse",
}


def message_class(type_name: str) -> type[Message]:
    cls: type[Message] = getattr(M, type_name)
    return cls


def type_for(name: str) -> str | None:
    matches = [prefix for prefix in TYPES if name == prefix or name.startswith(prefix + ".")]
    return TYPES[max(matches, key=len)] if matches else None


def has_map(descriptor: Any, seen: frozenset[str] = frozenset()) -> bool:
    for field in descriptor.fields:
        sub = field.message_type
        if sub is None or sub.full_name in seen:
            continue
        if sub.GetOptions().map_entry or has_map(sub, seen | {descriptor.full_name}):
            return True
    return False


def build_cases() -> list[dict[str, Any]]:
    cases = []
    for name, example in EXAMPLES.items():
        type_name = type_for(name)
        if type_name is None or "body" not in example:
            continue
        cls = message_class(type_name)
        try:
            message = codec.from_json(cls, orjson.dumps(example["body"]))
        except errors.APIStatusError as exc:
            cases.append(
                {
                    "name": name,
                    "type": f"lorax.v1.{type_name}",
                    "json": orjson.dumps(example["body"]).decode(),
                    "expect_error": True,
                    "error": exc.message,
                    "error_type": exc.error_type,
                }
            )
            continue
        cases.append(
            {"name": name, "type": f"lorax.v1.{type_name}", "json": codec.to_json(message).decode(), "message": message}
        )
    # The fixtures of the binary test, and f32 values at every layout threshold of
    # Rust's float printing, through LoRAX JSON.
    for i, msg in enumerate([from_proto(generate_request()), *map(from_proto, stream_responses()), *f32_edge_cases()]):
        text = codec.to_json(msg)
        # f32 fields are rounded on the wire: compare with what Python itself reads back.
        cases.append(
            {
                "name": f"fixture.{i}",
                "type": msg.__lorax_full_name__,
                "json": text.decode(),
                "message": codec.from_json(type(msg), text),
            }
        )
    return cases


def f32_edge_cases() -> list[Message]:
    logprobs = [-0.000012, -3.5762787e-7, -1.0, 1e13, 1.4e-45, 0.1 + 0.2, -0.34, 123456.79, 1e-6, 9.999999e-7]
    tokens = [T.Token(id=i, text=str(i), logprob=v) for i, v in enumerate(logprobs)]
    details = T.Details(
        finish_reason="length",
        prompt_tokens=1,
        generated_tokens=len(tokens),
        tokens=tokens,
        prefill=[T.PrefillToken(id=1, text="<s>")],  # logprob null
    )
    embeddings = [1e13, 1.5e-6, -0.0, 0.0, 3.4e38, 1e-7, 16777217.0, 2.5, -7.0]
    return [T.GenerateResponse(generated_text="x", details=details), T.EmbedResponse(embeddings=embeddings)]


def has_map_struct(cls: type[Message]) -> bool:
    return has_map(proto_class(cls).DESCRIPTOR)


CASES = build_cases()


@pytest.fixture(scope="module")
def node_json(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    payload = [{k: v for k, v in case.items() if k in ("name", "type", "json", "expect_error")} for case in CASES]
    return run_node("json", payload=payload, tmp_path=tmp_path_factory.mktemp("json"))


def test_the_examples_cover_every_shape() -> None:
    covered = {case["type"] for case in CASES}
    for needed in (
        "GenerateRequest",
        "GenerateResponse",
        "StreamResponse",
        "CompatGenerateResponse",
        "ChatCompletionRequest",
        "TokenizeResponse",
        "ClassifyBatchResponse",
        "MetricFamilies",
    ):
        assert f"lorax.v1.{needed}" in covered
    assert sum(1 for case in CASES if case.get("expect_error")) >= 5
    assert len(CASES) >= 50


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_node_reads_and_writes_lorax_json(node_json: dict[str, Any], case: dict[str, Any]) -> None:
    result = next(r for r in node_json["results"] if r["name"] == case["name"])
    if case.get("expect_error"):
        # An error body where a message was expected: both sides raise, with the same fields.
        assert result["error"] == case["error"]
        assert result["error_type"] == case["error_type"]
        return
    message = case["message"]
    cls = type(message)
    got = proto_class(cls).FromString(unb64(result["binary"]))
    assert got == message.to_proto()
    assert cls.from_proto(got) == message
    if has_map_struct(cls):
        # protobuf maps have no order (and JS objects move integer-like keys first).
        assert orjson.loads(result["lorax_json"]) == orjson.loads(case["json"])
    else:
        assert result["lorax_json"] == case["json"]


def test_node_built_fixtures_print_like_python(node_json: dict[str, Any]) -> None:
    built = node_json["built"]
    assert built["generate_request"] == codec.to_json(generate_request()).decode()
    assert built["generate_request"] == codec.to_json(generate_request_struct()).decode()
    assert built["stream"] == [codec.to_json(m).decode() for m in stream_responses()]
    assert built["stream"] == [codec.to_json(m).decode() for m in stream_responses_struct()]
    # The parts of the request that a canonical proto3 JSON printer gets wrong for LoRAX.
    assert '"seed":18446744073709551557' in built["generate_request"]
    assert '"merge_strategy":"ties"' in built["generate_request"]
    assert '"weights":[0.7,0.3]' in built["generate_request"]
    assert '"schema":{"type":"object","properties":{"b":' in built["generate_request"]
    assert built["stream"][0].endswith('"generated_text":null,"details":null}')
    assert '"logprob":null' in built["stream"][2]


def test_f64_exponent_spelling(tmp_path: Path) -> None:
    sample = T.MetricSample(key="k", value=1.25e17)
    assert codec.to_json(sample) == b'{"key":"k","value":1.25e17}'
    assert codec.to_json(sample.to_proto()) == b'{"key":"k","value":1.25e17}'


def test_f32_max() -> None:
    largest = T.EmbedResponse(embeddings=[3.4028234663852886e38])
    assert codec.to_json(largest) == b'{"embeddings":[3.4028235e38]}'
    assert codec.to_json(largest.to_proto()) == b'{"embeddings":[3.4028235e38]}'


def test_fixtures_convert_between_struct_and_upb() -> None:
    """The Struct fixtures (users' spelling) and the upb ones (binary tests) are the same messages."""
    assert T.GenerateRequest.from_proto(generate_request()) == generate_request_struct()
    assert generate_request_struct().to_proto() == generate_request()
    assert generate_request_struct().to_proto().SerializeToString() == generate_request().SerializeToString()
    assert [T.StreamResponse.from_proto(e) for e in stream_responses()] == stream_responses_struct()
    assert [e.to_proto() for e in stream_responses_struct()] == stream_responses()


# ---------------------------------------------------------------------------------
# The README table of differences


SECTION = "## Using the schemas from another language"


def readme_rows() -> dict[str, dict[str, str]]:
    """The rows of the differences table: id -> {lorax, protobuf_es, read}."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1]
    section = re.split(r"\n## ", section, maxsplit=1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| `") else []
        if len(cells) != 5:
            continue
        ident = cells[0].strip("`")
        code = [re.findall(r"``\s?(.+?)\s?``|`([^`]+)`", cell) for cell in cells[2:4]]
        read = re.match(r"\*\*(.+?)\*\*", cells[4])
        rows[ident] = {
            "lorax": next(a or b for a, b in code[0]) if code[0] else cells[2],
            "protobuf_es": next(a or b for a, b in code[1]) if code[1] else cells[3],
            "read": read.group(1) if read else cells[4],
        }
    return rows


def test_readme_differences_table_matches_protobuf_es(tmp_path: Path) -> None:
    observed = {row["id"]: row for row in run_node("differences")["rows"]}
    documented = readme_rows()
    assert sorted(documented) == sorted(observed), "README rows and roundtrip.mjs differences must match"
    for ident, row in observed.items():
        doc = documented[ident]
        assert doc["lorax"] == row["lorax"], ident
        assert doc["protobuf_es"] == row["protobuf_es"], ident
        assert doc["read"] == row["read"], ident


def test_python_codec_agrees_with_the_lorax_column() -> None:
    """The LoRAX column is what lorax.codec prints too (spot checks of the same values)."""
    from lorax.v1 import openai_pb2 as o

    assert b'"seed":9007199254740993' in codec.to_json(T.GenerateParameters(seed=2**53 + 1))
    token = T.Token(id=1, text="a", logprob=-0.3400000035762787)
    assert b'"logprob":-0.34' in codec.to_json(token)
    assert b'"temperature":1.0' in codec.to_json(T.GenerateParameters(temperature=1.0))
    assert b'"logprob":null' in codec.to_json(T.Token(id=1, text="a", logprob=float("-inf")))
    assert codec.to_json(T.CompatGenerateResponse(responses=[T.GenerateResponse(generated_text="hi")])) == (
        b'[{"generated_text":"hi"}]'
    )
    chat = T.ChatCompletionRequest(
        model="",
        messages=[T.ChatMessage(role="user", content="hi")],
        tool_choice=T.NamedToolChoice(function=T.FunctionName(name="get_weather")),
    )
    assert b'"content":"hi"' in codec.to_json(chat)
    assert b'"tool_choice":{"Function":{"name":"get_weather"}}' in codec.to_json(chat)
    # The upb twin (what a binary frame carries) prints the same bytes.
    upb_chat = o.ChatCompletionRequest(
        messages=[o.ChatMessage(role="user", text="hi")],
        tool_choice=o.ToolChoice(function=o.NamedToolChoice(function=o.FunctionName(name="get_weather"))),
    )
    assert codec.to_json(upb_chat) == codec.to_json(chat)
    assert chat.to_proto() == upb_chat
    with pytest.raises(errors.ValidationError):
        codec.from_json(T.StreamResponse, b'{"error":"Input validation error","error_type":"validation"}')
