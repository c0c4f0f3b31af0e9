"""Secrets stay secret: canary tokens never show up in logs, reprs, errors or CLI output.

Every canary is a credential the client knows: an ``Authorization`` header, the
``api_token`` of a generation (it travels in the JSON body), a cookie, a URL's
password, the bearer token of the WebSocket handshake (``gateway_headers``) and the
gateway's own ``auth_token``. The calls run with DEBUG logging for every logger and
against a server that echoes the request (headers and body) back in its error
answers, as misconfigured proxies and debug endpoints do: the client must scrub the
secrets it knows out of every error it builds from such text.

Then: redirects are not followed, so a 307 to another host never carries the token
there; and TLS is verified by default, with a custom CA bundle, a wrong host name and
an untrusted certificate, over HTTP (sync and async) and WSS.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import ssl
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from lorax import AsyncClient, Client, errors
from lorax.gateway import GatewayThread
from lorax.testing import FakeLorax
from lorax.transports.base import CallOptions
from tests.transports.http_transports._servers import AppServer, LoopThread

from ._harness import FAST_RETRY

CANARY_AUTH = "canary-authorization-7f3a9c1e5b"
CANARY_API = "canary-api-token-2d8e4f6a0c"
CANARY_COOKIE = "canary-cookie-9b1d3f5e7a"
CANARY_URL = "canary-url-password-4c6e8a0b2d"
CANARY_GW = "canary-gateway-token-6a8c0e2f4b"
CANARIES = (CANARY_AUTH, CANARY_API, CANARY_COOKIE, CANARY_URL, CANARY_GW)


def assert_clean(text: str, where: str) -> None:
    for canary in CANARIES:
        assert canary not in text, f"{canary} leaked into {where}:\n{text[:2000]}"


def error_texts(exc: BaseException) -> str:
    """Everything an exception shows: str, repr, its attributes, the whole traceback."""
    parts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    if isinstance(exc, errors.LoraxError):
        parts += [exc.message, exc.body or "", repr(exc.headers), str(exc.error_type)]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------
# An upstream that echoes requests back in its errors


def echo_text(request: web.Request, body: bytes) -> str:
    headers = "\n".join(f"{k}: {v}" for k, v in request.headers.items())
    # The parsed cookies too, one bare value each, as a framework's debug page shows them.
    cookies = " ".join(request.cookies.values())
    return (
        f"you sent:\n{request.method} {request.path_qs}\n{headers}\ncookies: {cookies}\n\n"
        f"{body.decode('utf-8', 'replace')}"
    )


def echo_server(lt: LoopThread) -> AppServer:
    server = AppServer(lt).start()

    async def generate(request: web.Request, body: bytes) -> web.StreamResponse:
        text = echo_text(request, body)
        kind = request.headers.get("x-echo", "json-401")
        # The echo also goes into a response header, as a debugging proxy might.
        echoed = {"x-echo-authorization": request.headers.get("authorization", "")}
        if kind == "json-401":
            payload = orjson.dumps({"error": text, "error_type": "unauthorized"})
            return web.Response(status=401, body=payload, content_type="application/json", headers=echoed)
        return web.Response(status=500, text=text, content_type="text/plain", headers=echoed)

    async def generate_stream(request: web.Request, body: bytes) -> web.StreamResponse:
        if request.headers.get("x-echo") in ("json-401", "text-500"):
            return await generate(request, body)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        event = orjson.dumps({"error": echo_text(request, body), "error_type": "generation"})
        await resp.write(b"data: " + event + b"\n\n")
        await resp.write_eof()
        return resp

    server.on("POST", "/generate", generate)
    server.on("POST", "/generate_stream", generate_stream)
    return server


@pytest.fixture(scope="module")
def lt() -> Iterator[LoopThread]:
    loop_thread = LoopThread()
    yield loop_thread
    loop_thread.close()


@pytest.fixture
def echo(lt: LoopThread) -> Iterator[AppServer]:
    server = echo_server(lt)
    yield server
    server.stop()


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # the root logger: every library's records
    for name in ("lorax", "websockets", "aiohttp", "urllib3", "asyncio"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def client_kwargs(transport: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "headers": {"Authorization": f"Bearer {CANARY_AUTH}", "x-echo": "json-401"},
        "cookies": {"theme": "dark", "session": CANARY_COOKIE},
        "max_retries": FAST_RETRY,
        "timeout": 5,
    }
    if transport.startswith("ws"):
        kwargs["gateway_headers"] = {"Authorization": f"Bearer {CANARY_GW}"}
    return kwargs


def failing_calls(client: Any, echo_kind: str) -> list[tuple[str, Callable[[], Any]]]:
    """Calls that fail against the echo server; each returns a coroutine or a value."""
    c = client.with_options(headers={"x-echo": echo_kind})
    return [
        ("generate", lambda: c.generate("Hi", api_token=CANARY_API, max_new_tokens=4)),
        ("generate_stream", lambda: c.generate_stream("Hi", api_token=CANARY_API, max_new_tokens=4)),
    ]


def collect_sync(client: Client) -> list[BaseException]:
    caught: list[BaseException] = []
    for echo_kind in ("json-401", "text-500", "in-stream"):
        for name, call in failing_calls(client, echo_kind):
            if echo_kind == "in-stream" and name == "generate":
                continue
            try:
                result = call()
                if name == "generate_stream":
                    with result as stream:
                        assert_clean(repr(stream), "a stream's repr")
                        list(stream)
            except errors.LoraxError as exc:
                caught.append(exc)
            else:
                raise AssertionError(f"{name} against the echo server ({echo_kind}) did not fail")
    return caught


async def collect_async(client: AsyncClient) -> list[BaseException]:
    caught: list[BaseException] = []
    for echo_kind in ("json-401", "text-500", "in-stream"):
        for name, call in failing_calls(client, echo_kind):
            if echo_kind == "in-stream" and name == "generate":
                continue
            try:
                result = call()
                if name == "generate_stream":
                    async with result as stream:
                        assert_clean(repr(stream), "a stream's repr")
                        async for _ in stream:
                            pass
                else:
                    await result
            except errors.LoraxError as exc:
                caught.append(exc)
            else:
                raise AssertionError(f"{name} against the echo server ({echo_kind}) did not fail")
    return caught


def test_canaries_never_leak(
    transport: str,
    echo: AppServer,
    debug_logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    record: Callable[..., None],
) -> None:
    gw: GatewayThread | None = None
    url = echo.url.replace("http://", f"http://user:{CANARY_URL}@")
    if transport.startswith("ws"):
        gw = GatewayThread(upstream=url, auth_token=CANARY_GW).start()
        url = gw.url
    kwargs = client_kwargs(transport)
    try:
        if transport.endswith("async"):

            async def main() -> tuple[list[BaseException], list[str]]:
                async with AsyncClient(url, **kwargs) as client:
                    caught = await collect_async(client)
                    return caught, [repr(client), repr(client.transport), repr(client.with_options(timeout=3))]

            caught, reprs = asyncio.run(main())
        else:
            with Client(url, **kwargs) as client:
                caught = collect_sync(client)
                reprs = [repr(client), repr(client.transport), repr(client.with_options(timeout=3))]
    finally:
        if gw is not None:
            gw.stop(grace=0)
    # The echo server really did receive (and echo) every canary that travels upstream.
    echoed = {k: v for seen in echo.seen for k, v in seen.headers.items()}
    assert CANARY_AUTH in echoed["authorization"]
    assert CANARY_COOKIE in echoed["cookie"]
    assert any(CANARY_API.encode() in seen.body for seen in echo.seen)
    assert len(caught) == 5
    assert all(isinstance(e, errors.APIStatusError) for e in caught), caught
    for exc in caught:
        assert_clean(error_texts(exc), f"a {type(exc).__name__} raised over {transport}")
    for text in reprs:
        assert_clean(text, "a repr")
    assert_clean(repr(CallOptions(headers=kwargs["headers"])), "CallOptions' repr")
    assert debug_logs.records, "DEBUG logging captured nothing"
    assert_clean(debug_logs.text, "the logs")
    for record_ in debug_logs.records:
        assert_clean(record_.getMessage(), f"a log record of {record_.name}")
    out, err = capfd.readouterr()
    assert_clean(out + err, "stdout/stderr")
    record("no canary in logs, reprs or errors", f"ok ({len(caught)} errors, {len(debug_logs.records)} log records)")


@pytest.mark.parametrize("transport", ["ws", "ws-async"])
def test_wrong_gateway_token_is_not_echoed(
    transport: str, debug_logs: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    with FakeLorax() as upstream, GatewayThread(upstream=upstream.url, auth_token=CANARY_AUTH) as gw:
        headers = {"Authorization": f"Bearer {CANARY_GW}"}  # not the gateway's token
        if transport == "ws":
            with (
                Client(gw.url, gateway_headers=headers, max_retries=0) as client,
                pytest.raises(errors.APIStatusError) as info,
            ):
                client.generate("Hi", max_new_tokens=2)
        else:

            async def main() -> BaseException:
                async with AsyncClient(gw.url, gateway_headers=headers, max_retries=0) as client:
                    try:
                        await client.generate("Hi", max_new_tokens=2)
                    except errors.LoraxError as exc:
                        return exc
                raise AssertionError("no error")

            error = asyncio.run(main())
            with pytest.raises(errors.APIStatusError) as info:
                raise error
    assert info.value.status_code == 401
    assert_clean(error_texts(info.value), "the handshake error")
    assert_clean(debug_logs.text, "the logs")
    out, err = capfd.readouterr()
    assert_clean(out + err, "stdout/stderr")


def test_cli_debug_output_has_no_token(echo: AppServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    for echo_kind in ("json-401", "text-500"):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "lorax.cli",
                "generate",
                "Hi",
                "--endpoint",
                echo.url,
                "--api-token",
                CANARY_AUTH,
                "-H",
                f"x-echo: {echo_kind}",
                "-H",
                f"Cookie: session={CANARY_COOKIE}",
                "--max-retries",
                "0",
                "--debug",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        assert proc.returncode == 1, proc.stderr
        assert "lorax: error:" in proc.stderr
        assert_clean(proc.stdout + proc.stderr, f"the CLI's output ({echo_kind})")
    seen = echo.seen[-1].headers
    assert seen["authorization"] == f"Bearer {CANARY_AUTH}"  # it did go on the wire


# ---------------------------------------------------------------------------------
# Redirects


def test_redirect_to_another_host_carries_no_token(transport: str, lt: LoopThread, record: Callable[..., None]) -> None:
    elsewhere = AppServer(lt).start()
    elsewhere.reply("POST", "/generate", b'{"generated_text":"stolen"}')
    elsewhere.reply("POST", "/generate_stream", b'{"generated_text":"stolen"}')
    origin = AppServer(lt).start()
    # Another host name for the same loopback interface: localhost vs 127.0.0.1.
    target = elsewhere.url.replace("127.0.0.1", "localhost")
    for path in ("/generate", "/generate_stream"):
        origin.reply("POST", path, b"", status=307, content_type=None, headers={"Location": target + path})
    gw: GatewayThread | None = None
    url = origin.url
    try:
        if transport.startswith("ws"):
            gw = GatewayThread(upstream=origin.url).start()
            url = gw.url
        headers = {"Authorization": f"Bearer {CANARY_AUTH}"}
        caught: list[errors.LoraxError] = []
        if transport.endswith("async"):

            async def main() -> None:
                async with AsyncClient(url, headers=headers, max_retries=FAST_RETRY) as client:
                    for stream in (False, True):
                        try:
                            if stream:
                                async with client.generate_stream("Hi") as s:
                                    async for _ in s:
                                        pass
                            else:
                                await client.generate("Hi")
                        except errors.LoraxError as exc:
                            caught.append(exc)

            asyncio.run(main())
        else:
            with Client(url, headers=headers, max_retries=FAST_RETRY) as client:
                for stream in (False, True):
                    try:
                        if stream:
                            with client.generate_stream("Hi") as s:
                                list(s)
                        else:
                            client.generate("Hi")
                    except errors.LoraxError as exc:
                        caught.append(exc)
    finally:
        if gw is not None:
            gw.stop(grace=0)
        origin.stop()
        elsewhere.stop()
    assert len(caught) == 2
    for exc in caught:
        assert isinstance(exc, errors.APIStatusError)
        assert exc.status_code == 307
        assert "does not follow redirects" in str(exc)
        assert_clean(error_texts(exc), "the redirect error")
    assert len(origin.seen) == 2
    assert elsewhere.seen == []  # nothing, let alone the token, reached the other host
    record("307 to another host: not followed", f"{type(caught[0]).__name__} 307")


# ---------------------------------------------------------------------------------
# TLS


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    other_ca = trustme.CA()
    root = tmp_path_factory.mktemp("tls")
    ca_path = root / "ca.pem"
    other_path = root / "other-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    other_ca.cert_pem.write_to_path(str(other_path))

    def server_context(*names: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(ctx)
        return ctx

    return {
        "ca": str(ca_path),
        "other_ca": str(other_path),
        "good": server_context("localhost", "127.0.0.1"),
        "wrong_name": server_context("example.org"),
    }


def tls_call(transport: str, url: str, verify: Any) -> errors.LoraxError | str:
    """One generate over `transport`; the error, or the generated text."""
    kwargs: dict[str, Any] = {"verify": verify, "max_retries": 0, "timeout": 5}
    if transport.endswith("async"):

        async def main() -> errors.LoraxError | str:
            async with AsyncClient(url, **kwargs) as client:
                try:
                    return (await client.generate("Hi", max_new_tokens=2)).generated_text
                except errors.LoraxError as exc:
                    return exc

        return asyncio.run(main())
    with Client(url, **kwargs) as client:
        try:
            return client.generate("Hi", max_new_tokens=2).generated_text
        except errors.LoraxError as exc:
            return exc


# CPython 3.10's asyncio (the old sslproto, replaced in 3.11) leaks the *server's* TLS
# transport when a client aborts the handshake, as these tests' clients must: the
# in-process test servers' leak, not the client's, which 3.11+ still checks strictly.
_PY310_SERVER_TLS_LEAK = "ignore:unclosed transport <asyncio\\.sslproto:ResourceWarning"
py310_server_tls_leak: Callable[[Callable[..., None]], Callable[..., None]] = (
    pytest.mark.filterwarnings(_PY310_SERVER_TLS_LEAK) if sys.version_info < (3, 11) else lambda test: test
)


def _collect_server_tls_leaks() -> None:
    # Collect the leaked server transports now, under the filter, rather than in
    # whichever later test the garbage collector happens to run.
    if sys.version_info < (3, 11):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


@pytest.fixture
def tls_endpoints(tls: dict[str, Any], transport: str, lt: LoopThread) -> Iterator[dict[str, str]]:
    """``good`` and ``wrong_name`` https:// (or wss://) URLs in front of a fake LoRAX."""
    try:
        yield from _tls_endpoints(tls, transport, lt)
    finally:
        _collect_server_tls_leaks()


