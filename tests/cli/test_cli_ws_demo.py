"""The command line over the WebSocket gateway, and ``lorax demo``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from lorax.gateway import GatewayThread
from lorax.testing import FakeLorax

from ._util import run_cli, run_inproc

PROMPT = "Why is the sky blue?"


@pytest.fixture(scope="module")
def gateway(fake_server: FakeLorax) -> Iterator[GatewayThread]:
    with GatewayThread(upstream=fake_server.url, host="127.0.0.1") as thread:
        yield thread


def test_generate_over_websocket_matches_http(fake_server: FakeLorax, gateway: GatewayThread) -> None:
    args = ("generate", PROMPT, "--max-new-tokens", "10", "--seed", "5")
    code, over_http, _ = run_inproc(*args, endpoint=fake_server.url)
    over_ws = run_cli(*args, endpoint=gateway.url)
    assert code == over_ws.returncode == 0
    assert over_ws.stdout == over_http
    assert over_ws.stderr == ""
    # --transport ws turns the gateway's http:// address into its ws:// one.
    http_form = gateway.url.replace("ws://", "http://", 1)
    via_flag = run_cli(*args, "--endpoint", http_form, "--transport", "ws")
    assert via_flag.stdout == over_http


def test_chat_and_embed_over_websocket(fake_server: FakeLorax, gateway: GatewayThread) -> None:
    chat = ("chat", "Hello", "--max-new-tokens", "6", "--seed", "2")
    assert run_cli(*chat, endpoint=gateway.url).stdout == run_inproc(*chat, endpoint=fake_server.url)[1]
    embed = ("embed", "hello", "--json")
    assert run_inproc(*embed, endpoint=gateway.url)[1] == run_inproc(*embed, endpoint=fake_server.url)[1]


def test_batch_over_websocket(gateway: GatewayThread, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        b"".join(
            orjson.dumps({"id": i, "prompt": f"Line {i}", "parameters": {"max_new_tokens": 3}}) + b"\n"
            for i in range(10)
        )
    )
    out = tmp_path / "out.jsonl"
    proc = run_cli("batch", str(src), "-o", str(out), "--concurrency", "4", endpoint=gateway.url)
    assert proc.returncode == 0, proc.stderr
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert sorted(rec["id"] for rec in records if rec["ok"]) == list(range(10))


def test_websocket_error_is_one_line(gateway: GatewayThread) -> None:
    proc = run_cli("generate", "hi", "--max-new-tokens", "100000", "--no-stream", endpoint=gateway.url)
    assert proc.returncode == 1
    assert proc.stderr.startswith("lorax: error: ValidationError: ")
    assert proc.stderr.count("\n") == 1


def test_demo_runs_both_transports_and_exits_cleanly() -> None:
    started = time.monotonic()
    proc = run_cli("demo", "--token-latency-ms", "2", timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = proc.stdout
    assert out.startswith("lorax demo: a fake LoRAX server is listening on http://127.0.0.1:")
    assert "=== over HTTP: Client('http://127.0.0.1:" in out
    assert "=== over WebSocket, through the gateway: Client('ws://127.0.0.1:" in out
    for heading in ("--- generate:", "--- generate_stream:", "--- structured output:", "--- embed:", "--- chat:"):
        assert out.count(heading) == 2
    assert out.count('    "population": ') == 2  # the structured answer, parsed and pretty-printed
    assert "dimension 32: [" in out
    assert out.rstrip().endswith("server and gateway stopped.")
    assert elapsed < 20


def test_demo_without_websocket() -> None:
    proc = run_cli("demo", "--no-ws", "--token-latency-ms", "0")
    assert proc.returncode == 0
    assert "over WebSocket" not in proc.stdout
    assert "--- chat:" in proc.stdout
