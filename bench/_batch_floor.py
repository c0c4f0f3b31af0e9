"""The floor for the ``lorax batch`` case: the least a JSONL batch runner can do.

``python bench/_batch_floor.py IN.jsonl OUT.jsonl --endpoint URL --concurrency N
--max-new-tokens K``: one aiohttp session, N workers fed from a bounded queue, each
POSTing ``/generate`` and appending one orjson line per result. No retries, no resume,
no progress display, no validation: what ``lorax batch`` adds on top is what the
comparison shows.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import aiohttp
import orjson


async def run(args: argparse.Namespace) -> int:
    queue: asyncio.Queue[dict[str, object] | None] = asyncio.Queue(maxsize=args.concurrency * 2)
    url = args.endpoint.rstrip("/") + "/generate"
    failed = 0
    with open(args.output, "ab", buffering=0) as out:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency)) as session:

            async def worker() -> None:
                nonlocal failed
                while True:
                    item = await queue.get()
                    if item is None:
                        return
                    parameters = {"max_new_tokens": args.max_new_tokens, "details": True}
                    parameters.update(item.get("parameters") or {})  # type: ignore[call-overload]
                    body = orjson.dumps({"inputs": item["prompt"], "parameters": parameters})
                    started = time.perf_counter()
                    async with session.post(url, data=body, headers={"content-type": "application/json"}) as resp:
                        data = orjson.loads(await resp.read())
                    if resp.status != 200:
                        failed += 1
                        line = {"id": item["id"], "ok": False, "error": data}
                    else:
                        details = data["details"]
                        line = {
                            "id": item["id"],
                            "ok": True,
                            "result": {
                                "generated_text": data["generated_text"],
                                "finish_reason": details["finish_reason"],
                            },
                            "prompt_tokens": details["prompt_tokens"],
                            "generated_tokens": details["generated_tokens"],
                            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
                        }
                    out.write(orjson.dumps(line) + b"\n")

            workers = [asyncio.ensure_future(worker()) for _ in range(args.concurrency)]
            with open(args.input, "rb") as f:
                for line in f:
                    if line.strip():
                        await queue.put(orjson.loads(line))
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
