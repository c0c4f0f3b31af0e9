"""``lorax batch`` as a real process against the fake server: formats, resume, Ctrl-C."""

from __future__ import annotations

import collections
import signal
import time
from pathlib import Path
from typing import Any

import orjson

from lorax import Client
from lorax.testing import FakeLorax

from ._util import run_cli, start_cli


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    with open(path, "wb") as f:
        for line in lines:
            f.write((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "the output ends in the middle of a line"
    return [orjson.loads(line) for line in data.splitlines()]


def ok_ids(records: list[dict[str, Any]]) -> collections.Counter[Any]:
    return collections.Counter(rec["id"] for rec in records if rec["ok"])


def test_batch_mixed_input(fake_server: FakeLorax, tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": "g1", "prompt": "Why is the sky blue?", "parameters": {"max_new_tokens": 6, "seed": 1}},
            b'{"id": "torn", "prompt": "unterminated',
            {"id": "c1", "messages": [{"role": "user", "content": "Hi"}], "parameters": {"max_tokens": 4, "seed": 2}},
            {"id": "nothing", "parameters": {}},
            {"prompt": "no id", "parameters": {"max_new_tokens": 3}},
        ],
    )
    out = tmp_path / "out.jsonl"
    proc = run_cli("batch", str(src), "-o", str(out), "--concurrency", "3", endpoint=fake_server.url)
    assert proc.returncode == 1  # some lines failed
    assert proc.stdout == ""
    assert proc.stderr.startswith("lorax batch: done 3, failed 2 (2 invalid), skipped 0, tokens ")
    assert proc.stderr.endswith("tokens/s; fix the 2 invalid line(s) in the input (their rows say why)\n")

    records = {rec["id"]: rec for rec in read_jsonl(out)}
    assert set(records) == {"g1", "line:2", "c1", "nothing", "line:5"}
    with Client(fake_server.url) as client:
        expected = client.generate("Why is the sky blue?", max_new_tokens=6, seed=1)
        chat = client.chat([{"role": "user", "content": "Hi"}], max_tokens=4, seed=2)
    g1 = records["g1"]
    assert g1["ok"] is True
    assert g1["attempts"] == 1
    assert g1["result"] == {"generated_text": expected.generated_text, "finish_reason": expected.details.finish_reason}
    assert (g1["prompt_tokens"], g1["generated_tokens"]) == (expected.details.prompt_tokens, 6)
    assert records["c1"]["result"]["content"] == chat.choices[0].message.content
    assert records["c1"]["generated_tokens"] == chat.usage.completion_tokens
    assert records["line:2"]["error"]["type"] == "InvalidInputLine"
    assert records["line:2"]["ok"] is False
    assert records["nothing"]["error"] == {
        "type": "InvalidInputLine",
        "message": "line 4: has neither 'prompt' nor 'messages'; give exactly one",
        "status_code": None,
    }
    assert records["line:5"]["ok"] is True


def test_batch_resume_retries_only_failed_lines(fake_server: FakeLorax, tmp_path: Path) -> None:
    lines = [{"id": f"q{i}", "prompt": f"Question {i}", "parameters": {"max_new_tokens": 3}} for i in range(6)]
    src = write_jsonl(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    fake_server.faults.overload_next(times=2)  # the first two requests get 429 overloaded
    try:
        first = run_cli(
            "batch", str(src), "-o", str(out), "--concurrency", "1", "--max-retries", "0", "--no-progress",
            endpoint=fake_server.url,
        )  # fmt: skip
    finally:
        fake_server.faults.clear()
    assert first.returncode == 1
    records = read_jsonl(out)
    failed = [rec for rec in records if not rec["ok"]]
    assert [rec["id"] for rec in failed] == ["q0", "q1"]
    assert failed[0]["error"] == {"type": "OverloadedError", "message": "Model is overloaded", "status_code": 429}
    assert failed[0]["attempts"] == 1

    fake_server.clear_requests()
    second = run_cli("batch", str(src), "-o", str(out), "--no-progress", endpoint=fake_server.url)
    assert second.returncode == 0
    assert second.stderr.startswith("lorax batch: done 2, failed 0, skipped 4, tokens 6, ")
    generate_bodies = [orjson.loads(r.body)["inputs"] for r in fake_server.requests if r.path == "/generate"]
    assert sorted(generate_bodies) == ["Question 0", "Question 1"]
    final = read_jsonl(out)
    assert ok_ids(final) == {f"q{i}": 1 for i in range(6)}
    assert len(final) == 6  # the failed rows were replaced: one row per input line


def test_batch_retries_overloaded_with_backoff(fake_server: FakeLorax, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "prompt": "hi", "parameters": {"max_new_tokens": 2}}])
    out = tmp_path / "out.jsonl"
    fake_server.faults.overload_next(times=2)
    try:
        proc = run_cli("batch", str(src), "-o", str(out), "--no-progress", endpoint=fake_server.url)
    finally:
        fake_server.faults.clear()
    assert proc.returncode == 0, proc.stderr
    (record,) = read_jsonl(out)
    assert record["ok"] is True
    assert record["attempts"] == 3


