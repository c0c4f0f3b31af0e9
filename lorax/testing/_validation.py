"""LoRAX's own request checks (``validation.rs``) and error bodies (``InferError``).

The checks run in the router's order (``Validation::validate`` in ``router/src/validation.rs``;
docs/wire.md, "Validation order"): the first failure wins, and each message is the exact
text of LoRAX's ``ValidationError`` in that file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lorax import codec
from lorax.testing._config import ServerConfig
from lorax.testing._tokenizer import Tokenizer
from lorax.types import ErrorResponse

__all__ = ["InferError", "ValidRequest", "validate", "validate_best_of", "validate_input"]


class InferError(Exception):
    """An ``InferError``: HTTP status, ``error_type`` and the exact message."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message

    def body(self) -> bytes:
        """The ``ErrorResponse`` JSON, as a body or as an SSE event's data."""
        return codec.to_json(ErrorResponse(error=self.message, error_type=self.error_type))

    @classmethod
    def validation(cls, message: str) -> InferError:
        """A ``ValidationError`` (422, ``validation``)."""
        return cls(422, "validation", f"Input validation error: {message}")

    @classmethod
    def generation(cls, message: str) -> InferError:
        """A shard failure (424, ``generation``); `message` follows ``Server error: ``."""
        return cls(424, "generation", f"Request failed during generation: Server error: {message}")

    @classmethod
    def overloaded(cls) -> InferError:
        """The concurrency limit (429, ``overloaded``)."""
        return cls(429, "overloaded", "Model is overloaded")

    @classmethod
    def incomplete(cls) -> InferError:
        """A generation that ended without its final message (500)."""
        return cls(500, "incomplete_generation", "Incomplete generation")

    @classmethod
    def template(cls, message: str) -> InferError:
        """A chat template failure (422, ``template_error``)."""
        return cls(422, "template_error", f"Failed applying chat template to inputs: {message}")

    @classmethod
    def tool(cls, message: str) -> InferError:
        """A tool grammar or tool output failure (422, ``tool_error``)."""
        return cls(422, "tool_error", f"Tool error: {message}")

    @classmethod
    def missing_template_variable(cls, name: str) -> InferError:
        """The template needs a variable that was not given (typo ``vatiable`` verbatim)."""
        return cls(422, "missing_template_variable", f"Missing template vatiable: {name}")

    @classmethod
    def embedding_failure(cls) -> InferError:
        """No embedding came back (500)."""
        return cls(500, "embedding_failure", "Embedding Failure")

    @classmethod
    def classification_failure(cls) -> InferError:
        """No classification came back (500)."""
        return cls(500, "classification_failure", "Classification Failure")


@dataclass
class ValidRequest:
    """A generation request that passed validation, with its effective parameters."""

    inputs: str
    input_length: int
    max_new_tokens: int
    sampling: bool
    seed: int | None
    temperature: float
    top_k: int
    top_p: float
    typical_p: float
    return_k_alternatives: int
    schema: Any
    has_schema: bool
    adapter_ids: list[str]
    adapter_weights: list[float]


def validate_best_of(config: ServerConfig, best_of: int) -> None:
    """``Validation::validate_best_of`` (non-stream requests with best_of > 1)."""
    if config.max_best_of == 1 and best_of != 1:
        raise InferError.validation("`best_of` != 1 is not allowed for this endpoint")
    if best_of > config.max_best_of:
        raise InferError.validation(f"`best_of` must be > 0 and <= {config.max_best_of}. Given: {best_of}")


def validate_input(
    config: ServerConfig,
    tokenizer: Tokenizer,
    inputs: str,
    add_special_tokens: bool,
    max_new_tokens: int | None,
) -> int:
    """``validate_input``: MaxTotalTokens (only with max_new_tokens), then InputLength."""
    input_length = tokenizer.count(inputs, add_special_tokens)
    if max_new_tokens is not None and input_length + max_new_tokens > config.max_total_tokens:
        raise InferError.validation(
            f"`inputs` tokens + `max_new_tokens` must be <= {config.max_total_tokens}. "
            f"Given: {input_length} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
        )
    if input_length > config.max_input_length:
        raise InferError.validation(
            f"`inputs` must have less than {config.max_input_length} tokens. Given: {input_length}"
        )
    return input_length


