"""LoRAX's request types (``router/src/lib.rs``) in the terms of :mod:`lorax.testing._serde`.

Field order is Rust declaration order: it decides which missing field is reported first
and how a struct given as a JSON array is read. ``default=`` marks ``#[serde(default)]``
(absent is fine, ``null`` is not unless the type is an ``Option``); an ``Opt`` without
``default=`` may still be absent, as serde allows for ``Option`` fields.
"""

from __future__ import annotations

from typing import Any

from lorax.testing._serde import (
    F32,
    Any_,
    Bool,
    Field,
    Int,
    MapOf,
    NoMatch,
    Opt,
    Str,
    Struct,
    UnitEnum,
    Untagged,
    VecOf,
)

__all__ = [
    "ARBITRARY_JSON_SCHEMA",
    "BATCH_CLASSIFY_REQUEST",
    "CHAT_COMPLETION_REQUEST",
    "CLASSIFY_REQUEST",
    "COMPAT_EMBED_REQUEST",
    "COMPAT_GENERATE_REQUEST",
    "COMPLETION_REQUEST",
    "EMBED_REQUEST",
    "GENERATE_REQUEST",
    "TOKENIZE_REQUEST",
]


def arbitrary_json_schema() -> dict[str, Any]:
    """``default_json_schema()``: the schema LoRAX substitutes when ``schema`` is absent."""
    return {
        "additionalProperties": {"type": ["object", "string", "integer", "number", "boolean", "null"]},
        "title": "ArbitraryJsonModel",
        "type": "object",
    }


ARBITRARY_JSON_SCHEMA = arbitrary_json_schema()


def _none() -> Any:
    return None


def _false() -> bool:
    return False


def _empty_list() -> list[Any]:
    return []


_OPT_STR = Opt(Str())
_OPT_F32 = Opt(F32())
_OPT_I32 = Opt(Int("i32"))
_OPT_BOOL = Opt(Bool())

RESPONSE_FORMAT_TYPE = UnitEnum(
    "ResponseFormatType",
    {"Text": ("text",), "JsonObject": ("json_object",), "JsonSchema": ("json_schema",)},
)

ADAPTER_PARAMETERS = Struct(
    "AdapterParameters",
    [
        Field("ids", VecOf(Str())),
        Field("weights", VecOf(F32()), _empty_list),
        Field("merge_strategy", _OPT_STR, _none),
        Field("density", F32(), lambda: 0.0),
        Field("majority_sign_method", _OPT_STR, _none),
    ],
)

RESPONSE_FORMAT = Struct(
    "ResponseFormat",
    [Field("type", RESPONSE_FORMAT_TYPE), Field("schema", Opt(Any_()), arbitrary_json_schema)],
)

GENERATE_PARAMETERS = Struct(
    "GenerateParameters",
    [
        Field("adapter_id", _OPT_STR, _none),
        Field("adapter_source", _OPT_STR, _none),
        Field("merged_adapters", Opt(ADAPTER_PARAMETERS)),
        Field("api_token", _OPT_STR, _none),
        Field("best_of", Opt(Int("usize")), _none),
        Field("temperature", _OPT_F32, _none),
        Field("repetition_penalty", _OPT_F32, _none),
        Field("frequency_penalty", _OPT_F32, _none),
        Field("presence_penalty", _OPT_F32, _none),
        Field("top_k", _OPT_I32, _none),
        Field("top_p", _OPT_F32, _none),
        Field("typical_p", _OPT_F32, _none),
        Field("do_sample", Bool(), _false),
        Field("max_new_tokens", Opt(Int("u32")), _none),
        Field("ignore_eos_token", Bool(), _false),
        Field("return_full_text", _OPT_BOOL, _none),
        Field("stop", VecOf(Str()), _empty_list),
        Field("truncate", Opt(Int("usize")), _none),
        Field("watermark", Bool(), _false),
        Field("details", Bool(), _false),
        Field("decoder_input_details", Bool(), _false),
        Field("return_k_alternatives", _OPT_I32, _none),
        Field("apply_chat_template", Bool(), _false),
        Field("seed", Opt(Int("u64")), _none),
        Field("response_format", Opt(RESPONSE_FORMAT), _none),
    ],
)


