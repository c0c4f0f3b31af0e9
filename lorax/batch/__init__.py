"""Batch jobs: run many requests through LoRAX, resumably; the engine behind ``lorax batch``.

::

    import asyncio
    from lorax import AsyncClient
    from lorax.batch import run_batch

    async def main():
        async with AsyncClient("http://127.0.0.1:8080") as client:
            stats = await run_batch(client, "prompts.jsonl", "results.jsonl", concurrency=32)
            print(stats.done, stats.failed)

    asyncio.run(main())

The modules: :mod:`lorax.batch.lines` (the input line format, checks, dry runs),
:mod:`lorax.batch.output` (the output rows, resuming, durable appends),
:mod:`lorax.batch.engine` (the local engine: :func:`run_batch`) and
:mod:`lorax.batch.ray` (the same lines on a Ray cluster, and a Ray Data transform; it
needs ``pip install 'lorax-client[ray]'`` and is imported only when used). Input and
output formats are described in the README ("Batch jobs").
"""

from __future__ import annotations

from lorax.batch.engine import BatchStats, EndpointUnreachableError, LineOutcome, LineRunner, run_batch
from lorax.batch.lines import (
    AUTO_ID_PREFIX,
    INVALID_INPUT,
    BatchInputError,
    DryRun,
    InputCheck,
    check_input,
    dry_run,
)
from lorax.batch.output import BatchOutputError, scan_output

__all__ = [
    "AUTO_ID_PREFIX",
    "INVALID_INPUT",
    "BatchInputError",
    "BatchOutputError",
    "BatchStats",
    "DryRun",
    "EndpointUnreachableError",
    "InputCheck",
    "LineOutcome",
    "LineRunner",
    "check_input",
    "dry_run",
    "run_batch",
    "scan_output",
]
