"""Node as a real WebSocket client of `lorax gateway`, in front of the fake LoRAX server.

The fake server (`python -m lorax.testing`) and the gateway (`python -m lorax.gateway`)
run as subprocesses on loopback; interop/roundtrip.mjs connects with the `ws` package,
offers the `lorax.v1` subprotocol and a bearer token, and makes a unary Generate call
and a GenerateStream call at the same time on one connection, then an error call, an
unknown method, a cancelled stream and a refused handshake. The Python client makes
the same calls over HTTP and over the gateway; the answers must be the same messages.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from interop_helpers import run_node

from lorax import Client, codec, errors
from lorax import types as T

TOKEN = "interop-token"
PROMPT = "[INST] What is the capital of France? [/INST]"
MAX_NEW_TOKENS = 12


def _start(
    argv: list[str], log: Path, pattern: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a server process and wait for the line that gives its URL."""
    out = log.open("wb")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    out.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = re.search(pattern, log.read_text(errors="replace"))
        if match:
            return proc, match.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    pytest.fail(f"{' '.join(argv)} did not start:\n{log.read_text(errors='replace')[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    logs = tmp_path_factory.mktemp("servers")
    fake, fake_url = _start(
        [sys.executable, "-m", "lorax.testing", "--host", "127.0.0.1", "--port", "0"],
        logs / "fake.log",
        r"listening on (http://\S+)",
    )
    try:
        env = {**os.environ, "LORAX_GATEWAY_TOKEN": TOKEN}
        gateway, gateway_url = _start(
            [sys.executable, "-m", "lorax.gateway", "--upstream", fake_url, "--host", "127.0.0.1", "--port", "0"],
            logs / "gateway.log",
            r"lorax gateway on (wss?://\S+)",
            env=env,
        )
        try:
            yield {"fake": fake_url, "gateway": gateway_url}
        finally:
            _stop(gateway)
    finally:
        _stop(fake)


def request() -> T.GenerateRequest:
    return T.GenerateRequest(
        inputs=PROMPT, parameters=T.GenerateParameters(max_new_tokens=MAX_NEW_TOKENS, details=True)
    )


@pytest.fixture(scope="module")
def node(servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    payload = {"request_json": codec.to_json(request()).decode(), "token": TOKEN}
    return run_node("gateway", servers["gateway"], payload=payload, tmp_path=tmp_path_factory.mktemp("gw"))


@pytest.fixture(scope="module", params=["http", "websocket"])
def python_client(request: pytest.FixtureRequest, servers: dict[str, str]) -> Iterator[Client]:
    if request.param == "http":
        client = Client(servers["fake"])
    else:
        client = Client(servers["gateway"], gateway_headers={"Authorization": f"Bearer {TOKEN}"})
    with client:
        yield client


def test_unary_generate_equals_python(node: dict[str, Any], python_client: Client) -> None:
    response = python_client.generate(PROMPT, max_new_tokens=MAX_NEW_TOKENS, details=True)
    assert response.generated_text
    assert node["generate"]["generated_text"] == response.generated_text
    # The whole answer, details and tokens included, is the same message.
    assert node["generate"]["lorax_json"] == codec.to_json(response).decode()
    assert "content-type" in node["generate"]["header_names"]


def test_generate_stream_equals_python(node: dict[str, Any], python_client: Client) -> None:
    events = list(python_client.generate_stream(PROMPT, max_new_tokens=MAX_NEW_TOKENS, details=True))
    assert len(events) == MAX_NEW_TOKENS
    stream = node["generate_stream"]
    assert stream["tokens"] == [e.token.text for e in events]
    assert stream["generated_text"] == events[-1].generated_text
    assert stream["generated_text"] == node["generate"]["generated_text"]
    assert stream["finish_reason"] == events[-1].details.finish_reason == "length"
    assert stream["lorax_json"] == [codec.to_json(e).decode() for e in events]


def test_errors_arrive_as_frame_errors(node: dict[str, Any], python_client: Client) -> None:
    with pytest.raises(errors.ValidationError) as caught:
        python_client.generate("", max_new_tokens=MAX_NEW_TOKENS)
    assert node["empty_inputs_error"]["status"] == 422 == caught.value.status_code
    assert node["empty_inputs_error"]["error_type"] == "validation" == caught.value.error_type
    assert node["empty_inputs_error"]["message"] == caught.value.message
    assert node["unknown_method_error"] == {"status": 404, "error_type": "unknown_method"}


def test_cancel_and_handshake(node: dict[str, Any]) -> None:
    assert node["cancelled_after"] == 2
    assert node["after_cancel_text"] == node["generate"]["generated_text"]
    assert node["wrong_token_status"] == 401
    # A counter from 1, never reused: Generate, GenerateStream, error, unknown, cancelled,
    # again, and the two streams of test_flow_control.
    assert node["call_ids"] == ["1", "2", "3", "4", "5", "6", "7", "8"]


def test_flow_control(node: dict[str, Any]) -> None:
    """Node's flow control against the gateway: a window below one event still delivers everything."""
    paced, unpaced = node["flow"], node["unpaced"]
    assert paced["window_granted"] == "8"
    # Every event is above 8 bytes: the window closes after each one, and only the
    # grant of its bytes opens it again (the last grant may come after the end).
    assert paced["events"] > 10
    assert paced["updates_sent"] >= paced["events"] - 1
    assert unpaced == {
        "window_granted": None,
        "events": paced["events"],
        "updates_sent": 0,
        "generated_text": paced["generated_text"],
    }
    assert paced["generated_text"]
