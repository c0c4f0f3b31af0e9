"""Micro-benchmark of lorax.codec against orjson (the floor) and the official client's pydantic types.

Run with ``python bench/bench_codec.py`` (``--help`` for options). Workloads:

1. decode one ``/generate_stream`` token event (the SSE payload) into a StreamResponse;
2. decode a 256-token ``/generate`` body with details (16 prefill tokens, the first logprob
   null, a u64 seed) into a GenerateResponse;
3. encode a GenerateRequest with 12 parameters;

plus, for information, a token event carrying a key the .proto does not know (what a newer
server would send).

Method: every contender is timed in samples of about 10 ms of
back-to-back calls (``timeit``, GC off), 31 samples each, interleaved round-robin across all
contenders so that background load hits them alike; the table shows the median per call and
the spread (IQR and min-max). The official client (``lorax-client`` from PyPI) shares the
import name ``lorax``, so its contenders run in a worker process in ``bench/.venv-official``
(created on first use by ``bench/_official.py``); the worker takes part in the same
round-robin, and ``json.loads`` is timed in both interpreters as a cross-check.

Correctness is asserted before timing: every decoder yields the same values (seeds above 2**53
exact, the null prefill logprob None) and our encoder yields LoRAX's exact bytes.

The messages are the msgspec Structs of ``lorax.types`` (issue 13). The summary at the end
gives the three ratios against orjson measured in the same run: decoding a token event and the
256-token body against ``orjson.loads`` of the same bytes, and building plus encoding the
12-parameter request against ``orjson.dumps`` of the equivalent dict.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import sys
import timeit
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson  # noqa: E402

from lorax import codec  # noqa: E402
from lorax import types as T  # noqa: E402

SEED = 13442342353453453453

# ---------------------------------------------------------------------------------------------
# Inputs.

TOKEN_EVENT = (
    b'{"token":{"id":415,"text":" The","logprob":-0.2544,"special":false,"skipped":false},'
    b'"generated_text":null,"details":null}'
)
TOKEN_EVENT_UNKNOWN_KEY = (
    b'{"token":{"id":415,"text":" The","logprob":-0.2544,"special":false,"skipped":false,"top_tokens":[]},'
    b'"generated_text":null,"details":null}'
)

WORDS = [
    " the",
    " capital",
    " of",
    " France",
    " is",
    " Paris",
    ".",
    " model",
    " adapter",
    " token",
    " é",
    "\n",
    " LoRAX",
    " serves",
    " many",
    " fine",
    "-",
    "tuned",
    " models",
    " on",
    " one",
    " GPU",
    ",",
    " with",
]


def _logprob(rng: random.Random) -> float:
    # Four decimals, at least 1e-4 in magnitude: the text is also ryu's f32 text.
    return -max(round(rng.expovariate(1.5), 4), 0.0001)


def resp256_body(tokens: int = 256, prefill: int = 16) -> bytes:
    """A /generate body with details as LoRAX prints it: 16 prefill tokens (the first with a
    null logprob), 256 generated tokens, a u64 seed."""
    rng = random.Random(256)
    prefill_tokens = [{"id": 1, "text": "<s>", "logprob": None}] + [
        {"id": rng.randrange(100, 32000), "text": rng.choice(WORDS).strip() or "x", "logprob": _logprob(rng)}
        for _ in range(prefill - 1)
    ]
    generated = [
        {
            "id": rng.randrange(100, 32000),
            "text": rng.choice(WORDS),
            "logprob": _logprob(rng),
            "special": False,
            "skipped": False,
        }
        for _ in range(tokens - 1)
    ]
    generated.append({"id": 2, "text": "</s>", "logprob": -0.0089, "special": True, "skipped": False})
    body = {
        "generated_text": "".join(t["text"] for t in generated[:-1]),  # type: ignore[misc]
        "details": {
            "finish_reason": "eos_token",
            "prompt_tokens": prefill,
            "generated_tokens": tokens,
            "skipped_tokens": 0,
            "seed": SEED,
            "prefill": prefill_tokens,
            "tokens": generated,
        },
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


PROMPT = "[INST] What is the capital of France? [/INST]"
# Twelve parameters that both clients have (the official one lacks frequency/presence_penalty).
REQUEST_PARAMS: dict[str, Any] = {
    "adapter_id": "vineetsharma/qlora-adapter-Mistral-7B-Instruct-v0.1-gsm8k",
    "adapter_source": "hub",
    "temperature": 0.7,
    "repetition_penalty": 1.1,
    "top_k": 50,
    "top_p": 0.95,
    "do_sample": True,
    "max_new_tokens": 64,
    "return_full_text": False,
    "stop": ["</s>", "\n\n"],
    "details": True,
    "seed": 42,
}
REQUEST_BYTES = (
    b'{"inputs":"[INST] What is the capital of France? [/INST]","parameters":{'
    b'"adapter_id":"vineetsharma/qlora-adapter-Mistral-7B-Instruct-v0.1-gsm8k","adapter_source":"hub",'
    b'"temperature":0.7,"repetition_penalty":1.1,"top_k":50,"top_p":0.95,"do_sample":true,"max_new_tokens":64,'
    b'"return_full_text":false,"stop":["</s>","\\n\\n"],"details":true,"seed":42}}'
)


# ---------------------------------------------------------------------------------------------
# The official client's side, run in its own interpreter (a worker that obeys stdin lines).

WORKER = r"""
import gc, json, sys, timeit, warnings
import lorax.types as lt
warnings.simplefilter("ignore")  # pydantic's .dict() deprecation warning, as users mostly see it
setup = json.loads(sys.stdin.readline())
token = setup["token"].encode()
token_unknown = setup["token_unknown"].encode()
resp = setup["resp256"].encode()
params = setup["params"]
prompt = setup["prompt"]
prebuilt = lt.Request(inputs=prompt, parameters=lt.Parameters(**params), stream=False)

