"""How urllib3's and http.client's exceptions read, for the HTTP transport's error texts."""

from __future__ import annotations

import logging
from http.client import IncompleteRead
from typing import Any

from urllib3.exceptions import (
    InvalidChunkLength,
)
from urllib3.exceptions import ProtocolError as U3ProtocolError

from lorax import errors
from lorax._chunked import ChunkedBodyError
from lorax.transports import _http_common as common

_log = logging.getLogger("lorax.transports.http")


def _failed(route: common.Route, error: errors.LoraxError) -> errors.LoraxError:
    return common.failed(_log, route, error)


_total = common.total_timeout


def _cause(exc: BaseException) -> BaseException | None:
    # urllib3's ProtocolError("Connection aborted.", err) carries the cause as args[1].
    args: tuple[Any, ...] = exc.args
    if len(args) > 1 and isinstance(args[1], BaseException):
        return args[1]
    return exc.__cause__ or exc.__context__


def _broken_reason(exc: BaseException) -> str:
    current: BaseException | None = exc
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, InvalidChunkLength):
            return "invalid chunked framing (the body was cut off)"
        if isinstance(current, ChunkedBodyError):
            return f"invalid chunked framing: {current}"
        if isinstance(current, IncompleteRead):
            return "the body ended before it was complete (connection closed)"
        if isinstance(current, OSError) and current.strerror:
            return str(current.strerror).lower()
        current = _cause(current) if current is exc or isinstance(current, U3ProtocolError) else current.__context__
    return common.os_reason(exc)
