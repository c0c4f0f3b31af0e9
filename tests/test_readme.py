"""The README's Python examples run, so they cannot rot.

Each ```python block runs against a fake LoRAX server: the documented endpoint
``http://127.0.0.1:8080`` is pointed at it, blocks with top-level ``await`` run inside a
coroutine, and ``client`` is pre-set to a client of the fake server for blocks that
continue an earlier one. No block may reach the network beyond loopback.
"""

from __future__ import annotations

import asyncio
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from lorax import Client
from lorax.testing import FakeLorax

README = Path(__file__).resolve().parent.parent / "README.md"
ENDPOINT = "http://127.0.0.1:8080"


def python_blocks() -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"```python\n(.*?)```", text, re.S):
        line = text.count("\n", 0, match.start()) + 1
        blocks.append((line, match.group(1)))
    return blocks


def test_readme_has_examples() -> None:
    assert len(python_blocks()) >= 10


@pytest.fixture(scope="module")
def server() -> Any:
    with FakeLorax() as fake:
        yield fake


@pytest.mark.parametrize(("line", "code"), python_blocks(), ids=[f"README.md:{n}" for n, _ in python_blocks()])
def test_readme_example_runs(line: int, code: str, server: FakeLorax, capsys: pytest.CaptureFixture[str]) -> None:
    code = code.replace(ENDPOINT, server.url)
    client = Client(server.url)
    namespace: dict[str, Any] = {"__name__": f"readme_{line}", "client": client}
    try:
        if re.search(r"\bawait\b|\basync (with|for)\b", code):
            body = textwrap.indent(code, "    ")
            exec(compile(f"async def __example():\n{body}\n", f"README.md:{line}", "exec"), namespace)
            asyncio.run(namespace["__example"]())
        else:
            exec(compile(code, f"README.md:{line}", "exec"), namespace)
    finally:
        client.close()
        for value in namespace.values():
            if isinstance(value, Client):
                value.close()
    out = capsys.readouterr().out
    if "print(" in code:
        assert out.strip(), f"the example at README.md:{line} printed nothing"
