"""Writing Server-Sent Events exactly as axum 0.7.7 does (docs/wire.md, "Streams").

Each event is one HTTP chunk: ``data: <json>\\n\\n``; the OpenAI end marker is
``data: [DONE]\\n\\n``; a keep-alive is the comment ``:\\n\\n``, sent whenever no event
has gone out for the keep-alive interval (the timer restarts after every event).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from aiohttp import web

__all__ = ["DONE_FRAME", "KEEP_ALIVE_FRAME", "event_frame", "pump"]

KEEP_ALIVE_FRAME = b":\n\n"
DONE_FRAME = b"data: [DONE]\n\n"


def event_frame(data: bytes) -> bytes:
    """One ``data:`` event; `data` never holds a newline (compact JSON)."""
    return b"data: " + data + b"\n\n"


async def pump(
    response: web.StreamResponse,
    frames: AsyncGenerator[bytes, None],
    keep_alive: float | None,
) -> None:
    """Write `frames` as they come, with keep-alive comments in the gaps.

    `keep_alive` None sends none. The frames' producer runs as its own task so that a slow
    token never delays a keep-alive; it is cancelled if writing fails (client gone).
    """
    # A short queue: the producer stays at most a few frames ahead of the socket, so a
    # client that goes away stops the generation instead of letting it run to the end.
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=2)

    async def produce() -> None:
        try:
            async for frame in frames:
                await queue.put(frame)
        finally:
            # Close the generator now (not at garbage collection) so that its own cleanup,
            # such as counting a cancelled generation, happens while the client is gone.
            await frames.aclose()
            await queue.put(None)

    producer = asyncio.ensure_future(produce())
    try:
        while True:
            try:
                if keep_alive is None:
                    frame = await queue.get()
                else:
                    frame = await asyncio.wait_for(queue.get(), timeout=keep_alive)
            except asyncio.TimeoutError:
                await response.write(KEEP_ALIVE_FRAME)
                continue
            if frame is None:
                break
            await response.write(frame)
        await producer  # surfaces the producer's own exception, if any
    finally:
        if not producer.done():
            producer.cancel()
            try:
                await producer
            except (asyncio.CancelledError, Exception):
                pass
