"""The schemas as a contract for other languages: every check in one command (tox -e interop).

    python tools/interop.py             # all steps below; non-zero exit on the first failure
    python tools/interop.py --no-install  # reuse interop/node_modules (local reruns)
    python tools/interop.py freeze      # at release time: rewrite proto/released/lorax_v1.binpb

Steps:

 1. npm ci           interop/ gets the exact versions of package-lock.json (buf,
                     protobuf-es, protoc-gen-es, ws) from the npm registry
 2. buf lint         proto/, with the exceptions justified in buf.yaml
 3. buf breaking     proto/ against proto/released/lorax_v1.binpb (the last release)
 4. breaking canary  a temp copy with a renumbered, a retyped and a renamed field must
                     fail buf breaking, so the check is known to be live
 5. json options     the LoRAX JSON options (options.proto) of everything released are
                     unchanged: buf breaking does not look at custom option values, but
                     a changed wire_value, raw_json or unwrap changes the JSON contract
 6. buf generate     protobuf-es code (target=js+dts) into interop/gen (not committed)
 7. pytest           tests/interop: binary and LoRAX JSON round trips between Python and
                     Node, the documented differences from protobuf-es JSON, and Node as a
                     WebSocket client of `lorax gateway` in front of the fake server

Needs Node.js >= 20 with npm on PATH, and the package installed in the running Python.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INTEROP = ROOT / "interop"
PROTO = ROOT / "proto"
RELEASED = PROTO / "released" / "lorax_v1.binpb"
BUF = INTEROP / "node_modules" / ".bin" / "buf"


class StepFailed(Exception):
    pass


def run(argv: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None, check: bool = True) -> int:
    print(f"$ {' '.join(str(a) for a in argv)}", flush=True)
    code = subprocess.run(argv, cwd=cwd, env=env, check=False).returncode
    if check and code != 0:
        raise StepFailed(f"{Path(argv[0]).name} exited with status {code}")
    return code


def capture(argv: list[str], *, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    print(f"$ {' '.join(str(a) for a in argv)}", flush=True)
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)


def buf(*args: str) -> list[str]:
    if not BUF.exists():
        raise StepFailed(f"{BUF.relative_to(ROOT)} is missing: run without --no-install (npm ci)")
    return [str(BUF), *args]


# ---------------------------------------------------------------------------------
# Steps


def step_npm_ci() -> None:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise StepFailed("node and npm must be on PATH (Node.js >= 20)")
    node_version = capture(["node", "--version"]).stdout.strip()
    print(f"node {node_version}, npm {capture([npm, '--version']).stdout.strip()}")
    if not re.match(r"v(2\d|[3-9]\d)\.", node_version):
        raise StepFailed(f"Node.js >= 20 is needed, found {node_version or 'none'}")
    # --ignore-scripts: buf's postinstall only swaps its JS launcher for the binary.
    run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline"], cwd=INTEROP)
    run(buf("--version"))


def step_buf_lint() -> None:
    run(buf("lint"))
    print("buf lint: clean")


def step_buf_breaking() -> None:
    run(buf("breaking", "proto", "--against", str(RELEASED.relative_to(ROOT))))
    print(f"buf breaking: no breaking change since {RELEASED.relative_to(ROOT)}")


# Each mutation of a temp copy, and the buf rule that must report it.
CANARY_MUTATIONS = [
    ("generate.proto", "optional uint64 seed = 24;", "optional uint64 seed = 26;", "FIELD_NO_DELETE"),
    (
        "generate.proto",
        "  uint32 prompt_tokens = 2;\n  uint32 generated_tokens = 3;\n  // Tokens accepted",
        "  uint64 prompt_tokens = 2;\n  uint32 generated_tokens = 3;\n  // Tokens accepted",
        "FIELD_SAME_TYPE",
    ),
    ("websocket.proto", "uint64 call_id = 1;", "uint64 id = 1;", "FIELD_SAME_NAME"),
]


def _mutated_copy(tmp: Path, mutations: list[tuple[str, str, str, str]]) -> Path:
    copy = tmp / "repo"
    shutil.copytree(PROTO, copy / "proto")
    shutil.copy(ROOT / "buf.yaml", copy / "buf.yaml")
    for name, old, new, _ in mutations:
        path = copy / "proto" / "lorax" / "v1" / name
        text = path.read_text(encoding="utf-8")
        if text.count(old) != 1:
            raise StepFailed(f"canary: {old!r} is not in {name} exactly once; update CANARY_MUTATIONS")
        path.write_text(text.replace(old, new), encoding="utf-8")
    return copy


def step_breaking_canary() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        copy = _mutated_copy(Path(tmp), CANARY_MUTATIONS)
        proc = capture(buf("breaking", "proto", "--against", str(RELEASED), "--error-format", "json"), cwd=copy)
    if proc.returncode == 0:
        raise StepFailed("buf breaking accepted a renumbered, a retyped and a renamed field")
    found = {json.loads(line)["type"] for line in proc.stdout.splitlines() if line.startswith("{")}
    for _, _, _, rule in CANARY_MUTATIONS:
        if rule not in found:
            raise StepFailed(f"buf breaking did not report {rule}; it said:\n{proc.stdout}{proc.stderr}")
        print(f"  caught: {rule}")
    # And the JSON-options check catches a changed wire_value.
    with tempfile.TemporaryDirectory() as tmp:
        copy = _mutated_copy(Path(tmp), [("generate.proto", '(wire_value) = "ties"', '(wire_value) = "TIES"', "")])
        image = Path(tmp) / "image.binpb"
        subprocess.run(buf("build", "proto", "--exclude-source-info", "-o", str(image)), cwd=copy, check=True)
        problems = json_option_changes(RELEASED.read_bytes(), image.read_bytes())
    if not any("MERGE_STRATEGY_TIES" in p for p in problems):
        raise StepFailed(f"the json options check missed a changed wire_value: {problems}")
    print("  caught: changed wire_value (json options check)")
    print("breaking canary: the checks are live")


def _elements(fds_bytes: bytes) -> dict[str, tuple[str, Any]]:
    """Every element that carries LoRAX JSON options: full name -> (kind, options message)."""
    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet.FromString(fds_bytes)
    out: dict[str, tuple[str, Any]] = {}

    def walk_message(prefix: str, msg: Any) -> None:
        name = f"{prefix}.{msg.name}"
        out[name] = ("message", msg.options)
        for field in msg.field:
            out[f"{name}.{field.name}#{field.number}"] = ("field", field.options)
        for nested in msg.nested_type:
            walk_message(name, nested)
        for enum in msg.enum_type:
            walk_enum(name, enum)

    def walk_enum(prefix: str, enum: Any) -> None:
        for value in enum.value:
            out[f"{prefix}.{value.name}#{value.number}"] = ("enum_value", value.options)

    for file in fds.file:
        if not file.package.startswith("lorax."):
            continue
        for msg in file.message_type:
            walk_message(file.package, msg)
        for enum in file.enum_type:
            walk_enum(file.package, enum)
        for service in file.service:
            for method in service.method:
                out[f"{file.package}.{service.name}.{method.name}"] = ("method", method.options)
    return out


def json_option_changes(released: bytes, current: bytes) -> list[str]:
    """The LoRAX JSON options that changed on elements present in both descriptor sets."""
    from google.protobuf import text_format

    from lorax.v1 import options_pb2

    def show(message: Any) -> str:
        return text_format.MessageToString(message, as_one_line=True) or "(unset)"

    before, after = _elements(released), _elements(current)
    problems = []
    for name, (kind, old) in sorted(before.items()):
        if name not in after:
            continue  # a removal is buf breaking's to report
        new = after[name][1]
        if kind == "field":
            a, b = old.Extensions[options_pb2.json], new.Extensions[options_pb2.json]
            if a != b:
                problems.append(f"{name}: (lorax.v1.json) changed from {show(a)} to {show(b)}")
        elif kind == "message":
            a, b = old.Extensions[options_pb2.unwrap], new.Extensions[options_pb2.unwrap]
            if a != b:
                problems.append(f"{name}: (lorax.v1.unwrap) changed from {a} to {b}")
        elif kind == "method":
            a, b = old.Extensions[options_pb2.route], new.Extensions[options_pb2.route]
            if a != b:
                problems.append(f"{name}: (lorax.v1.route) changed from {show(a)} to {show(b)}")
        else:
            a_value, b_value = old.Extensions[options_pb2.wire_value], new.Extensions[options_pb2.wire_value]
            if a_value != b_value:
                problems.append(f"{name}: (lorax.v1.wire_value) changed from {a_value!r} to {b_value!r}")
            dropped = set(old.Extensions[options_pb2.wire_alias]) - set(new.Extensions[options_pb2.wire_alias])
            if dropped:  # adding a spelling is fine: decoders only accept more
                problems.append(f"{name}: (lorax.v1.wire_alias) {sorted(dropped)} removed")
    return problems


def step_json_options() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "current.binpb"
        run(buf("build", "proto", "--exclude-source-info", "-o", str(image)))
        problems = json_option_changes(RELEASED.read_bytes(), image.read_bytes())
        checked = len(_elements(RELEASED.read_bytes()))
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    if problems:
        raise StepFailed(f"{len(problems)} LoRAX JSON option(s) changed since the release (see above)")
    print(f"json options: unchanged on all {checked} released elements")


def step_buf_generate() -> None:
    env = {**os.environ, "PATH": f"{INTEROP / 'node_modules' / '.bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    run(buf("generate", "--template", "buf.gen.yaml"), cwd=INTEROP, env=env)
    generated = sorted(p.relative_to(INTEROP).as_posix() for p in (INTEROP / "gen").rglob("*_pb.js"))
    print(f"buf generate: {len(generated)} modules in interop/gen ({', '.join(Path(g).name for g in generated)})")
    for module in ("loraxjson.mjs", "gateway_client.mjs", "fixtures.mjs", "roundtrip.mjs"):
        run(["node", "--check", module], cwd=INTEROP)


def step_pytest(extra: list[str]) -> None:
    env = {**os.environ, "LORAX_INTEROP": "1"}
    run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/interop", *extra], env=env)


STEPS: list[tuple[str, Callable[[], None]]] = [
    ("npm ci", step_npm_ci),
    ("buf lint", step_buf_lint),
    ("buf breaking", step_buf_breaking),
    ("breaking canary", step_breaking_canary),
    ("json options", step_json_options),
    ("buf generate", step_buf_generate),
]


def check_all(install: bool, pytest_args: list[str]) -> int:
    steps = [(n, f) for n, f in STEPS if install or n != "npm ci"]
    steps.append(("pytest tests/interop", lambda: step_pytest(pytest_args)))
    timings: list[tuple[str, float, str]] = []
    status = 0
    for name, func in steps:
        print(f"\n==> {name}", flush=True)
        start = time.monotonic()
        try:
            func()
            outcome = "ok"
        except (StepFailed, subprocess.CalledProcessError) as exc:
            outcome = "FAILED"
            print(f"FAILED: {name}: {exc}", file=sys.stderr, flush=True)
            status = 1
        timings.append((name, time.monotonic() - start, outcome))
        if status:
            break
    print("\n==> summary")
    for name, seconds, outcome in timings:
        print(f"  {outcome:6} {seconds:6.1f} s  {name}")
    for name, _ in steps[len(timings) :]:
        print(f"  {'skip':6} {'':8}  {name}")
    total = sum(t for _, t, _ in timings)
    print(f"interop: {'FAILED' if status else 'passed'} in {total:.1f} s", flush=True)
    return status


def freeze() -> int:
    """Record the current schemas as the released state (run when cutting a release)."""
    if not BUF.exists():
        print("interop/node_modules is missing: run `python tools/interop.py` first", file=sys.stderr)
        return 1
    RELEASED.parent.mkdir(parents=True, exist_ok=True)
    run(buf("build", "proto", "--exclude-source-info", "-o", str(RELEASED.relative_to(ROOT))))
    print(f"wrote {RELEASED.relative_to(ROOT)} ({RELEASED.stat().st_size} bytes); commit it with the release")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", choices=["check", "freeze"], default="check")
    parser.add_argument("--no-install", action="store_true", help="skip npm ci (reuse interop/node_modules)")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: passed to pytest")
    args = parser.parse_args(argv)
    if args.command == "freeze":
        return freeze()
    extra = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    return check_all(not args.no_install, extra)


if __name__ == "__main__":
    sys.exit(main())