def test_batch_ctrl_c_stops_cleanly_and_resumes(fake_server: FakeLorax, tmp_path: Path) -> None:
    lines = [{"id": i, "prompt": f"Line {i}", "parameters": {"max_new_tokens": 8}} for i in range(80)]
    src = write_jsonl(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    # 8 tokens x 40 ms: each line takes about a third of a second.
    slow = ("-H", "x-lorax-fake-fault: token-latency=40ms")
    proc = start_cli("batch", str(src), "-o", str(out), "--concurrency", "4", *slow, endpoint=fake_server.url)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 4):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert "interrupted: rerun the same command to resume" in stderr
    assert "Traceback" not in stderr
    first = read_jsonl(out)  # every line complete and valid JSON
    assert 4 <= len(first) < 80
    assert all(rec["ok"] for rec in first)

    again = run_cli("batch", str(src), "-o", str(out), "--concurrency", "8", endpoint=fake_server.url)
    assert again.returncode == 0, again.stderr
    assert f"skipped {len(first)}," in again.stderr
    final = read_jsonl(out)
    assert ok_ids(final) == dict.fromkeys(range(80), 1)  # everything once, nothing twice
    assert len(final) == 80


def test_batch_sigterm_exits_143(fake_server: FakeLorax, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": "x"} for i in range(20)])
    out = tmp_path / "out.jsonl"
    slow = ("-H", "x-lorax-fake-fault: token-latency=200ms")
    fake_server.clear_requests()
    proc = start_cli("batch", str(src), "-o", str(out), "--no-progress", *slow, endpoint=fake_server.url)
    try:
        # Once a request arrived the run is under way and its signal handlers are set.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(r.path == "/generate" for r in fake_server.requests):
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143
    assert "interrupted" in stderr
    read_jsonl(out)


def test_batch_torn_output_is_repaired(fake_server: FakeLorax, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}])
    out = tmp_path / "out.jsonl"
    out.write_bytes(orjson.dumps({"id": "a", "ok": True, "result": {}}) + b"\n" + b'{"id": "b", "ok": tr')
    proc = run_cli("batch", str(src), "-o", str(out), "--no-progress", endpoint=fake_server.url)
    assert proc.returncode == 0
    assert "cut a torn last line" in proc.stderr
    assert [rec["id"] for rec in read_jsonl(out)] == ["a", "b"]


def test_batch_refused_connection_stops_at_once(tmp_path: Path) -> None:
    from .test_cli_commands import closed_port

    src = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": "x"} for i in range(50)])
    out = tmp_path / "out.jsonl"
    port = closed_port()
    started = time.monotonic()
    proc = run_cli("batch", str(src), "-o", str(out), "--endpoint", f"http://127.0.0.1:{port}", timeout=30)
    elapsed = time.monotonic() - started
    assert proc.returncode == 3, proc.stderr
    assert elapsed < 20  # the default 8 retries per line would take minutes
    (line,) = proc.stderr.splitlines()  # one message, no progress lines, no traceback
    assert line.startswith("lorax batch: done 0, failed 0, skipped 0, tokens 0, ")
    assert f"; stopped early: cannot reach the server: could not connect to 127.0.0.1:{port}" in line
    assert line.endswith("; rerun the same command to resume")
    assert read_jsonl(out) == []  # nothing was answered, so nothing is recorded


