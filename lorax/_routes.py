"""The methods of the lorax.v1.LoraxService, with their REST routes.

Read once from the service descriptor and its `route` options, so the .proto stays the
only place a route is written down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import message_factory

from lorax.v1 import options_pb2, service_pb2


@dataclass(frozen=True)
class Method:
    """One method of the LoRAX service and the REST route behind it."""

    name: str
    full_name: str
    input_type: type[Any]
    output_type: type[Any]
    http_method: str
    path: str
    server_streaming: bool
    done_marker: bool
    response_body: int

    @property
    def empty_response(self) -> bool:
        """The route answers 200 with an empty body (health)."""
        return self.response_body == options_pb2.RESPONSE_BODY_EMPTY

    @property
    def metrics_response(self) -> bool:
        """The route answers Prometheus text or JSON (metrics)."""
        return self.response_body == options_pb2.RESPONSE_BODY_METRICS

    def __repr__(self) -> str:
        return f"<Method {self.name} {self.http_method} {self.path}>"


def _load() -> dict[str, Method]:
    service = service_pb2.DESCRIPTOR.services_by_name["LoraxService"]
    methods: dict[str, Method] = {}
    for md in service.methods:
        route = md.GetOptions().Extensions[options_pb2.route]
        methods[md.name] = Method(
            name=md.name,
            full_name=md.full_name,
            input_type=message_factory.GetMessageClass(md.input_type),
            output_type=message_factory.GetMessageClass(md.output_type),
            http_method=route.method,
            path=route.path,
            server_streaming=route.server_streaming,
            done_marker=route.done_marker,
            response_body=route.response_body,
        )
        if md.server_streaming != route.server_streaming:
            raise TypeError(f"{md.full_name}: `stream` and route.server_streaming disagree")
    return methods


METHODS: dict[str, Method] = _load()
"""Every method by its short name ("Generate", "GenerateStream", ...)."""

BY_FULL_NAME: dict[str, Method] = {m.full_name: m for m in METHODS.values()}

GENERATE = METHODS["Generate"]
GENERATE_STREAM = METHODS["GenerateStream"]
COMPAT_GENERATE = METHODS["CompatGenerate"]
EMBED = METHODS["Embed"]
CLASSIFY = METHODS["Classify"]
CLASSIFY_BATCH = METHODS["ClassifyBatch"]
TOKENIZE = METHODS["Tokenize"]
INFO = METHODS["Info"]
HEALTH = METHODS["Health"]
METRICS = METHODS["Metrics"]
COMPLETIONS = METHODS["Completions"]
COMPLETIONS_STREAM = METHODS["CompletionsStream"]
CHAT_COMPLETIONS = METHODS["ChatCompletions"]
CHAT_COMPLETIONS_STREAM = METHODS["ChatCompletionsStream"]
EMBEDDINGS = METHODS["Embeddings"]


def method(name: str) -> Method:
    """Look a method up by short name ("Generate") or full name ("lorax.v1.LoraxService.Generate")."""
    found = METHODS.get(name) or BY_FULL_NAME.get(name)
    if found is None:
        raise KeyError(f"no method {name!r} in lorax.v1.LoraxService")
    return found
