"""What :class:`lorax.Client` and :class:`lorax.AsyncClient` share besides their methods.

``lorax/_async_client.py`` is written by hand; ``lorax/_sync_client.py`` is generated
from it by ``tools/unasync.py``. Whatever would differ between the two and is not a
matter of ``await`` lives here, chosen by the transport ABC a client passes in
(:class:`~lorax.transports.AsyncTransport` or :class:`~lorax.transports.Transport`):
the default transport and its options, the check of a given transport, and the one
way a client sleeps between retries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from lorax._core import ClientConfig, auth_source, build_headers, check_base_url, explain_auth
from lorax._redact import redact_url
from lorax._retry import RetryPolicy, RetryState
from lorax._routes import Method
from lorax._timeout import NOT_GIVEN, NotGiven, Timeout
from lorax.errors import LoraxError
from lorax.transports.base import AsyncTransport, CallOptions, ResponseMeta, Transport

logger = logging.getLogger("lorax")

TimeoutLike = Timeout | float | tuple[float | None, float | None] | None
C = TypeVar("C", bound="ClientBase")

DEFAULT_POOL_SIZE = 100
"""Connections a client's default HTTP transport keeps to the server (both clients)."""


def sleep(seconds: float) -> None:
    """The sync client's backoff wait."""
    time.sleep(seconds)  # looked up at call time, so a test can patch time.sleep


async def async_sleep(seconds: float) -> None:
    """The async client's backoff wait."""
    import asyncio  # here: `import lorax` does not load asyncio for sync code

    await asyncio.sleep(seconds)  # looked up at call time, so a test can patch asyncio.sleep


def check_transport(transport: Any, kind: type[Transport] | type[AsyncTransport], owner: str) -> Any:
    """`transport` if it is of `kind` (a MockTransport is both kinds)."""
    if not isinstance(transport, kind):
        wanted = "an AsyncTransport" if kind is AsyncTransport else "a sync Transport"
        raise TypeError(f"{owner} needs {wanted}, got {type(transport).__name__}")
    return transport


def open_transport(
    kind: type[Transport] | type[AsyncTransport],
    scheme: str,
    base_url: str,
    *,
    verify: Any,
    cert: str | tuple[str, str] | None,
    proxy: str | None,
    pool_size: int,
    gateway_headers: Mapping[str, str] | None,
    max_response_bytes: int,
) -> Any:
    """A client's default transport of `kind`: HTTP, or WebSocket for a ``ws(s)://`` gateway URL.

    The transports are imported here, on first use, so that ``import lorax`` loads
    neither aiohttp nor websockets.
    """
    asynchronous = kind is AsyncTransport
    if scheme in ("ws", "wss"):
        # The handshake authenticates to the gateway; the client's headers travel with
        # each call and are forwarded upstream.
        if asynchronous:
            from lorax.transports.websocket import AsyncWebSocketTransport

            return AsyncWebSocketTransport(base_url, headers=gateway_headers, verify=verify)
        from lorax.transports.websocket import WebSocketTransport

        return WebSocketTransport(base_url, headers=gateway_headers, verify=verify)
    options: dict[str, Any] = {"verify": verify, "cert": cert, "proxy": proxy, "max_response_bytes": max_response_bytes}
    if asynchronous:
        from lorax.transports.aiohttp import AsyncHTTPTransport

        return AsyncHTTPTransport(base_url, limit=pool_size, **options)
    from lorax.transports.http import HTTPTransport

    return HTTPTransport(base_url, pool_maxsize=pool_size, **options)


