"""The OpenAI-compatible routes: request conversion and LoRAX's (not OpenAI's) response shapes.

Conversions follow ``impl From<CompletionRequest> for CompatGenerateRequest`` and
``ChatCompletionRequest::try_into_generate`` in ``router/src/lib.rs``; the response
builders follow the ``From`` impls and ``ChatCompletionResponse::new`` in the same file.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from lorax import codec
from lorax.testing._chat_template import render_chat
from lorax.testing._config import ServerConfig
from lorax.testing._schemas import arbitrary_json_schema, default_parameters
from lorax.testing._serde import Any_, Reader, SerdeError, rust_str_debug
from lorax.testing._toy_model import ToolPlan
from lorax.testing._validation import InferError
from lorax.types import (
    AssistantMessage,
    ChatCompletionChoice,
    ChatCompletionResponse,
    ChatCompletionStreamChoice,
    ChatCompletionStreamResponse,
    CompletionChoice,
    CompletionResponse,
    CompletionStreamResponse,
    GenerateResponse,
    StreamResponse,
    ToolCall,
    ToolCallFunction,
    Usage,
)

__all__ = [
    "chat_response",
    "chat_stream_event",
    "chat_to_generate",
    "completion_response",
    "completion_stream_event",
    "completion_to_generate",
]

DEFAULT_TOOL_PROMPT = (
    "\nGiven the functions available, please respond with a JSON for a function call with its proper arguments "
    "that best answers the given prompt. Respond in the format {name: function name, parameters: dictionary of "
    "argument name and its value}.Do not use variables.\n"
)

_FINISH = {"eos_token": "stop", "length": "length", "stop_sequence": "content_filter"}

_NO_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "description": "Open ened response with no specific tool selected",
        "name": "no_tool",
        "parameters": {
            "type": "object",
            "properties": {"content": {"type": "string", "description": "The response content"}},
            "required": ["content"],
        },
    },
}


def _as_u32(value: int) -> int:
    # Rust `x as u32` on an i32: negative values wrap.
    return value % 2**32


def _as_usize(value: int) -> int:
    return value % 2**64


def completion_to_generate(req: dict[str, Any], config: ServerConfig) -> tuple[dict[str, Any], bool]:
    """``CompatGenerateRequest::from(CompletionRequest)``: parameters and the stream flag."""
    model = "" if req["model"] == config.model_id else req["model"]
    params = default_parameters()
    params.update(
        adapter_id=model,  # `model.parse().ok()`: "" stays Some("") here, unlike chat
        adapter_source=req["adapter_source"],
        api_token=req["api_token"],
        best_of=_as_usize(req["best_of"]) if req["best_of"] is not None else None,
        temperature=req["temperature"],
        repetition_penalty=req["repetition_penalty"],
        frequency_penalty=req["frequency_penalty"],
        presence_penalty=req["presence_penalty"],
        top_k=req["top_k"],
        top_p=req["top_p"],
        do_sample=req["n"] is not None,
        max_new_tokens=_as_u32(req["max_tokens"]) if req["max_tokens"] is not None else None,
        ignore_eos_token=bool(req["ignore_eos_token"]),
        return_full_text=req["echo"],
        stop=req["stop"],
        details=True,
        decoder_input_details=req["logprobs"] is not None,
        seed=req["seed"],
    )
    if params["return_full_text"] is None:
        params["return_full_text"] = config.compat_return_full_text
    return params, bool(req["stream"])


def _tool_plan(tools: list[dict[str, Any]], choice: dict[str, Any]) -> tuple[list[dict[str, Any]], ToolPlan | None]:
    """``ToolGrammar::apply``: the tools for the prompt and what the grammar allows."""
    if not tools:
        return tools, None
    all_tools = [*tools, _NO_TOOL]
    if choice["kind"] == "none":
        return all_tools, None
    if choice["kind"] == "function":
        chosen = [t for t in all_tools if t["function"]["name"] == choice["name"]]
        if not chosen:
            raise InferError.tool(f"Tool with name {choice['name']} not found")
        chosen = chosen[:1]
    else:
        chosen = all_tools
    functions = [
        (t["function"]["name"], t["function"]["description"] or "", t["function"]["parameters"])
        for t in chosen
        if t["function"]["name"] != "no_tool" or len(chosen) == 1
    ]
    allow_no_tool = any(t["function"]["name"] == "no_tool" for t in chosen)
    if allow_no_tool and not any(name == "no_tool" for name, _, _ in functions):
        functions.append(("no_tool", "", _NO_TOOL["function"]["parameters"]))
    return all_tools, ToolPlan(functions, allow_no_tool)


def chat_to_generate(req: dict[str, Any], config: ServerConfig) -> tuple[str, dict[str, Any], bool, ToolPlan | None]:
    """``try_into_generate``: the templated prompt, parameters, stream flag and tool plan."""
    model = "" if req["model"] == config.model_id else req["model"]
    fmt = req["response_format"]
    response_format: dict[str, Any] | None = None
    if fmt is not None:
        if fmt["type"] == "JsonObject":
            schema = fmt["schema"] if fmt["schema"] is not None else arbitrary_json_schema()
            response_format = {"type": "JsonObject", "schema": schema}
        elif fmt["type"] == "JsonSchema":
            inner = fmt["json_schema"]["schema"] if fmt["json_schema"] is not None else None
            response_format = {"type": "JsonSchema", "schema": inner if inner is not None else arbitrary_json_schema()}
    tool_prompt = req["tool_prompt"] or DEFAULT_TOOL_PROMPT
    temperature = req["temperature"]
    if temperature is not None and temperature == 0.0:
        do_sample, temperature = False, None
    else:
        do_sample = True
    tools = req["tools"]
    if response_format is not None and tools is not None:
        raise InferError.tool("Response format and tools are mutually exclusive")
    plan: ToolPlan | None = None
    prompt_tools: list[dict[str, Any]] | None = None
    if response_format is None and tools is not None:
        # The tool grammar itself is the toy model's ToolPlan, not a response_format.
        prompt_tools, plan = _tool_plan(tools, req["tool_choice"])
    prompt = render_chat(
        config.chat_template,
        req["messages"],
        guideline=req["guideline"],
        tools=prompt_tools,
        tool_prompt=tool_prompt,
    )
    params = default_parameters()
    params.update(
        adapter_id=model or None,
        adapter_source=req["adapter_source"],
        api_token=req["api_token"],
        best_of=_as_usize(req["n"]) if req["n"] is not None else None,
        temperature=temperature,
        repetition_penalty=req["repetition_penalty"],
        frequency_penalty=req["frequency_penalty"],
        presence_penalty=req["presence_penalty"],
        top_k=req["top_k"],
        top_p=req["top_p"],
        do_sample=do_sample,
        max_new_tokens=_as_u32(req["max_tokens"]) if req["max_tokens"] is not None else None,
        stop=req["stop"],
        details=True,
        seed=req["seed"],
        ignore_eos_token=bool(req["ignore_eos_token"]),
        response_format=response_format,
    )
    params["return_full_text"] = config.compat_return_full_text
    return prompt, params, bool(req["stream"]), plan


def _usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens, total_tokens=prompt_tokens + completion_tokens, completion_tokens=completion_tokens
    )


def completion_response(resp: GenerateResponse) -> bytes:
    """``CompletionResponse::from(GenerateResponse)``."""
    details = resp.details
    assert details is not None  # the OpenAI routes always ask for details
    choice = CompletionChoice(index=0, text=resp.generated_text, finish_reason=_FINISH[details.finish_reason])
    msg = CompletionResponse(
        id="null",
        object="text_completion",
        created=0,
        model="null",
        choices=[choice],
        usage=_usage(details.prompt_tokens, details.generated_tokens),
    )
    return codec.to_json(msg)


def completion_stream_event(resp: StreamResponse) -> bytes:
    """``CompletionStreamResponse::from(StreamResponse)``: usage on every event, zeros until the last."""
    details = resp.details
    finish = _FINISH[details.finish_reason] if details is not None else None
    choice = CompletionChoice(index=0, text="" if finish == "stop" else _token_text(resp), finish_reason=finish)
    usage = _usage(details.prompt_tokens, details.generated_tokens) if details is not None else _usage(0, 0)
    msg = CompletionStreamResponse(
        id="null", object="text_completion", created=0, model="null", choices=[choice], usage=usage
    )
    return codec.to_json(msg)


def chat_stream_event(resp: StreamResponse) -> bytes:
    """``ChatCompletionStreamResponse::from(StreamResponse)``: role on every delta, ``{}`` on EOS."""
    details = resp.details
    finish = _FINISH[details.finish_reason] if details is not None else None
    delta = AssistantMessage() if finish == "stop" else AssistantMessage(role="assistant", content=_token_text(resp))
    choice = ChatCompletionStreamChoice(index=0, delta=delta, finish_reason=finish)
    msg = ChatCompletionStreamResponse(
        id="null",
        object="chat.completion.chunk",
        created=0,
        model="null",
        choices=[choice],
        usage=_usage(details.prompt_tokens, details.generated_tokens) if details is not None else None,
    )
    return codec.to_json(msg)


def _token_text(resp: StreamResponse) -> str:
    # Every event the fake server streams carries a token.
    return resp.token.text if resp.token is not None else ""


def _serde_from_str(text: str) -> Any:
    """``serde_json::from_str::<Value>``: like axum's path, plus the trailing-characters check."""
    reader = Reader(text.encode("utf-8"))
    value = Any_().deserialize(reader, ())
    if reader.parse_whitespace() is not None:
        raise reader.peek_error("trailing characters")
    return value


