"""Every one-shot subcommand, run as a real ``lorax`` process against the fake server.

The expected outputs come from the library itself (an in-process Client on the same
server): the toy model is deterministic, so the command must print exactly that.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import orjson

from lorax import Client
from lorax.codec import to_json
from lorax.testing import FakeLorax
from lorax.types import TokenizeResponse

from ._util import cli_env, run_cli, run_inproc, start_cli

PROMPT = "Why is the sky blue?"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_generate_streams_the_text(fake_server: FakeLorax) -> None:
    with Client(fake_server.url) as client:
        expected = client.generate(PROMPT, max_new_tokens=12, seed=3).generated_text
    proc = run_cli("generate", PROMPT, "--max-new-tokens", "12", "--seed", "3", endpoint=fake_server.url)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, expected + "\n", "")


def test_generate_no_stream_with_details(fake_server: FakeLorax) -> None:
    with Client(fake_server.url) as client:
        response = client.generate(PROMPT, max_new_tokens=5)
    code, out, err = run_inproc(
        "generate", PROMPT, "--max-new-tokens", "5", "--no-stream", "--details", endpoint=fake_server.url
    )
    assert code == 0
    assert out == response.generated_text + "\n"
    d = response.details
    assert err == f"finish_reason=length prompt_tokens={d.prompt_tokens} generated_tokens=5 seed=None\n"


def test_generate_json_is_lorax_json(fake_server: FakeLorax) -> None:
    with Client(fake_server.url) as client:
        expected = to_json(client.generate(PROMPT, max_new_tokens=4, details=True)).decode()
    assert run_inproc("generate", PROMPT, "--max-new-tokens", "4", "--json", endpoint=fake_server.url) == (
        0,
        expected + "\n",
        "",
    )


def test_generate_json_stream_is_one_event_per_line(fake_server: FakeLorax) -> None:
    code, out, _ = run_inproc(
        "generate", PROMPT, "--max-new-tokens", "4", "--json", "--stream", endpoint=fake_server.url
    )
    events = [orjson.loads(line) for line in out.splitlines()]
    assert code == 0
    assert len(events) == 4
    assert [e["generated_text"] for e in events[:-1]] == [None, None, None]
    assert events[-1]["generated_text"] == "".join(e["token"]["text"] for e in events)


def test_generate_reads_the_prompt_from_stdin(fake_server: FakeLorax) -> None:
    _, direct, _ = run_inproc("generate", PROMPT, "--max-new-tokens", "6", endpoint=fake_server.url)
    piped = run_cli("generate", "-", "--max-new-tokens", "6", endpoint=fake_server.url, stdin=PROMPT + "\n")
    assert piped.returncode == 0
    assert piped.stdout == direct


def test_generate_return_full_text_streams_the_prompt_first(fake_server: FakeLorax) -> None:
    with Client(fake_server.url) as client:
        expected = client.generate(PROMPT, max_new_tokens=4, return_full_text=True).generated_text
    _, out, _ = run_inproc("generate", PROMPT, "--max-new-tokens", "4", "--return-full-text", endpoint=fake_server.url)
    assert out == expected + "\n"
    assert expected.startswith(PROMPT)


def test_generate_structured_output(fake_server: FakeLorax) -> None:
    schema = '{"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}'
    code, out, err = run_inproc(
        "generate", "A number:", "--max-new-tokens", "40", "--response-format-schema", schema, "--no-stream",
        endpoint=fake_server.url,
    )  # fmt: skip
    assert code == 0, err
    assert isinstance(orjson.loads(out)["n"], int)


def test_chat_streams_the_reply(fake_server: FakeLorax) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    with Client(fake_server.url) as client:
        expected = client.chat(messages, max_tokens=8, seed=1).choices[0].message.content
    args = ("chat", "--system", "Be brief.", "Hello there", "--max-new-tokens", "8", "--seed", "1")
    proc = run_cli(*args, endpoint=fake_server.url)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, expected + "\n", "")
    code, out, _ = run_inproc(*args, "--json", endpoint=fake_server.url)
    assert code == 0
    assert orjson.loads(out)["choices"][0]["message"]["content"] == expected


def test_chat_needs_a_message(fake_server: FakeLorax) -> None:
    assert run_inproc("chat", endpoint=fake_server.url) == (
        2,
        "",
        "lorax chat: error: chat needs a MESSAGE (or --messages)\n",
    )


def test_embed(fake_server: FakeLorax) -> None:
    with Client(fake_server.url) as client:
        response = client.embed("hello")
    proc = run_cli("embed", "hello", "--json", endpoint=fake_server.url)
    assert (proc.returncode, proc.stdout) == (0, to_json(response).decode() + "\n")
    first = ", ".join(f"{v:.4f}" for v in list(response.embeddings)[:8])
    human = f"dimension {len(response.embeddings)}: [{first}, ...]\n"
    assert run_inproc("embed", "hello", endpoint=fake_server.url) == (0, human, "")


def test_classify_and_tokenize(fake_server: FakeLorax) -> None:
    with Client(fake_server.url) as client:
        classified = client.classify("hello world")
        tokens = client.tokenize("hello world")
    proc = run_cli("classify", "hello world", "--json", endpoint=fake_server.url)
    assert (proc.returncode, proc.stdout) == (0, to_json(classified).decode() + "\n")
    proc = run_cli("tokenize", "hello world", endpoint=fake_server.url)
    expected = "".join(f"{t.id}\t{orjson.dumps(t.text).decode()}\t{t.start}-{t.stop}\n" for t in tokens)
    assert (proc.returncode, proc.stdout) == (0, expected)
    as_json = to_json(TokenizeResponse(tokens=tokens)).decode() + "\n"
    assert run_inproc("tokenize", "hello world", "--json", endpoint=fake_server.url) == (0, as_json, "")


def test_info_health_metrics(fake_server: FakeLorax) -> None:
    proc = run_cli("info", endpoint=fake_server.url)
    assert proc.returncode == 0
    assert "model_id: lorax-testing/toy-model\n" in proc.stdout
    _, out, _ = run_inproc("info", "--json", endpoint=fake_server.url)
    assert orjson.loads(out)["model_id"] == "lorax-testing/toy-model"

    assert run_cli("health", endpoint=fake_server.url).stdout == "healthy\n"
    fake_server.config.healthy = False
    try:
        assert run_inproc("health", endpoint=fake_server.url) == (1, "unhealthy\n", "")
    finally:
        fake_server.config.healthy = True

    proc = run_cli("metrics", endpoint=fake_server.url)
    assert proc.returncode == 0
    assert "# TYPE lorax_request_count counter" in proc.stdout
    _, out, _ = run_inproc("metrics", "--json", endpoint=fake_server.url)
    assert "lorax_request_count" in orjson.loads(out)


def test_connection_refused_is_one_line(fake_server: FakeLorax) -> None:
    port = closed_port()
    proc = run_cli("generate", "hi", "--endpoint", f"http://127.0.0.1:{port}", "--max-retries", "0")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("lorax: error: APIConnectionError: ")
    assert proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_server_error_is_one_line(fake_server: FakeLorax) -> None:
    proc = run_cli("generate", "hi", "--max-new-tokens", "100000", "--no-stream", endpoint=fake_server.url)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("lorax: error: ValidationError: Input validation error: ")
    assert proc.stderr.endswith(f" (status 422, POST {fake_server.url}/generate)\n")
    assert proc.stderr.count("\n") == 1

    code, _, err = run_inproc(
        "generate", "hi", "-H", "x-lorax-fake-fault: overloaded", "--max-retries", "0", endpoint=fake_server.url
    )
    assert code == 1
    assert err.startswith("lorax: error: OverloadedError: Model is overloaded")


def test_api_token_is_sent_but_never_printed(fake_server: FakeLorax) -> None:
    canary = "CANARY-7f3a9c21"
    ok = run_cli("--debug", "generate", "hi", "--max-new-tokens", "2", "--api-token", canary, endpoint=fake_server.url)
    assert ok.returncode == 0
    assert fake_server.last_request.header("authorization") == f"Bearer {canary}"
    refused = ("info", "--endpoint", f"http://127.0.0.1:{closed_port()}", "--max-retries", "0")
    failures = [
        run_cli(
            "--debug", "generate", "hi", "--max-new-tokens", "100000", "--api-token", canary, endpoint=fake_server.url
        ),
        run_cli("--debug", *refused, "--api-token", canary),
        run_cli(*refused, "--api-token", canary),
        run_cli("info", "--api-tokn", canary, endpoint=fake_server.url),  # a typo: argparse complains
        run_cli("--debug", *refused, env={"LORAX_API_TOKEN": canary}),
        run_cli("--debug", *refused, "-H", f"Authorization: Bearer {canary}"),
    ]
    assert [p.returncode for p in failures] == [1, 1, 1, 2, 1, 1]
    assert "DEBUG" in failures[0].stderr
    assert "Traceback" in failures[1].stderr  # --debug shows it ...
    assert "Traceback" not in failures[2].stderr  # ... and only --debug
    for proc in [ok, *failures]:
        assert canary not in proc.stdout + proc.stderr


def test_usage_errors_exit_2(fake_server: FakeLorax) -> None:
    proc = run_cli("generate", endpoint=fake_server.url)
    assert proc.returncode == 2
    assert "required: PROMPT" in proc.stderr
    assert run_inproc("generate", "hi", "--predibase-tenant", "t", endpoint=fake_server.url) == (
        2,
        "",
        "lorax generate: error: --predibase-tenant and --predibase-deployment go together\n",
    )
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("lorax-client ")


def test_console_script_help_lists_every_command() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    for command in ("generate", "chat", "embed", "classify", "tokenize", "info", "health", "metrics", "batch",
                    "demo", "fake-server", "gateway"):  # fmt: skip
        assert f"    {command}" in proc.stdout


def test_fake_server_subcommand_serves_and_stops_on_sigint() -> None:
    proc = start_cli("fake-server", "--port", "0")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("lorax fake server listening on http://127.0.0.1:")
        url = line.split()[-1]
        assert run_cli("health", endpoint=url).stdout == "healthy\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_delegated_usage_errors_return_instead_of_exiting() -> None:
    code, _, _ = run_inproc("gateway")
    assert code == 2


def test_gateway_subcommand_is_dispatched() -> None:
    proc = run_cli("gateway", "--help")
    assert proc.returncode == 0
    assert "--upstream" in proc.stdout
    proc = run_cli("gateway")
    assert proc.returncode == 2
    assert "--upstream" in proc.stderr


def test_broken_pipe_is_quiet(fake_server: FakeLorax) -> None:
    # `lorax generate ... | head -c 1`: the reader goes away mid-stream.
    script = '"$0" -m lorax.cli generate "$1" --max-new-tokens 200 --seed 1 | head -c 1 >/dev/null'
    cmd = subprocess.Popen(
        ["bash", "-c", script, sys.executable, PROMPT],
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(fake_server.url),
    )
    _, err = cmd.communicate(timeout=30)
    assert "Traceback" not in err


def test_ctrl_c_during_a_stream_exits_130(fake_server: FakeLorax) -> None:
    # The bootstrap makes sure SIGINT raises KeyboardInterrupt even if the test runner
    # was started with SIGINT ignored (Python keeps an inherited SIG_IGN).
    bootstrap = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from lorax.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    args = ["generate", PROMPT, "--max-new-tokens", "500", "-H", "x-lorax-fake-fault: token-latency=50ms"]
    proc = subprocess.Popen(
        [sys.executable, "-c", bootstrap, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(fake_server.url),
    )
    try:
        assert proc.stdout is not None
        proc.stdout.read(1)  # the first token arrived: the stream is under way
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert err == "lorax: interrupted\n"


def test_predibase_options_build_the_deployment_url() -> None:
    from lorax._cli.common import make_client, resolve_connection
    from lorax._redact import Secrets
    from lorax.cli import build_parser

    args = build_parser().parse_args(
        ["info", "--predibase-tenant", "acme", "--predibase-deployment", "llama-3", "--api-token", "PBTOKEN1"]
    )
    with make_client(resolve_connection(args, {}, Secrets())) as client:
        assert client.base_url == "https://serving.app.predibase.com/acme/deployments/v2/llms/llama-3"
        assert client._config.headers["authorization"] == "Bearer PBTOKEN1"
        assert "PBTOKEN1" not in repr(client)


def test_batch_refuses_stdin(tmp_path: Path) -> None:
    assert run_inproc("batch", "-", "-o", str(tmp_path / "o.jsonl")) == (
        2,
        "",
        "lorax batch: error: batch reads INPUT again when it resumes, so it must be a file, not stdin\n",
    )
