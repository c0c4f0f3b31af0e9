"""The gateway's structured log lines: ``event=call_end conn=3 call=7 status=200``.

Every line goes to the ``lorax.gateway`` logger as ``key=value`` pairs, values quoted
when they hold spaces. Only identifiers, counts, durations, statuses and error types
are logged: never header values, tokens, request bodies or upstream error messages
(which can quote parts of a request).
"""

from __future__ import annotations

import json
import logging
from typing import Any

logger = logging.getLogger("lorax.gateway")


def _value(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    if not text or any(c in text for c in ' ="\\\n\r\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


def log(level: int, event: str, **fields: object) -> None:
    """Log `event` with `fields` (None values are left out) at `level`."""
    if logger.isEnabledFor(level):
        parts = [f"event={event}"]
        parts.extend(f"{key}={_value(value)}" for key, value in fields.items() if value is not None)
        logger.log(level, "%s", " ".join(parts))


def peer(connection: Any) -> str | None:
    """``host:port`` of a connection's remote end, for log lines."""
    try:
        address = connection.remote_address
    except Exception:
        return None
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return None
