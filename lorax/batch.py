"""Run a JSONL file of requests through LoRAX, resumably: the engine behind ``lorax batch``.

::

    import asyncio
    from lorax import AsyncClient
    from lorax.batch import run_batch

    async def main():
        async with AsyncClient("http://127.0.0.1:8080") as client:
            stats = await run_batch(client, "prompts.jsonl", "results.jsonl", concurrency=32)
            print(stats.done, stats.failed)

    asyncio.run(main())

Input and output formats are described in the README ("The command line").
"""

from __future__ import annotations

from lorax._cli.batch import INVALID_INPUT, run_batch, scan_output
from lorax._cli.progress import BatchStats

__all__ = ["INVALID_INPUT", "BatchStats", "run_batch", "scan_output"]
