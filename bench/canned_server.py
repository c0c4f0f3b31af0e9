"""A fast HTTP/1.1 server that answers with canned, realistic LoRAX bodies.

Benchmarks measure the client, so the server must cost as little as possible: every
response is rendered once at start-up, and a request is answered with one write. The
path prefix chooses the body, so any client can select a case through its base URL:

    /t16/generate            a /generate response with details and 16 tokens
    /t256/generate           ... 256 tokens
    /t256/generate_stream    an SSE stream of 256 token events (details on the last)
    /t4096/generate_stream   ... 4096 events
    /t256p10/generate_stream 256 events paced 10 ms apart (a server that generates)
    /t16, /t16/               LoRAX's compat route ``POST /``, as the official client uses it
                             (base URL ``http://HOST:PORT/t16``): ``[GenerateResponse]`` (a JSON
                             array), or the SSE stream when the request body says
                             ``"stream": true``

Paced streams share one clock per interval, as a LoRAX batch does: every stream in
flight gets its next token on the same tick, so a thousand paced streams cost the
server one timer, not a thousand.

Run it in its own process (``python bench/canned_server.py --port 0`` prints
``listening on PORT``) so that it does not share the client's interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import signal
import sys

import orjson

_PREFIX = re.compile(rb"^/t(\d+)(?:p(\d+))?(/[a-z_]*)?$")
_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')


def _token(i: int, rng: random.Random) -> dict[str, object]:
    return {
        "id": rng.randrange(100, 32000),
        "text": " " + rng.choice(["the", "of", "Paris", "model", "adapter", "token", "is", "a"]),
        "logprob": round(-rng.random() * 2, 4),
        "special": False,
        "skipped": False,
    }


def generate_body(tokens: int) -> bytes:
    """A /generate response with details: 16 prefill-free tokens... as LoRAX prints it."""
    rng = random.Random(tokens)
    toks = [_token(i, rng) for i in range(tokens)]
    text = "".join(str(t["text"]) for t in toks)
    body = {
        "generated_text": text,
        "details": {
            "finish_reason": "length",
            "prompt_tokens": 15,
            "generated_tokens": tokens,
            "skipped_tokens": 0,
            "seed": 13442342353453453453,
            "prefill": [],
            "tokens": toks,
        },
    }
    return orjson.dumps(body)


def stream_events(tokens: int) -> list[bytes]:
    """The SSE events of a /generate_stream with `tokens` tokens, details on the last."""
    rng = random.Random(tokens)
    toks = [_token(i, rng) for i in range(tokens)]
    events = []
    for i, tok in enumerate(toks):
        last = i == tokens - 1
        event = {
            "token": tok,
            "generated_text": "".join(str(t["text"]) for t in toks) if last else None,
            "details": {"finish_reason": "length", "prompt_tokens": 15, "generated_tokens": tokens, "seed": None}
            if last
            else None,
        }
        events.append(b"data: " + orjson.dumps(event) + b"\n\n")
    return events


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Cache:
    def __init__(self) -> None:
        self.unary: dict[int, bytes] = {}
        self.compat: dict[int, bytes] = {}
        self.stream: dict[int, list[bytes]] = {}
        self.tickers: dict[int, _Ticker] = {}

    def compat_response(self, tokens: int) -> bytes:
        resp = self.compat.get(tokens)
        if resp is None:
            body = b"[" + generate_body(tokens) + b"]"
            resp = (
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-compute-type: gpu+optimized\r\n"
                b"x-generated-tokens: %d\r\ncontent-length: %d\r\n\r\n%s" % (tokens, len(body), body)
            )
            self.compat[tokens] = resp
        return resp

    def ticker(self, pace_ms: int) -> _Ticker:
        ticker = self.tickers.get(pace_ms)
        if ticker is None:
            ticker = self.tickers[pace_ms] = _Ticker(pace_ms / 1000)
        return ticker

    def unary_response(self, tokens: int) -> bytes:
        resp = self.unary.get(tokens)
        if resp is None:
            body = generate_body(tokens)
            resp = (
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-compute-type: gpu+optimized\r\n"
                b"x-generated-tokens: %d\r\ncontent-length: %d\r\n\r\n%s" % (tokens, len(body), body)
            )
            self.unary[tokens] = resp
        return resp

    def stream_chunks(self, tokens: int) -> list[bytes]:
        chunks = self.stream.get(tokens)
        if chunks is None:
            chunks = [_chunk(e) for e in stream_events(tokens)]
            self.stream[tokens] = chunks
        return chunks


class _Paced:
    __slots__ = ("chunks", "sent")

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.sent = 0


class _Ticker:
    """One clock for all the streams paced at one interval: a token for each per tick."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.streams: dict[asyncio.Transport, _Paced] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, transport: asyncio.Transport, chunks: list[bytes]) -> None:
        transport.write(STREAM_HEAD)
        self.streams[transport] = _Paced(chunks)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self.run())

    def discard(self, transport: asyncio.Transport) -> None:
        self.streams.pop(transport, None)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while self.streams:
            next_tick += self.interval
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            finished = []
            for transport, state in list(self.streams.items()):
                if transport.is_closing():
                    finished.append(transport)
                    continue
                if state.sent < len(state.chunks):
                    transport.write(state.chunks[state.sent])
                    state.sent += 1
                else:
                    transport.write(b"0\r\n\r\n")
                    finished.append(transport)
            for transport in finished:
                self.streams.pop(transport, None)


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"x-accel-buffering: no\r\ntransfer-encoding: chunked\r\n\r\n"
)


class CannedProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, Content-Length request bodies, canned answers."""

    def __init__(self, cache: _Cache) -> None:
        self.cache = cache
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.ticker: _Ticker | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ticker is not None and self.transport is not None:
            self.ticker.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self.respond(head.split(b" ", 2)[1], body)

    def respond(self, path: bytes, body: bytes = b"") -> None:
        transport = self.transport
        assert transport is not None
        match = _PREFIX.match(path)
        if match is None:
            transport.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            return
        tokens = int(match.group(1))
        pace_ms = int(match.group(2) or 0)
        route = match.group(3)
        if route in (None, b"/"):  # LoRAX's compat route, POST /
            route = b"/generate_stream" if _STREAM_TRUE.search(body) else b"/compat"
        if route == b"/compat":
            transport.write(self.cache.compat_response(tokens))
        elif route == b"/generate":
            transport.write(self.cache.unary_response(tokens))
        elif route == b"/generate_stream":
            chunks = self.cache.stream_chunks(tokens)
            if pace_ms:
                self.ticker = self.cache.ticker(pace_ms)
                self.ticker.add(transport, chunks)
            else:
                transport.write(STREAM_HEAD + b"".join(chunks) + b"0\r\n\r\n")
        else:
            transport.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")


async def serve(host: str, port: int) -> None:
    cache = _Cache()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: CannedProtocol(cache), host, port, backlog=4096)
    sock_port = server.sockets[0].getsockname()[1]
    print(f"listening on {sock_port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
