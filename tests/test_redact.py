"""lorax._redact.Secrets: the one helper that scrubs credential values out of text.

The transports, the gateway and the ``lorax`` command all use it; these pin what it
collects and how it replaces. End-to-end checks (canary tokens through real sockets,
logs and the CLI) are in tests/reliability/test_secrets.py and tests/cli.
"""

from __future__ import annotations

import lorax._redact
from lorax import errors, types
from lorax._redact import Secrets, header_secrets, request_secrets


def test_it_is_the_one_secrets_class() -> None:
    from lorax._cli import common
    from lorax.transports import _http_common

    assert _http_common.Secrets is lorax._redact.Secrets
    assert common.Secrets is lorax._redact.Secrets
    assert "Secrets" not in common.__all__


def test_short_values_are_ignored_and_schemes_split() -> None:
    secrets = Secrets(["ab", "", "Bearer TOK-789", "  PADDED-1  "])
    assert secrets.values == ("Bearer TOK-789", "  PADDED-1  ", "PADDED-1", "TOK-789")
    assert secrets.scrub("ab Bearer TOK-789 / TOK-789 / PADDED-1") == "ab <redacted> / <redacted> / <redacted>"


def test_longest_first_leaves_no_tail() -> None:
    secrets = Secrets(["ABCD", "ABCDEFGH"])
    assert secrets.scrub("xABCDEFGHx ABCD") == "x<redacted>x <redacted>"


def test_add_and_add_header() -> None:
    secrets = Secrets()
    assert not secrets
    secrets.add(None)
    secrets.add("Token SECRET-1")
    secrets.add_header("Content-Type", "application/json")  # not a credential header
    secrets.add_header("Cookie", "lang=en; session=0123456789abcdef")
    assert secrets
    assert secrets.values == (
        "lang=en; session=0123456789abcdef",
        "session=0123456789abcdef",
        "0123456789abcdef",
        "Token SECRET-1",
        "SECRET-1",
    )
    assert secrets.scrub("application/json lang=en") == "application/json lang=en"
    assert repr(secrets) == "<Secrets: 5 value(s)>"


def test_header_secrets_takes_credentials_only() -> None:
    headers = {"Authorization": "Bearer AAAA-1", "Accept": "text/event-stream", "X-Api-Key": "KEY-2"}
    assert header_secrets(headers) == ["Bearer AAAA-1", "AAAA-1", "KEY-2"]


def test_of_collects_transport_call_and_request_secrets() -> None:
    request = types.GenerateRequest(
        inputs="hi", parameters=types.GenerateParameters(adapter_id="a/b", api_token="ADAPTER-TOKEN-3")
    )
    assert request_secrets(request) == ["ADAPTER-TOKEN-3"]
    secrets = Secrets.of(["TRANSPORT-1"], {"Authorization": "Bearer CALL-2"}, request)
    assert secrets.values == ("ADAPTER-TOKEN-3", "Bearer CALL-2", "TRANSPORT-1", "CALL-2")


def test_scrub_error_headers_and_bytes() -> None:
    secrets = Secrets(["SECRET-42"])
    err = errors.OverloadedError(
        "echo SECRET-42", status_code=429, error_type="overloaded", body='{"e":"SECRET-42"}', headers={"x": "SECRET-42"}
    )
    assert secrets.scrub_error(err) is err
    assert err.message == "echo <redacted>"
    assert err.body == '{"e":"<redacted>"}'
    assert err.headers == {"x": "<redacted>"}
    assert "SECRET-42" not in str(err)
    plain = {"x": "y"}
    assert secrets.scrub_headers(plain) is plain
    assert secrets.scrub_bytes(b"a SECRET-42 b") == b"a <redacted> b"