def _swap_remove(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """``IndexMap::swap_remove``: the last entry takes the removed entry's place."""
    items = list(obj.items())
    index = next(i for i, (k, _) in enumerate(items) if k == key)
    last = items.pop()
    if index < len(items):
        items[index] = last
    return dict(items)


def _tool_output(text: str) -> tuple[list[ToolCall] | None, str | None]:
    try:
        value = _serde_from_str(text)
    except SerdeError as exc:
        raise InferError.tool(f"Failed to parse generated text: {exc.inner_text()} {rust_str_debug(text)}") from None
    function = value.get("function") if isinstance(value, dict) else None
    if function is None:
        raise InferError.tool("No function found in generated text")
    name = function.get("_name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise InferError.tool("No _name found in generated text")
    arguments = _swap_remove(function, "_name") if isinstance(function, dict) else function
    if name == "no_tool":
        content = arguments.get("content") if isinstance(arguments, dict) else None
        if not isinstance(content, str):
            raise InferError.tool("No `content` found in generated text")
        return None, content
    call = ToolCall(
        id="0",
        type="function",
        function=ToolCallFunction(name=name, arguments=orjson.dumps(arguments).decode()),
    )
    return [call], None


def chat_response(resp: GenerateResponse, config: ServerConfig, using_tools: bool) -> bytes:
    """``chat_completions_v1``'s non-stream body (``object`` is "text_completion", sic)."""
    details = resp.details
    assert details is not None  # the OpenAI routes always ask for details
    texts = [resp.generated_text] + [seq.generated_text for seq in details.best_of_sequences]
    finish = _FINISH[details.finish_reason]
    choices = []
    for index, text in enumerate(texts):
        tool_calls, content = _tool_output(text) if using_tools else (None, text)
        message = AssistantMessage(role="assistant", content=content)
        if content is None and tool_calls is not None:
            message.tool_calls = tool_calls
        choices.append(ChatCompletionChoice(index=index, message=message, finish_reason=finish))
    msg = ChatCompletionResponse(
        id="null",
        object="text_completion",
        created=int(time.time()),
        model=config.model_id,
        choices=choices,
        usage=_usage(details.prompt_tokens, details.generated_tokens),
        system_fingerprint=f"{config.version}-{config.docker_label or 'native'}",
    )
    return codec.to_json(msg)
