"""How the HTTP transports are configured: base URLs, TLS, proxies, secrets, threads."""

from __future__ import annotations

import base64
import logging
import os
import ssl
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from lorax import _routes as routes
from lorax import errors
from lorax.transports import _http_common as common
from lorax.transports.aiohttp import AsyncHTTPTransport
from lorax.transports.base import CallOptions
from lorax.transports.http import HTTPTransport
from lorax.types import GenerateParameters

from ._servers import AppServer, LoopThread, ProxyServer, free_port
from .conftest import Driver
from .test_http_streams import final, token

GENERATE = routes.GENERATE
STREAM = routes.GENERATE_STREAM
OK = b'{"generated_text":"ok"}'
ROOT = Path(__file__).resolve().parents[3]


def req() -> Any:
    return GENERATE.input_type(inputs="Hi")


# ---------------------------------------------------------------------------------
# Base URLs


@pytest.mark.parametrize(
    ("url", "origin", "prefix", "root", "generate"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080", "", "/", "/generate"),
        ("http://Host:80/", "http://host", "", "/", "/generate"),
        (
            "https://serving.app.predibase.com/TENANT/deployments/v2/llms/NAME/",
            "https://serving.app.predibase.com",
            "/TENANT/deployments/v2/llms/NAME",
            "/TENANT/deployments/v2/llms/NAME",
            "/TENANT/deployments/v2/llms/NAME/generate",
        ),
        ("http://[::1]:3000/x//", "http://[::1]:3000", "/x", "/x", "/x/generate"),
    ],
)
def test_base_url_joining(url: str, origin: str, prefix: str, root: str, generate: str) -> None:
    base = common.BaseURL.parse(url)
    assert base.origin == origin
    assert base.prefix == prefix
    assert base.path("/") == root  # LoRAX's "/" route is the prefix itself
    assert base.path("/generate") == generate
    assert base.url("/v1/chat/completions") == origin + prefix + "/v1/chat/completions"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host",
        "host:8080",
        "http://host/?a=1",
        "http://host/path?token=abc",
        "http://host/#frag",
        "http:///nohost",
        "http://host:99999",
        "http://ho st/",
        "",
    ],
)
def test_bad_base_urls(url: str) -> None:
    with pytest.raises(ValueError) as info:
        HTTPTransport(url)
    assert "token=abc" not in str(info.value)
    with pytest.raises(ValueError):
        AsyncHTTPTransport(url)


def test_describe_and_repr_redact_credentials() -> None:
    url = "https://user:s3cret-pass@host.example:8443/prefix/"
    sync = HTTPTransport(url)
    try:
        assert sync.describe() == "HTTPTransport(https://<redacted>@host.example:8443/prefix)"
        assert repr(sync) == sync.describe()
    finally:
        sync.close()
    async_t = AsyncHTTPTransport(url)
    assert async_t.describe() == "AsyncHTTPTransport(https://<redacted>@host.example:8443/prefix)"
    assert "s3cret" not in repr(async_t)


def test_url_credentials_become_basic_auth(app: AppServer, driver: Callable[..., Driver]) -> None:
    app.reply("POST", "/generate", OK)
    d = driver(app.url.replace("http://", "http://me:p%40ss@"))
    d.unary(GENERATE, req())
    assert app.seen[-1].headers["authorization"] == "Basic " + base64.b64encode(b"me:p@ss").decode()


# ---------------------------------------------------------------------------------
# Proxies


@pytest.fixture
def proxy(lt: LoopThread) -> Iterator[ProxyServer]:
    server = ProxyServer(lt).start()
    yield server
    server.stop()


