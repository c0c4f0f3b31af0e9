"""Keyword arguments to request messages, with the checks LoRAX cannot do itself.

Shared by :class:`lorax.Client` and :class:`lorax.AsyncClient`: each client method
calls one builder here, so both clients send the same bytes for the same call.

Client-side checks are never stricter than the server's (docs/wire.md, "Request bodies"): ``top_p=1.0``
and ``temperature=0`` are valid, ranges are left to LoRAX. What is refused here is
what cannot be put on the wire at all (a negative count in an unsigned field, an
unknown merge strategy) and what would crash the LoRAX router (docs/wire.md, "Inputs that crash LoRAX"): control
characters in ``adapter_id`` or ``adapter_source``, and merge strategies or sign
methods it does not know.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from copy import deepcopy
from typing import Any

import msgspec

from lorax import _validate, errors
from lorax.types import (
    ChatCompletionRequest,
    ChatMessage,
    ChatResponseFormat,
    ClassifyBatchRequest,
    ClassifyRequest,
    CompletionRequest,
    ContentPart,
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
    # build aborts the whole router (router/src/server.rs; docs/wire.md, "Inputs that crash LoRAX").
    # A string already checked is known by one set lookup (a per-character loop here
    # cost 2.7 µs for a 57-character adapter id).
    if value is None or (value.__class__ is str and value in _validate.SAFE_HEADER_VALUES):
        return
    if not isinstance(value, str):
        raise invalid(f"{name} must be a string, not {type(value).__name__}")
    _validate.HEADER(name, value)


def _check_finite(name: str, value: Any) -> None:
    # JSON has no NaN or infinity: the codec would print `null`, which LoRAX reads as
    # "not set" and replaces with its default, a different request from the one asked.
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid(f"{name}={value!r} is not a finite number and cannot be sent as JSON")


def _set_only(values: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments that were given (not None)."""
    return {k: v for k, v in values.items() if v is not None}


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
    if value.__class__ is list or value.__class__ is tuple:
        for item in value:
            if item.__class__ is not str:
                break
        else:
            return list(value)  # a copy: the request must not change under the caller
    if not isinstance(value, Iterable):
        raise invalid(f"{name} must be a list of strings, not {type(value).__name__}")
    items = list(value)
    for item in items:
        if not isinstance(item, str):
            raise invalid(f"{name} must hold strings, got {type(item).__name__}")
    return items


def json_value(name: str, value: Any) -> Any:
    """Free-form JSON (a schema, tool parameters) as a value that prints with its key order.

    A dict or list is used as it is; a string is parsed as JSON text; a pydantic model
    class stands for its JSON schema.
    """
    if isinstance(value, str):
        try:
            return msgspec.json.decode(value)
        except msgspec.DecodeError as exc:
            raise invalid(f"{name}: not valid JSON text: {exc}") from None
    if isinstance(value, type) and hasattr(value, "model_json_schema"):
        value = value.model_json_schema()
    _validate.check_json_value(name, value)
    return value


def _enum(name: str, value: Any, enum_type: Any) -> Any:
    """An enum member from the member, its LoRAX spelling (any case) or its .proto name."""
    return _validate.Enum(enum_type)(name, value)


def to_merged_adapters(value: MergedAdaptersLike | None) -> MergedAdapters | None:
    """`merged_adapters` from a dict (as in LoRAX's docs) or a message."""
    if value is None:
        return None
    if isinstance(value, MergedAdapters):
        return deepcopy(value)  # the request must not change under the caller
    if not isinstance(value, Mapping):
        raise invalid(f"merged_adapters must be a dict or MergedAdapters, not {type(value).__name__}")
    unknown = set(value) - {"ids", "weights", "merge_strategy", "density", "majority_sign_method"}
    if unknown:
        raise invalid(f"merged_adapters: unknown keys {sorted(unknown)}")
    ids = _strings("merged_adapters.ids", value.get("ids")) or []
    weights = value.get("weights")
    floats: list[float] = []
    if weights is not None:
        try:
            floats = [float(w) for w in weights]
        except (TypeError, ValueError):
            raise invalid(f"merged_adapters.weights must be numbers, got {weights!r}") from None
        for w in floats:
            _check_finite("merged_adapters.weights", w)
    kwargs: dict[str, Any] = {"ids": ids, "weights": floats}
    if value.get("merge_strategy") is not None:
        kwargs["merge_strategy"] = _enum("merge_strategy", value["merge_strategy"], MergeStrategy)
    if value.get("density") is not None:
        kwargs["density"] = value["density"]
    if value.get("majority_sign_method") is not None:
        kwargs["majority_sign_method"] = _enum(
            "majority_sign_method", value["majority_sign_method"], MajoritySignMethod
        )
    return MergedAdapters(**kwargs)


def _format_type(name: str, value: Any) -> Any:
    return _enum(name, value, ResponseFormatType)


