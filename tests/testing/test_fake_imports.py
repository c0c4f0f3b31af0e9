"""The fake server builds its responses from the msgspec Structs of lorax.types, never protobuf."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import lorax.testing

PACKAGE = Path(lorax.testing.__file__).parent
# protobuf is only for binary WebSocket frames (the transport and the gateway); the fake
# HTTP server prints LoRAX's JSON with lorax.codec from Structs.
FORBIDDEN = ("google.protobuf", "lorax._convert")


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _forbidden(name: str) -> bool:
    return name.endswith("_pb2") or any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_forbidden_detects_protobuf_imports() -> None:
    assert _forbidden("lorax.v1.embed_pb2")
    assert _forbidden("google.protobuf.message")
    assert _forbidden("lorax._convert")
    assert not _forbidden("lorax.types")
    assert not _forbidden("lorax.codec")


def test_no_protobuf_import_in_lorax_testing() -> None:
    modules = sorted(PACKAGE.glob("*.py"))
    assert PACKAGE / "_server.py" in modules
    found = {f"{path.name}: {name}" for path in modules for name in _imports(path) if _forbidden(name)}
    assert found == set()


def test_the_pytest_plugin_loads_no_server_until_the_fixture_runs() -> None:
    """pytest loads the plugin (entry point ``lorax``) in every run wherever lorax-client is
    installed: importing it must not load the fake server, its toy model or aiohttp."""
    code = (
        "import sys\n"
        "import lorax.testing.pytest_plugin\n"
        "print(sorted(m for m in sys.modules if m.startswith('lorax.testing')))\n"
        "print('aiohttp' in sys.modules)\n"
        "from lorax.testing import FakeLorax\n"
        "print(FakeLorax.__module__, 'lorax.testing._server' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout == ("['lorax.testing', 'lorax.testing.pytest_plugin']\nFalse\nlorax.testing._runner True\n")


def test_lorax_testing_has_no_other_attributes() -> None:
    with pytest.raises(AttributeError, match=r"^module 'lorax\.testing' has no attribute 'serde'$"):
        lorax.testing.serde  # noqa: B018
    assert not hasattr(lorax.testing, "Recorder")
