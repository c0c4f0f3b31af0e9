"""Keyword arguments to request messages, with the checks LoRAX cannot do itself.

Shared by :class:`lorax.Client` and :class:`lorax.AsyncClient`: each client method
calls one builder here, so both clients send the same bytes for the same call.

Client-side checks are never stricter than the server's (wire spec §2): ``top_p=1.0``
and ``temperature=0`` are valid, ranges are left to LoRAX. What is refused here is
what cannot be put on the wire at all (a negative count in an unsigned field, an
unknown merge strategy) and what would crash the LoRAX router (§8.13): control
characters in ``adapter_id`` or ``adapter_source``, and merge strategies or sign
methods it does not know.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from google.protobuf.message import Message

from lorax import errors
from lorax._jsonmap import enum_map
from lorax.types import (
    ChatCompletionRequest,
    ChatMessage,
    ChatResponseFormat,
    ClassifyBatchRequest,
    ClassifyRequest,
    CompletionRequest,
    ContentPart,
    ContentParts,
    EmbeddingsRequest,
    EmbedParameters,
    EmbedRequest,
    FunctionDefinition,
    FunctionName,
    GenerateParameters,
    GenerateRequest,
    ImageUrl,
    JsonSchema,
    MajoritySignMethod,
    MergedAdapters,
    MergeStrategy,
    NamedToolChoice,
    ResponseFormat,
    ResponseFormatType,
    StringList,
    TokenizeRequest,
    Tool,
    ToolChoice,
)

# Options of a message that a plain dict may name, and whatever else is needed to
# turn dicts into messages.
MergedAdaptersLike = MergedAdapters | Mapping[str, Any]
ResponseFormatLike = ResponseFormat | Mapping[str, Any] | type
ChatResponseFormatLike = ChatResponseFormat | Mapping[str, Any] | type
MessageLike = ChatMessage | Mapping[str, Any]
ToolLike = Tool | Mapping[str, Any]
ToolChoiceLike = ToolChoice | str | Mapping[str, Any]


def invalid(message: str) -> errors.InvalidRequestError:
    return errors.InvalidRequestError(message)


def _check_header_safe(name: str, value: str | None) -> None:
    # LoRAX copies adapter_id and adapter_source into response headers with
    # `.parse().unwrap()`; a control character makes that panic, and the release
    # build aborts the whole router (wire spec §5.1, §8.13).
    if value is None:
        return
    if not isinstance(value, str):
        raise invalid(f"{name} must be a string, not {type(value).__name__}")
    for ch in value:
        code = ord(ch)
        if (code < 0x20 and ch != "\t") or code == 0x7F:
            raise invalid(
                f"{name} contains the control character {ch!r}; LoRAX cannot put it in a response "
                "header and its router would crash, so it was not sent"
            )


def _set(message: Message, name: str, value: Any) -> None:
    """Set one field, turning protobuf's TypeError/ValueError into a clear lorax error."""
    field = message.DESCRIPTOR.fields_by_name[name]
    if field.type == field.TYPE_DOUBLE:
        _check_finite(name, value)
    try:
        setattr(message, name, value)
    except (TypeError, ValueError) as exc:
        raise invalid(f"{name}={value!r} does not fit the field ({_field_kind(field)}): {exc}") from None


def _check_finite(name: str, value: Any) -> None:
    # JSON has no NaN or infinity: the codec would print `null`, which LoRAX reads as
    # "not set" and replaces with its default, a different request from the one asked.
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid(f"{name}={value!r} is not a finite number and cannot be sent as JSON")


def _field_kind(field: Any) -> str:
    names = {
        field.TYPE_UINT32: "an integer from 0 to 2**32-1",
        field.TYPE_UINT64: "an integer from 0 to 2**64-1",
        field.TYPE_INT32: "an integer from -2**31 to 2**31-1",
        field.TYPE_INT64: "a 64-bit integer",
        field.TYPE_DOUBLE: "a number",
        field.TYPE_BOOL: "a boolean",
        field.TYPE_STRING: "a string",
    }
    return names.get(field.type, "a value of its type")