def client_encode():
    request = lt.Request(inputs=prompt, parameters=lt.Parameters(**params), stream=False)
    return json.dumps(request.dict(by_alias=True))

contenders = {
    "token:json.loads": lambda: json.loads(token),
    "token:pydantic client path": lambda: lt.StreamResponse(**json.loads(token)),
    "token:pydantic model_validate_json": lambda: lt.StreamResponse.model_validate_json(token),
    "unknown:pydantic client path": lambda: lt.StreamResponse(**json.loads(token_unknown)),
    "resp256:json.loads": lambda: json.loads(resp),
    "resp256:pydantic client path": lambda: lt.Response(**json.loads(resp)),
    "resp256:pydantic model_validate_json": lambda: lt.Response.model_validate_json(resp),
    "request:pydantic client path": client_encode,
    "request:pydantic model_dump_json": lambda: prebuilt.model_dump_json(exclude_none=True),
}

def summary(r):
    d = r.details
    return {"seed": d.seed, "tokens": len(d.tokens), "prefill0": d.prefill[0].logprob,
            "prefill1": d.prefill[1].logprob, "last": [d.tokens[-1].text, d.tokens[-1].special],
            "finish_reason": d.finish_reason.value}

checks = {
    "token": [lt.StreamResponse(**json.loads(token)).token.text,
              lt.StreamResponse.model_validate_json(token).token.logprob],
    "resp256_client": summary(lt.Response(**json.loads(resp))),
    "resp256_mvj": summary(lt.Response.model_validate_json(resp)),
    "request": json.loads(client_encode()),
    "request_dump": json.loads(prebuilt.model_dump_json(exclude_none=True)),
}
loops = {}
for name, fn in contenders.items():
    n = 1
    while True:
        t = timeit.Timer(fn).timeit(n)
        if t >= 0.002:
            break
        n *= 2
    loops[name] = max(1, int(n * setup["sample_seconds"] / t))
print(json.dumps({"ready": sorted(contenders), "checks": checks, "loops": loops}), flush=True)
for line in sys.stdin:
    name = line.strip()
    if not name:
        break
    t = timeit.Timer(contenders[name]).timeit(loops[name])
    print(json.dumps(t / loops[name]), flush=True)