def default_parameters() -> dict[str, Any]:
    """``default_parameters()``: every parameter at its default."""
    out: dict[str, Any] = {}
    for f in GENERATE_PARAMETERS.fields:
        out[f.key] = f.default() if f.default is not None else None
    return out


GENERATE_REQUEST = Struct(
    "GenerateRequest",
    [Field("inputs", Str()), Field("parameters", GENERATE_PARAMETERS, default_parameters)],
)

COMPAT_GENERATE_REQUEST = Struct(
    "CompatGenerateRequest",
    [
        Field("inputs", Str()),
        Field("parameters", GENERATE_PARAMETERS, default_parameters),
        Field("stream", Bool(), _false),
    ],
)

TOKENIZE_REQUEST = Struct("TokenizeRequest", [Field("inputs", Str()), Field("add_special_tokens", _OPT_BOOL)])

EMBED_PARAMETERS = Struct(
    "EmbedParameters",
    [
        Field("adapter_id", _OPT_STR, _none),
        Field("adapter_source", _OPT_STR, _none),
        Field("merged_adapters", Opt(ADAPTER_PARAMETERS)),
        Field("api_token", _OPT_STR, _none),
    ],
)

EMBED_REQUEST = Struct("EmbedRequest", [Field("inputs", Str()), Field("parameters", Opt(EMBED_PARAMETERS), _none)])

_STR = Str()
_VEC_STR = VecOf(Str())

STRING_OR_VEC = Untagged("StringOrVec", [_STR.from_content, _VEC_STR.from_content])

COMPAT_EMBED_REQUEST = Struct(
    "CompatEmbedRequest",
    [
        Field("input", STRING_OR_VEC),
        Field("model", Str()),
        Field("encoding_format", _OPT_STR),
        Field("dimensions", _OPT_I32),
        Field("user", _OPT_STR),
        Field("parameters", Opt(EMBED_PARAMETERS), _none),
    ],
)

CLASSIFY_REQUEST = Struct("ClassifyRequest", [Field("inputs", Str())])
BATCH_CLASSIFY_REQUEST = Struct("BatchClassifyRequest", [Field("inputs", VecOf(Str()))])

COMPLETION_REQUEST = Struct(
    "CompletionRequest",
    [
        Field("model", Str()),
        Field("prompt", Str()),
        Field("suffix", _OPT_STR),
        Field("max_tokens", _OPT_I32),
        Field("temperature", _OPT_F32),
        Field("top_p", _OPT_F32),
        Field("n", _OPT_I32),
        Field("stream", _OPT_BOOL),
        Field("logprobs", _OPT_I32),
        Field("echo", _OPT_BOOL),
        Field("stop", VecOf(Str()), _empty_list),
        Field("presence_penalty", _OPT_F32),
        Field("frequency_penalty", _OPT_F32),
        Field("best_of", _OPT_I32),
        Field("logit_bias", Opt(MapOf(F32()))),
        Field("user", _OPT_STR),
        Field("seed", Opt(Int("u64"))),
        Field("repetition_penalty", _OPT_F32),
        Field("top_k", _OPT_I32),
        Field("ignore_eos_token", _OPT_BOOL),
        Field("adapter_source", _OPT_STR),
        Field("api_token", _OPT_STR),
    ],
)

# -- chat

URL = Struct("Url", [Field("url", Str())])
_TEXT_CHUNK = Struct("Text", [Field("text", Str())])
_IMAGE_CHUNK = Struct("ImageUrl", [Field("image_url", URL)])


def _message_chunk(content: Any) -> dict[str, Any]:
    """``MessageChunk``: internally tagged by ``type`` (snake_case variant names)."""
    rest: Any
    if isinstance(content, dict):
        tag = content.get("type")
        rest = {k: v for k, v in content.items() if k != "type"}
    elif isinstance(content, list) and content:
        tag, rest = content[0], content[1:]
    else:
        raise NoMatch
    if tag == "text":
        return {"type": "text", **_TEXT_CHUNK.from_content(rest)}
    if tag == "image_url":
        return {"type": "image_url", **_IMAGE_CHUNK.from_content(rest)}
    raise NoMatch