def to_response_format(value: ResponseFormatLike | None) -> ResponseFormat | None:
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
        return deepcopy(value)  # the request must not change under the caller
    if isinstance(value, type):
        return ResponseFormat(type=ResponseFormatType.JSON_OBJECT, schema=json_value("response_format", value))
    if not isinstance(value, Mapping):
        raise invalid(f"response_format must be a dict, ResponseFormat or pydantic model class, not {type(value)}")
    kind = _format_type("response_format.type", value.get("type", "json_object"))
    if "schema" in value:
        schema = value["schema"]
        return ResponseFormat(
            type=kind, schema=None if schema is None else json_value("response_format.schema", schema)
        )
    if isinstance(value.get("json_schema"), Mapping) and "schema" in value["json_schema"]:
        schema = value["json_schema"]["schema"]
        return ResponseFormat(
            type=kind, schema=None if schema is None else json_value("response_format.json_schema.schema", schema)
        )
    return ResponseFormat(type=kind)


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
    # The given values only, tested one by one: a 21-entry dict filtered by a
    # comprehension, and a call per flag, cost more than the request's encoding.
    kwargs: dict[str, Any] = {}
    if adapter_id is not None:
        kwargs["adapter_id"] = adapter_id
    if adapter_source is not None:
        kwargs["adapter_source"] = adapter_source
    if api_token is not None:
        kwargs["api_token"] = api_token
    if best_of is not None:
        kwargs["best_of"] = best_of
    if temperature is not None:
        kwargs["temperature"] = temperature
    if repetition_penalty is not None:
        kwargs["repetition_penalty"] = repetition_penalty
    if frequency_penalty is not None:
        kwargs["frequency_penalty"] = frequency_penalty
    if presence_penalty is not None:
        kwargs["presence_penalty"] = presence_penalty
    if top_k is not None:
        kwargs["top_k"] = top_k
    if top_p is not None:
        kwargs["top_p"] = top_p
    if typical_p is not None:
        kwargs["typical_p"] = typical_p
    # Flags: True is sent, False and None are not (see _flag), anything else is refused.
    if do_sample is True:
        kwargs["do_sample"] = True
    elif do_sample is not False:
        _flag("do_sample", do_sample)
    if max_new_tokens is not None:
        kwargs["max_new_tokens"] = max_new_tokens
    if ignore_eos_token is True:
        kwargs["ignore_eos_token"] = True
    elif ignore_eos_token is not False:
        _flag("ignore_eos_token", ignore_eos_token)
    if return_full_text is True:
        kwargs["return_full_text"] = True
    elif return_full_text is not False:
        _flag("return_full_text", return_full_text)
    if truncate is not None:
        kwargs["truncate"] = truncate
    if watermark is True:
        kwargs["watermark"] = True
    elif watermark is not False:
        _flag("watermark", watermark)
    if details is True:
        kwargs["details"] = True
    elif details is not False:
        _flag("details", details)
    if decoder_input_details is True:
        kwargs["decoder_input_details"] = True
    elif decoder_input_details is not False:
        _flag("decoder_input_details", decoder_input_details)
    if return_k_alternatives is not None:
        kwargs["return_k_alternatives"] = return_k_alternatives
    if seed is not None:
        kwargs["seed"] = seed
    if stop_sequences is not None:
        stop = _strings("stop_sequences", stop_sequences)
        if stop:
            kwargs["stop"] = stop
    if merged_adapters is not None:
        kwargs["merged_adapters"] = to_merged_adapters(merged_adapters)
    if response_format is not None:
        kwargs["response_format"] = to_response_format(response_format)
    return GenerateRequest(inputs=prompt, parameters=GenerateParameters(**kwargs))


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
    params = _embed_parameters(adapter_id, adapter_source, merged_adapters, api_token)
    return EmbedRequest(inputs=inputs, parameters=params)


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
    kwargs = _set_only({"adapter_id": adapter_id, "adapter_source": adapter_source, "api_token": api_token})
    return EmbedParameters(**kwargs, merged_adapters=to_merged_adapters(merged))


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
    return TokenizeRequest(
        inputs=inputs, add_special_tokens=None if add_special_tokens is None else bool(add_special_tokens)
    )


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


def to_chat_message(value: MessageLike, index: int = 0) -> ChatMessage:
    """One chat message from a dict ``{"role", "content"}`` or a ChatMessage."""
    where = f"messages[{index}]"
    if isinstance(value, ChatMessage):
        return deepcopy(value)  # the request must not change under the caller
    if not isinstance(value, Mapping):
        raise invalid(f"{where} must be a dict or ChatMessage, not {type(value).__name__}")
    role = value.get("role")
    if not isinstance(role, str):
        raise invalid(f"{where} needs a string 'role'")
    content = value.get("content")
    parts: str | list[ContentPart] | None = None
    if isinstance(content, str):
        parts = content
    elif content is not None:
        if not isinstance(content, (list, tuple)):
            raise invalid(f"{where}.content must be a string or a list of chunks")
        parts = [_content_part(p, f"{where}.content[{i}]") for i, p in enumerate(content)]
    name = value.get("name")
    return ChatMessage(role=role, content=parts, name=None if name is None else str(name))


