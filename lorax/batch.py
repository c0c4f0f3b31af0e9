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

Input and output formats are described in the README ("Batch jobs").
"""

from __future__ import annotations

from lorax._cli.batch import (
    AUTO_ID_PREFIX,
    INVALID_INPUT,
    BatchInputError,
    DryRun,
    InputCheck,
    check_input,
    dry_run,
    run_batch,
    scan_output,
)
from lorax._cli.progress import BatchStats

__all__ = [
    "AUTO_ID_PREFIX",
    "INVALID_INPUT",
    "BatchInputError",
    "BatchStats",
    "DryRun",
    "InputCheck",
    "check_input",
    "dry_run",
    "run_batch",
    "scan_output",
]