def test_environment_proxy_is_honoured(
    app: AppServer, proxy: ProxyServer, driver: Callable[..., Driver], monkeypatch: pytest.MonkeyPatch
) -> None:
    app.reply("POST", "/generate", OK)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    d = driver(app.url)
    assert d.unary(GENERATE, req())[0].generated_text == "ok"
    assert proxy.seen == [(f"POST {app.url}/generate", None)]
    assert app.seen[-1].headers["host"] == f"127.0.0.1:{app.port}"
    # trust_env=False, or a NO_PROXY match, goes direct.
    driver(app.url, trust_env=False).unary(GENERATE, req())
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    driver(app.url).unary(GENERATE, req())
    assert len(proxy.seen) == 1
    assert len(app.seen) == 3


def test_explicit_proxy_with_credentials(
    app: AppServer, proxy: ProxyServer, driver: Callable[..., Driver], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app.sse("POST", "/generate_stream", [token(1), final("a")])
    proxied = proxy.url.replace("http://", "http://agent:pr0xy-s3cret@")
    d = driver(app.url, proxy=proxied)
    messages, error = d.collect(STREAM, req())
    assert error is None
    assert len(messages) == 2
    expected = "Basic " + base64.b64encode(b"agent:pr0xy-s3cret").decode()
    assert proxy.seen == [(f"POST {app.url}/generate_stream", expected)]
    # An unreachable proxy: the error names it, without its credentials.
    dead = driver(app.url, proxy=f"http://agent:pr0xy-s3cret@127.0.0.1:{free_port()}")
    with pytest.raises(errors.APIConnectionError) as info:
        dead.unary(GENERATE, req())
    assert info.value.request_sent is False
    assert "proxy" in str(info.value)
    assert "pr0xy-s3cret" not in str(info.value) + repr(info.value) + caplog.text
    assert "pr0xy-s3cret" not in repr(d.transport)


# ---------------------------------------------------------------------------------
# TLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_app(lt: LoopThread, ca: trustme.CA) -> Iterator[AppServer]:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    server = AppServer(lt, ssl_context=server_ctx).start()
    server.reply("POST", "/generate", OK)
    server.sse("POST", "/generate_stream", [token(1), final("a")])
    yield server
    server.stop()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def test_tls_is_verified_by_default(tls_app: AppServer, driver: Callable[..., Driver]) -> None:
    d = driver(tls_app.url)
    with pytest.raises(errors.APIConnectionError) as info:
        d.unary(GENERATE, req())
    assert info.value.request_sent is False
    assert "certificate" in str(info.value)
    assert tls_app.seen == []


def test_tls_with_a_ca_bundle_or_context(
    tls_app: AppServer, ca: trustme.CA, ca_file: str, driver: Callable[..., Driver], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert driver(tls_app.url, verify=ca_file).unary(GENERATE, req())[0].generated_text == "ok"
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    messages, error = driver(tls_app.url, verify=ctx).collect(STREAM, req())
    assert error is None
    assert len(messages) == 2
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_file)
    assert driver(tls_app.url).unary(GENERATE, req())[0].generated_text == "ok"
    with pytest.raises(ValueError, match="load_cert_chain"):
        driver(tls_app.url, verify=ctx, cert="client.pem")
    with pytest.raises(ValueError, match="CA bundle"):
        driver(tls_app.url, verify="/nonexistent/ca.pem")


def test_tls_verify_false_warns_once(
    tls_app: AppServer, driver: Callable[..., Driver], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="lorax")
    common._insecure_warned.clear()
    d = driver(tls_app.url, verify=False)
    for _ in range(3):
        assert d.unary(GENERATE, req())[0].generated_text == "ok"
    driver(tls_app.url, verify=False).unary(GENERATE, req())
    warnings = [r for r in caplog.records if "verification is disabled" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].name == "lorax"


def test_tls_client_certificate(lt: LoopThread, ca: trustme.CA, ca_file: str, tmp_path: Path, kind: str) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server_ctx)
    server = AppServer(lt, ssl_context=server_ctx).start()
    try:
        server.reply("POST", "/generate", OK)
        client_cert = ca.issue_cert("client@example")
        cert_path = tmp_path / "client.pem"
        key_path = tmp_path / "client.key"
        client_cert.cert_chain_pems[0].write_to_path(str(cert_path))
        client_cert.private_key_pem.write_to_path(str(key_path))
        d = Driver(kind, server.url, verify=ca_file, cert=(str(cert_path), str(key_path)))
        try:
            assert d.unary(GENERATE, req())[0].generated_text == "ok"
        finally:
            d.close()
    finally:
        server.stop()