def test_batch_tls_failure_stops_at_once(fake_server: FakeLorax, tmp_path: Path) -> None:
    # https:// to a plain-HTTP server: the TLS handshake fails before anything is sent.
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": "x"} for i in range(50)])
    out = tmp_path / "out.jsonl"
    https = fake_server.url.replace("http://", "https://")
    proc = run_cli("batch", str(src), "-o", str(out), "--no-progress", "--endpoint", https, timeout=30)
    assert proc.returncode == 3, proc.stderr
    assert "; stopped early: cannot reach the server: the TLS handshake with" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert read_jsonl(out) == []


def test_batch_dns_failure_stops_at_once(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": "x"} for i in range(50)])
    out = tmp_path / "out.jsonl"
    proc = run_cli(
        "batch", str(src), "-o", str(out), "--no-progress", "--endpoint", "http://no-such-host.invalid:8080",
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert "; stopped early: cannot reach the server: could not resolve the host 'no-such-host.invalid'" in (
        proc.stderr
    )
    assert read_jsonl(out) == []


def test_batch_connection_lost_after_sending_gives_up(fake_server: FakeLorax, tmp_path: Path) -> None:
    # The server is there but drops every connection mid-request: after N lines in a
    # row the run stops (exit 1; the rows say what happened).
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": "x"} for i in range(50)])
    out = tmp_path / "out.jsonl"
    proc = run_cli(
        "batch", str(src), "-o", str(out), "--max-retries", "0", "--max-connection-failures", "3",
        "--concurrency", "1", "--no-progress", "-H", "x-lorax-fake-fault: drop-after=0",
        endpoint=fake_server.url,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "stopped early: 3 lines in a row could not reach the server" in proc.stderr
    assert len(read_jsonl(out)) == 3


def test_batch_missing_input_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("batch", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "out.jsonl"))
    assert proc.returncode == 1
    assert proc.stderr.startswith("lorax: error: FileNotFoundError: No such file")
    assert "Traceback" not in proc.stderr


def test_batch_progress_lines_when_not_a_tty(fake_server: FakeLorax, tmp_path: Path) -> None:
    # stderr is a pipe here: no bar, at most periodic plain lines, and the summary.
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": i, "prompt": "x", "parameters": {"max_new_tokens": 2}} for i in range(5)]
    )
    proc = run_cli("batch", str(src), "-o", str(tmp_path / "o.jsonl"), endpoint=fake_server.url)
    assert proc.returncode == 0
    assert "\r" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("lorax batch: done 5, failed 0, skipped 0, tokens 10, ")


def test_batch_duplicate_ids_exit_2_before_sending(fake_server: FakeLorax, tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [{"id": "q1", "prompt": "a"}, {"id": "q2", "prompt": "b"}, {"prompt": "c"}, {"id": "q1", "prompt": "d"}],
    )
    out = tmp_path / "out.jsonl"
    fake_server.clear_requests()
    proc = run_cli("batch", str(src), "-o", str(out), endpoint=fake_server.url)
    assert proc.returncode == 2
    assert proc.stderr == (
        f"lorax batch: error: {src} has duplicate ids (each line needs its own id; nothing was sent): "
        'id "q1" on lines 1, 4\n'
    )
    assert fake_server.requests == []
    assert not out.exists()


def test_batch_top_level_settings_are_not_ignored(fake_server: FakeLorax, tmp_path: Path) -> None:
    # The line from the issue: it used to run with neither setting and bring back 18 tokens.
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": "r1", "prompt": "Why is the sky blue?", "max_new_tokens": 8, "seed": 1},
            {"id": "r2", "prompt": "Why is the sky blue?", "parameters": {"max_new_tokens": 8, "seed": 1}},
        ],
    )
    out = tmp_path / "out.jsonl"
    fake_server.clear_requests()
    proc = run_cli("batch", str(src), "-o", str(out), "--no-progress", endpoint=fake_server.url)
    assert proc.returncode == 1
    records = {rec["id"]: rec for rec in read_jsonl(out)}
    assert records["r1"]["error"] == {
        "type": "InvalidInputLine",
        "message": "line 1: 'max_new_tokens' is a generate parameter: put it under \"parameters\"; "
        "'seed' is a generate parameter: put it under \"parameters\"",
        "status_code": None,
    }
    assert records["r2"]["generated_tokens"] == 8
    (sent,) = [orjson.loads(r.body) for r in fake_server.requests if r.path == "/generate"]
    assert sent["parameters"]["max_new_tokens"] == 8
    assert sent["parameters"]["seed"] == 1


