"""The command line as a new user meets it: where options go, typos, token errors, gateways.

Every test runs ``lorax`` for real (a subprocess) or :func:`lorax.cli.main` in process
against real loopback servers: the fake LoRAX, a lorax gateway with ``--auth-token``,
and a plain HTTP server that answers like something that is not LoRAX.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lorax import Client
from lorax.gateway import GatewayThread
from lorax.testing import FakeLorax

from ._util import run_cli, run_inproc
from .test_cli_commands import closed_port

PROMPT = "Why is the sky blue?"
CANARY = "CANARY-tok-41b7e2"
GATEWAY_TOKEN = "GWCANARY-9d0c55e1"


class _NotLorax(BaseHTTPRequestHandler):
    """401 with LoRAX-style JSON on /auth/*, an nginx-style HTML 404 everywhere else."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path.startswith("/auth/"):
            status, ctype, body = 401, "application/json", b'{"error":"Invalid API token"}'
        else:
            status, ctype = 404, "text/html"
            body = b"<html><head><title>404 Not Found</title></head><body>nginx</body></html>"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def not_lorax() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotLorax)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def locked_gateway(fake_server: FakeLorax) -> Iterator[GatewayThread]:
    with GatewayThread(upstream=fake_server.url, host="127.0.0.1", auth_token=GATEWAY_TOKEN) as thread:
        yield thread


# ---------------------------------------------------------------------------------
# Connection options before or after the subcommand


def test_connection_options_work_before_the_subcommand(fake_server: FakeLorax) -> None:
    args = ("generate", PROMPT, "--max-new-tokens", "6", "--seed", "4")
    _, expected, _ = run_inproc(*args, endpoint=fake_server.url)
    # $LORAX_ENDPOINT points at nothing: only the --endpoint given first can succeed.
    proc = run_cli(
        "--endpoint", fake_server.url, "--api-token", CANARY, "-H", "x-before: 1", "--timeout", "30",
        "--transport", "http", *args, "--header", "x-after: 2",
        endpoint=f"http://127.0.0.1:{closed_port()}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected
    assert proc.stderr == ""
    request = fake_server.last_request
    assert request.header("authorization") == f"Bearer {CANARY}"
    assert (request.header("x-before"), request.header("x-after")) == ("1", "2")


def test_an_option_after_the_subcommand_wins(fake_server: FakeLorax) -> None:
    closed = f"http://127.0.0.1:{closed_port()}"
    proc = run_cli("--endpoint", closed, "info", "--endpoint", fake_server.url, "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == run_inproc("info", "--json", endpoint=fake_server.url)[1]
    refused = run_cli("--endpoint=" + fake_server.url, "info", "--endpoint", closed, "--max-retries", "0")
    assert refused.returncode == 1
    assert refused.stderr.startswith("lorax: error: APIConnectionError: could not connect to 127.0.0.1:")


def test_top_level_help_says_options_may_come_first() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    assert "may also come before COMMAND" in " ".join(proc.stdout.split())


# ---------------------------------------------------------------------------------
# Unknown options


def _usage(command: str) -> str:
    proc = run_cli(command, "--help")
    assert proc.returncode == 0
    return proc.stdout.split("\n\n", 1)[0] + "\n"


def test_unknown_option_prints_the_subcommand_usage_and_a_suggestion() -> None:
    proc = run_cli("generate", "hi", "--max-tokens", "5")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == _usage("generate") + (
        "lorax generate: error: unrecognized arguments: --max-tokens 5; did you mean --max-new-tokens?\n"
    )


def test_unknown_option_before_a_subcommand_is_reported_by_it() -> None:
    code, out, err = run_inproc("--endpont", "http://127.0.0.1:9", "--debug", "info", "--jsn")
    assert (code, out) == (2, "")
    assert err == _usage("info") + (
        "lorax info: error: unrecognized arguments: --endpont http://127.0.0.1:9 --jsn; "
        "did you mean --endpoint (for --endpont), --json (for --jsn)?\n"
    )


def test_only_secret_values_are_hidden() -> None:
    proc = run_cli("info", "--api-tokn", CANARY, "--temprature", "0.5", "--gateway-tokn=" + GATEWAY_TOKEN)
    assert proc.returncode == 2
    assert proc.stderr.endswith(
        "lorax info: error: unrecognized arguments: --api-tokn <value hidden> --temprature 0.5 "
        "--gateway-tokn=<value hidden>; did you mean --api-token (for --api-tokn), "
        "--gateway-token (for --gateway-tokn)?\n"
    )
    assert proc.stderr.startswith(_usage("info"))
    assert CANARY not in proc.stderr
    assert GATEWAY_TOKEN not in proc.stderr
    # A name that says credential hides its value even with no close known option.
    code, _, err = run_inproc("info", "--my-password", "hunter2-secret", "--color", "blue")
    assert code == 2
    assert err.endswith("unrecognized arguments: --my-password <value hidden> --color blue\n")


# ---------------------------------------------------------------------------------
# chat --max-tokens


def test_chat_takes_max_tokens_as_well_as_max_new_tokens(fake_server: FakeLorax) -> None:
    messages = [{"role": "user", "content": "Hello there"}]
    with Client(fake_server.url) as client:
        expected = client.chat(messages, max_tokens=5, seed=1).choices[0].message.content
    proc = run_cli("chat", "Hello there", "--max-tokens", "5", "--seed", "1", endpoint=fake_server.url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected + "\n"
    assert run_inproc("chat", "Hello there", "--max-new-tokens", "5", "--seed", "1", endpoint=fake_server.url)[1] == (
        expected + "\n"
    )
    # generate keeps LoRAX's name only.
    assert run_inproc("generate", "hi", "--max-tokens", "5", endpoint=fake_server.url)[0] == 2


# ---------------------------------------------------------------------------------
# Gateway token


def test_gateway_token_opens_a_locked_gateway(fake_server: FakeLorax, locked_gateway: GatewayThread) -> None:
    args = ("generate", PROMPT, "--max-new-tokens", "5", "--seed", "2")
    _, expected, _ = run_inproc(*args, endpoint=fake_server.url)
    fake_server.clear_requests()
    by_flag = run_cli("--gateway-token", GATEWAY_TOKEN, *args, endpoint=locked_gateway.url)
    assert by_flag.returncode == 0, by_flag.stderr
    assert by_flag.stdout == expected
    # The gateway's token stays at the gateway: LoRAX never sees it.
    assert fake_server.last_request.header("authorization") is None
    by_env = run_cli(*args, endpoint=locked_gateway.url, env={"LORAX_GATEWAY_TOKEN": GATEWAY_TOKEN})
    assert by_env.returncode == 0, by_env.stderr
    assert by_env.stdout == expected
    # --api-token still goes upstream, and only it.
    run_cli(*args, "--gateway-token", GATEWAY_TOKEN, "--api-token", CANARY, endpoint=locked_gateway.url)
    assert fake_server.last_request.header("authorization") == f"Bearer {CANARY}"


def test_gateway_refusals_say_what_to_do(locked_gateway: GatewayThread) -> None:
    url = locked_gateway.url
    missing = run_cli("info", "--max-retries", "0", endpoint=url)
    assert missing.returncode == 1
    assert missing.stderr.startswith("lorax: error: AuthenticationError: ")
    assert missing.stderr.endswith(
        f"(status 401, GET {url}): the lorax gateway wants a token: pass "
        "gateway_headers={'Authorization': 'Bearer ...'} (lorax CLI: --gateway-token or LORAX_GATEWAY_TOKEN)\n"
    )
    wrong = run_cli("--debug", "info", "--gateway-token", "WRONG-" + GATEWAY_TOKEN, endpoint=url)
    assert wrong.returncode == 1
    assert wrong.stderr.splitlines()[-1].endswith(
        "the lorax gateway refused the token in gateway_headers (lorax CLI: --gateway-token)"
    )
    assert GATEWAY_TOKEN not in wrong.stderr


def test_gateway_token_needs_a_gateway(fake_server: FakeLorax) -> None:
    code, out, err = run_inproc("info", "--gateway-token", GATEWAY_TOKEN, endpoint=fake_server.url)
    assert (code, out) == (2, "")
    assert err == "lorax info: error: --gateway-token is for a lorax gateway: a ws:// endpoint, or --transport ws\n"
    # From the environment it is only used with a gateway, and ignored otherwise.
    proc = run_cli("info", "--json", endpoint=fake_server.url, env={"LORAX_GATEWAY_TOKEN": GATEWAY_TOKEN})
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------------
# Errors that point at the cause


@pytest.mark.parametrize(
    ("how", "env", "source"),
    [
        (("--api-token", CANARY), {}, "--api-token"),
        ((), {"LORAX_API_TOKEN": CANARY}, "the LORAX_API_TOKEN environment variable"),
        ((), {"PREDIBASE_API_TOKEN": CANARY}, "the PREDIBASE_API_TOKEN environment variable"),
        (("-H", f"Authorization: Bearer {CANARY}"), {}, "the Authorization header given with -H/--header"),
    ],
    ids=["flag", "lorax-env", "predibase-env", "header"],
)
def test_a_refused_token_names_where_it_came_from(
    not_lorax: str, how: tuple[str, ...], env: dict[str, str], source: str
) -> None:
    proc = run_cli("info", *how, "--endpoint", not_lorax + "/auth", env=env)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (
        f"lorax: error: AuthenticationError: Invalid API token (status 401, GET {not_lorax}/auth/info): "
        f"the server refused the token from {source}: check that it is valid and not expired\n"
    )


def test_a_server_that_is_not_lorax(not_lorax: str) -> None:
    proc = run_cli("generate", "hi", "--endpoint", not_lorax + "/v2", "--no-stream")
    assert proc.returncode == 1
    assert proc.stderr == (
        f"lorax: error: NotFoundError: 404 Not Found (status 404, POST {not_lorax}/v2/generate): "
        "the server answered HTML, not LoRAX JSON: is the URL right?\n"
    )


def test_predibase_without_a_token_is_a_usage_error() -> None:
    code, out, err = run_inproc("info", "--predibase-tenant", "acme", "--predibase-deployment", "llama")
    assert (code, out) == (2, "")
    assert err == (
        "lorax info: error: a Predibase deployment needs an API token: --api-token, or env LORAX_API_TOKEN or "
        "PREDIBASE_API_TOKEN (a command line is visible to other users: prefer the environment)\n"
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--endpoint", "U", "info"], ["info", "--endpoint", "U"]),
        (["--endpoint=U", "--debug", "info", "--json"], ["--debug", "info", "--endpoint=U", "--json"]),
        # A value that happens to be a command's name is still the option's value.
        (["-H", "info", "generate", "p"], ["generate", "-H", "info", "p"]),
        (["--api-token", "T", "--timeout", "5", "chat", "m"], ["chat", "--api-token", "T", "--timeout", "5", "m"]),
        # An unknown option takes the next word along unless it is the command.
        (["--endpont", "U", "info"], ["info", "--endpont", "U"]),
        (["--verbose", "info"], ["info", "--verbose"]),
        # Nothing to move: no command, or options after "--", or top-level ones only.
        (["--endpoint", "U"], ["--endpoint", "U"]),
        (["--", "--endpoint", "info"], ["--", "--endpoint", "info"]),
        (["--version"], ["--version"]),
        (["--debug", "info", "--endpoint", "U"], ["--debug", "info", "--endpoint", "U"]),
    ],
)
def test_hoist_connection_options(argv: list[str], expected: list[str]) -> None:
    from lorax._cli.common import hoist_connection_options

    commands = ["generate", "chat", "info"]
    assert hoist_connection_options(argv, commands, ["-h", "--help", "--version", "--debug"]) == expected
