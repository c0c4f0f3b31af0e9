"""``lorax.testing``: a LoRAX-compatible server on loopback, for tests.

:class:`FakeLorax` (a background thread) and :class:`AsyncFakeLorax` (the running event
loop) serve every route of the LoRAX router with its exact bytes, backed by a small
deterministic toy model, with switches to inject faults (:class:`Faults`,
:class:`FaultSpec`, the ``x-lorax-fake-fault`` header) and a record of what they received
(:class:`RecordedRequest`, :class:`Stats`). The pytest plugin
(``lorax.testing.pytest_plugin``) provides a ``lorax_server`` fixture; ``python -m
lorax.testing`` runs one from the shell. Everything else in this package is private.

The names are imported on first use: pytest loads the plugin (and so this package) in
every run of every project where lorax-client is installed, and the server's modules
(aiohttp, the toy model, LoRAX's request schemas) cost nothing until a test uses them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lorax._lazy import lazy_getattr

if TYPE_CHECKING:
    from lorax.testing._config import CRASH_ABORT, CRASH_HTTP_500, ServerConfig
    from lorax.testing._faults import FAULT_HEADER, FaultError, Faults, FaultSpec, parse_faults
    from lorax.testing._recording import RecordedRequest, Stats
    from lorax.testing._runner import AsyncFakeLorax, FakeLorax

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

# Each public name and the private module that defines it.
_SOURCES = {
    "CRASH_ABORT": "_config",
    "CRASH_HTTP_500": "_config",
    "ServerConfig": "_config",
    "FAULT_HEADER": "_faults",
    "FaultError": "_faults",
    "FaultSpec": "_faults",
    "Faults": "_faults",
    "parse_faults": "_faults",
    "RecordedRequest": "_recording",
    "Stats": "_recording",
    "AsyncFakeLorax": "_runner",
    "FakeLorax": "_runner",
}


__getattr__ = lazy_getattr(globals(), {name: f"{__name__}.{source}" for name, source in _SOURCES.items()})


def __dir__() -> list[str]:
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
