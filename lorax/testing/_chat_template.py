"""Chat templates for the fake model, and LoRAX's way of adding tools to the prompt.

Three templates stand in for the minijinja ones a real model ships:

* ``"mistral"``: ``<s>[INST] user [/INST]answer</s>[INST] …``. A leading system message is
  folded into the first user turn. Roles must alternate user/assistant, like Mistral's own
  template, which raises the same exception text.
* ``"chatml"``: ``<|im_start|>role\\ncontent<|im_end|>\\n`` for any role, then the
  generation prompt ``<|im_start|>assistant\\n``.
* ``"guideline"``: the Mistral format with a ``[GUIDELINE]`` preamble; it uses the
  ``guideline`` variable, so a request without one gets LoRAX's MissingTemplateVariable.

None of them mentions ``tools``, so LoRAX's "default tool template" path applies: the
tools' JSON and the tool prompt are pushed onto the last message as
``"\\n---\\n<tools json>\\n<tool_prompt>"``. LoRAX pushes that as a chunk with
``MessageContent::push``, which (upstream bug, ``router/src/lib.rs``) drops the chunk when
the content is a plain string: only list-of-chunks content and absent/null content get
the tools text. This module does the same, so prompt token counts match the real router.
"""

from __future__ import annotations

from typing import Any

import orjson

from lorax.testing._validation import InferError

__all__ = ["TEMPLATES", "render_chat"]

TEMPLATES = ("mistral", "chatml", "guideline")

_ALTERNATE = "Conversation roles must alternate user/assistant/user/assistant/..."
_ONLY_USER_ASSISTANT = "Only user and assistant roles are supported!"


def _raise(message: str) -> InferError:
    # minijinja reports raise_exception() as a syntax error with a location.
    return InferError.template(f"syntax error: {message} (in <string>:1)")


def message_text(content: Any) -> str:
    """``impl From<Message> for TextMessage``: chunks joined with "", images as ``![](url)``."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for chunk in content:
        if chunk["type"] == "text":
            parts.append(chunk["text"])
        else:
            parts.append(f"![]({chunk['image_url']['url']})")
    return "".join(parts)


def tools_json(tools: list[dict[str, Any]]) -> str:
    """``serde_json::to_string(&tools)`` of LoRAX's ``Tool`` structs, compact, in field order."""
    out = [
        {
            "type": tool["type"],
            "function": {
                "description": tool["function"]["description"],
                "name": tool["function"]["name"],
                "parameters": tool["function"]["parameters"],
            },
        }
        for tool in tools
    ]
    return orjson.dumps(out).decode()


def push_tools(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """Add the tools text to the last message the way LoRAX does (bug included)."""
    if not messages:
        return messages
    messages = [dict(m) for m in messages]
    last = messages[-1]
    content = last.get("content")
    if content is None:
        last["content"] = text
    elif isinstance(content, list):
        last["content"] = [*content, {"type": "text", "text": text}]
    # A plain string keeps its text and loses the tools (MessageContent::push).
    return messages


def render_chat(
    template: str | None,
    messages: list[dict[str, Any]],
    *,
    guideline: str | None,
    tools: list[dict[str, Any]] | None,
    tool_prompt: str,
) -> str:
    """Render `messages` (as deserialized) with `template`; raise InferError like LoRAX."""
    if template is None:
        raise InferError.template("template not found")
    if template == "guideline" and guideline is None:
        raise InferError.missing_template_variable("guideline")
    if tools is not None:
        messages = push_tools(messages, f"\n---\n{tools_json(tools)}\n{tool_prompt}")
    turns = [(m["role"], message_text(m.get("content"))) for m in messages]
    if template == "chatml":
        body = "".join(f"<|im_start|>{role}\n{text}<|im_end|>\n" for role, text in turns)
        return body + "<|im_start|>assistant\n"
    prefix = "<s>"
    if template == "guideline":
        prefix += f"[GUIDELINE] {guideline} [/GUIDELINE]"
    if turns and turns[0][0] == "system":
        system = turns[0][1]
        turns = turns[1:]
        if turns and turns[0][0] == "user":
            turns[0] = ("user", f"{system}\n\n{turns[0][1]}")
    out = [prefix]
    for i, (role, text) in enumerate(turns):
        if (role == "user") != (i % 2 == 0):
            raise _raise(_ALTERNATE)
        if role == "user":
            out.append(f"[INST] {text} [/INST]")
        elif role == "assistant":
            out.append(f"{text}</s>")
        else:
            raise _raise(_ONLY_USER_ASSISTANT)
    return "".join(out)