class ClientBase:
    """Construction, configuration and retry decisions shared by both clients."""

    _config: ClientConfig
    # The options of every call when there is no total timeout (a Deadline(None) never
    # expires, so one CallOptions serves all calls); None: a fresh one per call.
    _shared_options: CallOptions | None

    def _setup(
        self,
        kind: type[Transport] | type[AsyncTransport],
        base_url: str,
        headers: Mapping[str, str] | None,
        cookies: Mapping[str, str] | None,
        timeout: TimeoutLike | NotGiven,
        session: object | None,
        max_session_retries: int | None,
        max_retries: RetryPolicy | int | NotGiven | None,
        on_response: Callable[[ResponseMeta], None] | None,
    ) -> str:
        if session is not None:
            http = "AsyncHTTPTransport" if kind is AsyncTransport else "HTTPTransport"
            raise TypeError(
                f"lorax.{type(self).__name__} does not take a requests.Session; pass "
                f"transport={http}(...) to configure pooling, TLS and proxies"
            )
        if max_retries is NOT_GIVEN and max_session_retries is not None:
            max_retries = max_session_retries
        scheme = check_base_url(base_url)
        self._use_config(
            ClientConfig(
                base_url=base_url,
                headers=build_headers(headers, cookies),
                timeout=Timeout.coerce(timeout),
                retry=RetryPolicy.coerce(max_retries),
                on_response=on_response,
            )
        )
        # Named in the message of a 401/403 (never the token itself).
        self._auth_source: str | None = auth_source(self._config.headers)
        self._owns_transport = True
        return scheme

    def _use_config(self, config: ClientConfig) -> None:
        self._config = config
        self._shared_options = config.call_options() if config.timeout.total is None else None

    def _call_options(self) -> CallOptions:
        """The options of one call (with a fresh total deadline when there is one)."""
        options = self._shared_options
        return options if options is not None else self._config.call_options()

    @property
    def base_url(self) -> str:
        """The server (or gateway) URL this client talks to."""
        return self._config.base_url

    @property
    def timeout(self) -> Timeout:
        """The timeouts applied to each call."""
        return self._config.timeout

    @property
    def retry_policy(self) -> RetryPolicy:
        """When and how failed calls are retried."""
        return self._config.retry

    def _copy_with(self: C, config: ClientConfig) -> C:
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._use_config(config)
        clone.__dict__["_owns_transport"] = False  # the original closes the shared transport
        return clone

    def with_options(
        self: C,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: TimeoutLike | NotGiven = NOT_GIVEN,
        max_retries: RetryPolicy | int | NotGiven | None = NOT_GIVEN,
    ) -> C:
        """A client sharing this one's connections, with some settings changed.

        ``client.with_options(timeout=5).generate(...)`` sets a timeout for one call;
        closing the copy does not close the shared transport.
        """
        clone = self._copy_with(self._config.changed(headers=headers, timeout=timeout, max_retries=max_retries))
        if headers and auth_source(headers) is not None:
            clone._auth_source = "the Authorization header given in with_options(headers=)"
        return clone

    def _retry_delay(self, state: RetryState, exc: LoraxError, method: Method) -> float | None:
        """Seconds to wait before the next attempt, or None: the caller re-raises `exc`."""
        delay = state.next_delay(exc, stream_started=False)
        if delay is None:
            explain_auth(exc, self._auth_source)
            return None
        logger.info("lorax: %s failed (%s); retry %d in %.2fs", method.name, type(exc).__name__, state.attempts, delay)
        return delay

    def __repr__(self) -> str:
        transport = getattr(self, "_transport", None)
        described = transport.describe() if transport is not None else "?"
        return f"{type(self).__name__}({redact_url(self._config.base_url)!r}, transport={described})"


def metrics_result(result: Any, format: str) -> str | dict[str, Any]:
    """What ``metrics()`` returns from a MetricsResponse."""
    body = result.body
    if format == "json":
        if isinstance(body, dict):
            families: dict[str, Any] = {name: family.to_dict() for name, family in body.items()}
            return families
        from lorax.errors import ResponseDecodeError

        raise ResponseDecodeError("asked /metrics for JSON but the server answered Prometheus text")
    return body if isinstance(body, str) else ""
