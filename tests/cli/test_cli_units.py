"""In-process tests of the command line's pieces: options, secrets, errors, progress text."""

from __future__ import annotations

import argparse
import io
import logging
from pathlib import Path

import pytest

from lorax._cli.common import (
    UsageError,
    chat_kwargs,
    error_line,
    generate_kwargs,
    load_json_arg,
    parse_headers,
    resolve_connection,
    secrets_from_argv,
    setup_logging,
)
from lorax._cli.progress import BatchStats, ProgressReporter, format_duration, format_progress, format_summary
from lorax._redact import Secrets
from lorax.cli import build_parser, main
from lorax.errors import APIConnectionError, OverloadedError


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_secrets_scrub_tokens_and_bearer_values() -> None:
    secrets = secrets_from_argv(
        ["generate", "--api-token", "CANARY-123", "-H", "X-Api-Key: KEY-456", "--header=Authorization: Bearer TOK-789"],
        {"PREDIBASE_API_TOKEN": "ENV-000"},
    )
    text = "CANARY-123 KEY-456 Bearer TOK-789 TOK-789 ENV-000 keep"
    assert secrets.scrub(text) == "<redacted> <redacted> <redacted> <redacted> <redacted> keep"
    assert "CANARY" not in repr(secrets)


def test_secrets_ignore_short_values() -> None:
    secrets = Secrets(["ab"])
    assert secrets.scrub("ab abc") == "ab abc"


def test_error_line_is_one_scrubbed_line() -> None:
    secrets = Secrets(["CANARY-TOKEN"])
    exc = OverloadedError("busy\nwith CANARY-TOKEN inside", status_code=429, error_type="overloaded")
    assert error_line(exc, secrets) == "lorax: error: OverloadedError: busy with <redacted> inside (status 429)"
    assert error_line(APIConnectionError(""), secrets) == "lorax: error: APIConnectionError"


def test_debug_log_is_scrubbed() -> None:
    stream = io.StringIO()
    secrets = Secrets(["CANARY-TOKEN"])
    logger = logging.getLogger("lorax")
    before = (logger.level, logger.propagate, list(logger.handlers))
    restore = setup_logging(True, secrets, stream)
    try:
        logging.getLogger("lorax.test").debug("header Authorization: Bearer CANARY-TOKEN")
    finally:
        restore()
    assert "CANARY" not in stream.getvalue()
    assert "<redacted>" in stream.getvalue()
    assert (logger.level, logger.propagate, list(logger.handlers)) == before


def test_parse_headers() -> None:
    assert parse_headers(["X-A: 1", "X-B:two words "]) == {"X-A": "1", "X-B": "two words"}
    with pytest.raises(UsageError) as info:
        parse_headers(["Authorization Bearer SECRET"])
    assert "SECRET" not in str(info.value)


def test_resolve_connection_token_and_env() -> None:
    args = parse("generate", "hi", "--api-token", "T0KEN")
    conn = resolve_connection(args, {}, Secrets())
    assert conn.base_url == "http://127.0.0.1:8080"
    assert conn.headers == {"Authorization": "Bearer T0KEN"}
    assert "T0KEN" not in repr(conn)

    args = parse("generate", "hi")
    env = {"LORAX_ENDPOINT": "http://example.test:9", "PREDIBASE_API_TOKEN": "ENVTOKEN"}
    conn = resolve_connection(args, env, Secrets())
    assert conn.base_url == "http://example.test:9"
    assert conn.headers["Authorization"] == "Bearer ENVTOKEN"

    # An explicit Authorization header wins over the token.
    args = parse("generate", "hi", "--api-token", "T0KEN", "-H", "Authorization: Basic abcd")
    assert resolve_connection(args, {}, Secrets()).headers == {"Authorization": "Basic abcd"}


def test_resolve_connection_transport_and_predibase() -> None:
    args = parse("info", "--endpoint", "http://h:1/x", "--transport", "ws")
    assert resolve_connection(args, {}, Secrets()).base_url == "ws://h:1/x"
    with pytest.raises(UsageError):
        resolve_connection(parse("info", "--endpoint", "ws://h:1", "--transport", "http"), {}, Secrets())
    with pytest.raises(UsageError):
        resolve_connection(parse("info", "--endpoint", "ftp://h"), {}, Secrets())
    with pytest.raises(UsageError):
        resolve_connection(parse("info", "--predibase-tenant", "t"), {}, Secrets())
    conn = resolve_connection(
        parse("info", "--predibase-tenant", "t", "--predibase-deployment", "d", "--api-token", "PBTOKEN"), {}, Secrets()
    )
    assert conn.predibase == ("t", "d")
    assert conn.token == "PBTOKEN"


