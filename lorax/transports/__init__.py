"""Transports: how the client's messages travel.

``HTTPTransport`` (urllib3) and ``MockTransport`` load with this package. The async
HTTP transport (aiohttp) and the WebSocket transports (websockets) are imported only
when first used, so ``import lorax`` stays cheap for sync users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lorax._lazy import lazy_getattr
from lorax.transports.base import (
    AsyncMessageStream,
    AsyncTransport,
    CallOptions,
    MessageStream,
    ResponseMeta,
    Transport,
)

if TYPE_CHECKING:
    from lorax.transports.aiohttp import AsyncHTTPTransport
    from lorax.transports.http import HTTPTransport
    from lorax.transports.mock import MockTransport
    from lorax.transports.websocket import AsyncWebSocketTransport, WebSocketTransport

__all__ = [
    "AsyncHTTPTransport",
    "AsyncMessageStream",
    "AsyncTransport",
    "AsyncWebSocketTransport",
    "CallOptions",
    "HTTPTransport",
    "MessageStream",
    "MockTransport",
    "ResponseMeta",
    "Transport",
    "WebSocketTransport",
]

_LAZY = {
    "HTTPTransport": "lorax.transports.http",
    "MockTransport": "lorax.transports.mock",
    "AsyncHTTPTransport": "lorax.transports.aiohttp",
    "WebSocketTransport": "lorax.transports.websocket",
    "AsyncWebSocketTransport": "lorax.transports.websocket",
}


__getattr__ = lazy_getattr(globals(), _LAZY)