def test_batch_dry_run_prints_the_bodies_a_run_sends(fake_server: FakeLorax, tmp_path: Path) -> None:
    lines: list[Any] = [
        {"id": "g1", "prompt": "Why is the sky blue?", "parameters": {"temperature": 0.7, "stop": ["\n"]}},
        {"id": "c1", "messages": [{"role": "user", "content": "Hi"}], "parameters": {"max_tokens": 4}},
        {"prompt": "no id", "adapter_id": "me/adapter"},
        {"id": "g4", "prompt": "not shown"},
    ]
    src = write_jsonl(tmp_path / "in.jsonl", lines)
    fake_server.clear_requests()
    dry = run_cli("batch", str(src), "--dry-run", "--max-new-tokens", "6", endpoint=fake_server.url)
    assert dry.returncode == 0, dry.stderr
    assert fake_server.requests == []  # nothing sent
    assert dry.stderr == (
        "lorax batch: dry run: 4 lines, 4 valid (3 generate, 1 chat), 0 invalid, 0 blank; nothing was sent\n"
    )
    out_lines = dry.stdout.splitlines()
    assert out_lines[0::2] == [
        'line 1, id "g1": POST /generate',
        'line 2, id "c1": POST /v1/chat/completions',
        'line 3, id "line:3": POST /generate',
    ]
    printed = out_lines[1::2]

    out = tmp_path / "out.jsonl"
    run = run_cli("batch", str(src), "-o", str(out), "-c", "1", "--max-new-tokens", "6", endpoint=fake_server.url)
    assert run.returncode == 0, run.stderr
    sent = [r.body.decode() for r in fake_server.requests if r.path in ("/generate", "/v1/chat/completions")]
    assert printed == sent[:3]  # byte for byte what the run sent


def test_batch_dry_run_reports_every_problem(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [{"id": 1, "prompt": "ok"}, b"{nope", {"id": 2, "prompt": "x", "seed": 1}, b"", {"id": 3, "prompt": 7}],
    )
    proc = run_cli("batch", str(src), "--dry-run")  # no -o and no server needed
    assert proc.returncode == 1
    err = proc.stderr.splitlines()
    assert err[0].startswith("lorax batch: invalid: line 2: not valid JSON: ")
    assert err[1:] == [
        "lorax batch: invalid: line 3: 'seed' is a generate parameter: put it under \"parameters\"",
        "lorax batch: invalid: line 5: 'prompt' must be a string",
        "lorax batch: dry run: 5 lines, 1 valid (1 generate, 0 chat), 3 invalid, 1 blank; nothing was sent",
    ]
    assert proc.stdout.splitlines()[0] == "line 1, id 1: POST /generate"

    dup = write_jsonl(tmp_path / "dup.jsonl", [{"id": 1, "prompt": "a"}, {"id": 1, "prompt": "b"}])
    proc = run_cli("batch", str(dup), "--dry-run")
    assert proc.returncode == 2
    assert proc.stderr == (
        f"lorax batch: error: {dup} has duplicate ids (each line needs its own id; nothing was sent): "
        "id 1 on lines 1, 2\n"
    )
    assert proc.stdout == ""


def test_batch_without_output_is_a_usage_error(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "prompt": "a"}])
    proc = run_cli("batch", str(src))
    assert proc.returncode == 2
    assert proc.stderr == "lorax batch: error: the following arguments are required: -o/--output\n"


def test_ray_options_need_the_ray_engine_and_output_is_jsonl(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "prompt": "p"}])
    proc = run_cli(
        "batch", str(src), "-o", str(tmp_path / "out.jsonl"), "--workers", "4", endpoint="http://127.0.0.1:9"
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "lorax batch: error: --address and --workers go with --engine ray\n"
    proc = run_cli("batch", str(src), "-o", str(tmp_path / "out.parquet"), endpoint="http://127.0.0.1:9")
    assert proc.returncode == 2
    assert proc.stderr == (
        "lorax batch: error: OUTPUT is JSONL (rows are appended as lines finish, which Parquet cannot do); "
        "INPUT may be Parquet, and lorax.batch.ray.process_dataset writes Parquet from a Ray pipeline\n"
    )
    assert not (tmp_path / "out.parquet").exists()
