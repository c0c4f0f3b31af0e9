"""What the fake server claims to be: its ``/info`` limits and a few behaviour switches."""

from __future__ import annotations

from dataclasses import dataclass

from lorax.types import InfoResponse

__all__ = ["CRASH_ABORT", "CRASH_HTTP_500", "ServerConfig"]

#: Inputs that abort the real router (docs/wire.md, "Inputs that crash LoRAX") close the connection
#: with no response.
CRASH_ABORT = "abort"
#: ... or answer a plain 500, for clients that cannot be tested against a dropped connection.
CRASH_HTTP_500 = "http_500"


@dataclass
class ServerConfig:
    """The model identity, the validation limits (``router/src/validation.rs``) and the behaviour knobs.

    The defaults are small on purpose (``max_input_length`` 1024, ``max_total_tokens``
    2048) so tests can hit the length errors with short prompts.
    """

    model_id: str = "lorax-testing/toy-model"
    model_sha: str | None = None
    model_dtype: str = "torch.float16"
    model_device_type: str = "cuda"
    model_pipeline_tag: str | None = "text-generation"
    max_concurrent_requests: int = 128
    max_best_of: int = 2
    max_stop_sequences: int = 4
    max_input_length: int = 1024
    max_total_tokens: int = 2048
    waiting_served_ratio: float = 1.2
    max_batch_total_tokens: int = 147456
    max_waiting_tokens: int = 20
    validation_workers: int = 2
    eager_prefill: bool = False
    version: str = "0.1.0"
    sha: str | None = None
    docker_label: str | None = None
    request_logger_url: str | None = None
    #: The router's ``--adapter-source`` default, echoed in ``x-adapter-source``.
    adapter_source: str = "hub"
    #: ``return_full_text`` default on ``/``, ``/invocations`` and ``/v1/*`` (LoRAX: pipeline tag ``lorax``).
    compat_return_full_text: bool = False
    #: Length of every embedding vector.
    embedding_dim: int = 32
    #: ``False`` makes ``/tokenize`` answer 404 "no fast tokenizer".
    has_tokenizer: bool = True
    #: ``"mistral"``, ``"chatml"``, ``"guideline"`` (needs the ``guideline`` field) or None (no template).
    chat_template: str | None = "mistral"
    #: ``False`` makes ``/health``, ``/`` (GET) and ``/ping`` answer 503.
    healthy: bool = True
    #: ``False`` makes ``/startup`` answer 500 "Empty generation".
    startup_ready: bool = True
    #: :data:`CRASH_ABORT` or :data:`CRASH_HTTP_500`; see the module docs of ``lorax.testing._server``.
    crash_behaviour: str = CRASH_ABORT

    def info(self) -> InfoResponse:
        """The ``/info`` body as a message."""
        return InfoResponse(
            model_id=self.model_id,
            model_sha=self.model_sha,
            model_dtype=self.model_dtype,
            model_device_type=self.model_device_type,
            model_pipeline_tag=self.model_pipeline_tag,
            max_concurrent_requests=self.max_concurrent_requests,
            max_best_of=self.max_best_of,
            max_stop_sequences=self.max_stop_sequences,
            max_input_length=self.max_input_length,
            max_total_tokens=self.max_total_tokens,
            waiting_served_ratio=self.waiting_served_ratio,
            max_batch_total_tokens=self.max_batch_total_tokens,
            max_waiting_tokens=self.max_waiting_tokens,
            validation_workers=self.validation_workers,
            eager_prefill=self.eager_prefill,
            version=self.version,
            sha=self.sha,
            docker_label=self.docker_label,
            request_logger_url=self.request_logger_url,
        )