def test_generation_options_map_to_both_routes(tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object"}')
    args = parse(
        "generate", "p", "--max-new-tokens", "5", "--stop", "a", "--stop", "b", "--seed", "3", "--do-sample",
        "--response-format-schema", str(schema), "--adapter-id", "me/x",
    )  # fmt: skip
    assert generate_kwargs(args) == {
        "adapter_id": "me/x",
        "max_new_tokens": 5,
        "seed": 3,
        "stop_sequences": ["a", "b"],
        "do_sample": True,
        "response_format": {"type": "json_object", "schema": {"type": "object"}},
    }
    chat = parse("chat", "hi", "--max-new-tokens", "5", "--stop", "a", "--response-format-schema", '{"type":"object"}')
    assert chat_kwargs(chat) == {
        "max_tokens": 5,
        "stop": ["a"],
        "response_format": {"type": "json_object", "schema": {"type": "object"}},
    }


def test_load_json_arg_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="neither a file nor JSON"):
        load_json_arg("no-such-file.json", "--x")
    with pytest.raises(UsageError, match="invalid JSON"):
        load_json_arg("{not json", "--x")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(UsageError, match="invalid JSON"):
        load_json_arg(str(bad), "--x")


def test_main_usage_errors_exit_2() -> None:
    err = io.StringIO()
    assert main(["generate"], stderr=err, stdout=io.StringIO(), environ={}) == 2
    assert "PROMPT" in err.getvalue()
    err = io.StringIO()
    assert main(["nope"], stderr=err, stdout=io.StringIO(), environ={}) == 2
    err = io.StringIO()
    assert main([], stderr=err, stdout=io.StringIO(), environ={}) == 2
    assert "COMMAND" in err.getvalue()


def test_main_usage_error_after_parsing_is_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    err = io.StringIO()
    code = main(["info", "-H", "Authorization Bearer SECRETVALUE"], stderr=err, stdout=io.StringIO(), environ={})
    assert code == 2
    assert err.getvalue().startswith("lorax info: error: --header must look like")
    assert "SECRETVALUE" not in err.getvalue()


def test_argparse_errors_are_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["info", "--api-token", "CANARYTOKEN", "stray", "CANARYTOKEN"], environ={})
    captured = capsys.readouterr()
    assert code == 2
    assert "unrecognized arguments" in captured.err
    assert "CANARYTOKEN" not in captured.err + captured.out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("lorax-client ")


def test_format_progress_and_eta() -> None:
    stats = BatchStats(total=100, done=40, failed=5, skipped=5, generated_tokens=900, started=0.0)
    line = format_progress(stats, bar=True, now=9.0)
    assert line.startswith("[" + "#" * 12 + "." * 12 + "]")
    assert "50% 50/100" in line
    assert "done 40 failed 5 skipped 5" in line
    assert "100.0 tok/s" in line
    assert "ETA 0:10" in line  # 50 lines left at 5 lines/s
    unknown = format_progress(BatchStats(done=3, started=0.0), bar=False, now=1.0)
    assert unknown.startswith("3 lines |")
    assert "ETA" not in unknown


def test_format_duration() -> None:
    assert format_duration(5) == "0:05"
    assert format_duration(754) == "12:34"
    assert format_duration(3723) == "1:02:03"


def test_summary_lines() -> None:
    stats = BatchStats(done=8, failed=2, invalid=1, skipped=3, generated_tokens=160, started=0.0, finished=2.0)
    assert format_summary(stats) == (
        "lorax batch: done 8, failed 2 (1 invalid), skipped 3, tokens 160, elapsed 2.00 s, 80.0 tokens/s; "
        "rerun the same command to retry the failed lines; fix the 1 invalid line(s) in the input (their rows say why)"
    )
    only_invalid = BatchStats(done=1, failed=2, invalid=2, started=0.0, finished=1.0)
    assert format_summary(only_invalid).endswith(
        "tokens/s; fix the 2 invalid line(s) in the input (their rows say why)"
    )
    unreachable = BatchStats(aborted="cannot reach the server: refused", unreachable=True, started=0.0, finished=1.0)
    assert format_summary(unreachable).endswith(
        "tokens/s; stopped early: cannot reach the server: refused; rerun the same command to resume"
    )
    stats.interrupted = True
    assert format_summary(stats).endswith("; interrupted: rerun the same command to resume")


def test_progress_reporter_plain_and_tty() -> None:
    stats = BatchStats(total=10, done=1, started=0.0)
    plain = io.StringIO()
    ProgressReporter(stats, plain, tty=False, clock=lambda: 1.0).draw()
    assert plain.getvalue().startswith("lorax batch: 10% 1/10")
    assert plain.getvalue().endswith("\n")
    tty = io.StringIO()
    reporter = ProgressReporter(stats, tty, tty=True, clock=lambda: 1.0)
    reporter.draw()
    reporter.clear()
    assert tty.getvalue().startswith("\r[##")
    assert tty.getvalue().endswith("\r")
    assert "\n" not in tty.getvalue()
