"""The batch engine (lorax.batch) against MockTransport: formats, resume, retries, stop."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from lorax import AsyncClient, RetryPolicy
from lorax.batch import BatchOutputError, BatchStats, run_batch, scan_output
from lorax.batch.lines import INVALID_INPUT, count_lines, parse_line
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
    last = request.messages[-1].content
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
        "message": "line 3: unknown key 'neither'; a line's keys are id, prompt or messages, parameters, adapter_id",
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
    assert second.parameters.adapter_id is None


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
    src = write_lines(tmp_path / "in.jsonl", [{"id": 1, "prompt": "p"}])

    async def main() -> None:
        async with AsyncClient("http://lorax.test", transport=MockTransport(handler)) as client:
            await run_batch(client, src, src)

    with pytest.raises(BatchOutputError, match=r"^the output file must not be the input file$"):
        asyncio.run(main())


def test_two_runs_cannot_share_an_output(tmp_path: Path) -> None:
    from lorax.batch.output import ResultWriter

    write_lines(tmp_path / "in.jsonl", [{"id": 1, "prompt": "p"}])
    holder = ResultWriter(tmp_path / "out.jsonl")  # another run, still appending
    try:
        with pytest.raises(BatchOutputError, match="another lorax batch is writing to"):
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


def test_duplicate_ids_are_refused_before_sending(tmp_path: Path) -> None:
    from lorax.batch import BatchInputError

    lines = [
        {"id": "a", "prompt": "1"},
        {"id": 1, "prompt": "2"},
        {"id": "a", "prompt": "3"},
        {"id": "1", "prompt": "4"},  # "1" is not 1
        {"id": 1, "prompt": "5"},
        {"id": "a", "nothing": True},  # an invalid line still owns its id
    ]
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"id": "x", "ok": false}\n')
    with pytest.raises(BatchInputError) as info:
        run(tmp_path, lines)
    assert info.value.message == (
        f"{tmp_path / 'in.jsonl'} has duplicate ids (each line needs its own id; nothing was sent): "
        'id "a" on lines 1, 3, 6; id 1 on lines 2, 5'
    )
    assert out.read_bytes() == b'{"id": "x", "ok": false}\n'  # the output is not touched


def test_duplicate_message_is_bounded(tmp_path: Path) -> None:
    from lorax.batch import check_input

    src = write_lines(tmp_path / "in.jsonl", [{"id": i % 12, "prompt": "p"} for i in range(12 * 15)])
    check = check_input(src)
    assert check is not None
    assert check.duplicate_count == 12
    assert list(check.duplicates) == list(range(10))
    assert check.duplicates[0] == [1, 13, 25, 37, 49, 61, 73, 85, 97, 109]
    assert check.duplicate_message(src).endswith("; and 2 more duplicated id(s)")


def test_lines_without_id_cannot_collide_with_explicit_ids(tmp_path: Path) -> None:
    lines = [
        {"prompt": "first"},  # line 1: gets "line:1"
        {"id": 1, "prompt": "explicit one"},  # the integer 1 is another id
        {"id": "line:1", "prompt": "reserved form"},
        {"id": "line:x", "prompt": "not the reserved form"},
    ]
    stats, out, transport = run(tmp_path, lines, concurrency=1)
    by_id = {rec["id"]: rec for rec in out}
    assert set(by_id) == {"line:1", 1, "line:3", "line:x"}
    assert by_id["line:1"]["result"]["generated_text"] == "echo first"
    assert by_id[1]["result"]["generated_text"] == "echo explicit one"
    assert by_id["line:3"]["error"]["message"] == (
        "line 3: the id 'line:1' has the form 'line:N', which is reserved for lines without an id"
    )
    assert sorted(r.inputs for r in transport.requests("Generate")) == [
        "explicit one",
        "first",
        "not the reserved form",
    ]
    assert (stats.done, stats.invalid) == (3, 1)


def test_top_level_generation_settings_fail_the_line(tmp_path: Path) -> None:
    lines = [
        {"id": "r1", "prompt": "hello", "max_new_tokens": 8, "seed": 1},
        {"id": "c1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        {"id": "n1", "max_new_tokens": 8},
        {"id": "t1", "prompt": "x", "promt": "typo"},
        {"id": "p1", "prompt": "x", "parameters": {"max_tokens": 3}},
        {"id": "p2", "prompt": "x", "parameters": {"max_new_token": 3}},
        {"id": "p3", "prompt": "x", "parameters": {"stop": ["a"], "stop_sequences": ["b"]}},
    ]
    stats, out, transport = run(tmp_path, lines, concurrency=1)
    messages = {rec["id"]: rec["error"]["message"] for rec in out}
    assert messages == {
        "r1": "line 1: 'max_new_tokens' is a generate parameter: put it under \"parameters\"; "
        "'seed' is a generate parameter: put it under \"parameters\"",
        "c1": "line 2: 'max_tokens' is a chat parameter: put it under \"parameters\"",
        "n1": "line 3: 'max_new_tokens' is a generate parameter: put it under \"parameters\"",
        "t1": "line 4: unknown key 'promt' (did you mean 'prompt'?); "
        "a line's keys are id, prompt or messages, parameters, adapter_id",
        "p1": "line 5: unknown generate parameter(s): 'max_tokens' (a chat parameter; did you mean 'max_new_tokens'?)",
        "p2": "line 6: unknown generate parameter(s): 'max_new_token' (did you mean 'max_new_tokens'?)",
        "p3": "line 7: give 'stop' or 'stop_sequences', not both",
    }
    assert transport.calls == []
    assert (stats.failed, stats.invalid) == (7, 7)


def test_invalid_lines_are_reported_again_but_never_sent(tmp_path: Path) -> None:
    lines = [{"id": "ok", "prompt": "p"}, b"not json", {"id": "bad", "prompt": 5}]
    stats1, out1, transport1 = run(tmp_path, lines)
    assert len(transport1.calls) == 1
    assert (stats1.done, stats1.failed, stats1.invalid) == (1, 2, 2)
    stats2, out2, transport2 = run(tmp_path, lines)
    assert transport2.calls == []
    assert (stats2.done, stats2.failed, stats2.invalid, stats2.skipped) == (0, 2, 2, 1)
    assert sorted(map(str, (rec["id"] for rec in out2))) == ["bad", "line:2", "ok"]  # still one row each
    assert [rec for rec in out2 if rec["id"] == "bad"] == [rec for rec in out1 if rec["id"] == "bad"]


def test_resume_compacts_rows_left_by_older_versions(tmp_path: Path) -> None:
    # Older versions appended a second row for a retried line; rows of ids that are not
    # in this input belong to someone else and stay, as do hand-edited lines.
    out = tmp_path / "out.jsonl"
    write_lines(
        out,
        [
            {"id": "a", "ok": False, "error": {"type": "OverloadedError"}},
            {"id": "a", "ok": True, "result": {"generated_text": "old"}},
            {"id": "b", "ok": False, "error": {"type": "OverloadedError"}},
            {"id": "b", "ok": False, "error": {"type": "OverloadedError"}},
            {"id": "a", "ok": True, "result": {"generated_text": "again"}},
            b"# a note",
            {"id": "other", "ok": False, "error": {"type": "X"}},
        ],
    )
    out.chmod(0o640)
    src = write_lines(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}])
    transport = MockTransport(handler)

    async def main() -> BatchStats:
        async with AsyncClient("http://lorax.test", transport=transport) as client:
            return await run_batch(client, src, out, retry=FAST)

    stats = asyncio.run(main())
    assert [r.inputs for r in transport.requests("Generate")] == ["y"]
    assert out.read_bytes().splitlines()[:3] == [
        orjson.dumps({"id": "a", "ok": True, "result": {"generated_text": "old"}}),
        b"# a note",
        orjson.dumps({"id": "other", "ok": False, "error": {"type": "X"}}),
    ]
    assert [rec["id"] for rec in orjson_lines(out)] == ["a", "other", "b"]
    assert (out.stat().st_mode & 0o777) == 0o640  # the rewrite keeps the file's mode
    assert (stats.done, stats.skipped) == (1, 1)


def orjson_lines(path: Path) -> list[dict[str, Any]]:
    records = []
    for raw in path.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            records.append(orjson.loads(raw))
    return records


def test_interrupted_rerun_never_leaves_two_rows(tmp_path: Path) -> None:
    lines = [{"id": i, "prompt": f"p{i}"} for i in range(30)]

    def fail_all(method: Any, request: Any) -> Any:
        raise OverloadedError("busy", status_code=429, error_type="overloaded")

    run(tmp_path, lines, fail_all, policy=NO_RETRY, concurrency=4)
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    assert len(read_output(out)) == 30

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
    records = read_output(out)
    ids = [rec["id"] for rec in records]
    assert len(ids) == len(set(ids))  # never two rows for a line
    assert all(rec["ok"] for rec in records)
    assert 4 <= len(records) < 30


def test_dry_run_builds_exact_bodies_and_sends_nothing(tmp_path: Path) -> None:
    from lorax.batch import dry_run

    src = write_lines(
        tmp_path / "in.jsonl",
        [
            {"id": "g", "prompt": "hi", "parameters": {"temperature": 0.7, "api_token": "secret-adapter-token"}},
            {"id": "c", "messages": [{"role": "user", "content": "yo"}], "adapter_id": "me/a"},
            {"id": "t", "prompt": "x", "parameters": {"max_new_tokens": "many"}},
            {"id": "k", "prompt": "x", "seed": 3},
            {"id": "last", "prompt": "not shown"},
        ],
    )
    report = dry_run(src, generate_defaults={"max_new_tokens": 5}, show=2)
    assert report.shown == [
        (
            1,
            "g",
            "POST /generate",
            b'{"inputs":"hi","parameters":{"api_token":"<redacted>","temperature":0.7,"max_new_tokens":5,'
            b'"details":true}}',
        ),
        (2, "c", "POST /v1/chat/completions", report.shown[1][3]),
    ]
    assert orjson.loads(report.shown[1][3])["model"] == "me/a"
    assert b"secret-adapter-token" not in b"".join(body for *_, body in report.shown)
    assert (report.generate, report.chat) == (2, 1)
    assert [bad.line for bad in report.check.invalid] == [3, 4]
    assert report.check.invalid[0].message.startswith("line 3: ")
    assert (report.check.lines, report.check.requests, report.check.invalid_count) == (5, 3, 2)


def test_readme_lists_every_line_parameter() -> None:
    # The README documents the line format completely: its parameter lists are the
    # client's signatures, which is what parse_line accepts.
    from lorax.batch.lines import _allowed_keys

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Batch jobs") :]
    paragraph = section[section.index("A line has exactly one of") : section.index("Embeddings and classification")]
    generate_part, chat_part = paragraph.split("and of `Client.chat`")
    generate_part = generate_part[generate_part.index("line:") :]
    chat_part = chat_part[chat_part.index("line:") :]
    assert set(re.findall(r"`(\w+)`", generate_part)) == _allowed_keys("prompt")
    assert set(re.findall(r"`(\w+)`", chat_part)) == _allowed_keys("messages")