def _fill(message: Message, values: Mapping[str, Any]) -> None:
    """Set every value that is not None."""
    for name, value in values.items():
        if value is not None:
            _set(message, name, value)


def _flag(name: str, value: bool | None) -> bool | None:
    # A False flag is the server's default on every route we call; leaving it out
    # keeps the body minimal and identical to what the server assumes.
    if value is None or value is False:
        return None
    if value is True:
        return True
    raise invalid(f"{name} must be True or False, got {value!r}")


def _strings(name: str, value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        # LoRAX refuses a bare string where it wants a list (422); the intent is clear.
        return [value]
    if not isinstance(value, Iterable):
        raise invalid(f"{name} must be a list of strings, not {type(value).__name__}")
    items = list(value)
    for item in items:
        if not isinstance(item, str):
            raise invalid(f"{name} must hold strings, got {type(item).__name__}")
    return items


def json_text(name: str, value: Any) -> str:
    """Free-form JSON (a schema, tool parameters) as compact text that keeps key order."""
    if isinstance(value, str):
        try:
            orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise invalid(f"{name}: not valid JSON text: {exc}") from None
        return value
    if isinstance(value, type) and hasattr(value, "model_json_schema"):
        value = value.model_json_schema()
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:
        raise invalid(f"{name}: cannot be written as JSON: {exc}") from None


def _enum(name: str, value: Any, enum_type: Any) -> int:
    """An enum from its number, its LoRAX spelling (any case) or its proto name."""
    mapping = enum_map(enum_type.DESCRIPTOR)
    if isinstance(value, int) and not isinstance(value, bool):
        if value in mapping.to_wire:
            return value
    elif isinstance(value, str):
        number = mapping.from_wire.get(value) or mapping.from_lower.get(value.lower())
        if number:
            return number
    allowed = ", ".join(sorted(mapping.to_wire.values()))
    raise invalid(f"{name}={value!r} is not one of: {allowed}")


def merged_adapters(value: MergedAdaptersLike | None) -> MergedAdapters | None:
    """`merged_adapters` from a dict (as in LoRAX's docs) or a message."""
    if value is None:
        return None
    if isinstance(value, MergedAdapters):
        result = MergedAdapters()
        result.CopyFrom(value)
    elif isinstance(value, Mapping):
        unknown = set(value) - {"ids", "weights", "merge_strategy", "density", "majority_sign_method"}
        if unknown:
            raise invalid(f"merged_adapters: unknown keys {sorted(unknown)}")
        result = MergedAdapters()
        ids = _strings("merged_adapters.ids", value.get("ids"))
        if ids is not None:
            result.ids.extend(ids)
        weights = value.get("weights")
        if weights is not None:
            try:
                floats = [float(w) for w in weights]
            except (TypeError, ValueError):
                raise invalid(f"merged_adapters.weights must be numbers, got {weights!r}") from None
            for w in floats:
                _check_finite("merged_adapters.weights", w)
            result.weights.extend(floats)
        if value.get("merge_strategy") is not None:
            result.merge_strategy = _enum("merge_strategy", value["merge_strategy"], MergeStrategy)  # type: ignore[assignment]
        if value.get("density") is not None:
            _set(result, "density", value["density"])
        if value.get("majority_sign_method") is not None:
            result.majority_sign_method = _enum(  # type: ignore[assignment]
                "majority_sign_method", value["majority_sign_method"], MajoritySignMethod
            )
    else:
        raise invalid(f"merged_adapters must be a dict or MergedAdapters, not {type(value).__name__}")
    # Unknown numbers would print as nothing LoRAX accepts; the router panics on them.
    if result.HasField("merge_strategy"):
        _enum("merge_strategy", result.merge_strategy, MergeStrategy)
    if result.HasField("majority_sign_method"):
        _enum("majority_sign_method", result.majority_sign_method, MajoritySignMethod)
    return result


def _format_type(name: str, value: Any) -> int:
    return _enum(name, value, ResponseFormatType)


def response_format(value: ResponseFormatLike | None) -> ResponseFormat | None:
    """`response_format` for the native routes from a dict, a message or a pydantic class.

    ``{"type": "json_object", "schema": {...}}`` constrains to the schema;
    ``{"type": "json_object"}`` (no "schema" key) asks LoRAX for an arbitrary JSON
    object; ``"schema": None`` is sent as ``null``, which LoRAX reads as "no
    constraint". A pydantic model class stands for its JSON schema. The OpenAI-style
    ``{"type": "json_schema", "json_schema": {"schema": ...}}`` is accepted too.
    """
    if value is None:
        return None
    if isinstance(value, ResponseFormat):
        result = ResponseFormat()
        result.CopyFrom(value)
        return result
    if isinstance(value, type):
        return ResponseFormat(
            type=ResponseFormatType.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
            schema=json_text("response_format", value),
        )
    if not isinstance(value, Mapping):
        raise invalid(f"response_format must be a dict, ResponseFormat or pydantic model class, not {type(value)}")
    result = ResponseFormat(type=_format_type("response_format.type", value.get("type", "json_object")))  # type: ignore[arg-type]
    if "schema" in value:
        schema = value["schema"]
        result.schema = "null" if schema is None else json_text("response_format.schema", schema)
    elif isinstance(value.get("json_schema"), Mapping) and "schema" in value["json_schema"]:
        schema = value["json_schema"]["schema"]
        result.schema = "null" if schema is None else json_text("response_format.json_schema.schema", schema)
    return result


def generate(
    prompt: str,
    *,
    adapter_id: str | None = None,
    adapter_source: str | None = None,
    merged_adapters: MergedAdaptersLike | None = None,
    api_token: str | None = None,
    do_sample: bool = False,
    max_new_tokens: int | None = None,
    ignore_eos_token: bool = False,
    best_of: int | None = None,
    repetition_penalty: float | None = None,
    return_full_text: bool = False,
    seed: int | None = None,
    stop_sequences: Sequence[str] | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    truncate: int | None = None,
    typical_p: float | None = None,
    watermark: bool = False,
    response_format: ResponseFormatLike | None = None,
    decoder_input_details: bool = False,
    return_k_alternatives: int | None = None,
    details: bool = True,
    frequency_penalty: float | None = None,
    presence_penalty: float | None = None,
) -> GenerateRequest:
    """The body of /generate and /generate_stream."""
    if not isinstance(prompt, str):
        raise invalid(f"prompt must be a string, not {type(prompt).__name__}")
    _check_header_safe("adapter_id", adapter_id)
    _check_header_safe("adapter_source", adapter_source)
    params = GenerateParameters()
    _fill(
        params,
        {
            "adapter_id": adapter_id,
            "adapter_source": adapter_source,
            "api_token": api_token,
            "best_of": best_of,
            "temperature": temperature,
            "repetition_penalty": repetition_penalty,
            "frequency_penalty": frequency_penalty,
            "presence_penalty": presence_penalty,
            "top_k": top_k,
            "top_p": top_p,
            "typical_p": typical_p,
            "do_sample": _flag("do_sample", do_sample),
            "max_new_tokens": max_new_tokens,
            "ignore_eos_token": _flag("ignore_eos_token", ignore_eos_token),
            "return_full_text": _flag("return_full_text", return_full_text),
            "truncate": truncate,
            "watermark": _flag("watermark", watermark),
            "details": _flag("details", details),
            "decoder_input_details": _flag("decoder_input_details", decoder_input_details),
            "return_k_alternatives": return_k_alternatives,
            "seed": seed,
        },
    )
    stop = _strings("stop_sequences", stop_sequences)
    if stop:
        params.stop.extend(stop)
    merged = globals()["merged_adapters"](merged_adapters)
    if merged is not None:
        params.merged_adapters.CopyFrom(merged)
    fmt = globals()["response_format"](response_format)
    if fmt is not None:
        params.response_format.CopyFrom(fmt)
    return GenerateRequest(inputs=prompt, parameters=params)


def embed(
    inputs: str,
    *,
    adapter_id: str | None = None,
    adapter_source: str | None = None,
    merged_adapters: MergedAdaptersLike | None = None,
    api_token: str | None = None,
) -> EmbedRequest:
    """The body of /embed."""
    if not isinstance(inputs, str):
        raise invalid(f"inputs must be a string, not {type(inputs).__name__}; use embeddings() for a list")
    request = EmbedRequest(inputs=inputs)
    params = _embed_parameters(adapter_id, adapter_source, merged_adapters, api_token)
    if params is not None:
        request.parameters.CopyFrom(params)
    return request


def _embed_parameters(
    adapter_id: str | None,
    adapter_source: str | None,
    merged: MergedAdaptersLike | None,
    api_token: str | None,
) -> EmbedParameters | None:
    if adapter_id is None and adapter_source is None and merged is None and api_token is None:
        return None
    _check_header_safe("adapter_id", adapter_id)
    _check_header_safe("adapter_source", adapter_source)
    params = EmbedParameters()
    _fill(params, {"adapter_id": adapter_id, "adapter_source": adapter_source, "api_token": api_token})
    merged_msg = merged_adapters(merged)
    if merged_msg is not None:
        params.merged_adapters.CopyFrom(merged_msg)
    return params


def classify(inputs: str) -> ClassifyRequest:
    """The body of /classify."""
    if not isinstance(inputs, str):
        raise invalid(f"inputs must be a string, not {type(inputs).__name__}; use classify_batch() for a list")
    return ClassifyRequest(inputs=inputs)


def classify_batch(inputs: Sequence[str]) -> ClassifyBatchRequest:
    """The body of /classify_batch."""
    if isinstance(inputs, str):
        raise invalid("inputs must be a list of strings; use classify() for one string")
    return ClassifyBatchRequest(inputs=_strings("inputs", inputs) or [])


def tokenize(inputs: str, add_special_tokens: bool | None = None) -> TokenizeRequest:
    """The body of /tokenize."""
    if not isinstance(inputs, str):
        raise invalid(f"inputs must be a string, not {type(inputs).__name__}")
    request = TokenizeRequest(inputs=inputs)
    if add_special_tokens is not None:
        request.add_special_tokens = bool(add_special_tokens)
    return request


def _content_part(part: Any, where: str) -> ContentPart:
    if isinstance(part, ContentPart):
        return part
    if isinstance(part, str):
        return ContentPart(type="text", text=part)
    if not isinstance(part, Mapping):
        raise invalid(f"{where}: a content chunk must be a dict, not {type(part).__name__}")
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise invalid(f"{where}: a text chunk needs a string 'text'")
        return ContentPart(type="text", text=text)
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else image
        if not isinstance(url, str):
            raise invalid(f"{where}: an image_url chunk needs image_url.url")
        detail = image.get("detail") if isinstance(image, Mapping) else None
        return ContentPart(type="image_url", image_url=ImageUrl(url=url, detail=detail))
    # LoRAX answers 422 for any other chunk type; say so before sending.
    raise invalid(f"{where}: chunk type {kind!r} is not supported by LoRAX (only 'text' and 'image_url')")


def chat_message(value: MessageLike, index: int = 0) -> ChatMessage:
    """One chat message from a dict ``{"role", "content"}`` or a ChatMessage."""
    where = f"messages[{index}]"
    if isinstance(value, ChatMessage):
        return value
    if not isinstance(value, Mapping):
        raise invalid(f"{where} must be a dict or ChatMessage, not {type(value).__name__}")
    role = value.get("role")
    if not isinstance(role, str):
        raise invalid(f"{where} needs a string 'role'")
    message = ChatMessage(role=role)
    content = value.get("content")
    if isinstance(content, str):
        message.text = content
    elif content is not None:
        if not isinstance(content, (list, tuple)):
            raise invalid(f"{where}.content must be a string or a list of chunks")
        message.parts.CopyFrom(
            ContentParts(parts=[_content_part(p, f"{where}.content[{i}]") for i, p in enumerate(content)])
        )
    name = value.get("name")
    if name is not None:
        message.name = str(name)
    return message


def tool(value: ToolLike, index: int = 0) -> Tool:
    """A tool from an OpenAI-style dict or a Tool."""
    if isinstance(value, Tool):
        return value
    where = f"tools[{index}]"
    if not isinstance(value, Mapping) or not isinstance(value.get("function"), Mapping):
        raise invalid(f"{where} must be a dict with a 'function'")
    fn = value["function"]
    name = fn.get("name")
    if not isinstance(name, str):
        raise invalid(f"{where}.function needs a string 'name'")
    # LoRAX requires `parameters` (OpenAI does not): an empty object schema says
    # "no arguments" without a 422.
    parameters = fn.get("parameters", {"type": "object", "properties": {}})
    definition = FunctionDefinition(name=name, parameters=json_text(f"{where}.function.parameters", parameters))
    if fn.get("description") is not None:
        definition.description = str(fn["description"])
    return Tool(type=str(value.get("type", "function")), function=definition)


def tool_choice(value: ToolChoiceLike | None) -> ToolChoice | None:
    """`tool_choice`: "auto", "none", a function name, or a dict naming a function.

    OpenAI's ``{"type": "function", "function": {"name": ...}}`` is what most code has;
    LoRAX refuses it (422) and wants ``{"Function": {"name": ...}}``, so it is rewritten.
    """
    if value is None:
        return None
    if isinstance(value, ToolChoice):
        return value
    if isinstance(value, str):
        return ToolChoice(mode=value)
    if isinstance(value, Mapping):
        fn = value.get("Function") or value.get("function")
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            return ToolChoice(function=NamedToolChoice(function=FunctionName(name=fn["name"])))
    raise invalid(f"tool_choice must be 'auto', 'none', a function name or a dict naming a function, not {value!r}")


def chat_response_format(value: ChatResponseFormatLike | None) -> ChatResponseFormat | None:
    """`response_format` for the chat route (text, json_object, json_schema)."""
    if value is None:
        return None
    if isinstance(value, ChatResponseFormat):
        return value
    if isinstance(value, type):
        return ChatResponseFormat(
            type=ResponseFormatType.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            json_schema=JsonSchema(name=value.__name__, schema=json_text("response_format", value)),
        )
    if not isinstance(value, Mapping):
        raise invalid(f"response_format must be a dict, ChatResponseFormat or pydantic model class, not {type(value)}")
    result = ChatResponseFormat(type=_format_type("response_format.type", value.get("type")))  # type: ignore[arg-type]
    js = value.get("json_schema")
    if js is not None:
        if not isinstance(js, Mapping):
            raise invalid("response_format.json_schema must be a dict")
        schema_msg = JsonSchema(name=str(js.get("name", "")))
        if not schema_msg.name:
            raise invalid("response_format.json_schema needs a 'name' (LoRAX requires it)")
        if js.get("description") is not None:
            schema_msg.description = str(js["description"])
        if "schema" in js:
            schema_msg.schema = "null" if js["schema"] is None else json_text("json_schema.schema", js["schema"])
        if js.get("strict") is not None:
            schema_msg.strict = bool(js["strict"])
        result.json_schema.CopyFrom(schema_msg)
    if "schema" in value:
        result.schema = "null" if value["schema"] is None else json_text("response_format.schema", value["schema"])
    return result


def chat(
    messages: Sequence[MessageLike],
    *,
    adapter_id: str | None = None,
    adapter_source: str | None = None,
    api_token: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    n: int | None = None,
    stop: str | Sequence[str] | None = None,
    seed: int | None = None,
    presence_penalty: float | None = None,
    frequency_penalty: float | None = None,
    repetition_penalty: float | None = None,
    ignore_eos_token: bool = False,
    response_format: ChatResponseFormatLike | None = None,
    tools: Sequence[ToolLike] | None = None,
    tool_choice: ToolChoiceLike | None = None,
    tool_prompt: str | None = None,
    guideline: str | None = None,
    logit_bias: Mapping[str, float] | None = None,
    user: str | None = None,
    stream: bool = False,
) -> ChatCompletionRequest:
    """The body of /v1/chat/completions. `adapter_id` becomes `model`; None is the base model."""
    _check_header_safe("adapter_id", adapter_id)
    _check_header_safe("adapter_source", adapter_source)
    if isinstance(messages, (str, Mapping)):
        raise invalid("messages must be a list of messages")
    request = ChatCompletionRequest(model=adapter_id or "")
    request.messages.extend(chat_message(m, i) for i, m in enumerate(messages))
    _fill(
        request,
        {
            "temperature": temperature,
            "top_p": top_p,
            "n": n,
            "max_tokens": max_tokens,
            "stream": True if stream else None,
            "presence_penalty": presence_penalty,
            "frequency_penalty": frequency_penalty,
            "user": user,
            "seed": seed,
            "repetition_penalty": repetition_penalty,
            "top_k": top_k,
            "ignore_eos_token": _flag("ignore_eos_token", ignore_eos_token),
            "tool_prompt": tool_prompt,
            "guideline": guideline,
            "adapter_source": adapter_source,
            "api_token": api_token,
        },
    )
    stops = _strings("stop", stop)
    if stops:
        request.stop.extend(stops)
    if logit_bias:
        request.logit_bias.update({str(k): float(v) for k, v in logit_bias.items()})
    fmt = chat_response_format(response_format)
    if fmt is not None:
        request.response_format.CopyFrom(fmt)
    if tools:
        request.tools.extend(globals()["tool"](t, i) for i, t in enumerate(tools))
    choice = globals()["tool_choice"](tool_choice)
    if choice is not None:
        request.tool_choice.CopyFrom(choice)
    return request


def completions(
    prompt: str,
    *,
    adapter_id: str | None = None,
    adapter_source: str | None = None,
    api_token: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    stop: str | Sequence[str] | None = None,
    seed: int | None = None,
    echo: bool = False,
    best_of: int | None = None,
    presence_penalty: float | None = None,
    frequency_penalty: float | None = None,
    repetition_penalty: float | None = None,
    ignore_eos_token: bool = False,
    logit_bias: Mapping[str, float] | None = None,
    user: str | None = None,
    stream: bool = False,
) -> CompletionRequest:
    """The body of /v1/completions. `adapter_id` becomes `model`; None is the base model."""
    if not isinstance(prompt, str):
        # LoRAX refuses a list prompt (422), unlike OpenAI.
        raise invalid(f"prompt must be a string, not {type(prompt).__name__}")
    _check_header_safe("adapter_id", adapter_id)
    _check_header_safe("adapter_source", adapter_source)
    request = CompletionRequest(model=adapter_id or "", prompt=prompt)
    _fill(
        request,
        {
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "stream": True if stream else None,
            "echo": _flag("echo", echo),
            "presence_penalty": presence_penalty,
            "frequency_penalty": frequency_penalty,
            "best_of": best_of,
            "user": user,
            "seed": seed,
            "repetition_penalty": repetition_penalty,
            "top_k": top_k,
            "ignore_eos_token": _flag("ignore_eos_token", ignore_eos_token),
            "adapter_source": adapter_source,
            "api_token": api_token,
        },
    )
    stops = _strings("stop", stop)
    if stops:
        request.stop.extend(stops)
    if logit_bias:
        request.logit_bias.update({str(k): float(v) for k, v in logit_bias.items()})
    return request


def embeddings(
    input: str | Sequence[str],
    *,
    adapter_id: str | None = None,
    adapter_source: str | None = None,
    merged_adapters: MergedAdaptersLike | None = None,
    api_token: str | None = None,
) -> EmbeddingsRequest:
    """The body of /v1/embeddings. LoRAX ignores `model`; the adapter goes in parameters."""
    request = EmbeddingsRequest(model=adapter_id or "")
    if isinstance(input, str):
        request.text = input
    else:
        texts = _strings("input", input) or []
        request.texts.CopyFrom(StringList(values=texts))
    params = _embed_parameters(adapter_id, adapter_source, merged_adapters, api_token)
    if params is not None:
        request.parameters.CopyFrom(params)
    return request
