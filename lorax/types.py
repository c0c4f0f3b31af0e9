"""The request and response types: msgspec Structs compiled from ``proto/lorax/v1``.

Build a request with keyword arguments (``GenerateParameters(max_new_tokens=64)``; it
checks on construction what LoRAX would refuse), read fields as attributes. An optional
field reads ``None`` where LoRAX sent ``null`` or left the key out: a ``null`` logprob is
``None``, never ``0.0``. Every class has ``to_dict()``, ``to_json()`` (LoRAX's exact
JSON), ``to_proto()`` / ``from_proto()`` (the ``lorax.v1`` protobuf twins, for binary
frames) and the official client's ``model_dump()``, ``model_dump_json()``, ``dict()``,
``json()``. Enums are ``str`` enums whose values are LoRAX's spellings, so
``details.finish_reason == FinishReason.Length == "length"``.

The official lorax-client's names are kept: ``Response``, ``Parameters``, ``Request``
(with ``stream``), ``InputToken``, ``BatchRequest``, ``Info``, and the
``MERGE_STRATEGIES`` / ``ADAPTER_SOURCES`` / ``MAJORITY_SIGN_METHODS`` lists.
"""

from __future__ import annotations

from lorax._message import UNSET, Message, UnsetType, WireEnum
from lorax.v1.messages import (
    AlternativeToken,
    AssistantMessage,
    BestOfSequence,
    ChatCompletionChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamChoice,
    ChatCompletionStreamResponse,
    ChatMessage,
    ChatResponseFormat,
    ClassifyBatchRequest,
    ClassifyBatchResponse,
    ClassifyRequest,
    ClassifyResponse,
    CompatGenerateRequest,
    CompatGenerateResponse,
    CompletionChoice,
    CompletionFinishReason,
    CompletionRequest,
    CompletionResponse,
    CompletionStreamResponse,
    ContentPart,
    ContentParts,
    Details,
    Embedding,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedParameters,
    EmbedRequest,
    EmbedResponse,
    Entity,
    ErrorResponse,
    FinishReason,
    FunctionDefinition,
    FunctionName,
    GenerateParameters,
    GenerateRequest,
    GenerateResponse,
    HealthRequest,
    HealthResponse,
    ImageUrl,
    InfoRequest,
    InfoResponse,
    JsonSchema,
    MajoritySignMethod,
    MergedAdapters,
    MergeStrategy,
    MetricFamilies,
    MetricFamily,
    MetricSample,
    MetricsRequest,
    MetricsResponse,
    NamedToolChoice,
    PrefillToken,
    ResponseFormat,
    ResponseFormatType,
    SimpleToken,
    StreamDetails,
    StreamResponse,
    StringList,
    Token,
    TokenizeRequest,
    TokenizeResponse,
    Tool,
    ToolCall,
    ToolCallFunction,
    ToolChoice,
    Usage,
)

# The official client's names for the same shapes.
Response = GenerateResponse
Parameters = GenerateParameters
Request = CompatGenerateRequest
InputToken = PrefillToken
Info = InfoResponse

ADAPTER_SOURCES = ["hub", "local", "s3", "pbase"]
"""Where LoRAX can load an adapter from (``adapter_source``)."""
MERGE_STRATEGIES = [m.value for m in MergeStrategy if not m.name.startswith("MERGE_STRATEGY_")]
"""The merge strategies LoRAX knows (``merged_adapters.merge_strategy``)."""
MAJORITY_SIGN_METHODS = [m.value for m in MajoritySignMethod if not m.name.startswith("MAJORITY_SIGN_METHOD_")]
"""The majority sign methods LoRAX knows (``merged_adapters.majority_sign_method``)."""


class BatchRequest(Message, omit_defaults=True):
    """The official client's ``BatchRequest``: several prompts with one set of parameters.

    LoRAX has no batch route; :func:`lorax.batch.run_batch` and ``lorax batch`` send
    one request per prompt. Kept so that code naming the type still imports.
    """

    inputs: list[str]
    parameters: GenerateParameters | None = None
    stream: bool = False


__all__ = [
    "ADAPTER_SOURCES",
    "MAJORITY_SIGN_METHODS",
    "MERGE_STRATEGIES",
    "UNSET",
    "BatchRequest",
    "InputToken",
    "Message",
    "UnsetType",
    "WireEnum",
    "AlternativeToken",
    "AssistantMessage",
    "BestOfSequence",
    "ChatCompletionChoice",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatCompletionStreamChoice",
    "ChatCompletionStreamResponse",
    "ChatMessage",
    "ChatResponseFormat",
    "ClassifyBatchRequest",
    "ClassifyBatchResponse",
    "ClassifyRequest",
    "ClassifyResponse",
    "CompatGenerateRequest",
    "CompatGenerateResponse",
    "CompletionChoice",
    "CompletionFinishReason",
    "CompletionRequest",
    "CompletionResponse",
    "CompletionStreamResponse",
    "ContentPart",
    "ContentParts",
    "Details",
    "EmbedParameters",
    "EmbedRequest",
    "EmbedResponse",
    "Embedding",
    "EmbeddingsRequest",
    "EmbeddingsResponse",
    "Entity",
    "ErrorResponse",
    "FinishReason",
    "FunctionDefinition",
    "FunctionName",
    "GenerateParameters",
    "GenerateRequest",
    "GenerateResponse",
    "HealthRequest",
    "HealthResponse",
    "ImageUrl",
    "Info",
    "InfoRequest",
    "InfoResponse",
    "JsonSchema",
    "MajoritySignMethod",
    "MergeStrategy",
    "MergedAdapters",
    "MetricFamilies",
    "MetricFamily",
    "MetricSample",
    "MetricsRequest",
    "MetricsResponse",
    "NamedToolChoice",
    "Parameters",
    "PrefillToken",
    "Request",
    "Response",
    "ResponseFormat",
    "ResponseFormatType",
    "SimpleToken",
    "StreamDetails",
    "StreamResponse",
    "StringList",
    "Token",
    "TokenizeRequest",
    "TokenizeResponse",
    "Tool",
    "ToolCall",
    "ToolCallFunction",
    "ToolChoice",
    "Usage",
]
