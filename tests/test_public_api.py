"""Each public module's ``__all__``, pinned (as httpx and websockets pin theirs).

A name added to or removed from the public API changes this file in the same commit,
so the change is deliberate and visible in review. Underscore modules are private and
not listed; ``lorax.types`` follows the schemas in ``proto/lorax/v1``.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

PUBLIC: dict[str, list[str]] = {
    "lorax": [
        "AsyncClient",
        "AsyncStream",
        "Client",
        "LoraxError",
        "NOT_GIVEN",
        "RawResponse",
        "ResponseMeta",
        "RetryPolicy",
        "Stream",
        "Timeout",
        "__version__",
        "descriptor_set_path",
        "errors",
        "logprob",
        "proto_path",
        "types",
    ],
    "lorax.types": [
        "ADAPTER_SOURCES",
        "AlternativeToken",
        "AssistantMessage",
        "BatchRequest",
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
        "InputToken",
        "JsonSchema",
        "MAJORITY_SIGN_METHODS",
        "MERGE_STRATEGIES",
        "MajoritySignMethod",
        "MergeStrategy",
        "MergedAdapters",
        "Message",
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
        "UNSET",
        "UnsetType",
        "Usage",
        "WireEnum",
    ],
    "lorax.errors": [
        "APIConnectionError",
        "APIStatusError",
        "APITimeoutError",
        "AuthenticationError",
        "BadRequestError",
        "ClassificationFailureError",
        "ClientClosedError",
        "EmbeddingFailureError",
        "GenerationError",
        "IncompleteGenerationError",
        "InvalidRequestError",
        "LoraxError",
        "MissingCredentialsError",
        "MissingTemplateVariableError",
        "NotFoundError",
        "NotSupportedError",
        "OverloadedError",
        "PayloadTooLargeError",
        "PermissionDeniedError",
        "ProtocolError",
        "RateLimitExceededError",
        "RequestDeserializationError",
        "ResponseDecodeError",
        "ResponseTooLargeError",
        "ServiceUnavailableError",
        "ShardNotReadyError",
        "ShardTimeoutError",
        "StreamInterruptedError",
        "TemplateError",
        "ToolError",
        "UnhealthyError",
        "UnknownError",
        "UnprocessableEntityError",
        "UnsupportedMediaTypeError",
        "ValidationError",
        "error_from_payload",
        "error_from_response",
        "parse_error",
    ],
    "lorax.codec": [
        "decoder",
        "from_json",
        "from_obj",
        "to_json",
        "to_obj",
    ],
    "lorax.transports": [
        "AsyncHTTPTransport",
        "AsyncMessageStream",
        "AsyncTransport",
        "AsyncWebSocketTransport",
        "CallOptions",
        "HTTPTransport",
        "MessageStream",
        "MockTransport",
        "ResponseMeta",
        "Transport",
        "WebSocketTransport",
    ],
    "lorax.testing": [
        "AsyncFakeLorax",
        "CRASH_ABORT",
        "CRASH_HTTP_500",
        "FAULT_HEADER",
        "FakeLorax",
        "FaultError",
        "FaultSpec",
        "Faults",
        "RecordedRequest",
        "ServerConfig",
        "Stats",
        "parse_faults",
    ],
    "lorax.batch": [
        "AUTO_ID_PREFIX",
        "BatchInputError",
        "BatchOutputError",
        "BatchStats",
        "DryRun",
        "EndpointUnreachableError",
        "INVALID_INPUT",
        "InputCheck",
        "LineOutcome",
        "LineRunner",
        "check_input",
        "dry_run",
        "run_batch",
        "scan_output",
    ],
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_all_is_pinned(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert sorted(module.__all__) == PUBLIC[module_name]
    assert len(set(module.__all__)) == len(module.__all__), "a name listed twice"


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_every_exported_name_resolves(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


def test_star_import_gives_exactly_all() -> None:
    # In a fresh interpreter: star imports of the lazy packages (lorax.transports,
    # lorax.testing) must load every name, not only the ones imported so far.
    code = (
        "import importlib, json, sys\n"
        "out = {}\n"
        "for name in sys.argv[1:]:\n"
        "    scope = {}\n"
        "    exec(f'from {name} import *', scope)\n"
        "    out[name] = sorted(k for k in scope if k != '__builtins__')\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *sorted(PUBLIC)], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(proc.stdout) == PUBLIC
