"""The Ray engine (lorax.batch.ray) on a local Ray runtime of 2 CPUs, against lorax.testing.

Run by the tox env ``ray``; skipped where Ray is not installed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from lorax import AsyncClient, Client, RetryPolicy  # noqa: E402
from lorax.batch import BatchStats, run_batch  # noqa: E402
from lorax.batch.engine import EndpointUnreachableError  # noqa: E402
from lorax.batch.ray import RESULT_COLUMNS, process_dataset, run_batch_ray  # noqa: E402
from lorax.testing import FakeLorax  # noqa: E402
from tests.cli._util import run_cli  # noqa: E402

FAST = RetryPolicy(max_retries=4, backoff_base=0.0, backoff_max=0.0)
ROWS = 300


@pytest.fixture(scope="module", autouse=True)
def ray_runtime() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLorax]:
    with FakeLorax() as fake:
        yield fake


def closed_port_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there once the socket is closed


def input_lines(n: int) -> list[Any]:
    """Generate and chat lines, with server-side failures, client-side refusals and broken lines."""
    lines: list[Any] = []
    for i in range(n):
        if i % 50 == 7:  # 6 of 300
            lines.append(b'{"id": "torn", ' if i == 7 else b"[1, 2]")  # not requests
        elif i % 10 == 3:
            lines.append({"id": i, "prompt": f"bad {i}", "parameters": {"temperature": -1.0}})  # 30: a 422
        elif i % 25 == 11:
            lines.append({"id": i, "prompt": f"p {i}", "parameters": {"max_new_tokens": "many"}})  # 12: refused
        elif i % 4 == 0:
            lines.append(
                {"id": f"c{i}", "messages": [{"role": "user", "content": f"hi {i}"}], "parameters": {"seed": i}}
            )
        else:
            lines.append({"id": i, "prompt": f"prompt {i}", "parameters": {"max_new_tokens": 3 + i % 5, "seed": i}})
    return lines


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_bytes(b"".join((ln if isinstance(ln, bytes) else orjson.dumps(ln)) + b"\n" for ln in lines))
    return path


def read_rows(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [orjson.loads(line) for line in data.splitlines()]


def comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Order aside, and timing aside: everything else must be the same.
    stripped = [{key: value for key, value in row.items() if key != "latency_ms"} for row in rows]
    return sorted(stripped, key=lambda row: orjson.dumps(row["id"]))


def run_local(src: Path, out: Path, url: str, concurrency: int) -> BatchStats:
    async def main() -> BatchStats:
        async with AsyncClient(url) as client:
            return await run_batch(client, src, out, concurrency=concurrency, retry=FAST)

    return asyncio.run(main())


def test_engines_write_the_same_rows(server: FakeLorax, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", input_lines(ROWS))
    local_out, ray_out = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    local = run_local(src, local_out, server.url, concurrency=8)
    remote = run_batch_ray(src, ray_out, server.url, workers=2, concurrency=4, retry=FAST)
    local_rows, ray_rows = read_rows(local_out), read_rows(ray_out)
    assert len(ray_rows) == ROWS  # one row per input line
    assert comparable(ray_rows) == comparable(local_rows)
    failed = [row for row in ray_rows if not row["ok"]]
    kinds = sorted({row["error"]["type"] for row in failed})
    assert kinds == ["InvalidInputLine", "InvalidRequestError", "ValidationError"]
    assert sum(row["error"]["type"] == "ValidationError" for row in failed) == 30  # from LoRAX
    assert sum(row["error"]["type"] == "InvalidRequestError" for row in failed) == 12  # refused by the client
    for stats in (local, remote):
        assert (stats.done, stats.failed, stats.invalid, stats.total) == (ROWS - 48, 48, 6, ROWS)
        assert stats.unreachable is False
    assert remote.generated_tokens == local.generated_tokens > 0


def test_resume_after_an_interrupted_job(server: FakeLorax, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", input_lines(ROWS))
    out = tmp_path / "out.jsonl"
    stop = threading.Event()
    server.faults.set(token_latency=0.01)  # slow enough to stop in the middle
    try:

        def stop_when_started() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not stop.is_set():
                if out.exists() and out.read_bytes().count(b"\n") >= 60:
                    stop.set()
                time.sleep(0.01)

        watcher = threading.Thread(target=stop_when_started)
        watcher.start()
        first = run_batch_ray(src, out, server.url, workers=2, concurrency=4, retry=FAST, stop=stop)
        stop.set()
        watcher.join()
    finally:
        server.faults.clear()
    assert first.interrupted is True
    partial = read_rows(out)
    ok_before = {row["id"] for row in partial if row["ok"]}
    assert 0 < len(partial) < ROWS
    second = run_batch_ray(src, out, server.url, workers=2, concurrency=4, retry=FAST)
    rows = read_rows(out)
    assert second.skipped == len(ok_before)
    assert len(rows) == ROWS  # each line once: failed rows of the first run were replaced
    assert len({orjson.dumps(row["id"]) for row in rows}) == ROWS
    reference = tmp_path / "reference.jsonl"
    run_local(src, reference, server.url, concurrency=8)
    assert comparable(rows) == comparable(read_rows(reference))


def test_unreachable_endpoint_stops_the_job_at_once(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": "p"} for i in range(200)])
    out = tmp_path / "out.jsonl"
    url = closed_port_url()
    started = time.monotonic()
    stats = run_batch_ray(src, out, url, workers=2, concurrency=4, retry=RetryPolicy(max_retries=8))
    assert time.monotonic() - started < 60  # no retries with backoff for 200 lines
    assert stats.unreachable is True
    assert stats.aborted is not None
    assert stats.aborted.startswith(f"cannot reach the server: could not connect to {url.removeprefix('http://')}")
    assert (stats.done, stats.failed) == (0, 0)
    assert out.read_bytes() == b""  # nothing was answered: everything is redone on resume


def test_dataset_transform_generate_with_failing_rows(server: FakeLorax) -> None:
    rows = [{"prompt": f"question {i}", "parameters": {"max_new_tokens": 4, "seed": i}} for i in range(200)]
    rows += [{"prompt": "bad", "parameters": {"temperature": -1.0}} for _ in range(5)]
    rows += [{"prompt": "odd", "parameters": {"max_tokens": 3}}]  # a chat keyword: refused before sending
    dataset = ray.data.from_items(rows)
    result = process_dataset(dataset, server.url, workers=2, concurrency=4, retry=FAST).take_all()
    assert len(result) == len(rows)
    assert set(RESULT_COLUMNS) <= set(result[0])
    good = {row["prompt"]: row for row in result if row["ok"]}
    assert len(good) == 200
    with Client(server.url) as client:
        for i in (0, 17, 199):
            expected = client.generate(f"question {i}", max_new_tokens=4, seed=i)
            row = good[f"question {i}"]
            assert row["text"] == expected.generated_text
            assert row["finish_reason"] == expected.details.finish_reason
            assert row["generated_tokens"] == expected.details.generated_tokens == 4
            assert row["prompt_tokens"] == expected.details.prompt_tokens
            assert (row["error_type"], row["error_message"], row["attempts"]) == (None, None, 1)
    bad = [row for row in result if row["prompt"] == "bad"]
    assert {(row["error_type"], row["status_code"], row["text"]) for row in bad} == {("ValidationError", 422, None)}
    assert bad[0]["error_message"] == "Input validation error: `temperature` must be non-negative"
    (odd,) = [row for row in result if row["prompt"] == "odd"]
    assert odd["ok"] is False
    assert odd["error_type"] == "InvalidInputLine"
    assert "unknown generate parameter(s): 'max_tokens'" in odd["error_message"]


def test_dataset_transform_chat_embed_and_overload(server: FakeLorax) -> None:
    chats = ray.data.from_items(
        [{"messages": [{"role": "user", "content": f"hi {i}"}], "adapter_id": None} for i in range(20)]
    )
    server.faults.overload_next(6)
    try:
        chat_rows = process_dataset(
            chats, server.url, task="chat", workers=2, concurrency=2, retry=FAST, defaults={"max_tokens": 3, "seed": 5}
        ).take_all()
    finally:
        server.faults.clear()
    assert all(row["ok"] for row in chat_rows)
    assert sum(row["attempts"] for row in chat_rows) == 20 + 6  # each 429 retried by the policy
    with Client(server.url) as client:
        expected = client.chat([{"role": "user", "content": "hi 3"}], max_tokens=3, seed=5)
        vector = client.embed("some text").embeddings
    (three,) = [row for row in chat_rows if row["messages"][0]["content"] == "hi 3"]
    assert three["text"] == expected.choices[0].message.content
    assert three["generated_tokens"] == 3
    texts = ray.data.from_items([{"text": "some text"}, {"text": "other"}])
    embed_rows = process_dataset(texts, server.url, task="embed", workers=1, concurrency=2).take_all()
    (some,) = [row for row in embed_rows if row["text"] == "some text"]
    assert some["ok"] is True
    assert set(some) == {"text", "embedding"} | (set(RESULT_COLUMNS) - {"text", "finish_reason"})
    assert list(some["embedding"]) == pytest.approx(vector, rel=1e-6)


def test_dataset_transform_unreachable_fails_with_one_error() -> None:
    dataset = ray.data.from_items([{"prompt": f"p {i}"} for i in range(100)])
    started = time.monotonic()
    with pytest.raises(Exception) as caught:  # Ray wraps it: the text is checked below
        process_dataset(dataset, closed_port_url(), workers=2, concurrency=4).take_all()
    assert time.monotonic() - started < 60
    assert "EndpointUnreachableError: cannot reach the server: could not connect to 127.0.0.1:" in str(caught.value)
    assert EndpointUnreachableError.__name__ in str(caught.value)


def test_cli_engine_ray(server: FakeLorax, tmp_path: Path) -> None:
    lines = input_lines(40)
    src = write_jsonl(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    proc = run_cli(
        "batch", str(src), "-o", str(out), "--engine", "ray", "--workers", "2", "-c", "4", endpoint=server.url
    )
    assert proc.returncode == 1, proc.stderr  # some lines fail
    assert proc.stderr.splitlines()[-1].startswith("lorax batch: done 33, failed 7 (1 invalid), skipped 0, ")
    reference = tmp_path / "reference.jsonl"
    stats = run_local(src, reference, server.url, concurrency=4)
    assert (stats.done, stats.failed) == (33, 7)
    assert comparable(read_rows(out)) == comparable(read_rows(reference))
    again = run_cli("batch", str(src), "-o", str(out), "--engine", "ray", endpoint=server.url)
    assert again.stderr.splitlines()[-1].startswith("lorax batch: done 0, failed 7 (1 invalid), skipped 33, ")
    assert len(read_rows(out)) == 40


def test_readme_cluster_example_runs(server: FakeLorax, tmp_path: Path) -> None:
    # The README's Ray block is fenced "python ray" (tests/test_readme.py runs the
    # plain python blocks where Ray is not installed); it is run here instead.
    import os
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    text = (root / "README.md").read_text(encoding="utf-8")
    (code,) = re.findall(r"```python ray\n(.*?)```", text, re.S)
    script = tmp_path / "readme_ray.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("LORAX_API_TOKEN", "PYTHONWARNINGS")}
    env["LORAX_ENDPOINT"] = server.url
    env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    # Ray's raylet prints its own warnings to stdout, at any time.
    ours = [line for line in proc.stdout.splitlines() if "(raylet)" not in line]
    assert ours == ["200 rows done; 0 failed (see error_type, error_message)"]
    adapters = {orjson.loads(request.body)["parameters"].get("adapter_id") for request in server.requests[-200:]}
    assert adapters == {"acme/ticket-summaries"}


def test_parquet_input_is_read_as_lines(server: FakeLorax, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Columns are typed: the lines whose max_new_tokens is a string stay out.
    lines = [
        line
        for line in input_lines(60)
        if not isinstance(line, bytes) and line.get("parameters", {}).get("max_new_tokens") != "many"
    ]
    jsonl = write_jsonl(tmp_path / "in.jsonl", lines)
    # One table for both kinds: Arrow gives each row the other kind's column as null,
    # and a struct of every parameter key, null where a row has none.
    rows = [{"prompt": None, "messages": None, **line, "id": str(line["id"])} for line in lines]
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, tmp_path / "in.parquet")
    jsonl_lines = [{**line, "id": str(line["id"])} for line in lines]
    write_jsonl(jsonl, jsonl_lines)
    from_jsonl, from_parquet, from_ray = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    run_local(jsonl, from_jsonl, server.url, concurrency=4)
    stats = run_local(tmp_path / "in.parquet", from_parquet, server.url, concurrency=4)
    assert stats.total == len(lines)
    run_batch_ray(tmp_path / "in.parquet", from_ray, server.url, workers=2, concurrency=4, retry=FAST)
    expected = comparable(read_rows(from_jsonl))
    assert len(expected) == len(lines)
    assert comparable(read_rows(from_parquet)) == expected
    assert comparable(read_rows(from_ray)) == expected
