"""Running ``lorax`` for real in the command-line tests."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

# Variables that would change what the command does or prints.
_SCRUBBED_ENV = (
    "LORAX_ENDPOINT",
    "LORAX_API_TOKEN",
    "PREDIBASE_API_TOKEN",
    "LORAX_GATEWAY_TOKEN",
    # Dev mode makes asyncio log slow callbacks on stderr, which exact-output tests
    # cannot tolerate; the in-process tests still run under it.
    "PYTHONDEVMODE",
    "PYTHONWARNINGS",
)


def cli_env(endpoint: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``lorax`` subprocess: clean, pointed at `endpoint`."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    if endpoint is not None:
        env["LORAX_ENDPOINT"] = endpoint
    env.update(extra or {})
    return env


def run_cli(
    *args: str,
    endpoint: str | None = None,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m lorax.cli ARGS`` to completion and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "lorax.cli", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=cli_env(endpoint, env),
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def start_cli(*args: str, endpoint: str | None = None, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``python -m lorax.cli ARGS`` in the background (stdout and stderr piped)."""
    return subprocess.Popen(
        [sys.executable, "-m", "lorax.cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(endpoint, env),
    )


def run_inproc(*args: str, endpoint: str | None = None, stdin: str = "") -> tuple[int, str, str]:
    """Run :func:`lorax.cli.main` in this process: (exit code, stdout, stderr).

    For the variants of a subcommand whose process-level behaviour another test
    already covers with a real subprocess; it saves a interpreter start each.
    """
    from lorax.cli import main

    out, err = io.StringIO(), io.StringIO()
    environ = {"LORAX_ENDPOINT": endpoint} if endpoint is not None else {}
    code = main(list(args), stdout=out, stderr=err, stdin=io.StringIO(stdin), environ=environ)
    return code, out.getvalue(), err.getvalue()