"""


class OfficialWorker:
    """The official client's contenders, timed one sample at a time in the official venv."""

    def __init__(self, python: Path, setup: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [str(python), "-I", "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=str(python.parent.parent),
            text=True,
        )
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(setup) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the official-client worker died during setup")
        hello = json.loads(line)
        self.names: list[str] = hello["ready"]
        self.checks: dict[str, Any] = hello["checks"]

    def sample(self, name: str) -> float:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        return float(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# ---------------------------------------------------------------------------------------------
# Local contenders.


@dataclass
class Contender:
    workload: str
    label: str
    run: Callable[[], Any] | None = None  # local; None when timed by the worker
    remote: str | None = None
    loops: int = 0
    samples: list[float] = field(default_factory=list)


def calibrate(fn: Callable[[], Any], sample_seconds: float) -> int:
    n = 1
    while True:
        t = timeit.Timer(fn).timeit(n)
        if t >= 0.002:
            return max(1, int(n * sample_seconds / t))
        n *= 2


def local_contenders(resp: bytes) -> list[Contender]:
    from_json = codec.from_json
    to_json = codec.to_json
    stream_cls = T.StreamResponse
    generate_cls = T.GenerateResponse
    request = T.GenerateRequest(inputs=PROMPT, parameters=T.GenerateParameters(**REQUEST_PARAMS))
    request_dict = {"inputs": PROMPT, "parameters": REQUEST_PARAMS}
    loads = orjson.loads
    unknown_decode = codec._build_decoder(stream_cls)
    contenders = [
        Contender("token", "orjson.loads (floor)", lambda: loads(TOKEN_EVENT)),
        Contender("token", "json.loads (stdlib)", lambda: json.loads(TOKEN_EVENT)),
        Contender("token", "lorax.codec.from_json", lambda: from_json(stream_cls, TOKEN_EVENT)),
        Contender("resp256", "orjson.loads (floor)", lambda: loads(resp)),
        Contender("resp256", "json.loads (stdlib)", lambda: json.loads(resp)),
        Contender("resp256", "lorax.codec.from_json", lambda: from_json(generate_cls, resp)),
        Contender("request", "orjson.dumps of the dict (floor)", lambda: orjson.dumps(request_dict)),
        Contender("request", "lorax.codec.to_json", lambda: to_json(request)),
        Contender(
            "request",
            "build message + to_json",
            lambda: to_json(T.GenerateRequest(inputs=PROMPT, parameters=T.GenerateParameters(**REQUEST_PARAMS))),
        ),
        Contender("unknown", "orjson.loads (floor)", lambda: loads(TOKEN_EVENT_UNKNOWN_KEY)),
        # Its own decoder (msgspec skips the unknown key in C), apart from the token rows' cached one.
        Contender("unknown", "lorax.codec decoder (newer server)", lambda: unknown_decode(TOKEN_EVENT_UNKNOWN_KEY)),
    ]
    decoder = getattr(codec, "decoder", None)
    if decoder is not None:  # the per-class decoder for hot loops
        stream_decode = decoder(stream_cls)
        generate_decode = decoder(generate_cls)
        contenders.insert(3, Contender("token", "lorax.codec.decoder(cls)", lambda: stream_decode(TOKEN_EVENT)))
        contenders.insert(7, Contender("resp256", "lorax.codec.decoder(cls)", lambda: generate_decode(resp)))
    return contenders


REMOTE_LABELS = {
    "token:json.loads": ("token", "json.loads (official venv)"),
    "token:pydantic client path": ("token", "pydantic: json.loads + StreamResponse(**d)"),
    "token:pydantic model_validate_json": ("token", "pydantic: model_validate_json"),
    "unknown:pydantic client path": ("unknown", "pydantic: json.loads + StreamResponse(**d)"),
    "resp256:json.loads": ("resp256", "json.loads (official venv)"),
    "resp256:pydantic client path": ("resp256", "pydantic: json.loads + Response(**d)"),
    "resp256:pydantic model_validate_json": ("resp256", "pydantic: model_validate_json"),
    "request:pydantic client path": ("request", "pydantic: Request(...).dict() + json.dumps"),
    "request:pydantic model_dump_json": ("request", "pydantic: prebuilt model_dump_json"),
}
WORKLOADS = {
    "token": "decode a token SSE event into StreamResponse",
    "resp256": "decode a 256-token /generate body into GenerateResponse",
    "request": "encode a GenerateRequest with 12 parameters",
    "unknown": "decode a token event with an unknown key (newer server)",
}
FLOOR = "orjson.loads (floor)"
PYDANTIC_CLIENT = "pydantic: json.loads + "


# ---------------------------------------------------------------------------------------------
# Correctness before timing.


def check_local(resp: bytes) -> None:
    event = codec.from_json(T.StreamResponse, TOKEN_EVENT)
    assert (event.token.id, event.token.text, event.token.logprob) == (415, " The", -0.2544)
    assert event.generated_text is None
    assert event.details is None
    assert codec.to_json(event) == TOKEN_EVENT
    assert codec._build_decoder(T.StreamResponse)(TOKEN_EVENT_UNKNOWN_KEY) == event
    r = codec.from_json(T.GenerateResponse, resp)
    assert r.details.seed == SEED
    assert len(r.details.tokens) == 256
    assert len(r.details.prefill) == 16
    assert r.details.prefill[0].logprob is None  # null, never 0.0
    assert codec.to_json(r) == resp, "the 256-token body is not LoRAX's exact bytes"
    request = T.GenerateRequest(inputs=PROMPT, parameters=T.GenerateParameters(**REQUEST_PARAMS))
    assert codec.to_json(request) == REQUEST_BYTES
    # The floor encodes the same request: same keys, same order, same values.
    assert orjson.dumps({"inputs": PROMPT, "parameters": REQUEST_PARAMS}) == REQUEST_BYTES


def check_official(checks: dict[str, Any], resp: bytes) -> None:
    ours = codec.from_json(T.GenerateResponse, resp).details
    expected = {
        "seed": SEED,
        "tokens": 256,
        "prefill0": None,
        "prefill1": ours.prefill[1].logprob,
        "last": ["</s>", True],
        "finish_reason": "eos_token",
    }
    assert checks["token"] == [" The", -0.2544], checks["token"]
    assert checks["resp256_client"] == expected, checks["resp256_client"]
    assert checks["resp256_mvj"] == expected, checks["resp256_mvj"]
    ours_request = orjson.loads(REQUEST_BYTES)
    for key in ("request", "request_dump"):
        sent = checks[key]
        params = {k: v for k, v in sent["parameters"].items() if v is not None}
        # The official client prints every defaulted field; what we send is a subset of it.
        assert sent["inputs"] == ours_request["inputs"]
        assert {k: params[k] for k in ours_request["parameters"]} == ours_request["parameters"], params


# ---------------------------------------------------------------------------------------------
# Run and report.


def run(samples: int, sample_seconds: float, official: bool) -> tuple[list[Contender], dict[str, Any]]:
    resp = resp256_body()
    check_local(resp)
    contenders = local_contenders(resp)
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "orjson": orjson.__version__,
        "resp256_bytes": len(resp),
        "token_event_bytes": len(TOKEN_EVENT),
        "request_bytes": len(REQUEST_BYTES),
    }
    from google.protobuf import __version__ as protobuf_version
    from google.protobuf.internal import api_implementation

    info["protobuf"] = f"{protobuf_version} ({api_implementation.Type()})"
    worker = None
    if official:
        from _official import official_python, versions

        python = official_python()
        info["official"] = versions(python)
        worker = OfficialWorker(
            python,
            {
                "token": TOKEN_EVENT.decode(),
                "token_unknown": TOKEN_EVENT_UNKNOWN_KEY.decode(),
                "resp256": resp.decode(),
                "params": REQUEST_PARAMS,
                "prompt": PROMPT,
                "sample_seconds": sample_seconds,
            },
        )
        check_official(worker.checks, resp)
        for name in worker.names:
            workload, label = REMOTE_LABELS[name]
            contenders.append(Contender(workload, label, remote=name))
    for c in contenders:
        if c.run is not None:
            c.loops = calibrate(c.run, sample_seconds)
    try:
        for _ in range(samples):
            for c in contenders:
                if c.run is not None:
                    c.samples.append(timeit.Timer(c.run).timeit(c.loops) / c.loops)
                else:
                    assert worker is not None
                    assert c.remote is not None
                    c.samples.append(worker.sample(c.remote))
    finally:
        if worker is not None:
            worker.close()
    return contenders, info


def _us(seconds: float) -> str:
    us = seconds * 1e6
    return f"{us:.2f}" if us < 100 else f"{us:.0f}"


def report(contenders: list[Contender], info: dict[str, Any]) -> str:
    lines = []
    official = info.get("official")
    lines.append(
        f"Python {info['python']}, protobuf {info['protobuf']}, orjson {info['orjson']}"
        + (f"; official: lorax-client {official['lorax-client']}, pydantic {official['pydantic']}" if official else "")
    )
    lines.append(
        f"token event {info['token_event_bytes']} B, 256-token body {info['resp256_bytes']} B, "
        f"request {info['request_bytes']} B; {len(contenders[0].samples)} interleaved samples of ~10 ms each"
    )
    for workload, title in WORKLOADS.items():
        group = [c for c in contenders if c.workload == workload]
        floor = next((c for c in group if c.label.endswith("(floor)")), None)
        pyd = next(
            (c for c in group if c.label.startswith("pydantic:") and c.label != "pydantic: prebuilt model_dump_json"),
            None,
        )
        lines.append("")
        lines.append(f"{workload}: {title}")
        header = (
            f"  {'contender':<46} {'median µs':>10} {'IQR µs':>15} {'min-max µs':>17} {'x floor':>8} {'x pydantic':>10}"
        )
        lines.append(header)
        for c in group:
            med = statistics.median(c.samples)
            q = statistics.quantiles(c.samples, n=4)
            ratio_floor = f"{med / statistics.median(floor.samples):.2f}" if floor else "-"
            ratio_pyd = f"{med / statistics.median(pyd.samples):.2f}" if pyd else "-"
            lines.append(
                f"  {c.label:<46} {_us(med):>10} {_us(q[0]) + '-' + _us(q[2]):>15} "
                f"{_us(min(c.samples)) + '-' + _us(max(c.samples)):>17} {ratio_floor:>8} {ratio_pyd:>10}"
            )
    lines.append("")
    lines.append("x pydantic is against the official client's own path (the first pydantic row of each group).")
    return "\n".join(lines)


def targets(contenders: list[Contender]) -> list[str]:
    def med(workload: str, label_start: str) -> float | None:
        for c in contenders:
            if c.workload == workload and c.label.startswith(label_start):
                return statistics.median(c.samples)
        return None

    def fastest(workload: str, label_start: str) -> float | None:
        for c in contenders:
            if c.workload == workload and c.label.startswith(label_start):
                return min(c.samples)
        return None

    out = []
    for workload, label, floor_label, what in (
        ("token", "lorax.codec.decoder(cls)", FLOOR, "decode one token event vs orjson.loads"),
        ("token", "lorax.codec.from_json", FLOOR, "decode one token event (from_json) vs orjson.loads"),
        ("resp256", "lorax.codec.decoder(cls)", FLOOR, "decode the 256-token body vs orjson.loads"),
        ("resp256", "lorax.codec.from_json", FLOOR, "decode the 256-token body (from_json) vs orjson.loads"),
        (
            "request",
            "build message + to_json",
            "orjson.dumps",
            "build + encode the 12-parameter request vs orjson.dumps",
        ),
        ("request", "lorax.codec.to_json", "orjson.dumps", "encode a prebuilt request vs orjson.dumps"),
    ):
        mine, base = med(workload, label), med(workload, floor_label)
        low, low_base = fastest(workload, label), fastest(workload, floor_label)
        if mine is not None and base is not None and low is not None and low_base is not None:
            # The fastest samples too: on a shared machine they show the cost without the noise.
            out.append(
                f"{what}: {mine * 1e6:.2f} µs vs {base * 1e6:.2f} µs = {mine / base:.2f}x "
                f"(fastest samples {low * 1e6:.2f} vs {low_base * 1e6:.2f} µs = {low / low_base:.2f}x)"
            )
    ours = med("token", "lorax.codec.from_json")
    floor = med("token", FLOOR)
    pyd = med("token", PYDANTIC_CLIENT)
    pyd_fast = med("token", "pydantic: model_validate_json")
    assert ours is not None
    assert floor is not None
    out.append(
        f"token event within 3x of orjson.loads: {ours / floor:.2f}x -> {'MET' if ours <= 3 * floor else 'MISSED'}"
    )
    if pyd is not None and pyd_fast is not None:
        out.append(
            f"token event faster than pydantic: {ours * 1e6:.2f} µs vs client path {pyd * 1e6:.2f} µs, "
            f"model_validate_json {pyd_fast * 1e6:.2f} µs -> {'MET' if ours < min(pyd, pyd_fast) else 'MISSED'}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="lorax.codec micro-benchmark")
    parser.add_argument("--samples", type=int, default=31, help="samples per contender (default 31)")
    parser.add_argument("--sample-ms", type=float, default=10.0, help="length of one sample in ms (default 10)")
    parser.add_argument("--no-official", action="store_true", help="skip the official client (no venv needed)")
    parser.add_argument("--json", type=Path, help="also write the raw samples here")
    options = parser.parse_args()
    contenders, info = run(options.samples, options.sample_ms / 1000, not options.no_official)
    print(report(contenders, info))
    print()
    for line in targets(contenders):
        print(line)
    if options.json:
        options.json.write_text(
            json.dumps(
                {
                    "info": info,
                    "results": [{"workload": c.workload, "label": c.label, "samples_s": c.samples} for c in contenders],
                },
                indent=1,
            ),
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
