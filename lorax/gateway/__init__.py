"""``lorax gateway``: a WebSocket front for LoRAX, speaking ``proto/lorax/v1/websocket.proto``.

Clients connect with :class:`lorax.transports.WebSocketTransport` (or any client of
the protocol); the gateway forwards each call to LoRAX's REST API and streams the
answer back. Run it with ``lorax gateway --upstream URL`` (see :mod:`lorax.gateway.cli`),
or in-process with :class:`Gateway` / :class:`GatewayThread`.
"""

from __future__ import annotations

from lorax.gateway.server import Gateway, GatewayThread

__all__ = ["Gateway", "GatewayThread"]
