"""``lorax.testing``: a LoRAX-compatible server on loopback, for tests.

:class:`FakeLorax` (a background thread) and :class:`AsyncFakeLorax` (the running event
loop) serve every route of the LoRAX router with its exact bytes, backed by a small
deterministic toy model, with switches to inject faults (:mod:`lorax.testing.faults`) and
a record of what they received. The pytest plugin (``lorax.testing.pytest_plugin``)
provides a ``lorax_server`` fixture; ``python -m lorax.testing`` runs one from the shell.
"""

from __future__ import annotations

from lorax.testing.config import CRASH_ABORT, CRASH_HTTP_500, ServerConfig
from lorax.testing.faults import FAULT_HEADER, FaultError, Faults, FaultSpec, parse_faults
from lorax.testing.recording import RecordedRequest, Stats
from lorax.testing.runner import AsyncFakeLorax, FakeLorax

__all__ = [
    "CRASH_ABORT",
    "CRASH_HTTP_500",
    "FAULT_HEADER",
    "AsyncFakeLorax",
    "FakeLorax",
    "FaultError",
    "FaultSpec",
    "Faults",
    "RecordedRequest",
    "ServerConfig",
    "Stats",
    "parse_faults",
]
