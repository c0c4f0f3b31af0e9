"""Run the OFFICIAL lorax-client (from PyPI) against our fake server, ``lorax.testing``.

The official package is also imported as ``lorax``, so it lives in a virtualenv of its own
(``.tox/peer-official`` by default) and its scenario runs there in isolated mode (``-I``:
no PYTHONPATH, no user site, no script directory on sys.path), so it cannot see this
repository's package. The fake server runs as a subprocess of this interpreter
(``python -m lorax.testing --port 0``), which prints its URL.

Every documented call of the official client must work against the fake server, except
the official client's own bugs listed in docs/wire.md ("The official Python client"), which must reproduce exactly as
described (if one stops reproducing, the check fails so that the list gets updated):

*  ``AsyncClient.classify`` raises TypeError on the list LoRAX returns;
*  ``AsyncClient`` has no ``metrics`` (AttributeError) and no ``classify_batch``;
*  ``AsyncClient.generate_stream`` fails with ValueError "Chunk too big" on an event
        over 128 KiB (the sync client reads the same stream fine);
* ``return_k_alternatives`` fails to parse when an alternative's logprob is null.

Usage: ``python tools/peer_check.py [--venv DIR] [--client-version X.Y.Z]``. Exit status 0
when every check passed, 1 otherwise, 2 when the environment could not be prepared.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VENV = ROOT / ".tox" / "peer-official"
DEFAULT_VERSION = "0.6.3"
# The official client's newest pyproject pins aiohttp exactly (docs/wire.md, "The official
# Python client"); 0.6.3 on PyPI only asks for >=3.9. Install the pin so that the async
# client behaves as documented (its 128 KiB line limit is aiohttp 3.10's; newer aiohttp
# reads longer lines).
PEER_PINS = ("aiohttp==3.10.11",)

# Runs inside the official client's venv. Prints one JSON object per check:
# {"name", "status": "ok" | "known-bug" | "FAIL", "detail"}.
SCENARIO = textwrap.dedent(
    r"""
    import asyncio, json, sys, traceback

    import lorax
    from lorax import AsyncClient, Client
    from lorax.errors import GenerationError, OverloadedError, ValidationError as LoraxValidationError

    URL = sys.argv[1]
    FORBIDDEN = sys.argv[2]
    results = []

    def report(name, status, detail=""):
        results.append({"name": name, "status": status, "detail": detail})
        print(json.dumps(results[-1]), flush=True)

    def check(name):
        def wrap(fn):
            try:
                detail = fn()
                report(name, "ok", detail or "")
            except Exception as exc:
                report(name, "FAIL", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
            return fn
        return wrap

    def known_bug(name, exc_type, text=None):
        def wrap(fn):
            try:
                fn()
            except exc_type as exc:
                if text is None or text in str(exc):
                    report(name, "known-bug", f"{type(exc).__name__}: {str(exc)[:120]}")
                else:
                    report(name, "FAIL", f"expected {exc_type.__name__} with {text!r}, got: {exc}")
            except Exception as exc:
                report(name, "FAIL", f"expected {exc_type.__name__}, got {type(exc).__name__}: {exc}")
            else:
                report(name, "FAIL", f"expected {exc_type.__name__}: the known bug did not reproduce")
            return fn
        return wrap

    @check("official package isolated from this repository")
    def _():
        assert FORBIDDEN not in lorax.__file__, lorax.__file__
        return lorax.__file__

    client = Client(URL)

    @check("sync generate")
    def _():
        r = client.generate("What is Deep Learning?", max_new_tokens=10)
        assert isinstance(r.generated_text, str) and r.generated_text
        assert r.details.generated_tokens == 10 and len(r.details.tokens) == 10
        assert r.details.finish_reason == "length" and r.details.seed is None
        return repr(r.generated_text)

    @check("sync generate with parameters")
    def _():
        r = client.generate(
            "What is Deep Learning?", do_sample=True, seed=42, temperature=0.7, top_k=50, top_p=0.9,
            max_new_tokens=12, decoder_input_details=True, return_full_text=True, repetition_penalty=1.1,
        )
        assert r.generated_text.startswith("What is Deep Learning?")
        assert r.details.seed == 42
        assert r.details.prefill[0].logprob is None and r.details.prefill[0].text == "<s>"
        again = client.generate(
            "What is Deep Learning?", do_sample=True, seed=42, temperature=0.7, top_k=50, top_p=0.9,
            max_new_tokens=12, decoder_input_details=True, return_full_text=True, repetition_penalty=1.1,
        )
        assert again.generated_text == r.generated_text

    @check("sync generate with stop sequence, adapter and JSON mode")
    def _():
        full = client.generate("Tell me", max_new_tokens=30).generated_text
        stop = " " + full.split(" ")[2]
        r = client.generate("Tell me", max_new_tokens=30, stop_sequences=[stop])
        assert r.details.finish_reason == "stop_sequence" and r.generated_text.endswith(stop)
        assert client.generate("Tell me", adapter_id="org/adapter", max_new_tokens=3).generated_text
        schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}
        r = client.generate("Make a person", response_format={"type": "json_object", "schema": schema})
        value = json.loads(r.generated_text)
        assert isinstance(value["name"], str) and isinstance(value["age"], int)

    @check("sync generate best_of")
    def _():
        r = client.generate("Hello", best_of=2, do_sample=True, max_new_tokens=5)
        assert len(r.details.best_of_sequences) == 1

    @check("sync generate_stream")
    def _():
        events = list(client.generate_stream("What is Deep Learning?", max_new_tokens=8))
        assert len(events) == 8
        assert all(e.generated_text is None for e in events[:-1])
        assert events[-1].generated_text == "".join(e.token.text for e in events)
        assert events[-1].details.generated_tokens == 8
        return f"{len(events)} events"

    @check("sync generate_stream to EOS")
    def _():
        events = list(client.generate_stream("Hi"))
        assert events[-1].token.special and events[-1].details.finish_reason == "eos_token"

    @check("sync embed")
    def _():
        r = client.embed("Hello, world!")
        assert len(r.embeddings) == 32 and all(isinstance(v, float) for v in r.embeddings)

    @check("sync classify")
    def _():
        r = client.classify("Johnny supports the Golden State Warriors. He lives in London.")
        assert [e["word"] for e in r.entities][:2] == ["johnny", "supports the"]

    @check("sync classify_batch")
    def _():
        r = client.classify_batch(["Angela Merkel visited Paris.", "Johnny lives in London."])
        assert len(r) == 2 and r[0].entities[0]["word"] == "angela merkel"

    @check("sync validation error maps to ValidationError")
    def _():
        try:
            client.generate("x", max_new_tokens=5000)
        except LoraxValidationError as exc:
            assert "must be <= 2048" in str(exc)
        else:
            raise AssertionError("no error")

    @check("sync overloaded maps to OverloadedError")
    def _():
        try:
            Client(URL, headers={"x-lorax-fake-fault": "overloaded"}).generate("x", max_new_tokens=2)
        except OverloadedError:
            pass
        else:
            raise AssertionError("no error")

    @check("sync stream error event maps to GenerationError")
    def _():
        faulty = Client(URL, headers={"x-lorax-fake-fault": "error-after=2"})
        seen = []
        try:
            for event in faulty.generate_stream("x", max_new_tokens=6):
                seen.append(event)
        except GenerationError:
            assert len(seen) == 2
        else:
            raise AssertionError("no error")

    BIG = "a" * 140_000  # one token for the toy tokenizer, but a >128 KiB final event

    @check("sync generate_stream with a >128 KiB final event")
    def _():
        events = list(client.generate_stream(BIG, max_new_tokens=2, return_full_text=True))
        assert events[-1].generated_text.startswith(BIG)

    @known_bug("generate with return_k_alternatives (null alternative logprob)", Exception, "logprob")
    def _():
        client.generate("What is Deep Learning?", max_new_tokens=20, return_k_alternatives=5)

    async def async_checks():
        aclient = AsyncClient(URL)

        async def run(name, coro_fn, bug=None, text=None):
            try:
                value = await coro_fn()
            except Exception as exc:
                if bug is not None and isinstance(exc, bug) and (text is None or text in str(exc)):
                    report(name, "known-bug", f"{type(exc).__name__}: {str(exc)[:120]}")
                else:
                    report(name, "FAIL", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
                return
            if bug is not None:
                report(name, "FAIL", f"expected {bug.__name__}: the known bug did not reproduce")
            else:
                report(name, "ok", value or "")

        async def generate():
            r = await aclient.generate("What is Deep Learning?", max_new_tokens=10)
            assert r.details.generated_tokens == 10
            same = client.generate("What is Deep Learning?", max_new_tokens=10)
            assert same.generated_text == r.generated_text

        async def generate_stream():
            events = [e async for e in aclient.generate_stream("What is Deep Learning?", max_new_tokens=6)]
            assert len(events) == 6 and events[-1].generated_text == "".join(e.token.text for e in events)

        async def embed():
            r = await aclient.embed("Hello, world!")
            assert len(r.embeddings) == 32

        async def classify():
            await aclient.classify("Johnny lives in London.")

        async def metrics():
            await aclient.metrics()

        async def classify_batch():
            await aclient.classify_batch(["a"])

        async def big_stream():
            return [e async for e in aclient.generate_stream(BIG, max_new_tokens=2, return_full_text=True)]

        await run("async generate", generate)
        await run("async generate_stream", generate_stream)
        await run("async embed", embed)
        await run("async classify (TypeError on the list body)", classify, TypeError, "must be a mapping")
        await run("async metrics (AttributeError)", metrics, AttributeError)
        await run("async classify_batch (AttributeError)", classify_batch, AttributeError)
        await run("async generate_stream >128 KiB event ()", big_stream, ValueError, "Chunk too big")

    asyncio.run(async_checks())
    sys.exit(1 if any(r["status"] == "FAIL" for r in results) else 0)
    """
)


def ensure_venv(venv: Path, version: str) -> Path:
    """Create (or reuse) the venv with the official client; return its python."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    wanted = [f"lorax-client=={version}", *PEER_PINS]
    versions = "import importlib.metadata as m; print(*(f'{d}=={m.version(d)}' for d in ('lorax-client', 'aiohttp')))"
    probe = subprocess.run(  # a failure here only means "install"
        [str(python), "-I", "-c", versions],
        check=False,
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    if probe.returncode != 0 or probe.stdout.split() != wanted:
        print(f"installing {' '.join(wanted)} from PyPI into {venv}", flush=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *wanted],
            check=True,
            cwd=tempfile.gettempdir(),
        )
    return python


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    """Run ``python -m lorax.testing --port 0`` and read its URL from the first line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lorax.testing", "--port", "0", "--max-input-length", "1024"],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if " on http://" not in line:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        raise RuntimeError(f"fake server did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1].strip()


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server with SIGINT (it exits cleanly), killing it if it does not."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def main(argv: list[str] | None = None) -> int:
    """Prepare the venv, start the fake server, run the scenario, print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help=f"default {DEFAULT_VENV}")
    parser.add_argument("--client-version", default=DEFAULT_VERSION, help=f"default {DEFAULT_VERSION}")
    args = parser.parse_args(argv)
    try:
        python = ensure_venv(args.venv, args.client_version)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"peer check: cannot prepare {args.venv}: {exc}", file=sys.stderr)
        return 2
    proc, url = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "official_scenario.py"
            script.write_text(SCENARIO)
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
            run = subprocess.run(  # its exit status is examined below, with its output
                [str(python), "-I", str(script), url, str(ROOT / "lorax")],
                check=False,
                capture_output=True,
                text=True,
                cwd=tmp,
                env=env,
                timeout=300,
            )
    finally:
        stop_server(proc)
    results = []
    for line in run.stdout.splitlines():
        try:
            results.append(json.loads(line))
        except ValueError:
            print(line)
    print(f"\nofficial lorax-client {args.client_version} against lorax.testing at {url}:")
    for r in results:
        print(f"  [{r['status']:>9}] {r['name']}")
        if r["status"] == "FAIL":
            print(textwrap.indent(r["detail"].rstrip(), "              "))
    failed = [r for r in results if r["status"] == "FAIL"]
    bugs = [r for r in results if r["status"] == "known-bug"]
    ok = [r for r in results if r["status"] == "ok"]
    print(f"\n{len(ok)} passed, {len(failed)} failed, {len(bugs)} known official-client bugs reproduced")
    if run.returncode != 0 and not failed:
        print(f"scenario exited with {run.returncode}:\n{run.stderr}", file=sys.stderr)
        return 1
    if run.stderr.strip() and failed:
        print(run.stderr, file=sys.stderr)
    return 1 if failed or not results else 0


if __name__ == "__main__":
    raise SystemExit(main())
