"""Regenerate (or check) the Python code compiled from proto/.

    python tools/gen_proto.py           # rewrite lorax/v1/*_pb2.py(i) and the descriptor set
    python tools/gen_proto.py --check   # fail when the committed files differ from a fresh run,
                                        # or when pyproject's protobuf or msgspec floor differs
                                        # from the one tox's `floor` env tests (or CI skips it)

The generated code is committed so that `pip install -e .` needs no build step; this
script is the only way it is written. The .proto files themselves are not copied: the
wheel takes them from proto/ (see setup.py).

The _pb2 modules are made portable: protoc stamps them with a check that refuses any
protobuf runtime older than the protoc that wrote them, which would tie users to one
recent protobuf. The check is removed; what the modules use (a serialized descriptor
and google.protobuf.internal.builder) exists in every runtime since 3.20, and the
`floor` tox env runs the test suite on the oldest one pyproject.toml admits.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_DIR = PROTO_ROOT / "lorax" / "v1"
OUT_PACKAGE = ROOT / "lorax" / "v1"
DESCRIPTOR_SET = "lorax_v1.binpb"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi")
# Written by our own protoc plugin (tools/protoc_gen_lorax.py): the msgspec Structs.
STRUCTS_MODULE = "messages.py"
PLUGIN = ROOT / "tools" / "protoc_gen_lorax.py"


def generate(out_root: Path) -> Path:
    """Compile every .proto into `out_root`/lorax/v1 and return that folder."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_DIR.glob("*.proto"))
    out_pkg = out_root / "lorax" / "v1"
    out_pkg.mkdir(parents=True, exist_ok=True)
    # protoc runs plugins as executables: a wrapper runs ours with this interpreter.
    wrapper = out_root / "protoc-gen-lorax"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{PLUGIN}"\n')
    wrapper.chmod(0o755)
    mypy_plugin = Path(sys.executable).parent / "protoc-gen-mypy"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        *([f"--plugin=protoc-gen-mypy={mypy_plugin}"] if mypy_plugin.exists() else []),
        f"--mypy_out={out_root}",
        f"--plugin=protoc-gen-lorax={wrapper}",
        f"--lorax_out={out_root}",
        f"--descriptor_set_out={out_pkg / DESCRIPTOR_SET}",
        "--include_imports",
        *protos,
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    for module in out_pkg.glob("*_pb2.py"):
        module.write_text(portable(module.read_text()))
    return out_pkg


_VERSION_CHECK = re.compile(r"^_runtime_version\.ValidateProtobufRuntimeVersion\(\n(?:.*\n)*?\)\n", re.M)


def portable(source: str) -> str:
    """A _pb2 module without protoc's runtime-version check (see the module docstring)."""
    source, checks = _VERSION_CHECK.subn("", source)
    imports = "from google.protobuf import runtime_version as _runtime_version\n"
    if checks != 1 or imports not in source:
        raise SystemExit("protoc's _pb2 layout changed: update tools/gen_proto.py portable()")
    return source.replace(imports, "")


def generated_files(folder: Path) -> list[str]:
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.name.endswith(GENERATED_SUFFIXES) or p.name in (DESCRIPTOR_SET, STRUCTS_MODULE)
    )


def gencode_version(folder: Path) -> str:
    """The protobuf version stamped into the generated modules (they must agree)."""
    versions = set()
    for path in folder.glob("*_pb2.py"):
        match = re.search(r"^# Protobuf Python Version: (\S+)$", path.read_text(), re.M)
        if match is None:
            raise SystemExit(f"{path.name}: no 'Protobuf Python Version' stamp")
        versions.add(match.group(1))
    if len(versions) != 1:
        raise SystemExit(f"generated modules disagree on the protobuf version: {sorted(versions)}")
    return versions.pop()


# The dependencies whose oldest admitted version tox's `floor` env pins and tests.
FLOOR_PACKAGES = ("protobuf", "msgspec")


def tox_floor(package: str) -> str:
    """The version of `package` that tox.ini's `floor` env pins."""
    text = (ROOT / "tox.ini").read_text()
    section = text.split("[testenv:floor]", 1)[-1].split("\n[", 1)[0]
    match = re.search(rf"^\s*{package}==(\S+)", section, re.M)
    if match is None:
        raise SystemExit(f"tox.ini: no {package}==... pin in [testenv:floor]")
    return match.group(1)


def tox_runs_floor() -> bool:
    """Whether tox.ini's env_list (what CI runs) holds the `floor` env."""
    text = (ROOT / "tox.ini").read_text()
    match = re.search(r"^env_list\s*=\s*(.*)$", text, re.M)
    return match is not None and "floor" in re.split(r"[\s,]+", match.group(1))


def pyproject_floor(package: str) -> str:
    """The oldest version of `package` that pyproject.toml admits."""
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(rf'"{package}>=([0-9][^,"]*)', text)
    if match is None:
        raise SystemExit(f"pyproject.toml: no '{package}>=' requirement")
    return match.group(1)


def check() -> int:
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        fresh_names = generated_files(fresh)
        committed_names = generated_files(OUT_PACKAGE)
        for name in sorted(set(fresh_names) | set(committed_names)):
            if name not in committed_names:
                problems.append(f"missing from lorax/v1: {name}")
            elif name not in fresh_names:
                problems.append(f"stale file in lorax/v1 (no .proto makes it): {name}")
            elif not filecmp.cmp(fresh / name, OUT_PACKAGE / name, shallow=False):
                problems.append(f"differs from a fresh generation: lorax/v1/{name}")
        stamped = gencode_version(fresh)
    for package in FLOOR_PACKAGES:
        floor = pyproject_floor(package)
        tested = tox_floor(package)
        if floor != tested:
            problems.append(f"pyproject requires {package}>={floor} but tox's floor env tests {package}=={tested}")
    if not tox_runs_floor():
        problems.append("tox.ini: env_list lacks `floor`, so CI does not test the oldest runtimes pyproject admits")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("run: python tools/gen_proto.py", file=sys.stderr)
        return 1
    print(f"generated code is current ({len(fresh_names)} files, protobuf {stamped})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    if args.check:
        return check()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        OUT_PACKAGE.mkdir(parents=True, exist_ok=True)
        for name in generated_files(OUT_PACKAGE):
            (OUT_PACKAGE / name).unlink()
        for name in generated_files(fresh):
            shutil.copyfile(fresh / name, OUT_PACKAGE / name)
    print(f"wrote {len(generated_files(OUT_PACKAGE))} files to lorax/v1 (protobuf {gencode_version(OUT_PACKAGE)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
