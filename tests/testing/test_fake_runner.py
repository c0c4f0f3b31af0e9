"""Starting the fake server: the thread form, the async form, the CLI and the pytest fixture."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import aiohttp
import pytest

from lorax.testing import AsyncFakeLorax, FakeLorax, ServerConfig
from lorax.testing.cli import main

from ._fake_http import post, request


def test_thread_form_start_stop() -> None:
    server = FakeLorax(max_total_tokens=64)
    server.start()
    try:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.port > 0
        assert request(server.url, "GET", "/info").json()["max_total_tokens"] == 64
        with pytest.raises(RuntimeError):
            server.start()
    finally:
        server.stop()
    server.stop()  # idempotent


def test_options_and_config() -> None:
    with pytest.raises(TypeError, match="no_such_option"):
        FakeLorax(no_such_option=1)
    config = ServerConfig(model_id="a/b")
    with FakeLorax(config, embedding_dim=4, token_latency=0.001) as server:
        assert server.config.model_id == "a/b"
        assert server.config.embedding_dim == 4
        assert server.faults.standing.token_latency == 0.001
        vector = post(server.url, "/embed", {"inputs": "x"}).json()["embeddings"]
        assert len(vector) == 4


def test_async_form() -> None:
    async def scenario() -> None:
        async with AsyncFakeLorax(keep_alive=0.01) as server, aiohttp.ClientSession() as session:
            async with session.get(server.url + "/health") as resp:
                assert resp.status == 200
            body = {"inputs": "Hi", "parameters": {"max_new_tokens": 3}}
            async with session.post(server.url + "/generate_stream", json=body) as resp:
                assert resp.headers["content-type"] == "text/event-stream"
                lines = [line async for line in resp.content]
            assert sum(line.startswith(b"data: ") for line in lines) == 3
            assert server.stats.requests == 2

    asyncio.run(scenario())


def test_async_stop_with_stalled_request() -> None:
    async def scenario() -> None:
        server = await AsyncFakeLorax().start()
        async with aiohttp.ClientSession() as session:
            task = asyncio.ensure_future(
                session.post(
                    server.url + "/generate", json={"inputs": "x"}, headers={"x-lorax-fake-fault": "stall=all"}
                )
            )
            await asyncio.sleep(0.1)
            await asyncio.wait_for(server.stop(), timeout=5)
            with pytest.raises(aiohttp.ClientError):
                await task

    asyncio.run(scenario())


@pytest.mark.lorax_server(model_id="fixture/model")
def test_fixture_with_marker(lorax_server: FakeLorax) -> None:
    assert lorax_server.config.model_id == "fixture/model"


def test_cli_subprocess_prints_url_and_stops_on_sigint() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lorax.testing", "--port", "0", "--token-latency-ms", "1", "--max-total-tokens", "99"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("lorax fake server listening on http://127.0.0.1:")
        url = line.split(" on ", 1)[1].strip()
        assert request(url, "GET", "/info").json()["max_total_tokens"] == 99
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert b"stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_cli_rejects_bad_fault(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["fake-server", "--fault", "bogus"])
    assert exc.value.code == 2
    assert "unknown directive" in capsys.readouterr().err


def test_cli_reports_bind_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeLorax() as server:
        assert main(["--port", str(server.port)]) == 1
    assert "lorax fake-server:" in capsys.readouterr().err
