"""Installing lorax-client as the README says: a wheel built from this checkout, in a fresh venv.

The wheel is built with ``pip wheel --no-deps`` and installed, with its dependencies
from the package index, into a new virtual environment that already holds the official
``lorax-client`` 0.6.3 from the index: both are the distribution ``lorax-client`` with
the import name ``lorax``, and installing this one must replace that one in place. Then
the ``lorax`` command, ``lorax.testing`` and the packaged ``.proto`` files are used from
that venv, in a directory outside the checkout so that nothing is imported from here:
protoc (grpcio-tools) compiles the installed ``.proto`` files. Last, an editable install
of the same source replaces the wheel, and ``lorax.proto_path()`` is then its ``proto/``.

It needs the package index. Whether the index answers is checked once; when it does not,
the test is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The official client this one replaces (the last release on the index when this was
# written); its lorax package has no `testing`, no `proto_path` and no command.
OFFICIAL = "lorax-client==0.6.3"


def _index_unreachable() -> str | None:
    """Why the package index cannot be used, or None when it answers."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    if index.startswith("file:"):
        return None
    try:
        with urllib.request.urlopen(f"{index}/orjson/", timeout=10) as response:
            response.read(1)
    except Exception as exc:  # any failure means: no index to install from
        return f"the package index {index} is unreachable ({type(exc).__name__}: {exc})"
    return None


@pytest.fixture(scope="session")
def package_index() -> None:
    """Skip (with the reason) when the package index does not answer; asked once per run,
    and only when a test that needs it runs."""
    reason = _index_unreachable()
    if reason is not None:
        pytest.skip(reason)


def _run(args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    # No PYTHONPATH and a cwd outside the checkout: only the venv's packages import.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


CHECK = """
import pathlib, sys
import lorax, lorax.testing, lorax.errors
site = pathlib.Path(sys.argv[1]).resolve()
package = pathlib.Path(lorax.__file__).resolve().parent
assert site in package.parents, (package, site)
protos = lorax.proto_path()
assert site in protos.resolve().parents, protos
names = sorted(p.name for p in (protos / "lorax" / "v1").glob("*.proto"))
assert "generate.proto" in names and "websocket.proto" in names, names
assert lorax.descriptor_set_path().is_file()
assert issubclass(lorax.errors.AuthenticationError, lorax.errors.UnknownError)
with lorax.testing.FakeLorax() as server, lorax.Client(server.url) as client:
    text = client.generate("hi", max_new_tokens=3, seed=1).generated_text
print(lorax.__version__, len(names), repr(text))
"""


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("package_index")
def test_wheel_installs_into_a_fresh_venv_over_the_official_client(tmp_path: Path) -> None:
    from lorax import __version__

    # Built from a copy: setuptools leaves build/ and *.egg-info in the tree it builds,
    # and a stale build/lib would put deleted modules into later wheels.
    src = tmp_path / "src"
    shutil.copytree(ROOT / "lorax", src / "lorax", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # The schemas come from proto/ (setup.py maps them into the package): no copy in lorax/.
    assert not (src / "lorax" / "_proto").exists()
    shutil.copytree(ROOT / "proto" / "lorax", src / "proto" / "lorax")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(src)], cwd=tmp_path)
    wheels = sorted(dist.glob("lorax_client-*.whl"))
    assert [w.name for w in wheels] == [f"lorax_client-{__version__}-py3-none-any.whl"]

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet"]

    # The official client first: what `pip install lorax-client` gives today.
    _run([*pip, OFFICIAL], cwd=tmp_path)
    official = _run([str(python), "-c", "import lorax; print(hasattr(lorax, 'proto_path'))"], cwd=tmp_path)
    assert official.stdout == "False\n"

    # This one replaces it in place: the same distribution name, a newer version.
    _run([*pip, str(wheels[0])], cwd=tmp_path)
    shown = _run([str(python), "-m", "pip", "show", "lorax-client"], cwd=tmp_path)
    assert f"Version: {__version__}\n" in shown.stdout

    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path)
    checked = _run([str(python), "-c", CHECK, site.stdout.strip()], cwd=tmp_path)
    assert checked.stdout.startswith(f"{__version__} 8 ")

    _compiles_the_shipped_schemas(python, site.stdout.strip(), tmp_path)

    command = venv / "bin" / "lorax"
    helped = _run([str(command), "--help"], cwd=tmp_path)
    assert helped.stdout.startswith("usage: lorax ")
    version = _run([str(command), "--version"], cwd=tmp_path)
    assert version.stdout == f"lorax-client {__version__}\n"

    # From a checkout, `pip install -e .` replaces the wheel: proto_path() is then the
    # checkout's proto/ folder, the one the wheel was built from.
    _run([*pip, "--no-deps", "-e", str(src)], cwd=tmp_path)
    editable = _run([str(python), "-c", "import lorax; print(lorax.__file__); print(lorax.proto_path())"], cwd=tmp_path)
    assert editable.stdout == f"{src / 'lorax' / '__init__.py'}\n{src / 'proto'}\n"


def _compiles_the_shipped_schemas(python: Path, site: str, tmp_path: Path) -> None:
    """protoc (grpcio-tools, from this venv) compiles the installed .proto files into
    exactly the descriptor set the wheel ships: the schemas and the code agree."""
    import grpc_tools

    shipped = _run([str(python), "-c", "import lorax; print(lorax.proto_path())"], cwd=tmp_path).stdout.strip()
    assert Path(shipped) == Path(site) / "lorax" / "_proto"
    protos = sorted(str(p.relative_to(shipped)) for p in Path(shipped, "lorax", "v1").glob("*.proto"))
    assert len(protos) == 8
    out = tmp_path / "compiled"
    out.mkdir()
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [f"-I{shipped}", f"-I{well_known}", f"--python_out={out}", "--include_imports"]
    descriptors = out / "lorax_v1.binpb"
    _run(
        [sys.executable, "-m", "grpc_tools.protoc", *args, f"--descriptor_set_out={descriptors}", *protos], cwd=tmp_path
    )
    assert sorted(p.name for p in (out / "lorax" / "v1").glob("*_pb2.py")) == sorted(
        Path(p).name.replace(".proto", "_pb2.py") for p in protos
    )
    assert descriptors.read_bytes() == (Path(site) / "lorax" / "v1" / "lorax_v1.binpb").read_bytes()


def test_a_checkout_finds_its_schemas_in_proto() -> None:
    """Run from this checkout (PYTHONPATH or an editable install), proto_path() is proto/:
    the only copy of the schemas in the repository."""
    import lorax

    assert lorax.proto_path() == ROOT / "proto"
    assert not (ROOT / "lorax" / "_proto").exists()
    names = sorted(p.name for p in (lorax.proto_path() / "lorax" / "v1").glob("*.proto"))
    assert names == [
        "embed.proto",
        "generate.proto",
        "openai.proto",
        "options.proto",
        "server.proto",
        "service.proto",
        "tokenize.proto",
        "websocket.proto",
    ]