def validate(
    config: ServerConfig,
    tokenizer: Tokenizer,
    inputs: str,
    params: dict[str, Any],
    add_special_tokens: bool,
    random_seed: int,
) -> ValidRequest:
    """``Validation::validate``: every parameter check in LoRAX's order."""
    merged = params["merged_adapters"]
    if merged is not None and params["adapter_id"] is not None:
        raise InferError.validation("at most one of `adapter_id` or `adapters` may be provided")
    if merged is not None:
        if len(merged["ids"]) < 1:
            raise InferError.validation("at least one adapter ID must be provided when setting `adapters`")
        if len(merged["ids"]) != len(merged["weights"]):
            raise InferError.validation("number of adapter IDs must match number of adapter weights")
    best_of = params["best_of"] if params["best_of"] is not None else 1
    do_sample = params["do_sample"]
    temperature = params["temperature"]
    top_k = params["top_k"]
    top_p = params["top_p"]
    typical_p = params["typical_p"]
    sampling_requested = (
        do_sample or temperature is not None or top_k is not None or top_p is not None or typical_p is not None
    )
    if best_of > 1 and not sampling_requested:
        raise InferError.validation("you must use sampling when `best_of` is > 1")
    temp = 1.0 if temperature is None else temperature
    if temp < 0.0:
        raise InferError.validation("`temperature` must be non-negative")
    rep = 1.0 if params["repetition_penalty"] is None else params["repetition_penalty"]
    if rep <= 0.0:
        raise InferError.validation("`repetition_penalty` must be strictly positive")
    freq = 0.0 if params["frequency_penalty"] is None else params["frequency_penalty"]
    if not -2.0 <= freq <= 2.0:
        raise InferError.validation("`frequency_penalty` must be >= -2.0 and <= 2.0")
    pres = 0.0 if params["presence_penalty"] is None else params["presence_penalty"]
    if not -2.0 <= pres <= 2.0:
        raise InferError.validation("`presence_penalty` must be >= -2.0 and <= 2.0")
    if top_p is not None and (top_p <= 0.0 or top_p > 1.0):
        raise InferError.validation("`top_p` must be > 0.0 and < 1.0")
    if typical_p is not None and (typical_p <= 0.0 or typical_p >= 1.0):
        raise InferError.validation("`typical_p` must be > 0.0 and < 1.0")
    if top_k is not None and top_k <= 0:
        raise InferError.validation("`top_k` must be strictly positive")
    k_alt = params["return_k_alternatives"]
    if k_alt is not None and k_alt <= 0:
        raise InferError.validation("`return_k_alternatives` must be strictly positive")
    max_new_tokens = params["max_new_tokens"]
    if max_new_tokens == 0:
        raise InferError.validation("`max_new_tokens` must be strictly positive")
    if len(params["stop"]) > config.max_stop_sequences:
        raise InferError.validation(
            f"`stop` supports up to {config.max_stop_sequences} stop sequences. Given: {len(params['stop'])}"
        )
    seed = params["seed"]
    if seed is not None and best_of > 1:
        raise InferError.validation("`seed` must not be set when `best_of` > 1")
    if inputs == "":
        raise InferError.validation("`inputs` cannot be empty")
    truncate = params["truncate"]
    if truncate is not None and (truncate == 0 or truncate > config.max_input_length):
        raise InferError.validation(
            f"`truncate` must be strictly positive and less than {config.max_input_length}. Given: {truncate}"
        )
    input_length = validate_input(config, tokenizer, inputs, add_special_tokens, max_new_tokens)
    effective_max = max_new_tokens if max_new_tokens is not None else config.max_total_tokens - input_length
    # The shard samples when asked to, or when a sampling knob is moved off its neutral value;
    # temperature 0 means greedy whatever else is set.
    sampling = (
        bool(
            do_sample
            or (temperature is not None and temperature not in (0.0, 1.0))
            or top_k is not None
            or (top_p is not None and top_p < 1.0)
            or (typical_p is not None and typical_p < 1.0)
        )
        and temperature != 0.0
    )
    response_format = params["response_format"]
    if merged is not None:
        adapter_ids = list(merged["ids"])
        weights = list(merged["weights"])
    else:
        adapter_ids = [params["adapter_id"] or ""]
        weights = [1.0]
    return ValidRequest(
        inputs=inputs,
        input_length=input_length,
        max_new_tokens=max(effective_max, 0),
        sampling=sampling,
        seed=(seed if seed is not None else random_seed) if sampling else None,
        temperature=temp,
        top_k=top_k or 0,
        top_p=1.0 if top_p is None else top_p,
        typical_p=1.0 if typical_p is None else typical_p,
        return_k_alternatives=k_alt or 0,
        schema=response_format["schema"] if response_format is not None else None,
        has_schema=response_format is not None and response_format["schema"] is not None,
        adapter_ids=adapter_ids,
        adapter_weights=weights,
    )
