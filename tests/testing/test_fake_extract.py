"""axum's Json extractor rejections (docs/wire.md, "Rejections before LoRAX's code runs"):
status, text/plain, exact text and column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorax.testing import FakeLorax
from lorax.testing import _schemas as sc
from lorax.testing._extract import is_json_content_type
from lorax.testing._serde import SerdeError, deserialize

from ._fake_http import request

EXAMPLES = json.loads((Path(__file__).parents[1] / "fixtures" / "wire-examples.json").read_text())
DESER = "Failed to deserialize the JSON body into the target type: "
SYNTAX = "Failed to parse the request body as JSON: "
TEXT = "text/plain; charset=utf-8"

CHAT_HEAD = '{"model":"","messages":[{"role":"user","content":"hi"}]'

# 422 texts of axum's Json extractor (serde_path_to_error's path, serde's message, the
# position), with a body that puts the error at the same column.
VERIFIED_422 = [
    ("/generate", '{"parameters":{}}', "missing field `inputs` at line 1 column 17"),
    ("/generate", '{"inputs":["a"]}', "inputs: invalid type: sequence, expected a string at line 1 column 10"),
    (
        "/generate",
        '{"inputs":"a","parameters":null}',
        "parameters: invalid type: null, expected struct GenerateParameters at line 1 column 31",
    ),
    (
        "/generate",
        '{"inputs":"a","parameters":{"stop":"\\n"}}',
        'parameters.stop: invalid type: string "\\n", expected a sequence at line 1 column 39',
    ),
    (
        "/generate",
        '{"inputs":"a","parameters":{"do_sample":null}}',
        "parameters.do_sample: invalid type: null, expected a boolean at line 1 column 44",
    ),
    (
        "/generate",
        '{"inputs":"a","parameters":{"seed":"42"}}',
        'parameters.seed: invalid type: string "42", expected u64 at line 1 column 39',
    ),
    (
        "/generate",
        '{"inputs":"a","parameters":{"seed":-1}}',
        "parameters.seed: invalid value: integer `-1`, expected u64 at line 1 column 37",
    ),
    (
        "/generate",
        '{"inputs":"a","parameters":{"max_new_tokens":10.0}}',
        "parameters.max_new_tokens: invalid type: floating point `10.0`, expected u32 at line 1 column 49",
    ),
    (
        "/generate",
        '{"inputs":"a","parameters":{"top_k":3000000000}}',
        "parameters.top_k: invalid value: integer `3000000000`, expected i32 at line 1 column 46",
    ),
    (
        "/generate",
        '{"inputs":"a","parameters":{"temperature":"0.5"}}',
        'parameters.temperature: invalid type: string "0.5", expected f32 at line 1 column 47',
    ),
    (
        "/generate",
        '{"inputs":"a","parameters":{"response_format":{"type":"JSON_OBJECT"}}}',
        "parameters.response_format.type: unknown variant `JSON_OBJECT`, expected one of `Text`, `JsonObject`, "
        "`JsonSchema` at line 1 column 67",
    ),
    (
        "/generate",
        '{"inputs":"a","parameters":{"merged_adapters":{"weights":[1.0]}}}',
        "parameters.merged_adapters: missing field `ids` at line 1 column 63",
    ),
    ("/generate", '{"inputs":"a","inputs":"b"}', "duplicate field `inputs` at line 1 column 22"),
    ("/", '{"inputs":"a","stream":null}', "stream: invalid type: null, expected a boolean at line 1 column 27"),
    (
        "/v1/chat/completions",
        '{"messages":[{"role":"user","content":"hi"}]}',
        "missing field `model` at line 1 column 45",
    ),
    (
        "/v1/chat/completions",
        '{"model":"","messages":[],"stop":"\\n"}',
        'stop: invalid type: string "\\n", expected a sequence at line 1 column 37',
    ),
    (
        "/v1/chat/completions",
        '{"model":"","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}',
        "messages[0].content: data did not match any variant of untagged enum MessageContent at line 1 column 91",
    ),
    (
        "/v1/chat/completions",
        '{"model":"","messages":[],"tool_choice":{"type":"function","function":{"name":"get_weather"}}}',
        "tool_choice: data did not match any variant of untagged enum ToolTypeDeserializer at line 1 column 94",
    ),
    (
        "/v1/chat/completions",
        '{"model":"","messages":[],"tools":[{"type":"function","function":{"name":"get_weat"}}]}',
        "tools[0].function: missing field `parameters` at line 1 column 84",
    ),
    (
        "/v1/chat/completions",
        '{"model":"","messages":[],"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"object"}}}}',
        "response_format.json_schema: missing field `name` at line 1 column 108",
    ),
    (
        "/v1/completions",
        '{"model":"","prompt":["a"]}',
        "prompt: invalid type: sequence, expected a string at line 1 column 21",
    ),
    (
        "/v1/embeddings",
        '{"model":"x","input":[1,2,3]}',
        "input: data did not match any variant of untagged enum StringOrVec at line 1 column 29",
    ),
]


@pytest.mark.parametrize(("path", "body", "text"), VERIFIED_422, ids=[t[2][:40] for t in VERIFIED_422])
def test_verified_deserialization_errors(lorax_server: FakeLorax, path: str, body: str, text: str) -> None:
    raw = request(lorax_server.url, "POST", path, body.encode())
    assert raw.status == 422
    assert raw.header("content-type") == TEXT
    assert raw.body.decode() == DESER + text


SYNTAX_CASES = [
    ('{"inputs":"a",}', "trailing comma at line 1 column 15"),
    ("", "EOF while parsing a value at line 1 column 0"),
    ('{"inputs":"a"', "EOF while parsing an object at line 1 column 13"),
    ('{"inputs" "a"}', "expected `:` at line 1 column 11"),
    ("{inputs:1}", "key must be a string at line 1 column 2"),
    ('{"inputs":"a","parameters":{"stop":[],}}', "parameters.?: trailing comma at line 1 column 39"),
    ('{"inputs":"a","parameters":{"stop":["a" "b"]}}', "parameters.stop: expected `,` or `]` at line 1 column 41"),
    ('{"inputs":"a","parameters":{"seed":01}}', "parameters.seed: invalid number at line 1 column 37"),
    ('{"inputs":"a","parameters":{"seed":1e400}}', "parameters.seed: number out of range at line 1 column 40"),
    ('{"inputs":"\\q"}', "inputs: invalid escape at line 1 column 13"),
    (
        '{"inputs":"a\nb"}',
        "inputs: control character (\\u0000-\\u001F) found while parsing a string at line 2 column 0",
    ),
    ('{"inputs":tru}', "inputs: expected ident at line 1 column 14"),
    ('{"inputs":"a","x":[1,}', "x: expected value at line 1 column 22"),
    (
        '{"inputs":"a","parameters":{"response_format":{"type":null}}}',
        "parameters.response_format.type: expected value at line 1 column 55",
    ),
]


@pytest.mark.parametrize(("body", "text"), SYNTAX_CASES)
def test_syntax_errors_are_400(lorax_server: FakeLorax, body: str, text: str) -> None:
    raw = request(lorax_server.url, "POST", "/generate", body.encode())
    assert raw.status == 400
    assert raw.header("content-type") == TEXT
    assert raw.body.decode() == SYNTAX + text


def test_type_error_before_later_syntax_error_wins(lorax_server: FakeLorax) -> None:
    # serde_json checks types as it parses: the first problem in the bytes is the one reported.
    raw = request(lorax_server.url, "POST", "/generate", b'{"inputs":1,')
    assert raw.status == 422
    assert raw.body.decode() == DESER + "inputs: invalid type: integer `1`, expected a string at line 1 column 11"


def test_positions_count_lines_and_bytes(lorax_server: FakeLorax) -> None:
    body = '{\n  "inputs": "é",\n  "parameters": {"seed": true}\n}'.encode()
    raw = request(lorax_server.url, "POST", "/generate", body)
    assert (
        raw.body.decode() == DESER + "parameters.seed: invalid type: boolean `true`, expected u64 at line 3 column 29"
    )


def test_trailing_bytes_after_the_value_are_ignored(lorax_server: FakeLorax) -> None:
    raw = request(lorax_server.url, "POST", "/generate", b'{"inputs":"a","parameters":{"max_new_tokens":2}} trailing')
    assert raw.status == 200


def test_unknown_keys_are_ignored_but_syntax_checked(lorax_server: FakeLorax) -> None:
    ok = request(lorax_server.url, "POST", "/generate", b'{"inputs":"a","maxNewTokens":[{"x":1e999}]}')
    assert ok.status == 200
    bad = request(lorax_server.url, "POST", "/generate", b'{"inputs":"a","extra":[1,]}')
    assert bad.status == 400
    assert bad.body.decode() == SYNTAX + "extra: expected value at line 1 column 26"


def test_struct_given_as_array(lorax_server: FakeLorax) -> None:
    raw = request(lorax_server.url, "POST", "/generate", b'["a"]')
    assert raw.status == 200
    short = request(lorax_server.url, "POST", "/generate", b'{"inputs":"a","parameters":[]}')
    assert short.body.decode() == (
        DESER + "parameters: invalid length 2, expected struct GenerateParameters with 25 elements at line 1 column 29"
    )


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON", True),
        ("application/vnd.api+json", True),
        ("text/json", False),
        ("application/x-www-form-urlencoded", False),
        ("application/jsonx", False),
        ("", False),
        (None, False),
    ],
)
def test_content_type_rule(content_type: str | None, ok: bool) -> None:
    assert is_json_content_type(content_type) is ok


def test_unsupported_media_type_matches_example(lorax_server: FakeLorax) -> None:
    ex = EXAMPLES["error.axum.unsupported_media_type"]
    raw = request(lorax_server.url, "POST", "/generate", b'{"inputs":"a"}', content_type="text/plain")
    assert (raw.status, raw.header("content-type"), raw.body.decode()) == (415, ex["content_type"], ex["raw"])
    missing = request(lorax_server.url, "POST", "/embed", b'{"inputs":"a"}', content_type=None)
    assert missing.status == 415


def test_body_limit(lorax_server: FakeLorax) -> None:
    ex = EXAMPLES["error.axum.payload_too_large"]
    limit = 2 * 1024 * 1024
    prefix, suffix = b'{"inputs":"', b'","parameters":{"max_new_tokens":1}}'
    exact = prefix + b" " * (limit - len(prefix) - len(suffix)) + suffix
    assert len(exact) == limit
    # Exactly 2 MiB is read; it then fails LoRAX's own length check, not the limit.
    assert request(lorax_server.url, "POST", "/generate", exact).status == 422
    raw = request(lorax_server.url, "POST", "/generate", exact + b" ")
    assert (raw.status, raw.header("content-type"), raw.body.decode()) == (413, ex["content_type"], ex["raw"])


@pytest.mark.parametrize(
    "key",
    [
        "error.axum.json_syntax",
        "error.axum.json_data_missing_field",
        "error.axum.json_data_stop_string",
        "error.axum.json_data_seed_string",
        "error.axum.json_data_tool_choice_openai",
    ],
)
def test_wire_examples_axum_texts(lorax_server: FakeLorax, key: str) -> None:
    bodies = {
        "error.axum.json_syntax": ("/generate", '{"inputs":"a",}'),
        "error.axum.json_data_missing_field": ("/generate", '{"parameters":{}}'),
        "error.axum.json_data_stop_string": ("/v1/chat/completions", '{"model":"","messages":[],"stop":"\\n"}'),
        "error.axum.json_data_seed_string": ("/generate", '{"inputs":"a","parameters":{"seed":"42"}}'),
        "error.axum.json_data_tool_choice_openai": (
            "/v1/chat/completions",
            '{"model":"","messages":[],"tool_choice":{"type":"function","function":{"name":"get_weather"}}}',
        ),
    }
    path, body = bodies[key]
    ex = EXAMPLES[key]
    raw = request(lorax_server.url, "POST", path, body.encode())
    assert (raw.status, raw.header("content-type"), raw.body.decode()) == (ex["status"], ex["content_type"], ex["raw"])


def test_deserialized_values_and_defaults() -> None:
    req = deserialize(sc.GENERATE_REQUEST, b'{"inputs":"x","parameters":{"response_format":{"type":"text"}}}')
    assert req["parameters"]["response_format"]["schema"]["title"] == "ArbitraryJsonModel"
    req = deserialize(
        sc.GENERATE_REQUEST, b'{"inputs":"x","parameters":{"response_format":{"type":"Text","schema":null}}}'
    )
    assert req["parameters"]["response_format"]["schema"] is None
    req = deserialize(sc.GENERATE_REQUEST, b'{"inputs":"x","parameters":{"seed":18446744073709551615}}')
    assert req["parameters"]["seed"] == 2**64 - 1
    chat = deserialize(
        sc.CHAT_COMPLETION_REQUEST, b'{"model":"","messages":[],"tool_choice":{"Function":{"name":"f"}}}'
    )
    assert chat["tool_choice"] == {"kind": "function", "name": "f"}
    chat = deserialize(sc.CHAT_COMPLETION_REQUEST, b'{"model":"","messages":[],"tool_choice":"required"}')
    assert chat["tool_choice"] == {"kind": "function", "name": "required"}
    with pytest.raises(SerdeError):
        deserialize(sc.TOKENIZE_REQUEST, b'{"inputs":null}')
