"""A WebSocket URL's ``user:password@`` never reaches an error message or the CLI's output.

websockets quotes the whole URI in some of its errors (an invalid one: a fragment, a
bad port); the client refuses fragments itself (RFC 6455 forbids them) and scrubs the
URL's credentials out of every error it builds from the library's text.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from lorax import AsyncClient, Client, errors
from lorax.transports.websocket import AsyncWebSocketTransport, WebSocketTransport
from tests.transports.http_transports._servers import free_port

from .test_secrets import error_texts

PASSWORD = "canary-ws-password-3f5b7d9e"
# Percent-encoded in the URL ("%21" is "!"): both spellings must go.
ENCODED = "canary-ws-pass%21word-0a2c4e6f"
DECODED = "canary-ws-pass!word-0a2c4e6f"


def _clean(text: str) -> None:
    for secret in (PASSWORD, ENCODED, DECODED):
        assert secret not in text, text


@pytest.mark.parametrize(
    ("url", "match"),
    [
        (f"ws://user:{PASSWORD}@127.0.0.1:{free_port()}/path#frag", "cannot have a fragment"),
        (f"wss://user:{PASSWORD}@127.0.0.1:{free_port()}/path#frag", "cannot have a fragment"),
        # websockets would raise a bare ValueError at the first call, or an InvalidURI
        # quoting the whole URL.
        (f"ws://user:{PASSWORD}@127.0.0.1:99999/", "has an invalid port"),
        (f"ws://{PASSWORD}@127.0.0.1:port/", "has an invalid port"),
        # A user name alone is a credential too (websockets refuses it, quoting the URL).
        (f"ws://{PASSWORD}@127.0.0.1:{free_port()}/", "has a user name without a password"),
    ],
    ids=["ws-fragment", "wss-fragment", "port-out-of-range", "user-only-bad-port", "user-only"],
)
def test_invalid_urls_are_refused_without_the_password(url: str, match: str) -> None:
    for build in (Client, AsyncClient, WebSocketTransport, AsyncWebSocketTransport):
        with pytest.raises(ValueError, match=match) as info:
            build(url)
        _clean(str(info.value))
        assert "<redacted>@127.0.0.1" in str(info.value)
        assert "#frag" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        f"ws://user:{PASSWORD}@127.0.0.1:{free_port()}/",  # refused connection
        f"ws://user:{ENCODED}@127.0.0.1:{free_port()}/",
    ],
    ids=["refused", "percent-encoded"],
)
def test_connection_errors_carry_no_url_credentials(url: str) -> None:
    with Client(url, max_retries=0) as client, pytest.raises(errors.APIConnectionError) as info:
        client.generate("x")
    assert info.value.request_sent is False  # type: ignore[attr-defined]
    _clean(error_texts(info.value))
    assert "<redacted>@127.0.0.1" in str(info.value)

    async def main() -> errors.APIConnectionError:
        async with AsyncClient(url, max_retries=0) as client:
            with pytest.raises(errors.APIConnectionError) as ainfo:
                await client.generate("x")
            return ainfo.value

    _clean(error_texts(asyncio.run(main())))


@pytest.mark.parametrize("suffix", ["/#fragment", "/"])
def test_cli_never_prints_the_password(suffix: str) -> None:
    url = f"ws://user:{PASSWORD}@127.0.0.1:{free_port()}{suffix}"
    proc = subprocess.run(
        [sys.executable, "-m", "lorax.cli", "generate", "--endpoint", url, "hi"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode in (1, 2), proc.stderr
    assert proc.stderr.startswith("lorax: error: "), proc.stderr
    _clean(proc.stdout + proc.stderr)
    assert "<redacted>@127.0.0.1" in proc.stderr
