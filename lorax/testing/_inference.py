"""The generation pipeline of the fake router: checks, planning, pacing, and response shapes.

It follows ``generate`` and ``generate_stream_with_callback`` in LoRAX's
``router/src/server.rs``: the non-stream path validates, "runs" the model and builds the
``x-*`` timing headers afterwards; the stream path builds its headers first, sends 200, and
reports every later failure (validation included) as an SSE error event.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from lorax import codec
from lorax.testing._config import ServerConfig
from lorax.testing._faults import FaultSpec
from lorax.testing._metrics import Metrics
from lorax.testing._recording import Stats
from lorax.testing._sse import DONE_FRAME, event_frame
from lorax.testing._tokenizer import Tokenizer
from lorax.testing._toy_model import Generation, ToolPlan, ToyModel
from lorax.testing._validation import InferError, ValidRequest, validate, validate_best_of
from lorax.types import (
    AlternativeToken,
    BestOfSequence,
    Details,
    GenerateResponse,
    PrefillToken,
    StreamDetails,
    StreamResponse,
    Token,
)

__all__ = ["Crash", "Drop", "Engine", "GenJob"]

BASE_MODEL_ADAPTER_ID = "__base_model__"
_MERGE_STRATEGIES = frozenset({"LINEAR", "TIES", "DARE_LINEAR", "DARE_TIES"})
_MAJORITY_SIGN_METHODS = frozenset({"TOTAL", "FREQUENCY"})


class Crash(Exception):
    """The request would panic the real router (``panic = "abort"``: the process dies)."""


class Drop(Exception):
    """An injected fault: abort the connection now."""


@dataclass
class GenJob:
    """A generation request as the router holds it after JSON extraction."""

    inputs: str
    params: dict[str, Any]
    add_special_tokens: bool = True
    tools: ToolPlan | None = None
    authorization: str | None = None


def _bad_header_value(text: str) -> bool:
    # http::HeaderValue::from_str refuses bytes < 0x20 except tab, and DEL.
    return any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in text)


class Engine:
    """The model side of the fake server: one per server, shared by every request."""

    def __init__(self, config: ServerConfig, metrics: Metrics, stats: Stats) -> None:
        self.config = config
        self.metrics = metrics
        self.stats = stats
        self.tokenizer = Tokenizer()
        self.model = ToyModel(self.tokenizer, config.embedding_dim)
        self._seeds = random.Random()

    # -- helpers shared by the routes

    def random_seed(self) -> int:
        """A random u64 seed, above 2^53 so that double-based parsers show their rounding."""
        return self._seeds.randrange(2**53 + 1, 2**64)

    def adapter_headers(self, params: dict[str, Any]) -> tuple[str, str | None]:
        """``extract_adapter_params``: the x-adapter-id text (comma-joined, base model removed) and source."""
        merged = params.get("merged_adapters")
        ids = list(merged["ids"]) if merged is not None else [params.get("adapter_id") or BASE_MODEL_ADAPTER_ID]
        joined = ",".join(i for i in ids if i != BASE_MODEL_ADAPTER_ID)
        source = params.get("adapter_source") or self.config.adapter_source
        return joined, source

    def check_header_crash(self, params: dict[str, Any]) -> None:
        """A control character in an adapter id or source panics LoRAX's header building."""
        joined, source = self.adapter_headers(params)
        if joined and (_bad_header_value(joined) or _bad_header_value(source or "")):
            raise Crash("control character in x-adapter-id / x-adapter-source")

    @staticmethod
    def check_loader_crash(params: dict[str, Any]) -> None:
        """An unknown merge_strategy / majority_sign_method panics LoRAX's adapter loader."""
        merged = params.get("merged_adapters")
        if merged is None:
            return
        strategy = merged.get("merge_strategy")
        if strategy is not None and strategy.upper() not in _MERGE_STRATEGIES:
            raise Crash(f"unknown merge_strategy {strategy!r}")
        method = merged.get("majority_sign_method")
        if method is not None and method.upper() not in _MAJORITY_SIGN_METHODS:
            raise Crash(f"unknown majority_sign_method {method!r}")

    def acquire(self, faults: FaultSpec) -> None:
        """Take a concurrency permit, or raise Overloaded (a fault can force that)."""
        if faults.overloaded or self.stats.in_flight >= self.config.max_concurrent_requests:
            self.stats.add("overloaded")
            self.metrics.increment("lorax_request_failure", {"err": "overloaded"})
            raise InferError.overloaded()
        self.stats.add("in_flight")

    def release(self) -> None:
        """Give a permit back."""
        self.stats.add("in_flight", -1)

    def _validate(self, job: GenJob) -> ValidRequest:
        try:
            return validate(
                self.config, self.tokenizer, job.inputs, job.params, job.add_special_tokens, self.random_seed()
            )
        except InferError:
            self.metrics.increment("lorax_request_failure", {"err": "validation"})
            raise

    def plan(self, job: GenJob, valid: ValidRequest, best_of: int) -> list[Generation]:
        """Plan `best_of` sequences (each with its own random seed when there are several)."""
        params = job.params
        merged = params.get("merged_adapters") or {}
        key = (
            tuple(valid.adapter_ids),
            tuple(valid.adapter_weights),
            merged.get("merge_strategy"),
            merged.get("density"),
            merged.get("majority_sign_method"),
            valid.temperature if valid.sampling else None,
            valid.top_k,
            valid.top_p,
            valid.typical_p,
            params.get("repetition_penalty"),
            params.get("frequency_penalty"),
            params.get("presence_penalty"),
        )
        gens = []
        for index in range(max(best_of, 1)):
            seed = valid.seed if best_of <= 1 else self.random_seed()
            gens.append(
                self.model.generate(
                    prompt=job.inputs,
                    key=(*key, index),
                    max_new_tokens=valid.max_new_tokens,
                    stop=list(params["stop"]),
                    ignore_eos=bool(params["ignore_eos_token"]),
                    seed=seed,
                    k_alternatives=valid.return_k_alternatives,
                    prefill=bool(params["decoder_input_details"]),
                    add_special_tokens=job.add_special_tokens,
                    schema=valid.schema,
                    has_schema=valid.has_schema,
                    tools=job.tools,
                )
            )
        return gens

    # -- non-stream

    async def generate(self, job: GenJob, faults: FaultSpec) -> tuple[list[tuple[str, str]], GenerateResponse]:
        """``generate``: the response headers and body, or InferError / Crash / Drop."""
        start = time.monotonic()
        self.metrics.increment("lorax_request_count")
        params = job.params
        best_of = params["best_of"]
        if best_of is not None and best_of > 1:
            try:
                validate_best_of(self.config, best_of)
            except InferError:
                self.metrics.increment("lorax_request_failure", {"err": "validation"})
                raise
        self.acquire(faults)
        try:
            valid = self._validate(job)
            self.check_loader_crash(params)
            queued = time.monotonic()
            gens = self.plan(job, valid, best_of if best_of is not None and best_of > 1 else 1)
            longest = max(len(g.tokens) for g in gens)
            latency = faults.token_latency or 0.0
            if faults.error_after is not None and faults.error_after < longest:
                await asyncio.sleep(latency * faults.error_after)
                raise self._injected_error(faults)
            if faults.drop_after is not None and faults.drop_after < longest:
                await asyncio.sleep(latency * faults.drop_after)
                raise Drop
            await asyncio.sleep(latency)
            prefill_time = time.monotonic()
            await asyncio.sleep(latency * max(longest - 1, 0))
        finally:
            self.release()
        # Headers are built after generation, so a bad adapter id only panics now.
        self.check_header_crash(params)
        best = max(gens, key=_mean_logprob)
        others = [g for g in gens if g is not best]
        add_prompt = job.inputs if params["return_full_text"] else None
        details = params["details"] or params["decoder_input_details"]
        response = GenerateResponse(
            generated_text=(add_prompt or "") + best.text,
            details=self._details(best, valid.input_length, others if best_of else [], add_prompt) if details else None,
        )
        now = time.monotonic()
        headers = self._timing_headers(job, valid.input_length, best, start, queued, prefill_time, now)
        self.metrics.increment("lorax_request_success")
        self.metrics.observe("lorax_request_duration", now - start)
        self.metrics.observe("lorax_request_inference_duration", now - queued)
        return headers, response

    def _injected_error(self, faults: FaultSpec) -> InferError:
        if faults.error_type == "incomplete_generation":
            self.metrics.increment("lorax_request_failure", {"err": "incomplete"})
            return InferError.incomplete()
        self.metrics.increment("lorax_request_failure", {"err": "generation"})
        return InferError.generation("injected fault (lorax.testing)")

    def _details(
        self, best: Generation, prompt_tokens: int, others: list[Generation], add_prompt: str | None
    ) -> Details:
        return Details(
            finish_reason=best.finish_reason,
            prompt_tokens=prompt_tokens,
            generated_tokens=len(best.tokens),
            skipped_tokens=0,
            seed=best.seed,
            prefill=_prefill(best),
            tokens=[_token(t) for t in best.tokens],
            best_of_sequences=[
                BestOfSequence(
                    generated_text=(add_prompt or "") + g.text,
                    finish_reason=g.finish_reason,
                    generated_tokens=len(g.tokens),
                    seed=g.seed,
                    prefill=_prefill(g),
                    tokens=[_token(t) for t in g.tokens],
                )
                for g in others
            ],
        )

    def _timing_headers(
        self,
        job: GenJob,
        prompt_tokens: int,
        best: Generation,
        start: float,
        queued: float,
        prefill_time: float,
        now: float,
    ) -> list[tuple[str, str]]:
        generated = len(best.tokens)

        def ms(seconds: float) -> str:
            return str(int(max(seconds, 0.0) * 1000))

        inference = now - queued
        ttft = prefill_time - queued
        headers = [
            ("x-compute-type", "gpu+optimized"),
            ("x-compute-time", ms(now - start)),
            ("x-compute-characters", str(len(job.inputs))),
            ("x-total-time", ms(now - start)),
            ("x-prompt-tokens", str(prompt_tokens)),
            ("x-generated-tokens", str(generated)),
            ("x-skipped-tokens", "0"),
            ("x-total-tokens", str(prompt_tokens + generated)),
            ("x-validation-time", ms(queued - start)),
            ("x-queue-time", "0"),
            ("x-inference-time", ms(inference)),
            ("x-time-per-token", ms(inference / max(generated, 1))),
            ("x-time-to-first-token", ms(ttft)),
            ("x-time-per-output-token", ms((inference - ttft) / max(generated - 1, 1))),
            ("x-model-id", self.config.model_id),
        ]
        return headers + self._adapter_header_pairs(job.params)

    def _adapter_header_pairs(self, params: dict[str, Any]) -> list[tuple[str, str]]:
        joined, source = self.adapter_headers(params)
        if not joined:
            return []
        return [("x-adapter-id", joined), ("x-adapter-source", source or "")]

    # -- stream

    def stream_headers(self, job: GenJob) -> list[tuple[str, str]]:
        """The head of a stream, built before anything runs (Crash on a bad adapter id)."""
        self.check_header_crash(job.params)
        return [
            ("x-compute-type", "gpu+optimized"),
            ("x-compute-characters", str(len(job.inputs))),
            ("x-accel-buffering", "no"),
            *self._adapter_header_pairs(job.params),
            ("x-model-id", self.config.model_id),
        ]

    async def stream(
        self,
        job: GenJob,
        faults: FaultSpec,
        render: Callable[[StreamResponse], bytes],
        done_marker: bool,
        on_cancel: Callable[[], object],
    ) -> AsyncGenerator[bytes, None]:
        """The SSE frames of ``generate_stream_with_callback`` (error events included)."""
        self.metrics.increment("lorax_request_count")
        params = job.params
        best_of = params["best_of"] if params["best_of"] is not None else 1
        if best_of != 1:
            self.metrics.increment("lorax_request_failure", {"err": "validation"})
            yield event_frame(InferError.validation("`best_of` != 1 is not supported when streaming tokens").body())
            return
        if params["decoder_input_details"]:
            self.metrics.increment("lorax_request_failure", {"err": "validation"})
            message = "`decoder_input_details` == true is not supported when streaming tokens"
            yield event_frame(InferError.validation(message).body())
            return
        try:
            self.acquire(faults)
        except InferError as exc:
            yield event_frame(exc.body())
            return
        finished = False
        try:
            try:
                valid = self._validate(job)
            except InferError as exc:
                finished = True
                yield event_frame(exc.body())
                return
            self.check_loader_crash(params)
            start = time.monotonic()
            (gen,) = self.plan(job, valid, 1)
            latency = faults.token_latency or 0.0
            add_prompt = job.inputs if params["return_full_text"] else ""
            last = len(gen.tokens) - 1
            for i, tok in enumerate(gen.tokens):
                if faults.error_after is not None and i == faults.error_after:
                    finished = True
                    yield event_frame(self._injected_error(faults).body())
                    return
                if faults.drop_after is not None and i == faults.drop_after:
                    raise Drop
                if latency:
                    await asyncio.sleep(latency)
                event = StreamResponse(token=_token(tok))
                if i == last:
                    event.generated_text = add_prompt + gen.text
                    if params["details"]:
                        event.details = StreamDetails(
                            finish_reason=gen.finish_reason,
                            prompt_tokens=valid.input_length,
                            generated_tokens=len(gen.tokens),
                            seed=gen.seed,
                        )
                    self.metrics.increment("lorax_request_success")
                    self.metrics.observe("lorax_request_duration", time.monotonic() - start)
                    finished = True
                yield event_frame(render(event))
            if done_marker:
                yield DONE_FRAME
        except (GeneratorExit, asyncio.CancelledError):
            # The consumer stopped reading (the client went away) before the end.
            if not finished:
                on_cancel()
            raise
        finally:
            self.release()


def _mean_logprob(gen: Generation) -> float:
    values = [t.logprob for t in gen.tokens if t.logprob is not None]
    return sum(values) / len(values) if values else float("-inf")


def _token(tok: Any) -> Token:
    return Token(
        id=tok.id,
        text=tok.text,
        logprob=tok.logprob,
        special=tok.special,
        alternative_tokens=[
            AlternativeToken(id=alt.id, text=alt.text, logprob=alt.logprob) for alt in tok.alternatives
        ],
        skipped=False,
    )


def _prefill(gen: Generation) -> list[PrefillToken]:
    return [PrefillToken(id=p.id, text=p.text, logprob=p.logprob) for p in gen.prefill]


def render_stream_response(event: StreamResponse) -> bytes:
    """The native stream event."""
    return codec.to_json(event)


def json_body(value: Any) -> bytes:
    """Compact JSON for hand-built bodies."""
    return orjson.dumps(value)