def to_tool(value: ToolLike, index: int = 0) -> Tool:
    """A tool from an OpenAI-style dict or a Tool."""
    if isinstance(value, Tool):
        return deepcopy(value)  # the request must not change under the caller
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
    description = fn.get("description")
    definition = FunctionDefinition(
        name=name,
        parameters=json_value(f"{where}.function.parameters", parameters),
        description=None if description is None else str(description),
    )
    return Tool(type=str(value.get("type", "function")), function=definition)


def to_tool_choice(value: ToolChoiceLike | None) -> ToolChoice | None:
    """`tool_choice`: "auto", "none", a function name, or a dict naming a function.

    OpenAI's ``{"type": "function", "function": {"name": ...}}`` is what most code has;
    LoRAX refuses it (422) and wants ``{"Function": {"name": ...}}``, so it is rewritten.
    """
    if value is None:
        return None
    if isinstance(value, ToolChoice):
        return deepcopy(value)  # the request must not change under the caller
    if isinstance(value, str):
        return ToolChoice(choice=value)
    if isinstance(value, NamedToolChoice):
        return ToolChoice(choice=value)
    if isinstance(value, Mapping):
        fn = value.get("Function") or value.get("function")
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            return ToolChoice(choice=NamedToolChoice(function=FunctionName(name=fn["name"])))
    raise invalid(f"tool_choice must be 'auto', 'none', a function name or a dict naming a function, not {value!r}")


def to_chat_response_format(value: ChatResponseFormatLike | None) -> ChatResponseFormat | None:
    """`response_format` for the chat route (text, json_object, json_schema)."""
    if value is None:
        return None
    if isinstance(value, ChatResponseFormat):
        return deepcopy(value)  # the request must not change under the caller
    if isinstance(value, type):
        return ChatResponseFormat(
            type=ResponseFormatType.JSON_SCHEMA,
            json_schema=JsonSchema(name=value.__name__, schema=json_value("response_format", value)),
        )
    if not isinstance(value, Mapping):
        raise invalid(f"response_format must be a dict, ChatResponseFormat or pydantic model class, not {type(value)}")
    kwargs: dict[str, Any] = {"type": _format_type("response_format.type", value.get("type"))}
    js = value.get("json_schema")
    if js is not None:
        if not isinstance(js, Mapping):
            raise invalid("response_format.json_schema must be a dict")
        name = str(js.get("name", ""))
        if not name:
            raise invalid("response_format.json_schema needs a 'name' (LoRAX requires it)")
        schema_kwargs: dict[str, Any] = {"name": name}
        if js.get("description") is not None:
            schema_kwargs["description"] = str(js["description"])
        if "schema" in js:
            schema_kwargs["schema"] = None if js["schema"] is None else json_value("json_schema.schema", js["schema"])
        if js.get("strict") is not None:
            schema_kwargs["strict"] = bool(js["strict"])
        kwargs["json_schema"] = JsonSchema(**schema_kwargs)
    if "schema" in value:
        kwargs["schema"] = None if value["schema"] is None else json_value("response_format.schema", value["schema"])
    return ChatResponseFormat(**kwargs)


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
    kwargs = _set_only(
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
        }
    )
    stops = _strings("stop", stop)
    if stops:
        kwargs["stop"] = stops
    if logit_bias:
        kwargs["logit_bias"] = _logit_bias(logit_bias)
    kwargs["response_format"] = to_chat_response_format(response_format)
    if tools:
        kwargs["tools"] = [to_tool(t, i) for i, t in enumerate(tools)]
    choice = to_tool_choice(tool_choice)
    if choice is not None:
        kwargs["tool_choice"] = choice.choice
    return ChatCompletionRequest(
        model=adapter_id or "", messages=[to_chat_message(m, i) for i, m in enumerate(messages)], **kwargs
    )


def _logit_bias(value: Mapping[str, float]) -> dict[str, float]:
    out = {}
    for k, v in value.items():
        try:
            number = float(v)
        except (TypeError, ValueError):
            raise invalid(f"logit_bias[{k!r}] must be a number, got {v!r}") from None
        _check_finite(f"logit_bias[{k!r}]", number)
        out[str(k)] = number
    return out


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
    kwargs = _set_only(
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
        }
    )
    stops = _strings("stop", stop)
    if stops:
        kwargs["stop"] = stops
    if logit_bias:
        kwargs["logit_bias"] = _logit_bias(logit_bias)
    return CompletionRequest(model=adapter_id or "", prompt=prompt, **kwargs)


def embeddings(
    input: str | Sequence[str],
    *,
    adapter_id: str | None = None,
    adapter_source: str | None = None,
    merged_adapters: MergedAdaptersLike | None = None,
    api_token: str | None = None,
) -> EmbeddingsRequest:
    """The body of /v1/embeddings. LoRAX ignores `model`; the adapter goes in parameters."""
    value: str | list[str] = input if isinstance(input, str) else (_strings("input", input) or [])
    params = _embed_parameters(adapter_id, adapter_source, merged_adapters, api_token)
    return EmbeddingsRequest(input=value, model=adapter_id or "", parameters=params)