def _tls_endpoints(tls: dict[str, Any], transport: str, lt: LoopThread) -> Iterator[dict[str, str]]:
    with FakeLorax() as upstream:
        if transport.startswith("ws"):
            with (
                GatewayThread(upstream=upstream.url, ssl_context=tls["good"]) as good,
                GatewayThread(upstream=upstream.url, ssl_context=tls["wrong_name"]) as wrong,
            ):
                yield {
                    "good": good.url.replace("127.0.0.1", "localhost"),
                    "wrong_name": wrong.url.replace("127.0.0.1", "localhost"),
                }
            return
        apps = []
        for name in ("good", "wrong_name"):
            app = AppServer(lt, ssl_context=tls[name]).start()
            app.reply("POST", "/generate", b'{"generated_text":"ok"}')
            apps.append(app)
        try:
            yield {
                "good": apps[0].url.replace("127.0.0.1", "localhost"),
                "wrong_name": apps[1].url.replace("127.0.0.1", "localhost"),
            }
        finally:
            for app in apps:
                app.stop()


@py310_server_tls_leak
def test_tls_verification(
    transport: str, tls: dict[str, Any], tls_endpoints: dict[str, str], record: Callable[..., None]
) -> None:
    good, wrong_name = tls_endpoints["good"], tls_endpoints["wrong_name"]
    # Verification is on by default: the local CA is not trusted by the system.
    default = tls_call(transport, good, True)
    assert type(default) is errors.APIConnectionError, default
    assert "certificate verif" in str(default).lower(), str(default)
    assert default.request_sent is False
    # The CA bundle that issued the certificate: it works.
    assert isinstance(tls_call(transport, good, tls["ca"]), str)
    # An SSLContext loaded with it works too.
    ctx = ssl.create_default_context(cafile=tls["ca"])
    assert isinstance(tls_call(transport, good, ctx), str)
    # A certificate for another name, from the trusted CA: refused.
    mismatch = tls_call(transport, wrong_name, tls["ca"])
    assert type(mismatch) is errors.APIConnectionError, mismatch
    assert "certificate verif" in str(mismatch).lower() or "hostname" in str(mismatch).lower(), str(mismatch)
    # The right name, from a CA we do not trust: refused.
    untrusted = tls_call(transport, good, tls["other_ca"])
    assert type(untrusted) is errors.APIConnectionError, untrusted
    assert "certificate verif" in str(untrusted).lower(), str(untrusted)
    # verify=False gets through, with a warning logged once.
    assert isinstance(tls_call(transport, good, False), str)
    record("TLS: default/CA bundle/wrong name/untrusted", "ok")
    _collect_server_tls_leaks()


