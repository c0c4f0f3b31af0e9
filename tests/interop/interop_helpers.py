"""Helpers of the cross-language tests (see conftest.py): running interop/roundtrip.mjs."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
INTEROP = ROOT / "interop"
REQUIRED = os.environ.get("LORAX_INTEROP") == "1"


def run_node(*args: str, payload: Any = None, tmp_path: Path | None = None, timeout: float = 60) -> dict[str, Any]:
    """Run `node interop/roundtrip.mjs ARGS [CASE.json]` and return its JSON result."""
    argv = ["node", str(INTEROP / "roundtrip.mjs"), *args]
    if payload is not None:
        assert tmp_path is not None
        case = tmp_path / f"case-{args[0]}.json"
        case.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
        argv.append(str(case))
    proc = subprocess.run(argv, cwd=INTEROP, capture_output=True, text=True, timeout=timeout, check=False)
    lines = proc.stdout.strip().splitlines()
    result: dict[str, Any] = {}
    if lines:
        try:
            result = json.loads(lines[-1])
        except json.JSONDecodeError:
            result = {}
    if proc.returncode != 0 or not result.get("ok"):
        failures = "\n  ".join(result.get("failures", [])) if result else ""
        pytest.fail(
            f"node {' '.join(args)} exited {proc.returncode}\n  {failures}\n"
            f"stdout: {proc.stdout[-4000:]}\nstderr: {proc.stderr[-4000:]}"
        )
    return result


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)
