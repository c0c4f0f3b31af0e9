"""The batch engine (lorax._cli.batch) against MockTransport: formats, resume, retries, stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from lorax import AsyncClient, RetryPolicy
from lorax._cli.batch import INVALID_INPUT, count_lines, parse_line, run_batch, scan_output
from lorax._cli.progress import BatchStats
from lorax.errors import APIConnectionError, OverloadedError
from lorax.transports.mock import MockTransport
from lorax.types import (
    AssistantMessage,
    ChatCompletionChoice,
    ChatCompletionResponse,
    Details,
    GenerateResponse,
    Usage,
)

FAST = RetryPolicy(max_retries=3, backoff_base=0.0, backoff_max=0.0)
NO_RETRY = RetryPolicy(max_retries=0)


def generate_answer(request: Any) -> GenerateResponse:
    words = request.inputs.split()
    return GenerateResponse(
        generated_text=f"echo {request.inputs}",
        details=Details(finish_reason="length", prompt_tokens=len(words), generated_tokens=len(words) + 1),
    )


def chat_answer(request: Any) -> ChatCompletionResponse:
    last = request.messages[-1].text
    return ChatCompletionResponse(
        id="c1",
        object="chat.completion",
        model="m",
        choices=[
            ChatCompletionChoice(
                index=0, message=AssistantMessage(role="assistant", content=f"re: {last}"), finish_reason="stop"
            )
        ],
        usage=Usage(prompt_tokens=4, completion_tokens=2, total_tokens=6),
    )


def handler(method: Any, request: Any) -> Any:
    if method.name == "Generate":
        return generate_answer(request)
    if method.name == "ChatCompletions":
        return chat_answer(request)
    raise AssertionError(method.name)


def write_lines(path: Path, lines: list[Any]) -> Path:
    with open(path, "wb") as f:
        for line in lines:
            f.write((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n")
    return path


def read_output(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def run(
    tmp_path: Path,
    lines: list[Any],
    answer: Callable[[Any, Any], Any] = handler,
    *,
    policy: RetryPolicy = FAST,
    **kwargs: Any,
) -> tuple[BatchStats, list[dict[str, Any]], MockTransport]:
    src = tmp_path / "in.jsonl"
    if not src.exists():
        write_lines(src, lines)
    out = tmp_path / "out.jsonl"
    transport = MockTransport(answer)

    async def main() -> BatchStats:
        async with AsyncClient("http://lorax.test", transport=transport) as client:
            return await run_batch(client, src, out, retry=policy, **kwargs)

    stats = asyncio.run(main())
    return stats, read_output(out), transport


def test_good_bad_and_missing_lines(tmp_path: Path) -> None:
    lines = [
        {"id": "a", "prompt": "hello world", "parameters": {"max_new_tokens": 5}},
        b'{"id": "broken", "prompt": ',
        {"id": "c", "neither": True},
        {"prompt": "no id here"},
        b"",
        {"id": 7, "messages": [{"role": "user", "content": "hi"}]},
        {"id": "both", "prompt": "x", "messages": []},
        {"id": "d", "prompt": "p", "parameters": {"bogus": 1}},
    ]
    stats, out, _ = run(tmp_path, lines, concurrency=2)
    by_id = {rec["id"]: rec for rec in out}
    assert len(out) == 7
    assert by_id["a"] == {
        "id": "a",
        "ok": True,
        "result": {"generated_text": "echo hello world", "finish_reason": "length"},
        "prompt_tokens": 2,
        "generated_tokens": 3,
        "latency_ms": by_id["a"]["latency_ms"],
        "attempts": 1,
    }
    assert by_id["line:2"]["ok"] is False  # malformed JSON: the id comes from the line number
    assert by_id["line:2"]["error"]["type"] == INVALID_INPUT
    assert by_id["line:2"]["error"]["message"].startswith("line 2: not valid JSON: ")
    assert by_id["line:2"]["error"]["status_code"] is None
    assert by_id["c"]["error"] == {
        "type": INVALID_INPUT,
        "message": "line 3: unknown key 'neither' (a line has the keys id, prompt or messages, parameters, adapter_id)",
        "status_code": None,
    }
    assert by_id["line:4"]["ok"] is True
    assert by_id["line:4"]["result"]["generated_text"] == "echo no id here"
    assert by_id[7]["result"] == {"content": "re: hi", "finish_reason": "stop"}
    assert (by_id[7]["prompt_tokens"], by_id[7]["generated_tokens"]) == (4, 2)
    assert by_id["both"]["error"]["message"] == "line 7: has both 'prompt' and 'messages'; give exactly one"
    assert by_id["d"]["error"]["message"] == "line 8: unknown generate parameter(s): 'bogus'"
    assert (stats.done, stats.failed, stats.invalid, stats.skipped, stats.blank) == (3, 4, 4, 0, 1)
    assert stats.generated_tokens == 3 + 4 + 2


def test_line_parameters_override_defaults(tmp_path: Path) -> None:
    lines = [
        {"id": 1, "prompt": "p", "parameters": {"max_new_tokens": 9, "stop": ["\n"]}, "adapter_id": "me/a"},
        {"id": 2, "prompt": "p"},
    ]
    _, out, transport = run(tmp_path, lines, concurrency=1, generate_defaults={"max_new_tokens": 3, "seed": 1})
    assert all(rec["ok"] for rec in out)
    first, second = transport.requests("Generate")
    assert first.parameters.max_new_tokens == 9
    assert list(first.parameters.stop) == ["\n"]
    assert first.parameters.adapter_id == "me/a"
    assert first.parameters.seed == 1
    assert second.parameters.max_new_tokens == 3
    assert not second.parameters.HasField("adapter_id")


def test_full_response(tmp_path: Path) -> None:
    _, out, _ = run(tmp_path, [{"id": 1, "prompt": "a b"}], full_response=True)
    assert out[0]["result"]["generated_text"] == "echo a b"
    assert out[0]["result"]["details"]["generated_tokens"] == 3


def test_wrong_parameter_type_is_reported_per_line(tmp_path: Path) -> None:
    lines = [{"id": 1, "prompt": "p", "parameters": {"max_new_tokens": "many"}}, {"id": 2, "prompt": "q"}]
    stats, out, _ = run(tmp_path, lines, concurrency=1)
    by_id = {rec["id"]: rec for rec in out}
    assert by_id[1]["ok"] is False
    assert by_id[1]["error"]["type"] in (INVALID_INPUT, "InvalidRequestError")
    assert by_id[2]["ok"] is True
    assert stats.done == 1
    assert stats.failed == 1


def test_overloaded_is_retried_and_attempts_counted(tmp_path: Path) -> None:
    calls = {"n": 0}

    def flaky(method: Any, request: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise OverloadedError("Model is overloaded", status_code=429, error_type="overloaded")
        return handler(method, request)

    _, out, _ = run(tmp_path, [{"id": "x", "prompt": "p"}], flaky)
    assert out[0]["ok"] is True
    assert out[0]["attempts"] == 3


def test_failure_after_retries_keeps_status(tmp_path: Path) -> None:
    def overloaded(method: Any, request: Any) -> Any:
        raise OverloadedError("Model is overloaded", status_code=429, error_type="overloaded")

    stats, out, _ = run(tmp_path, [{"id": "x", "prompt": "p"}, {"id": "y", "prompt": "q"}], overloaded)
    assert [rec["ok"] for rec in out] == [False, False]
    assert out[0]["error"] == {"type": "OverloadedError", "message": "Model is overloaded", "status_code": 429}
    assert out[0]["attempts"] == FAST.max_retries + 1
    assert stats.failed == 2


def test_resume_skips_done_and_retries_failed(tmp_path: Path) -> None:
    lines = [{"id": f"q{i}", "prompt": f"prompt {i}"} for i in range(6)]

    def fail_odd(method: Any, request: Any) -> Any:
        if int(request.inputs.split()[1]) % 2:
            raise OverloadedError("busy", status_code=429, error_type="overloaded")
        return handler(method, request)

    stats1, _out1, _ = run(tmp_path, lines, fail_odd, policy=NO_RETRY, concurrency=3)
    assert (stats1.done, stats1.failed) == (3, 3)
    stats2, out2, transport = run(tmp_path, lines, concurrency=3)
    assert (stats2.done, stats2.failed, stats2.skipped) == (3, 0, 3)
    assert sorted(r.inputs for r in transport.requests("Generate")) == ["prompt 1", "prompt 3", "prompt 5"]
    # One row per line: the failed rows were replaced, not followed by a second row.
    assert sorted(rec["id"] for rec in out2) == [f"q{i}" for i in range(6)]
    assert all(rec["ok"] for rec in out2)
    assert not list(tmp_path.glob(".out.jsonl*"))  # the rewrite's temporary file is gone

    stats3, out3, transport3 = run(tmp_path, lines)
    assert stats3.skipped == 6
    assert transport3.calls == []
    assert out3 == out2


def test_torn_last_line_is_cut(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    good = orjson.dumps({"id": "a", "ok": True, "result": {}}) + b"\n"
    out.write_bytes(good + b'{"id": "b", "ok": tr')
    done, torn = scan_output(out)
    assert done == {"a"}
    assert torn == len(b'{"id": "b", "ok": tr')
    assert out.read_bytes() == good

    _, records, transport = run(tmp_path, [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}])
    assert [r.inputs for r in transport.requests("Generate")] == ["y"]
    assert [rec["id"] for rec in records] == ["a", "b"]


def test_ids_keep_their_json_type(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    write_lines(out, [{"id": 1, "ok": True}])
    _, records, transport = run(tmp_path, [{"id": 1, "prompt": "int"}, {"id": "1", "prompt": "str"}])
    assert [r.inputs for r in transport.requests("Generate")] == ["str"]
    assert records[-1]["id"] == "1"


def test_stop_cancels_in_flight_and_resume_finishes(tmp_path: Path) -> None:
    lines = [{"id": i, "prompt": f"p{i}"} for i in range(40)]
    src = write_lines(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"

    async def slow(method: Any, request: Any) -> Any:
        await asyncio.sleep(0.02)
        return handler(method, request)

    async def interrupted() -> BatchStats:
        stop = asyncio.Event()
        stats = BatchStats()
        async with AsyncClient("http://lorax.test", transport=MockTransport(slow)) as client:
            task = asyncio.create_task(run_batch(client, src, out, concurrency=4, stop=stop, stats=stats))
            while stats.done < 4:
                await asyncio.sleep(0.005)
            stop.set()
            return await task

    stats = asyncio.run(interrupted())
    assert stats.interrupted
    first = read_output(out)
    assert 0 < len(first) < 40
    assert all(rec["ok"] for rec in first)

    stats2, second, _ = run(tmp_path, lines, concurrency=4)
    assert not stats2.interrupted
    assert stats2.skipped == len(first)
    ids = [rec["id"] for rec in second]
    assert sorted(ids) == list(range(40))  # everything, nothing twice


def test_input_is_streamed_not_loaded(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "in.jsonl", [{"id": i, "prompt": "p"} for i in range(5000)])
    out = tmp_path / "out.jsonl"
    stats = BatchStats()

    async def never(method: Any, request: Any) -> Any:
        await asyncio.sleep(3600)

    async def main() -> None:
        stop = asyncio.Event()
        async with AsyncClient("http://lorax.test", transport=MockTransport(never)) as client:
            task = asyncio.create_task(run_batch(client, src, out, concurrency=4, stop=stop, stats=stats))
            await asyncio.sleep(0.2)
            # The workers hold 4 lines and the bounded queue 8: the reader waits.
            assert stats.read <= 4 + 8 + 1
            stop.set()
            await task

    asyncio.run(main())
    assert out.read_bytes() == b""


def not_sent(message: str) -> APIConnectionError:
    exc = APIConnectionError(message)
    exc.request_sent = False  # as the transports mark a refused connection
    return exc


def test_unreachable_server_stops_the_run_at_once(tmp_path: Path) -> None:
    # Nothing reached the server (refused, DNS, TLS): no retries, no rows, one reason.
    def refused(method: Any, request: Any) -> Any:
        raise not_sent("could not connect to lorax.test:80: Connection refused")

    lines = [{"id": i, "prompt": "p"} for i in range(100)]
    stats, out, transport = run(tmp_path, lines, refused, policy=FAST, concurrency=2)
    assert stats.unreachable is True
    assert stats.aborted == "cannot reach the server: could not connect to lorax.test:80: Connection refused"
    assert out == []  # the lines in flight are redone on resume
    assert len(transport.calls) <= 2  # one per worker at most, never retried
    assert (stats.done, stats.failed) == (0, 0)


def test_unreachable_after_answers_is_retried_then_stops(tmp_path: Path) -> None:
    # The server answered, then went away: the policy's retries ride out a restart,
    # and when they run out the run stops rather than failing every later line.
    calls = {"n": 0}

    def goes_away(method: Any, request: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            return handler(method, request)
        if calls["n"] == 3:
            return handler(method, request)  # back after one refused attempt
        raise not_sent("Connection refused")

    lines = [{"id": i, "prompt": f"p{i}"} for i in range(10)]
    stats, out, transport = run(tmp_path, lines, goes_away, policy=FAST, concurrency=1)
    assert stats.unreachable is True
    assert stats.aborted == "cannot reach the server: Connection refused"
    assert [(rec["id"], rec["ok"], rec["attempts"]) for rec in out] == [(0, True, 1), (1, True, 2)]
    assert len(transport.calls) == 3 + FAST.max_retries + 1  # line 2: the first try and every retry


def test_connection_lost_after_sending_counts_towards_the_limit(tmp_path: Path) -> None:
    def reset(method: Any, request: Any) -> Any:
        raise APIConnectionError("connection reset by peer")  # the request may have been sent

    lines = [{"id": i, "prompt": "p"} for i in range(100)]
    stats, out, _ = run(tmp_path, lines, reset, policy=NO_RETRY, concurrency=1, max_connection_failures=5)
    assert stats.unreachable is False
    assert stats.aborted == (
        "5 lines in a row could not reach the server (last: APIConnectionError: connection reset by peer)"
    )
    assert [rec["error"]["type"] for rec in out] == ["APIConnectionError"] * 5


def test_parse_line_cases() -> None:
    assert parse_line(b"   \n", 3) is None
    invalid = parse_line(b"[1, 2]\n", 3)
    assert invalid is not None
    assert not hasattr(invalid, "kind")
    assert invalid.id == "line:3"
    assert invalid.message == "line 3: expected a JSON object, got an array"
    bad_id = parse_line(b'{"id": 1.5, "prompt": "x"}', 4)
    assert bad_id is not None
    assert bad_id.id == "line:4"
    assert bad_id.message == "line 4: id must be a string or an integer, not a number"
    ok = parse_line(b'{"id": "z", "messages": [{"role": "user", "content": "hi"}], "parameters": null}', 5)
    assert ok is not None
    assert ok.kind == "messages"
    assert ok.parameters == {}


def test_count_lines(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a\nb\n\nc")
    assert count_lines(path) == 4
    path.write_bytes(b"")
    assert count_lines(path) == 0
    path.write_bytes(b"x\n" * 3)
    assert count_lines(path) == 3


def test_output_must_not_be_input(tmp_path: Path) -> None:
    from lorax._cli.common import UsageError

    src = write_lines(tmp_path / "in.jsonl", [{"id": 1, "prompt": "p"}])

    async def main() -> None:
        async with AsyncClient("http://lorax.test", transport=MockTransport(handler)) as client:
            await run_batch(client, src, src)

    with pytest.raises(UsageError):
        asyncio.run(main())


def test_two_runs_cannot_share_an_output(tmp_path: Path) -> None:
    from lorax._cli.batch import _ResultWriter
    from lorax._cli.common import UsageError

    write_lines(tmp_path / "in.jsonl", [{"id": 1, "prompt": "p"}])
    holder = _ResultWriter(tmp_path / "out.jsonl")  # another run, still appending
    try:
        with pytest.raises(UsageError, match="another lorax batch is writing to"):
            run(tmp_path, [], concurrency=1)
    finally:
        holder.close()
    _, records, _ = run(tmp_path, [])
    assert [rec["id"] for rec in records] == [1]


def test_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'\xef\xbb\xbf{"id": 1, "prompt": "a"}\r\n{"id": 2, "prompt": "b"}\r\n')
    stats, records, _ = run(tmp_path, [])
    assert stats.done == 2
    assert [rec["ok"] for rec in records] == [True, True]
