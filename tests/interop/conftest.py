"""Cross-language tests: the Python package and a Node program (interop/) exchange messages.

They need Node.js, `npm ci` in interop/ and the protobuf-es code that `buf generate`
writes to interop/gen/. `python tools/interop.py` (tox -e interop) does all of that and
then runs these tests with LORAX_INTEROP=1. Without that variable they are skipped, even
when interop/ happens to be set up: the plain test envs run in parallel with the interop
env, which reinstalls node_modules and regenerates interop/gen while they run. To rerun
them by hand after one `python tools/interop.py`:

    LORAX_INTEROP=1 pytest tests/interop
"""

from __future__ import annotations

import shutil

import pytest
from interop_helpers import INTEROP, REQUIRED


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not (INTEROP / "node_modules" / "@bufbuild" / "protobuf").is_dir():
        return "interop/node_modules is missing (npm ci)"
    if not (INTEROP / "gen" / "lorax" / "v1" / "websocket_pb.js").is_file():
        return "interop/gen is missing (buf generate)"
    return None


@pytest.fixture(autouse=True, scope="session")
def _interop_prerequisites() -> None:
    if not REQUIRED:
        pytest.skip("cross-language tests run with LORAX_INTEROP=1: `python tools/interop.py` (tox -e interop)")
    reason = _missing()
    if reason is not None:
        pytest.fail(f"interop prerequisites missing: {reason}; run `python tools/interop.py`")
