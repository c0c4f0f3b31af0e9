"""The README's Python examples run as written, so they cannot rot.

Each ```python block is written to a file of its own and run with a fresh interpreter,
so no block can lean on another. The README's convention: a block that talks to a
server reads its URL from ``LORAX_ENDPOINT`` (default ``http://127.0.0.1:8080``), which
the test points at a fake LoRAX; blocks that need something else (a gateway, a fault)
start ``lorax.testing.FakeLorax`` themselves. No block may reach beyond loopback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lorax.testing import FakeLorax

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DEFAULT_ENDPOINT = "http://127.0.0.1:8080"
ENDPOINT_FROM_ENV = 'os.environ.get("LORAX_ENDPOINT", "http://127.0.0.1:8080")'


def python_blocks() -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"```python\n(.*?)```", text, re.S):
        line = text.count("\n", 0, match.start()) + 1
        blocks.append((line, match.group(1)))
    return blocks


BLOCKS = python_blocks()


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"README.md:{n}" for n, _ in BLOCKS])
def test_readme_block_follows_the_endpoint_convention(line: int, code: str) -> None:
    # The default URL only ever appears as the fallback of LORAX_ENDPOINT, so every
    # block that needs a server can be pointed at one.
    statements = "\n".join(row for row in code.splitlines() if not row.lstrip().startswith("#"))
    assert statements.count(DEFAULT_ENDPOINT) == statements.count(ENDPOINT_FROM_ENV), f"README.md:{line}"
    assert not re.search(r"^\s*(await|async (with|for))\b", code, re.M) or "asyncio.run(" in code, (
        f"README.md:{line} awaits at the top level; wrap it in asyncio.run(main())"
    )


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLorax]:
    with FakeLorax() as fake:
        yield fake


def _env(server: FakeLorax) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LORAX_API_TOKEN", "PYTHONDEVMODE", "PYTHONWARNINGS")}
    env["LORAX_ENDPOINT"] = server.url
    # The Predibase example builds a client from the environment's token; it sends nothing.
    env["PREDIBASE_API_TOKEN"] = "pb_readme_example"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"README.md:{n}" for n, _ in BLOCKS])
def test_readme_block_runs_as_a_file(line: int, code: str, server: FakeLorax, tmp_path: Path) -> None:
    script = tmp_path / f"readme_{line}.py"
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=_env(server),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"README.md:{line} failed:\n{proc.stderr}"
    assert proc.stderr == "", f"README.md:{line} wrote to stderr:\n{proc.stderr}"
    if "print(" in code:
        assert proc.stdout.strip(), f"the example at README.md:{line} printed nothing"
