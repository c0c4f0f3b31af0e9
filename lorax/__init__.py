"""lorax-client: a fast, exact, typed Python client for LoRAX.

::

    from lorax import Client

    client = Client("http://127.0.0.1:8080")
    print(client.generate("Why is the sky blue?", max_new_tokens=32).generated_text)

The request and response types are msgspec Structs compiled from ``proto/lorax/v1``
(:mod:`lorax.types`); :mod:`lorax.codec` reads and writes LoRAX's JSON; every error is
a :class:`lorax.errors.LoraxError`; :mod:`lorax.testing` runs a LoRAX-compatible
server for tests.
"""

from __future__ import annotations

from pathlib import Path

from lorax import errors, types
from lorax._core import RawResponse
from lorax._retry import RetryPolicy
from lorax._stream import AsyncStream, Stream
from lorax._timeout import NOT_GIVEN, Timeout
from lorax.client import AsyncClient, Client
from lorax.errors import LoraxError
from lorax.transports.base import ResponseMeta

__version__ = "0.8.0"

__all__ = [
    "NOT_GIVEN",
    "AsyncClient",
    "AsyncStream",
    "Client",
    "LoraxError",
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
]


def proto_path() -> Path:
    """The folder holding ``lorax/v1/*.proto``, for compiling the schemas in another language.

    Pass it as an include path: ``protoc -I $(python -c "import lorax; print(lorax.proto_path())") ...``.
    From a wheel that is the package's ``_proto`` folder (setup.py maps it onto the
    checkout's ``proto/``); from a checkout (an editable install, or ``PYTHONPATH``)
    it is ``proto/`` itself.
    """
    package = Path(__file__).resolve().parent
    shipped = package / "_proto"
    if shipped.is_dir():
        return shipped
    return package.parent / "proto"


def descriptor_set_path() -> Path:
    """A ``FileDescriptorSet`` (binary) of every schema, imports included."""
    return Path(__file__).resolve().parent / "v1" / "lorax_v1.binpb"


def logprob(token: types.Token | types.PrefillToken | types.AlternativeToken) -> float | None:
    """A token's logprob, or None where LoRAX sent ``null`` (never a false 0.0)."""
    return token.logprob