def test_https_through_a_connect_proxy(
    tls_app: AppServer, proxy: ProxyServer, ca_file: str, driver: Callable[..., Driver]
) -> None:
    d = driver(tls_app.url, verify=ca_file, proxy=proxy.url.replace("http://", "http://u:tunnel-pw@"))
    messages, error = d.collect(STREAM, req())
    assert error is None
    assert len(messages) == 2
    expected = "Basic " + base64.b64encode(b"u:tunnel-pw").decode()
    assert proxy.seen == [(f"CONNECT 127.0.0.1:{tls_app.port}", expected)]
    # Through the tunnel, the request names the server, not the proxy.
    assert tls_app.seen[-1].headers["host"] == f"127.0.0.1:{tls_app.port}"
    assert "proxy-authorization" not in tls_app.seen[-1].headers


# ---------------------------------------------------------------------------------
# Secrets


CANARY = "canary-tok-8f3a91c2e7"


def test_no_credentials_in_logs_or_errors(
    app: AppServer, driver: Callable[..., Driver], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app.reply("POST", "/generate", OK)

    async def echo(request: Any, body: bytes) -> Any:
        from aiohttp import web

        # A proxy error page that echoes the request back, headers and body.
        text = f"<html><title>Bad Gateway</title>{request.headers.get('Authorization')} {body.decode()}</html>"
        return web.Response(status=502, text=text, content_type="text/html")

    app.on("POST", "/echo", echo)
    app.reply("POST", "/plain", "rejected: " + CANARY, status=422, content_type="text/plain")
    d = driver(app.url, headers={"Authorization": f"Bearer {CANARY}"})
    options = CallOptions(headers={"X-Api-Key": CANARY + "-call", "Cookie": f"session={CANARY}"})
    request = GENERATE.input_type(inputs="Hi", parameters=GenerateParameters(api_token=CANARY + "-body"))
    d.unary(GENERATE, request, options)
    raised: list[errors.LoraxError] = []
    for path in ("/echo", "/plain"):
        method = GENERATE._replace(path=path)
        with pytest.raises(errors.APIStatusError) as info:
            d.unary(method, request, options)
        raised.append(info.value)
    with pytest.raises(errors.APIConnectionError) as refused:
        driver(f"http://user:{CANARY}@127.0.0.1:{free_port()}").unary(GENERATE, request, options)
    raised.append(refused.value)
    assert app.seen[0].headers["authorization"] == f"Bearer {CANARY}"  # it did go on the wire
    for error in raised:
        text = " ".join([str(error), repr(error), error.message, error.body or "", repr(error.headers)])
        assert CANARY not in text
    assert "<redacted>" in (raised[0].body or "")
    assert CANARY not in caplog.text
    assert CANARY not in repr(d.transport) + repr(options)
    assert any("POST" in r.getMessage() for r in caplog.records if r.name.startswith("lorax"))


# ---------------------------------------------------------------------------------
# Threads, imports, leaks


def test_one_sync_transport_shared_by_threads(app: AppServer) -> None:
    app.reply("POST", "/generate", OK)
    app.sse("POST", "/generate_stream", [token(1), token(2), final("a")])
    errors_seen: list[BaseException] = []
    with HTTPTransport(app.url, pool_maxsize=4) as transport:

        def work() -> None:
            try:
                for i in range(20):
                    if i % 3:
                        assert transport.unary(GENERATE, req(), CallOptions())[0].generated_text == "ok"
                    else:
                        with transport.stream(STREAM, req(), CallOptions()) as stream:
                            assert len(list(stream)) == 3
            except BaseException as exc:  # pragma: no cover - reported below
                errors_seen.append(exc)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors_seen == []
        stats = transport.pool_stats()
        assert stats["in_use"] == 0
        assert stats["opened"] <= 4
        assert stats["streams"] == 0


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDEVMODE": "1", "PYTHONPATH": str(ROOT)}
    for name in list(env):
        if name.lower().endswith("_proxy"):
            del env[name]
    return subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", textwrap.dedent(code), *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        env=env,
        cwd=str(ROOT),
    )