def _chunk_list(content: Any) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        raise NoMatch
    return [_message_chunk(item) for item in content]


MESSAGE_CONTENT = Untagged("MessageContent", [_STR.from_content, _chunk_list])

MESSAGE = Struct(
    "Message",
    [Field("role", Str()), Field("content", Opt(MESSAGE_CONTENT), _none), Field("name", _OPT_STR, _none)],
)

JSON_SCHEMA = Struct(
    "JsonSchema",
    [
        Field("description", _OPT_STR),
        Field("name", Str()),
        Field("schema", Opt(Any_())),
        Field("strict", _OPT_BOOL),
    ],
)

OPENAI_RESPONSE_FORMAT = Struct(
    "OpenAiResponseFormat",
    [
        Field("type", RESPONSE_FORMAT_TYPE),
        Field("json_schema", Opt(JSON_SCHEMA)),
        Field("schema", Opt(Any_()), arbitrary_json_schema),
    ],
)

FUNCTION_DEFINITION = Struct(
    "FunctionDefinition",
    [Field("description", _OPT_STR, _none), Field("name", Str()), Field("parameters", Any_())],
)

TOOL = Struct("Tool", [Field("type", Str()), Field("function", FUNCTION_DEFINITION)])

_FUNCTION_NAME = Struct("FunctionName", [Field("name", Str())])


def _tool_choice_null(content: Any) -> dict[str, Any]:
    if content is None:
        return {"kind": "auto"}
    raise NoMatch


def _tool_choice_string(content: Any) -> dict[str, Any]:
    if not isinstance(content, str):
        raise NoMatch
    if content == "none":
        return {"kind": "none"}
    if content == "auto":
        return {"kind": "auto"}
    return {"kind": "function", "name": content}


def _tool_type(content: Any) -> dict[str, Any]:
    """``ToolType``, an externally tagged enum: ``{"Function":{"name":…}}``, ``{"OneOf":null}``…"""
    if isinstance(content, dict) and len(content) == 1:
        ((variant, value),) = content.items()
        if variant == "Function":
            return {"kind": "function", "name": _FUNCTION_NAME.from_content(value)["name"]}
        if variant in ("OneOf", "NoTool") and value is None:
            return {"kind": "auto" if variant == "OneOf" else "none"}
    if content in ("OneOf", "NoTool"):
        return {"kind": "auto" if content == "OneOf" else "none"}
    raise NoMatch


TOOL_CHOICE = Untagged("ToolTypeDeserializer", [_tool_choice_null, _tool_choice_string, _tool_type])


def _auto() -> dict[str, Any]:
    return {"kind": "auto"}


CHAT_COMPLETION_REQUEST = Struct(
    "ChatCompletionRequest",
    [
        Field("model", Str()),
        Field("messages", VecOf(MESSAGE)),
        Field("temperature", _OPT_F32),
        Field("top_p", _OPT_F32),
        Field("n", _OPT_I32),
        Field("max_tokens", _OPT_I32),
        Field("stop", VecOf(Str()), _empty_list),
        Field("stream", _OPT_BOOL),
        Field("presence_penalty", _OPT_F32),
        Field("frequency_penalty", _OPT_F32),
        Field("logit_bias", Opt(MapOf(F32()))),
        Field("user", _OPT_STR),
        Field("seed", Opt(Int("u64"))),
        Field("response_format", Opt(OPENAI_RESPONSE_FORMAT)),
        Field("tools", Opt(VecOf(TOOL)), _none),
        Field("tool_choice", TOOL_CHOICE, _auto),
        Field("repetition_penalty", _OPT_F32),
        Field("top_k", _OPT_I32),
        Field("ignore_eos_token", _OPT_BOOL),
        Field("adapter_source", _OPT_STR),
        Field("api_token", _OPT_STR),
        Field("tool_prompt", _OPT_STR, _none),
        Field("guideline", _OPT_STR, _none),
    ],
)