# ---------------------------------------------------------------------------------
# A gateway that does not scrub


def test_ws_client_scrubs_what_a_careless_gateway_echoes(
    debug_logs: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    # Another implementation of the protocol may pass upstream error text through as
    # it came, credentials and all (or refuse the handshake quoting it): the WebSocket
    # client scrubs what it knows it sent.
    from websockets.sync.server import ServerConnection

    from lorax.transports import _ws_frames as wsf
    from lorax.v1.websocket_pb2 import Frame
    from tests.transports.test_websocket import fake_gateway, next_call

    def careless(ws: ServerConnection) -> None:
        while True:
            try:
                frame = next_call(ws)
            except Exception:
                return
            echo = f"{dict(frame.call.headers)!r} {frame.call.request!r}"
            headers = {"x-echo": dict(frame.call.headers).get("authorization", "")}
            error = wsf.error_frame_fields(status=401, message=echo, error_type="auth", headers=headers, body=echo)
            ws.send(wsf.encode_error(frame.call_id, error))

    def refuse(connection: Any, request: Any) -> Any:
        if request.headers.get("x-refuse"):
            return connection.respond(401, f"bad token: {request.headers.get('Authorization')}\n")
        return None

    caught: list[BaseException] = []
    from lorax._redact import HeaderRedactingLogger

    # (the fake's own handshake log is not the client's; keep it quiet too)
    with fake_gateway(careless, process_request=refuse, logger=HeaderRedactingLogger("websockets.server")) as url:
        with Client(url, headers={"Authorization": f"Bearer {CANARY_AUTH}"}, max_retries=0) as client:
            for call in (
                lambda: client.generate("Hi", api_token=CANARY_API),
                lambda: list(client.generate_stream("Hi", api_token=CANARY_API)),
            ):
                with pytest.raises(errors.APIStatusError) as info:
                    call()
                caught.append(info.value)
        gateway_headers = {"Authorization": f"Bearer {CANARY_GW}", "x-refuse": "1"}
        with Client(url, gateway_headers=gateway_headers, max_retries=0) as client:
            with pytest.raises(errors.APIStatusError) as info:
                client.generate("Hi")
            caught.append(info.value)
    assert [getattr(e, "status_code", None) for e in caught] == [401, 401, 401]
    assert "<redacted>" in caught[0].message
    assert Frame  # the protocol module is importable without the gateway
    for exc in caught:
        assert_clean(error_texts(exc), "an error from a careless gateway")
    assert_clean(debug_logs.text, "the logs")
    out, err = capfd.readouterr()
    assert_clean(out + err, "stdout/stderr")
