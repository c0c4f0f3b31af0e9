"""Gateway shutdown and restarts, as the WebSocket transport sees them; the CLI; the logs."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from lorax import _routes, errors
from lorax.gateway import GatewayThread
from lorax.gateway.cli import build_parser
from lorax.transports.base import CallOptions
from lorax.transports.websocket import WebSocketTransport
from lorax.v1.generate_pb2 import GenerateRequest

OPTS = CallOptions()


def req(inputs: str) -> GenerateRequest:
    return GenerateRequest(inputs=inputs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_connect_refused_is_not_sent() -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    with WebSocketTransport(url) as transport, pytest.raises(errors.APIConnectionError) as info:
        transport.unary(_routes.GENERATE, req("x"), OPTS)
    assert info.value.request_sent is False  # type: ignore[attr-defined]


def test_closed_transport_raises() -> None:
    transport = WebSocketTransport("ws://127.0.0.1:9")
    transport.close()
    with pytest.raises(errors.ClientClosedError):
        transport.unary(_routes.GENERATE, req("x"), OPTS)


def test_graceful_shutdown_lets_calls_finish(upstream: Any) -> None:
    gw = GatewayThread(upstream=upstream.url).start()
    try:
        with WebSocketTransport(gw.url) as transport:
            stream = transport.stream(_routes.GENERATE_STREAM, req("tokens:10:30"), OPTS)
            first = next(stream)
            stopper = threading.Thread(target=gw.stop, kwargs={"grace": 5})
            stopper.start()
            rest = list(stream)  # the call in flight finishes
            assert [e.token.id for e in [first, *rest]] == list(range(10))
            stopper.join(10)
            # The gateway is gone: new calls cannot connect, and were never sent.
            with pytest.raises(errors.APIConnectionError) as info:
                transport.unary(_routes.GENERATE, req("late"), OPTS)
            assert info.value.request_sent is False  # type: ignore[attr-defined]
    finally:
        gw.stop()


def test_in_flight_calls_fail_typed_when_the_connection_drops(upstream: Any) -> None:
    gw = GatewayThread(upstream=upstream.url).start()
    outcome: list[BaseException] = []
    try:
        with WebSocketTransport(gw.url) as transport:
            stream = transport.stream(_routes.GENERATE_STREAM, req("forever"), OPTS)
            next(stream)

            def unary() -> None:
                try:
                    transport.unary(_routes.GENERATE, req("slow"), OPTS)
                except BaseException as exc:
                    outcome.append(exc)

            waiter = threading.Thread(target=unary)
            waiter.start()
            time.sleep(0.2)
            gw.stop(grace=0)
            with pytest.raises(errors.StreamInterruptedError) as info:
                for _ in stream:
                    pass
            assert "1001" in str(info.value)
            waiter.join(10)
    finally:
        gw.stop()
    (exc,) = outcome
    assert type(exc) is errors.APIConnectionError
    assert exc.request_sent is True  # type: ignore[attr-defined]


def test_reconnect_after_the_gateway_restarts(upstream: Any) -> None:
    port = free_port()
    with WebSocketTransport(f"ws://127.0.0.1:{port}") as transport:
        with GatewayThread(upstream=upstream.url, port=port):
            assert transport.unary(_routes.GENERATE, req("one"), OPTS)[0].generated_text == "echo: one"
        with pytest.raises(errors.APIConnectionError):
            transport.unary(_routes.GENERATE, req("down"), OPTS)
        with GatewayThread(upstream=upstream.url, port=port):
            assert transport.unary(_routes.GENERATE, req("two"), OPTS)[0].generated_text == "echo: two"


def test_logs_are_structured_and_carry_no_secrets(make_gateway: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lorax.gateway")
    gw = make_gateway(auth_token="gateway-secret", upstream_headers={"Authorization": "Bearer upstream-secret"})
    options = CallOptions(headers={"Authorization": "Bearer call-secret"})
    with WebSocketTransport(gw.url, headers={"Authorization": "Bearer gateway-secret"}) as transport:
        transport.unary(_routes.GENERATE, req("prompt-text"), options)
        with pytest.raises(errors.ValidationError):
            transport.unary(_routes.GENERATE, req("validation"), options)
    with (
        WebSocketTransport(gw.url, headers={"Authorization": "Bearer nope"}) as transport,
        pytest.raises(errors.APIStatusError),
    ):
        transport.unary(_routes.GENERATE, req("x"), options)
    gw.stop()
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("lorax.gateway"))
    assert "event=call_end" in text
    assert "error_type=validation" in text
    assert "reason=unauthorized" in text
    for secret in ("gateway-secret", "upstream-secret", "call-secret", "nope", "prompt-text", "temperature"):
        assert secret not in text


def test_cli_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(
        ["--upstream", "http://x:1", "--port", "0", "--upstream-header", "X-A: b", "--idle-timeout", "0"]
    )
    assert args.upstream_header == [("X-A", "b")]
    assert args.idle_timeout == 0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--upstream", "http://x:1", "--max-connections", "0"])


def test_python_dash_m_runs_and_stops_on_sigterm(upstream: Any) -> None:
    port = free_port()
    env = dict(os.environ, LORAX_GATEWAY_TOKEN="cli-token")
    process = subprocess.Popen(
        [sys.executable, "-m", "lorax.gateway", "--upstream", upstream.url, "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        while "lorax gateway on" not in line:
            assert line, "the gateway exited"
            line = process.stderr.readline()
        assert f"ws://127.0.0.1:{port}" in line
        with WebSocketTransport(f"ws://127.0.0.1:{port}", headers={"Authorization": "Bearer cli-token"}) as transport:
            assert transport.unary(_routes.GENERATE, req("cli"), OPTS)[0].generated_text == "echo: cli"
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
