"""Fixtures of the reliability suite, and the scenario x transport table it prints.

Each scenario test calls ``record(scenario, outcome)``; at the end of the session
:func:`pytest_terminal_summary` prints one row per scenario and one column per
transport with what the call ended in (``ok`` or the exception class) and how long
it took, or ``FAIL`` when the test failed, ``n/a`` when it does not apply.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lorax.testing import FakeLorax
from tests.transports.http_transports._servers import LoopThread, RawHandler, RawServer

from ._harness import TRANSPORTS, Outcome

_ENV = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "requests_ca_bundle", "curl_ca_bundle"}

# (scenario, transport) -> cell text, in the order scenarios first ran.
_TABLE: dict[tuple[str, str], str] = {}
_ROWS: list[str] = []


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's proxy or CA bundle must not reach loopback servers.
    for name in list(os.environ):
        if name.lower() in _ENV:
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def lt() -> Iterator[LoopThread]:
    loop_thread = LoopThread()
    yield loop_thread
    loop_thread.close()


@pytest.fixture
def raw(lt: LoopThread) -> Iterator[Callable[[RawHandler], RawServer]]:
    """``raw(handler)`` starts a byte-exact TCP server; all are stopped after the test."""
    servers: list[RawServer] = []

    def start(handler: RawHandler) -> RawServer:
        server = RawServer(lt, handler).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeLorax]:
    with FakeLorax() as server:
        yield server


@pytest.fixture
def fake_server(fake: FakeLorax) -> Iterator[FakeLorax]:
    """The session's fake LoRAX with no faults queued before and after the test."""
    fake.faults.clear()
    yield fake
    fake.faults.clear()


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``record(scenario, outcome_or_text)``: the test's cell in the summary table."""

    def put(scenario: str, outcome: Outcome | str, transport: str | None = None) -> None:
        column = transport or request.node.callspec.params.get("transport", "?")
        text = outcome if isinstance(outcome, str) else outcome.label()
        request.node.user_properties.append(("reliability", (scenario, column, text)))

    return put


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    cells = [value for key, value in report.user_properties if key == "reliability"]
    if not cells:
        return
    for scenario, column, text in cells:
        if scenario not in _ROWS:
            _ROWS.append(scenario)
        key = (scenario, column)
        if report.failed:
            _TABLE[key] = "FAIL"
        elif report.when == "call" and _TABLE.get(key) != "FAIL":
            _TABLE[key] = text


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _TABLE:
        return
    width = max(len(row) for row in _ROWS)
    cells = {col: max([len(col), 3] + [len(v) for (_, c), v in _TABLE.items() if c == col]) for col in TRANSPORTS}
    tr = terminalreporter
    tr.write_sep("=", "reliability: scenario x transport")
    tr.write_line(f"| {'scenario'.ljust(width)} | " + " | ".join(col.ljust(cells[col]) for col in TRANSPORTS) + " |")
    tr.write_line(f"|{'-' * (width + 2)}|" + "|".join("-" * (cells[col] + 2) for col in TRANSPORTS) + "|")
    for row in _ROWS:
        values = [_TABLE.get((row, col), "n/a").ljust(cells[col]) for col in TRANSPORTS]
        tr.write_line(f"| {row.ljust(width)} | " + " | ".join(values) + " |")