def test_sync_module_does_not_import_aiohttp() -> None:
    result = run_python(
        """
        import sys
        import lorax.transports.http
        import lorax.transports
        assert "aiohttp" not in sys.modules, "aiohttp was imported"
        """
    )
    assert result.returncode == 0, result.stderr


def test_nothing_left_unclosed(app: AppServer, tls_app: AppServer, ca_file: str) -> None:
    # Every way out of a call, in a fresh interpreter in dev mode with ResourceWarning
    # as an error: nothing may be reported unclosed, sync or async, plain or TLS.
    app.reply("POST", "/generate", OK)
    app.reply("POST", "/bad", b'{"error":"x","error_type":"validation"}', status=422)
    for server in (app, tls_app):
        server.sse("POST", "/generate_stream", [token(1)], forever=token(2))
        server.sse("POST", "/v1/chat/completions", [b"data: [DONE]\n\n"])
    code = """
        import asyncio, gc, sys
        from lorax import _routes as r, errors
        from lorax.transports.aiohttp import AsyncHTTPTransport
        from lorax.transports.http import HTTPTransport
        from lorax.transports.base import CallOptions

        G, S, C = r.GENERATE, r.GENERATE_STREAM, r.CHAT_COMPLETIONS_STREAM
        bad = G._replace(path="/bad")
        o = CallOptions()

        def sync(url, ca):
            with HTTPTransport(url, verify=ca) as t:
                t.unary(G, G.input_type(inputs="x"), o) if "https" not in url else None
                s = t.stream(S, S.input_type(inputs="x"), o)
                next(s); s.close()
                s = t.stream(S, S.input_type(inputs="x"), o)
                next(s); del s; gc.collect()
                list(t.stream(C, C.input_type(model="", messages=[]), o))
                s = t.stream(S, S.input_type(inputs="x"), o)
                next(s)  # left open: close() of the transport ends it

        async def run(url, ca):
            t = AsyncHTTPTransport(url, verify=ca)
            if "https" not in url:
                await t.unary_async(G, G.input_type(inputs="x"), o)
                try:
                    await t.unary_async(bad, G.input_type(inputs="x"), o)
                except errors.ValidationError:
                    pass
            s = await t.stream_async(S, S.input_type(inputs="x"), o)
            await s.__anext__(); await s.aclose()
            s = await t.stream_async(S, S.input_type(inputs="x"), o)
            await s.__anext__(); del s; gc.collect()
            [m async for m in await t.stream_async(C, C.input_type(model="", messages=[]), o)]
            s = await t.stream_async(S, S.input_type(inputs="x"), o)
            task = asyncio.create_task(s.__anext__())
            await task
            task = asyncio.create_task(s.__anext__())
            await asyncio.sleep(0.05)
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, StopAsyncIteration):
                pass
            s = await t.stream_async(S, S.input_type(inputs="x"), o)
            await s.__anext__()  # left open: aclose() of the transport ends it
            await t.aclose()

        for url, ca in ((sys.argv[1], True), (sys.argv[2], sys.argv[3])):
            sync(url, ca)
            asyncio.run(run(url, ca))
        gc.collect()
        print("done")
    """
    result = run_python(code, app.url, tls_app.url, ca_file)
    assert result.returncode == 0, result.stderr
    assert "done" in result.stdout
    for word in ("Unclosed", "unclosed", "ResourceWarning", "never retrieved", "Exception ignored"):
        assert word not in result.stderr, result.stderr
