"""The methods of lorax.v1.LoraxService, with their REST routes.

Generated from the service's ``route`` options into lorax/v1/messages.py, so the
.proto stays the only place a route is written down.
"""

from __future__ import annotations

from lorax._route import Route
from lorax.v1.messages import ROUTES

Method = Route

METHODS: dict[str, Route] = {route.name: route for route in ROUTES}
"""Every method by its short name ("Generate", "GenerateStream", ...)."""

BY_FULL_NAME: dict[str, Route] = {m.full_name: m for m in METHODS.values()}

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


def method(name: str) -> Route:
    """Look a method up by short name ("Generate") or full name ("lorax.v1.LoraxService.Generate")."""
    found = METHODS.get(name) or BY_FULL_NAME.get(name)
    if found is None:
        raise KeyError(f"no method {name!r} in lorax.v1.LoraxService")
    return found
