"""SSE streams of both HTTP transports: framing, the end marker, error events, sizes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from lorax import _routes as routes
from lorax import errors
from lorax._timeout import Timeout
from lorax.transports.base import CallOptions

from ._servers import SSE_HEAD, AppServer, RawServer, chunk, eventually, read_request
from .conftest import Driver

STREAM = routes.GENERATE_STREAM
CHAT = routes.CHAT_COMPLETIONS_STREAM


def _event(obj: object, sep: bytes = b"data: ") -> bytes:
    # Compact, key order kept, non-ASCII raw: LoRAX's serde_json output.
    return sep + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def token(i: int, text: str = " a", *, sep: bytes = b"data: ") -> bytes:
    tok = {"id": i, "text": text, "logprob": -0.1, "special": False, "skipped": False}
    return _event({"token": tok, "generated_text": None, "details": None}, sep)


def final(text: str) -> bytes:
    tok = {"id": 2, "text": "</s>", "logprob": -0.01, "special": True, "skipped": False}
    details = {"finish_reason": "eos_token", "prompt_tokens": 1, "generated_tokens": 3, "seed": None}
    return _event({"token": tok, "generated_text": text, "details": details})


CHAT_CHUNK = (
    b'data: {"id":"null","object":"chat.completion.chunk","created":0,"model":"null","choices":'
    b'[{"index":0,"delta":{"role":"assistant","content":" The"},"finish_reason":null}]}\n\n'
)


def request() -> object:
    return STREAM.input_type(inputs="Hi")


def test_stream_decodes_events_and_reuses_the_connection(app: AppServer, driver: Callable[..., Driver]) -> None:
    # LoRAX framing: a keep-alive comment, `data: ` (v0.12+) and `data:` (<= v0.11).
    frames = [b":\n\n", token(1), token(2, sep=b"data:"), b":\n\n", final(" a a")]
    app.sse("POST", "/generate_stream", frames, headers={"X-Model-Id": "m"})
    d = driver(app.url)
    for _ in range(2):
        stream = d.stream(STREAM, request())
        assert stream.meta.status_code == 200
        assert stream.meta.model_id == "m"
        messages = list(stream)
        assert [m.token.id for m in messages] == [1, 2, 2]  # type: ignore[attr-defined]
        assert messages[-1].generated_text == " a a"  # type: ignore[attr-defined]
        assert next(stream, None) is None  # exhausted streams stay exhausted
        stream.close()
    assert app.seen[0].headers["accept"] == "text/event-stream"
    assert app.seen[0].peer == app.seen[1].peer  # one kept-alive connection
    assert d.stats()["in_use"] == 0
    assert d.stats()["streams"] == 0


def test_done_marker_ends_the_stream_and_keeps_the_connection(app: AppServer, driver: Callable[..., Driver]) -> None:
    app.sse("POST", "/v1/chat/completions", [CHAT_CHUNK, CHAT_CHUNK, b"data: [DONE]\n\n"])
    d = driver(app.url)
    req = CHAT.input_type(model="", messages=[], stream=True)
    for _ in range(2):
        messages, error = d.collect(CHAT, req)
        assert error is None
        assert len(messages) == 2
    assert app.seen[0].peer == app.seen[1].peer
    assert d.stats()["in_use"] == 0


def test_missing_done_marker_ends_at_eof(app: AppServer, driver: Callable[..., Driver]) -> None:
    app.sse("POST", "/v1/chat/completions", [CHAT_CHUNK, CHAT_CHUNK])
    d = driver(app.url)
    messages, error = d.collect(CHAT, CHAT.input_type(model="", messages=[], stream=True))
    assert error is None
    assert len(messages) == 2


@pytest.mark.parametrize(
    ("event", "cls"),
    [
        (
            b'data: {"error":"Request failed during generation: Server error: CUDA OOM","error_type":"generation"}\n\n',
            errors.GenerationError,
        ),
        (b'data: {"error":"Model is overloaded","error_type":"overloaded"}\n\n', errors.OverloadedError),
        (
            b'data: {"error":"Incomplete generation","error_type":"incomplete_generation"}\n\n',
            errors.IncompleteGenerationError,
        ),
    ],
)
def test_error_event_mid_stream(
    app: AppServer, driver: Callable[..., Driver], event: bytes, cls: type[errors.APIStatusError]
) -> None:
    app.sse("POST", "/generate_stream", [token(1), token(2), event, token(3)])
    d = driver(app.url, pool=1)
    messages, error = d.collect(STREAM, request())
    assert len(messages) == 2
    assert type(error) is cls
    assert error.status_code is None
    assert d.stats()["in_use"] == 0
    messages, error = d.collect(STREAM, request())  # the pool of one is free again
    assert type(error) is cls


def test_many_events_and_an_error_in_one_read(raw: Callable[..., RawServer], driver: Callable[..., Driver]) -> None:
    # The whole answer arrives in one write, so one read decodes it as one batch: the
    # messages before the error event come out, in order, then the typed error.
    error_event = b'data: {"error":"Model is overloaded","error_type":"overloaded"}\n\n'
    frames = [token(i, f" t{i}") for i in range(50)] + [error_event, token(99)]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + b"".join(chunk(f) for f in frames) + b"0\r\n\r\n")
        await writer.drain()

    server = raw(handler)
    d = driver(server.url, pool=1)
    messages, error = d.collect(STREAM, request())
    assert [m.token.text for m in messages] == [f" t{i}" for i in range(50)]  # type: ignore[attr-defined]
    assert type(error) is errors.OverloadedError
    assert str(error) == "Model is overloaded"
    assert d.stats()["in_use"] == 0


@pytest.mark.parametrize("tail", ["error", "final-and-late"])
def test_async_client_reads_a_whole_answer_in_one_read(
    raw: Callable[..., RawServer], tail: str, caplog: pytest.LogCaptureFixture
) -> None:
    # lorax.AsyncStream takes the transport's batches (every event of one read): the
    # events before an error event come out in order, then the typed error; after the
    # final event nothing more is delivered, and the late event is dropped.
    from lorax import AsyncClient

    error_event = b'data: {"error":"Model is overloaded","error_type":"overloaded"}\n\n'
    frames = [token(i, f" t{i}") for i in range(50)]
    frames += [error_event, token(99)] if tail == "error" else [final("done"), token(99)]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(b"".join(frames)) + b"0\r\n\r\n")
        await writer.drain()

    server = raw(handler)

    async def main() -> tuple[list[str], BaseException | None, str, str | None]:
        async with AsyncClient(server.url, max_retries=None) as client:
            texts: list[str] = []
            failure: BaseException | None = None
            stream = client.generate_stream("Hi")
            try:
                async for event in stream:
                    texts.append(event.token.text)
            except errors.LoraxError as exc:
                failure = exc
            final_text = stream.final.generated_text if stream.final is not None else None
            return texts, failure, repr(stream), final_text

    texts, failure, shown, final_text = asyncio.run(main())
    if tail == "error":
        assert texts == [f" t{i}" for i in range(50)]
        assert type(failure) is errors.OverloadedError
        assert str(failure) == "Model is overloaded"
        assert shown == "<AsyncStream GenerateStream closed, 50 event(s)>"
        assert final_text is None
        assert "dropped an event" not in caplog.text
    else:
        assert texts == [f" t{i}" for i in range(50)] + ["</s>"]
        assert failure is None
        assert shown == "<AsyncStream GenerateStream closed, 51 event(s)>"
        assert final_text == "done"
        assert (
            caplog.messages.count("lorax: dropped an event that came after the final event of a GenerateStream stream")
            == 1
        )


def test_event_that_is_not_json(app: AppServer, driver: Callable[..., Driver]) -> None:
    app.sse("POST", "/generate_stream", [token(1), b"data: {not json\n\n"])
    d = driver(app.url)
    messages, error = d.collect(STREAM, request())
    assert len(messages) == 1
    assert isinstance(error, errors.ResponseDecodeError)
    assert d.stats()["in_use"] == 0


def test_several_mib_final_event(app: AppServer, driver: Callable[..., Driver]) -> None:
    # aiohttp's line reader gives up at 128 KiB; LoRAX's final event carries the whole text.
    text = "word " * (1_200_000)  # 6 MB
    app.sse("POST", "/generate_stream", [token(1), final(text)])
    d = driver(app.url)
    messages, error = d.collect(STREAM, request())
    assert error is None
    assert messages[-1].generated_text == text  # type: ignore[attr-defined]


def test_utf8_split_across_chunks(raw: Callable[..., RawServer], driver: Callable[..., Driver]) -> None:
    event = token(1, "日本語 é")
    cut = event.index("本".encode()) + 1  # inside the 3-byte character

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(event[:cut]))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(chunk(event[cut:]) + chunk(final("x")) + b"0\r\n\r\n")
        await writer.drain()

    server = raw(handler)
    d = driver(server.url)
    messages, error = d.collect(STREAM, request())
    assert error is None
    assert messages[0].token.text == "日本語 é"  # type: ignore[attr-defined]


def test_stream_route_answered_with_json(app: AppServer, driver: Callable[..., Driver]) -> None:
    d = driver(app.url)
    app.reply("POST", "/generate_stream", b'{"error":"Model is overloaded","error_type":"overloaded"}')
    with pytest.raises(errors.OverloadedError):
        d.stream(STREAM, request())
    app.reply("POST", "/generate_stream", b'{"generated_text":"x"}')
    with pytest.raises(errors.ResponseDecodeError, match="text/event-stream"):
        d.stream(STREAM, request())
    assert d.stats()["in_use"] == 0


def test_break_early_then_close_returns_the_slot(app: AppServer, driver: Callable[..., Driver]) -> None:
    # N+1 streams on a pool of N, each abandoned after its first event: all succeed.
    app.sse("POST", "/generate_stream", [token(1)], forever=token(2))
    options = CallOptions(timeout=Timeout(connect=5, read=5, pool=3))
    d = driver(app.url, pool=2)
    for _ in range(3):
        stream = d.stream(STREAM, request(), options)
        for _message in stream:
            break
        stream.close()
        stream.close()  # idempotent
    assert d.stats()["in_use"] == 0
    assert d.stats()["streams"] == 0
    assert eventually(lambda: len(app.disconnects) == 3)  # the server saw each client go away


def _one_read_server(raw: Callable[..., RawServer], frames: list[bytes]) -> RawServer:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer) -> None:
        while await read_request(reader) is not None:
            writer.write(SSE_HEAD + chunk(b"".join(frames)) + b"0\r\n\r\n")
            await writer.drain()

    return raw(handler)


def test_sync_stream_hands_a_batch_to_the_loop_whole_and_next_continues_it(raw: Callable[..., RawServer]) -> None:
    # lorax.Stream's for loop yields a batch with no final event straight from the list:
    # a loop that breaks off, next() and a second loop still see one sequence, in order,
    # and the final event (in the same read) is still recognised.
    from lorax import Client

    server = _one_read_server(raw, [token(i, f" t{i}") for i in range(20)] + [final("done"), token(99)])
    with Client(server.url, max_retries=None) as client:
        stream = client.generate_stream("hi")
        texts = []
        for event in stream:
            texts.append(event.token.text)
            if len(texts) == 3:
                break
        texts.append(next(stream).token.text)
        texts.append(next(stream).token.text)
        for event in stream:
            texts.append(event.token.text)
            if len(texts) == 10:
                break
        texts.extend(event.token.text for event in stream)
        assert texts == [f" t{i}" for i in range(20)] + ["</s>"]
        assert stream.final is not None
        assert stream.final.generated_text == "done"
        assert "closed, 21 event(s)" in repr(stream)
        assert client.transport.pool_stats()["in_use"] == 0  # type: ignore[attr-defined]


def test_sync_stream_closed_inside_the_loop_stops_at_once(raw: Callable[..., RawServer]) -> None:
    # close() in the middle of a batch handed to the loop whole: nothing more comes out.
    from lorax import Client

    server = _one_read_server(raw, [token(i, f" t{i}") for i in range(20)] + [final("done")])
    with Client(server.url, max_retries=None) as client:
        stream = client.generate_stream("hi")
        texts = []
        for event in stream:
            texts.append(event.token.text)
            if len(texts) == 5:
                stream.close()
        assert texts == [f" t{i}" for i in range(5)]
        assert list(stream) == []
        assert stream.final is None
        with pytest.raises(StopIteration):
            next(stream)
        assert client.transport.pool_stats()["in_use"] == 0  # type: ignore[attr-defined]
