"""A virtualenv with the official LoRAX Python client (``lorax-client`` on PyPI), for comparisons.

The official client and this project share the import name ``lorax``, so the two cannot live
in one environment. This module keeps the official one in its own virtualenv,
``bench/.venv-official`` (git-ignored), creates it on first use with ``python -m venv`` and
``pip install``, and runs code there in a subprocess.

Use from a benchmark or a tool::

    from _official import official_python, run_json

    python = official_python()                       # creates the venv once, then reuses it
    result = run_json("import json, lorax.types; print(json.dumps({'ok': True}))")

Or from the command line: ``python bench/_official.py [--recreate]`` sets it up and prints the
interpreter and versions as JSON.

Code runs with ``python -I`` (isolated mode) from inside the venv directory, so neither this
checkout's ``lorax`` package nor ``PYTHONPATH`` can shadow the official one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".venv-official"
# The newest release on PyPI (its __version__ says "0.6.1").
REQUIREMENT = os.environ.get("LORAX_OFFICIAL_REQUIREMENT", "lorax-client==0.6.3")
_MARKER = "lorax-official.json"

_VERSIONS = """
import json, sys
from importlib import metadata
import lorax, lorax.types, pydantic
print(json.dumps({
    "python": sys.version.split()[0],
    "lorax-client": metadata.version("lorax-client"),
    "pydantic": pydantic.VERSION,
    "lorax_path": lorax.__file__,
}))
"""


def _venv_python(venv: Path) -> Path:
    if os.name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def official_python(*, recreate: bool = False, venv: Path = VENV, quiet: bool = True) -> Path:
    """The python of a virtualenv that has `REQUIREMENT` installed; built on first call."""
    python = _venv_python(venv)
    marker = venv / _MARKER
    if not recreate and python.exists() and marker.exists():
        try:
            if json.loads(marker.read_text(encoding="utf-8")).get("requirement") == REQUIREMENT:
                return python
        except ValueError:
            pass
    if venv.exists():
        shutil.rmtree(venv)
    _log(f"creating {venv} with {REQUIREMENT} ...", quiet=False)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    if quiet:
        pip.append("--quiet")
    subprocess.run([*pip, REQUIREMENT], check=True)
    versions = run_json(_VERSIONS, python=python)
    if not str(versions["lorax_path"]).startswith(str(venv)):
        raise RuntimeError(f"the official lorax was imported from {versions['lorax_path']}, not from {venv}")
    marker.write_text(json.dumps({"requirement": REQUIREMENT, **versions}, indent=1), encoding="utf-8")
    return python


def versions(python: Path | None = None) -> dict[str, Any]:
    """Python, lorax-client and pydantic versions of the official venv."""
    result: dict[str, Any] = run_json(_VERSIONS, python=python)
    return result


def run(
    code: str,
    *args: str,
    python: Path | None = None,
    input: str | bytes | None = None,
    timeout: float | None = 600,
) -> subprocess.CompletedProcess[bytes]:
    """Run `code` (Python source) with the official venv's interpreter; raise if it fails."""
    interpreter = python or official_python()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    data = input.encode() if isinstance(input, str) else input
    proc = subprocess.run(
        [str(interpreter), "-I", "-c", code, *args],
        input=data,
        capture_output=True,
        cwd=str(interpreter.parent.parent),
        env=env,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"official-client subprocess failed ({proc.returncode}):\n{proc.stderr.decode(errors='replace')}"
        )
    return proc


def run_json(code: str, *args: str, python: Path | None = None, input: str | bytes | None = None) -> Any:
    """Run `code` in the official venv and parse the JSON it prints last on stdout."""
    proc = run(code, *args, python=python, input=input)
    lines = [line for line in proc.stdout.decode().splitlines() if line.strip()]
    if not lines:
        raise RuntimeError("official-client subprocess printed nothing")
    return json.loads(lines[-1])


def _log(message: str, *, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recreate", action="store_true", help="delete and rebuild the venv")
    options = parser.parse_args()
    python = official_python(recreate=options.recreate)
    print(json.dumps({"python_path": str(python), **versions(python)}, indent=1))


if __name__ == "__main__":
    main()
