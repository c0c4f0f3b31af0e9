"""`Client` and `AsyncClient`: the LoRAX REST surface over any transport.

`AsyncClient` is written in ``lorax/_async_client.py``; `Client` in
``lorax/_sync_client.py`` is generated from it by ``tools/unasync.py``. Their shared
construction, configuration and retry decisions are in ``lorax/_client_base.py``.
"""

from __future__ import annotations

from lorax._async_client import AsyncClient
from lorax._sync_client import Client

__all__ = ["AsyncClient", "Client"]
