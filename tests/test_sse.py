"""Tests of lorax._sse: the WHATWG event-stream parsing rules, chunking, limits, LoRAX bytes."""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorax._sse import DONE, SSEDecoder, SSEEvent
from lorax.errors import LoraxError, ProtocolError

E = SSEEvent


def decode(chunks: Iterable[bytes], decoder: SSEDecoder | None = None) -> tuple[list[SSEEvent], SSEDecoder]:
    """Feed every chunk, then close; return all events and the decoder."""
    decoder = decoder if decoder is not None else SSEDecoder()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.close())
    return events, decoder


def split_at(raw: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = [0, *sorted(cuts), len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(points)]


def bytewise(raw: bytes) -> list[bytes]:
    return [raw[i : i + 1] for i in range(len(raw))]


def all_chunkings(raw: bytes) -> Iterable[tuple[str, list[bytes]]]:
    """The whole stream, byte by byte, and every split into two chunks."""
    yield "whole", [raw]
    yield "bytewise", bytewise(raw)
    for i in range(len(raw) + 1):
        yield f"split@{i}", [raw[:i], raw[i:]]


# A reference decoder, written as literally as possible from the WHATWG algorithm and
# run on the whole stream at once. The real decoder must agree with it for any bytes
# and any chunking.
def reference_decode(raw: bytes) -> tuple[list[SSEEvent], int, str | None, int | None]:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = re.split(rb"\r\n|\r|\n", raw)[:-1]  # the last piece is not terminated
    events: list[SSEEvent] = []
    comments = 0
    data = b""
    event_type = ""
    event_id: str | None = None
    id_buffer: str | None = None
    last_event_id: str | None = None
    retry: int | None = None
    for line in lines:
        if line == b"":
            last_event_id = id_buffer
            if data:
                events.append(SSEEvent(data[:-1] if data.endswith(b"\n") else data, event_type, event_id))
            data = b""
            event_type = ""
            event_id = None
            continue
        if line.startswith(b":"):
            comments += 1
            continue
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data += value + b"\n"
        elif name == b"event":
            event_type = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            event_id = id_buffer = value.decode("utf-8", "replace")
        elif name == b"retry" and re.fullmatch(rb"[0-9]+", value) and len(value.lstrip(b"0")) <= 18:
            retry = int(value)
    return events, comments, last_event_id, retry


# (id, raw stream, expected events, expected comment count)
CASES: list[tuple[str, bytes, list[SSEEvent], int]] = [
    ("data-with-space", b"data: hello\n\n", [E(b"hello")], 0),
    ("data-without-space", b"data:hello\n\n", [E(b"hello")], 0),
    ("data-two-spaces-keeps-one", b"data:  hello\n\n", [E(b" hello")], 0),
    ("data-trailing-space-kept", b"data: hello \n\n", [E(b"hello ")], 0),
    ("data-empty-value", b"data:\n\n", [E(b"")], 0),
    ("data-space-only", b"data: \n\n", [E(b"")], 0),
    ("data-no-colon", b"data\n\n", [E(b"")], 0),
    ("data-colon-in-value", b'data: {"a":1}\n\n', [E(b'{"a":1}')], 0),
    ("multi-line", b"data: a\ndata: b\ndata:c\n\n", [E(b"a\nb\nc")], 0),
    ("multi-line-empty-middle", b"data: a\ndata:\ndata: b\n\n", [E(b"a\n\nb")], 0),
    ("multi-line-strips-one-newline", b"data: a\ndata:\n\n", [E(b"a\n")], 0),
    ("two-events", b"data: 1\n\ndata: 2\n\n", [E(b"1"), E(b"2")], 0),
    ("extra-blank-lines", b"\n\ndata: 1\n\n\n\ndata: 2\n\n\n", [E(b"1"), E(b"2")], 0),
    ("keep-alive-only", b":\n\n", [], 1),
    ("keep-alive-between", b":\n\ndata: 1\n\n:\n\n:\n\ndata: 2\n\n", [E(b"1"), E(b"2")], 3),
    ("heartbeat-with-text", b": OPENROUTER PROCESSING\n\ndata: x\n\n", [E(b"x")], 1),
    ("comment-inside-event", b"data: a\n: ping\ndata: b\n\n", [E(b"a\nb")], 1),
    ("crlf", b"data: a\r\ndata: b\r\n\r\n", [E(b"a\nb")], 0),
    ("lone-cr", b"data: a\rdata: b\r\r", [E(b"a\nb")], 0),
    ("mixed-endings", b"data: a\r\ndata: b\rdata: c\n\r\n", [E(b"a\nb\nc")], 0),
    ("lf-then-cr-is-two-lines", b"data: a\n\r", [E(b"a")], 0),
    ("cr-cr-lf-is-two-lines", b"data: a\r\r\n", [E(b"a")], 0),
    ("blank-lines-only", b"\n\n\r\n\r", [], 0),
    ("event-type", b"event: update\ndata: x\n\n", [E(b"x", "update")], 0),
    ("event-type-reset", b"event: a\ndata: 1\n\ndata: 2\n\n", [E(b"1", "a"), E(b"2")], 0),
    ("event-type-last-wins", b"event: a\nevent: b\ndata: 1\n\n", [E(b"1", "b")], 0),
    ("event-colon-in-value", b"event:a:b\ndata: x\n\n", [E(b"x", "a:b")], 0),
    ("event-after-data", b"data: x\nevent: late\n\n", [E(b"x", "late")], 0),
    ("id", b"id: 7\ndata: x\n\n", [E(b"x", "", "7")], 0),
    ("id-only-on-its-event", b"id: 7\ndata: x\n\ndata: y\n\n", [E(b"x", "", "7"), E(b"y")], 0),
    ("id-with-nul-ignored", b"id: 1\x002\ndata: x\n\n", [E(b"x")], 0),
    ("id-empty", b"id\ndata: x\n\n", [E(b"x", "", "")], 0),
    ("retry-does-not-dispatch", b"retry: 3000\n\n", [], 0),
    ("event-only", b"event: ping\n\n", [], 0),
    ("id-only", b"id: 1\n\n", [], 0),
    ("meta-only-then-data", b"event: x\nid: 2\nretry: 5\n\ndata: y\n\n", [E(b"y")], 0),
    ("unknown-fields-ignored", b"foo: bar\ndata: x\nData: y\n\n", [E(b"x")], 0),
    ("space-before-colon", b"data : x\n\n", [], 0),
    ("leading-space", b" data: x\n\n", [], 0),
    ("bom", b"\xef\xbb\xbfdata: x\n\n", [E(b"x")], 0),
    ("bom-then-comment", b"\xef\xbb\xbf:\n\ndata: x\n\n", [E(b"x")], 1),
    ("only-one-bom-skipped", b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\ndata: y\n\n", [E(b"y")], 0),
    ("bom-mid-stream-is-not-skipped", b"data: a\n\n\xef\xbb\xbfdata: b\n\n", [E(b"a")], 0),
    ("partial-bom-is-not-a-bom", b"\xef\xbbdata: x\n\ndata: y\n\n", [E(b"y")], 0),
    ("non-utf8-data-kept-raw", b"data: \xff\xfe\xc3\n\n", [E(b"\xff\xfe\xc3")], 0),
    ("non-utf8-event-replaced", b"event: \xffa\ndata: x\n\n", [E(b"x", "\ufffda")], 0),
    ("non-utf8-id-replaced", b"id: \xc3\ndata: x\n\n", [E(b"x", "", "\ufffd")], 0),
    ("nul-in-data-kept", b"data: a\x00b\n\n", [E(b"a\x00b")], 0),
    ("utf8-in-data", "data: é✅中文😀\n\n".encode(), [E("é✅中文😀".encode())], 0),
    ("utf8-in-event-and-id", "event: ✅\nid: 中\ndata: x\n\n".encode(), [E(b"x", "✅", "中")], 0),
    ("done", b"data: [DONE]\n\n", [E(DONE)], 0),
    ("unterminated-line-discarded", b"data: x", [], 0),
    ("unterminated-event-discarded", b"data: x\n", [], 0),
    ("last-event-unterminated", b"data: x\n\ndata: y\n", [E(b"x")], 0),
    ("data-then-cr-in-value-splits", b"data: a\rb\n\n", [E(b"a")], 0),
    ("data-then-lf-in-value-splits", b"data: a\nb\n\n", [E(b"a")], 0),
    ("fast-path-shape-twice-in-one-chunk", b"data: a\n\ndata: b\n\n", [E(b"a"), E(b"b")], 0),
]


@pytest.mark.parametrize(("raw", "expected", "comments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_table_every_chunking(raw: bytes, expected: list[SSEEvent], comments: int) -> None:
    for name, chunks in all_chunkings(raw):
        events, decoder = decode(chunks)
        assert (name, events) == (name, expected)
        assert (name, decoder.comments) == (name, comments)
    assert reference_decode(raw)[:2] == (expected, comments)


@pytest.mark.parametrize(
    ("raw", "last_event_id"),
    [
        (b"data: x\n\n", None),
        (b"id: 7\ndata: x\n\n", "7"),
        (b"id: 7\ndata: x\n\ndata: y\n\n", "7"),
        (b"id: 7\n\n", "7"),  # committed by the blank line even without data
        (b"id: 7\ndata: x\n\nid\ndata: y\n\n", ""),  # an empty id resets it
        (b"id: 7\ndata: x\n\nid: 8\x00\ndata: y\n\n", "7"),  # NUL: ignored
        (b"id: 7\ndata: x\n\nid: 8\ndata: y\n", "7"),  # not committed: no blank line
        (b"id: 1\nid: 2\n\n", "2"),
        (b"id:  5\n\n", " 5"),
    ],
)
def test_last_event_id(raw: bytes, last_event_id: str | None) -> None:
    for name, chunks in all_chunkings(raw):
        _, decoder = decode(chunks)
        assert (name, decoder.last_event_id) == (name, last_event_id)


@pytest.mark.parametrize(
    ("raw", "retry"),
    [
        (b"retry: 3000\n", 3000),
        (b"retry:3000\n", 3000),
        (b"retry: 0\n", 0),
        (b"retry: 007\n", 7),
        (b"retry: 10\nretry: 20\n", 20),
        (b"retry: 10\nretry: x\n", 10),  # an invalid value leaves the last valid one
        (b"retry: 30x\n", None),
        (b"retry: -1\n", None),
        (b"retry: +1\n", None),
        (b"retry: 1.5\n", None),
        (b"retry: 1 \n", None),
        (b"retry:\n", None),
        (b"retry\n", None),
        (b"retry:  5\n", None),  # only one space is stripped
        ("retry: ٣\n".encode(), None),  # a non-ASCII digit
        (b"retry: 999999999999999999\n", 999_999_999_999_999_999),
        (b"retry: 1000000000000000000\n", None),  # 19 digits: ignored
        (b"retry: " + b"0" * 30 + b"42\n", 42),
        (b"retry: " + b"9" * 5000 + b"\n", None),  # past int's digit limit: no ValueError
    ],
)
def test_retry(raw: bytes, retry: int | None) -> None:
    events, decoder = decode([raw])
    assert events == []
    assert decoder.retry == retry
    events, decoder = decode(bytewise(raw))
    assert decoder.retry == retry


def test_retry_applies_without_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"retry: 1500\n") == []
    assert decoder.retry == 1500


def test_cr_at_chunk_end_then_lf_is_one_line_ending() -> None:
    # Were the LF taken as a second line ending, the blank line it makes would
    # dispatch "a" on its own.
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"data: b\r") == []
    assert decoder.feed(b"\ndata: c\r") == []
    assert decoder.feed(b"\n\r") == [E(b"a\nb\nc")]
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"data: d\n\n") == [E(b"d")]
    assert decoder.close() == []


def test_cr_at_chunk_end_survives_empty_chunks() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\r") == [E(b"a")]
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"data: b\r\n\r\n") == [E(b"b")]


def test_cr_at_chunk_end_then_other_byte() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r") == [E(b"a")]
    assert decoder.feed(b"data: b\r") == []
    assert decoder.feed(b"data: c\r\r") == [E(b"b\nc")]


@pytest.mark.parametrize("char", ["é", "✅", "中", "文字", "😀", "👩‍💻"])
@pytest.mark.parametrize("where", ["data", "event", "id"])
def test_utf8_split_at_every_byte(char: str, where: str) -> None:
    text = char * 3
    if where == "data":
        raw = f'data: {{"text":"{text}"}}\n\n'.encode()
        expected = [E(f'{{"text":"{text}"}}'.encode())]
    elif where == "event":
        raw = f"event: {text}\ndata: x\n\n".encode()
        expected = [E(b"x", text)]
    else:
        raw = f"id: {text}\ndata: x\n\n".encode()
        expected = [E(b"x", "", text)]
    for name, chunks in all_chunkings(raw):
        events, _ = decode(chunks)
        assert (name, events) == (name, expected)
    if where == "data":
        assert orjson.loads(expected[0].data) == {"text": text}


def test_bom_split_across_chunks() -> None:
    for chunks in (
        [b"\xef", b"\xbb", b"\xbf", b"data: x\n\n"],
        [b"\xef\xbb", b"\xbfdata: x\n\n"],
        [b"\xef\xbb\xbf", b"data: x\n\n"],
    ):
        events, _ = decode(chunks)
        assert events == [E(b"x")]
    decoder = SSEDecoder()
    assert decoder.feed(b"\xef\xbb") == []
    assert decoder.pending_bytes == 2
    assert decoder.feed(b"\xbf") == []
    assert decoder.pending_bytes == 0


def test_large_event_in_64k_chunks() -> None:
    payload = b'{"generated_text":"' + b"x" * (8 * 1024 * 1024) + b'"}'
    raw = b"data: " + payload + b"\n\n"
    step = 64 * 1024
    decoder = SSEDecoder()
    chunks = [raw[i : i + step] for i in range(0, len(raw), step)]
    for chunk in chunks[:-1]:
        assert decoder.feed(chunk) == []
    assert decoder.pending_bytes == len(raw) - len(chunks[-1])
    events = decoder.feed(chunks[-1])
    assert len(events) == 1
    assert events[0].data == payload
    assert decoder.pending_bytes == 0
    assert decoder.close() == []


def test_large_multiline_event() -> None:
    lines = [b"%06d" % i + b"y" * 1000 for i in range(4096)]
    raw = b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"
    step = 1000
    events, _ = decode(raw[i : i + step] for i in range(0, len(raw), step))
    assert events == [E(b"\n".join(lines))]


def test_large_event_is_linear_in_small_chunks() -> None:
    # 8 MiB in 1 KiB chunks: re-joining or re-scanning the buffer on every chunk would
    # copy ~32 GiB and take many seconds; linear work takes milliseconds.
    payload = b"z" * (8 * 1024 * 1024)
    raw = b"data: " + payload + b"\r\n\r\n"
    step = 1024
    chunks = [raw[i : i + step] for i in range(0, len(raw), step)]
    start = time.perf_counter()
    events, _ = decode(chunks)
    elapsed = time.perf_counter() - start
    assert events == [E(payload)]
    assert elapsed < 2.0


@pytest.mark.parametrize(
    ("chunks", "max_event_bytes"),
    [
        ([b"data: " + b"x" * 200 + b"\n\n"], 100),  # one complete data line
        ([b"data: " + b"x" * 101], 100),  # a partial line
        ([b"data: xx", b"x" * 60, b"x" * 60], 100),  # a partial line grown over chunks
        ([b"data: 123456789\n" * 11], 100),  # many short data lines, no blank line
        ([b"data: 123456789\n" * 9, b"data: " + b"x" * 20], 100),  # data buffer + partial
        ([b":" + b"c" * 50, b"c" * 60], 100),  # a long comment still buffers
        ([b"\xef\xbb\xbfdata: " + b"x" * 2000 + b"\n\n"], 1024),
    ],
)
def test_limit_exceeded_raises(chunks: list[bytes], max_event_bytes: int) -> None:
    decoder = SSEDecoder(max_event_bytes=max_event_bytes)
    with pytest.raises(ProtocolError, match=f"max_event_bytes={max_event_bytes}") as info:
        decode(chunks, decoder)
    assert isinstance(info.value, LoraxError)
    assert info.value.status_code is None
    assert decoder.pending_bytes == 0  # the buffers were freed
    # The decoder stays failed: the stream cannot be resynchronised.
    with pytest.raises(ProtocolError, match="already failed"):
        decoder.feed(b"data: ok\n\n")
    assert decoder.close() == []


def test_limit_is_per_event() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    event = b"data: " + b"x" * 90 + b"\n\n"
    assert decoder.feed(event * 20) == [E(b"x" * 90)] * 20
    for _ in range(20):
        assert decoder.feed(event) == [E(b"x" * 90)]
    assert decoder.feed(b"data: " + b"y" * 98 + b"\n\n") == [E(b"y" * 98)]


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_event_bytes must be positive"):
        SSEDecoder(max_event_bytes=0)


def test_pending_bytes() -> None:
    decoder = SSEDecoder()
    assert decoder.pending_bytes == 0
    decoder.feed(b"data: abc\n")  # data buffer b"abc\n"
    assert decoder.pending_bytes == 4
    decoder.feed(b"data: de")  # plus a partial line of 8 bytes
    assert decoder.pending_bytes == 12
    assert decoder.feed(b"\n\n") == [E(b"abc\nde")]
    assert decoder.pending_bytes == 0
    decoder.feed(b"data: x")
    assert decoder.pending_bytes == 7
    assert decoder.close() == []
    assert decoder.pending_bytes == 0


def test_close_discards_and_allows_a_new_stream() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"retry: 50\nid: 9\ndata: x\n\n:\ndata: unterminated\n") == [E(b"x", "", "9")]
    assert decoder.close() == []
    assert decoder.pending_bytes == 0
    assert (decoder.last_event_id, decoder.retry, decoder.comments) == ("9", 50, 1)
    # A reconnection: a fresh stream may start with a BOM again.
    assert decoder.feed(b"\xef\xbb\xbfdata: y\n\n") == [E(b"y")]
    assert decoder.close() == []


def test_close_drops_an_uncommitted_id() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 1\ndata: x\n\nid: 5\ndata: y\n") == [E(b"x", "", "1")]
    assert decoder.close() == []
    assert decoder.last_event_id == "1"
    assert decoder.feed(b"data: z\n\n\n") == [E(b"z")]
    assert decoder.last_event_id == "1"


def test_close_after_cr_does_not_leak_into_next_stream() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\r") == [E(b"a")]
    assert decoder.close() == []
    assert decoder.feed(b"\ndata: b\n\n") == [E(b"b")]


@pytest.mark.parametrize(
    ("before", "chunk", "expected"),
    [
        # Each `before` leaves state that the one-event fast path must not ignore.
        ([b"event: tok\n"], b"data: y\n\n", [E(b"y", "tok")]),
        ([b"id: 3\n"], b"data: y\n\n", [E(b"y", "", "3")]),
        ([b"data: a\n"], b"data: y\n\n", [E(b"a\ny")]),
        ([b"data: a"], b"data: y\n\n", [E(b"a" + b"data: y")]),
        ([b"data: a\r"], b"data: y\n\n", [E(b"a\ny")]),
        ([b"\xef\xbb"], b"data: y\n\n", []),
        ([b"data: a\n\n"], b"data: y\n\n", [E(b"y")]),
        ([b"event: tok\n\n"], b"data: y\n\n", [E(b"y")]),
        ([b"data: a\n\r"], b"data: y\n\n", [E(b"y")]),
        ([], b"data:y\n\n", [E(b"y")]),
        ([], b"data:\n\n", [E(b"")]),
        ([], b"data: \n\n", [E(b"")]),
        ([], b"data:  y\n\n", [E(b" y")]),
        ([], b"data: y\r\n\n", [E(b"y")]),
        ([], b"data: y\n\r\n", [E(b"y")]),
        ([], b"data: a\nevent: e\n\n", [E(b"a", "e")]),
        ([], b"data:\n", []),
        ([], b"data: \n", []),
    ],
)
def test_fast_path_agrees_with_general_path(before: list[bytes], chunk: bytes, expected: list[SSEEvent]) -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"data: first\n\n")  # leave the start-of-stream state
    for piece in before:
        events += decoder.feed(piece)
    last = decoder.feed(chunk)
    assert last == expected
    assert events + last == reference_decode(b"data: first\n\n" + b"".join(before) + chunk)[0]


@pytest.mark.parametrize("raw", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_feed_data_is_the_data_of_feed_for_every_chunking(raw: bytes) -> None:
    # feed_data (the transports' hot path) must return exactly the events' data, with
    # the multi-event fast path taken wherever it applies.
    for name, chunks in all_chunkings(raw):
        for warm in (False, True):
            plain, fast = SSEDecoder(), SSEDecoder()
            prefix = [b"data: first\n\n"] if warm else []
            expected = [e.data for piece in prefix + list(chunks) for e in plain.feed(piece)]
            got = [d for piece in prefix + list(chunks) for d in fast.feed_data(piece)]
            assert (name, warm, got) == (name, warm, expected)
            assert (fast.comments, fast.last_event_id) == (plain.comments, plain.last_event_id)


@pytest.mark.parametrize(
    ("chunk", "expected"),
    [
        (b"data: a\n\ndata:b\n\ndata: [DONE]\n\n", [b"a", b"b", DONE]),
        (b"data: a\n\ndata:\n\n", [b"a", b""]),
        (b"data: a\n\n:\n\ndata: b\n\n", [b"a", b"b"]),  # a keep-alive: general path
        (b"data: a\n\nevent: e\ndata: b\n\n", [b"a", b"b"]),
        (b"data: a\n\ndata: b\n\n\n", [b"a", b"b"]),  # a stray blank line
        (b"data: a\n\ndata: b\n\n\n\n", [b"a", b"b"]),
        (b"data: a\n\ndata: b\r\n\r\n", [b"a", b"b"]),
        (b"data: a\n\ndata: b\ndata: c\n\n", [b"a", b"b\nc"]),
        (b"data: a\n\ndata: partial", [b"a"]),
    ],
)
def test_feed_data_multi_event_chunks(chunk: bytes, expected: list[bytes]) -> None:
    decoder = SSEDecoder()
    assert decoder.feed_data(b"data: first\n\n") == [b"first"]
    assert decoder.feed_data(chunk) == expected


def test_feed_data_first_chunk_of_a_stream() -> None:
    # A stream's first read often holds many events (the server was quicker than the
    # reader): split in one pass, the partial last one kept for the next read.
    decoder = SSEDecoder()
    assert decoder.feed_data(b"data: a\n\ndata:b\n\ndata: par") == [b"a", b"b"]
    assert decoder.feed_data(b"tial\n\n") == [b"partial"]
    assert SSEDecoder().feed_data(b"\xef\xbb\xbfdata: a\n\ndata: b\n\n") == [b"a", b"b"]  # a BOM first
    with pytest.raises(ProtocolError, match="max_event_bytes=16"):
        SSEDecoder(max_event_bytes=16).feed_data(b"data: " + b"z" * 40 + b"\n\n")


def test_feed_data_respects_max_event_bytes() -> None:
    decoder = SSEDecoder(max_event_bytes=16)
    assert decoder.feed_data(b"data: x\n\n") == [b"x"]
    with pytest.raises(ProtocolError, match="max_event_bytes=16"):
        decoder.feed_data(b"data: y\n\ndata: " + b"z" * 40 + b"\n\n")


def test_done_marker() -> None:
    assert DONE == b"[DONE]"
    events, _ = decode([b"data: {}\n\n", b"data: [DONE]\n\n"])
    assert events == [E(b"{}"), E(b"[DONE]")]
    assert events[1].data == DONE


def test_event_class() -> None:
    event = SSEEvent(b"x")
    assert (event.data, event.event, event.id) == (b"x", "", None)
    assert SSEEvent.__slots__ == ("data", "event", "id")
    assert not hasattr(event, "__dict__")
    assert repr(SSEEvent(b"x", "e", "1")) == "SSEEvent(data=b'x', event='e', id='1')"
    assert SSEEvent(b"x", "e", "1") == SSEEvent(b"x", "e", "1")
    assert SSEEvent(b"x") != SSEEvent(b"x", "e")
    assert SSEEvent(b"x") != SSEEvent(b"x", "", "")
    assert SSEEvent(b"x") != (b"x", "", None)


# LoRAX's own bytes.

# A /generate_stream with details, byte-exact (docs/wire.md, "Streams").
SPEC_STREAM = (
    b'data: {"token":{"id":415,"text":" The","logprob":-0.31,"special":false,"skipped":false},'
    b'"generated_text":null,"details":null}\n\n'
    b'data: {"token":{"id":5465,"text":" Paris","logprob":-0.0625,"special":false,"skipped":false},'
    b'"generated_text":null,"details":null}\n\n'
    b'data: {"token":{"id":2,"text":"</s>","logprob":-0.0076,"special":true,"skipped":false},'
    b'"generated_text":" The Paris","details":{"finish_reason":"eos_token","prompt_tokens":15,'
    b'"generated_tokens":3,"seed":null}}\n\n'
)

# An error event inside a 200 stream (docs/wire.md, "Streams").
SPEC_ERROR_EVENT = (
    b'data: {"error":"Input validation error: `temperature` must be non-negative","error_type":"validation"}\n\n'
)


def frames(raw: bytes) -> list[bytes]:
    """Split a LoRAX body into its HTTP body frames: one event or keep-alive each."""
    return [frame + b"\n\n" for frame in raw.split(b"\n\n")[:-1]]


def lorax_chunkings(raw: bytes) -> list[list[bytes]]:
    return [[raw], frames(raw), bytewise(raw), [raw[i : i + 7] for i in range(0, len(raw), 7)]]


def test_spec_stream() -> None:
    for chunks in lorax_chunkings(SPEC_STREAM):
        events, decoder = decode(chunks)
        assert [(e.event, e.id) for e in events] == [("", None)] * 3
        assert [orjson.loads(e.data) for e in events] == [
            {
                "token": {"id": 415, "text": " The", "logprob": -0.31, "special": False, "skipped": False},
                "generated_text": None,
                "details": None,
            },
            {
                "token": {"id": 5465, "text": " Paris", "logprob": -0.0625, "special": False, "skipped": False},
                "generated_text": None,
                "details": None,
            },
            {
                "token": {"id": 2, "text": "</s>", "logprob": -0.0076, "special": True, "skipped": False},
                "generated_text": " The Paris",
                "details": {"finish_reason": "eos_token", "prompt_tokens": 15, "generated_tokens": 3, "seed": None},
            },
        ]
        assert events[0].data == SPEC_STREAM.split(b"\n\n")[0][len(b"data: ") :]
        assert decoder.comments == 0


def test_spec_error_event() -> None:
    for chunks in lorax_chunkings(b":\n\n" + SPEC_ERROR_EVENT):
        events, decoder = decode(chunks)
        assert events == [
            E(b'{"error":"Input validation error: `temperature` must be non-negative","error_type":"validation"}')
        ]
        assert orjson.loads(events[0].data) == {
            "error": "Input validation error: `temperature` must be non-negative",
            "error_type": "validation",
        }
        assert decoder.comments == 1


def _wire_examples_path() -> Path:
    override = os.environ.get("LORAX_WIRE_EXAMPLES")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent / "fixtures" / "wire-examples.json"


@pytest.fixture(scope="module")
def wire_examples() -> dict[str, dict[str, object]]:
    # The committed fixture (LORAX_WIRE_EXAMPLES points at another copy): a missing file
    # fails here rather than skipping the byte-exact checks below.
    path = _wire_examples_path()
    examples: dict[str, dict[str, object]] = json.loads(path.read_text(encoding="utf-8"))
    return examples


def _raw(examples: dict[str, dict[str, object]], key: str) -> bytes:
    raw = examples[key]["raw"]
    assert isinstance(raw, str)
    return raw.encode()


def test_wire_example_generate_stream(wire_examples: dict[str, dict[str, object]]) -> None:
    raw = _raw(wire_examples, "generate_stream.raw_stream")
    for chunks in lorax_chunkings(raw):
        events, decoder = decode(chunks)
        assert decoder.comments == 1  # the keep-alive before the first token
        payloads = [orjson.loads(e.data) for e in events]
        assert [p["token"]["text"] for p in payloads] == [
            " The",
            " capital",
            " of",
            " France",
            " is",
            " Paris",
            ".",
            "</s>",
        ]
        assert [p["token"]["id"] for p in payloads] == [415, 5565, 302, 4843, 349, 5465, 28723, 2]
        assert [p["generated_text"] for p in payloads] == [None] * 7 + [" The capital of France is Paris."]
        assert payloads[-1]["details"] == {
            "finish_reason": "eos_token",
            "prompt_tokens": 15,
            "generated_tokens": 8,
            "seed": None,
        }
        assert all(e.data != DONE for e in events)  # native streams never send [DONE]
        assert events[0].data == (
            b'{"token":{"id":415,"text":" The","logprob":-0.2544,"special":false,"skipped":false},'
            b'"generated_text":null,"details":null}'
        )


def test_wire_example_completions_tail(wire_examples: dict[str, dict[str, object]]) -> None:
    raw = _raw(wire_examples, "completions.stream.raw_tail")
    for chunks in lorax_chunkings(raw):
        events, decoder = decode(chunks)
        assert len(events) == 3
        assert events[2] == E(DONE)
        first, final = (orjson.loads(e.data) for e in events[:2])
        assert first["choices"] == [{"index": 0, "text": " Mathematics", "logprobs": None, "finish_reason": None}]
        assert final["choices"] == [{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}]
        assert final["usage"] == {"prompt_tokens": 24, "total_tokens": 57, "completion_tokens": 33}
        assert decoder.comments == 0


def test_wire_example_chat_stream(wire_examples: dict[str, dict[str, object]]) -> None:
    raw = _raw(wire_examples, "chat.stream.raw_stream")
    for chunks in lorax_chunkings(raw):
        events, _ = decode(chunks)
        assert len(events) == 9
        assert events[-1] == E(DONE)
        payloads = [orjson.loads(e.data) for e in events[:-1]]
        assert [p["object"] for p in payloads] == ["chat.completion.chunk"] * 8
        deltas = [p["choices"][0]["delta"] for p in payloads]
        assert "".join(d.get("content", "") for d in deltas) == " The capital of France is Paris."
        assert [p["choices"][0]["finish_reason"] for p in payloads] == [None] * 7 + ["stop"]
        assert payloads[-1]["usage"] == {"prompt_tokens": 15, "total_tokens": 23, "completion_tokens": 8}


def test_wire_example_keepalive(wire_examples: dict[str, dict[str, object]]) -> None:
    raw = _raw(wire_examples, "sse.keepalive")
    assert raw == b":\n\n"
    events, decoder = decode([raw, raw, raw])
    assert events == []
    assert decoder.comments == 3


# Property tests.

_line_text = st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b)
_field_text = st.text(
    st.characters(codec="utf-8", exclude_characters="\r\n\x00"),
    max_size=12,
)
_endings = st.sampled_from([b"\n", b"\r", b"\r\n"])


@st.composite
def _streams(draw: st.DrawFn) -> tuple[bytes, list[SSEEvent], int, list[int]]:
    """A serialised stream, the events it must give, its comment count, event offsets."""
    parts: list[bytes] = []
    expected: list[SSEEvent] = []
    boundaries: list[int] = []
    comments = 0
    offset = 0

    def emit(line: bytes) -> None:
        nonlocal offset
        ending = draw(_endings)
        if not line and parts and parts[-1].endswith(b"\r") and ending == b"\n":
            ending = b"\r"  # CR then LF would be one CRLF, not two line endings
        parts.append(line + ending)
        offset += len(line) + len(ending)

    if draw(st.booleans()):
        parts.append(b"\xef\xbb\xbf")
        offset += 3
    for _ in range(draw(st.integers(0, 6))):
        lines = draw(st.lists(_line_text, max_size=4))
        event = draw(st.one_of(st.just(""), _field_text))
        event_id = draw(st.one_of(st.none(), _field_text))
        if event:
            emit(b"event: " + event.encode())
        if event_id is not None:
            emit(b"id: " + event_id.encode())
        for line in lines:
            if draw(st.booleans()):
                emit(b":" + draw(_line_text))
                comments += 1
            # "data:" without the space is only exact when the value has no leading space.
            sep = b"data: " if line.startswith(b" ") or draw(st.booleans()) else b"data:"
            emit(sep + line)
        emit(b"")
        boundaries.append(offset)
        if lines:
            expected.append(SSEEvent(b"\n".join(lines), event, event_id))
    return b"".join(parts), expected, comments, boundaries


@settings(max_examples=300, deadline=None)
@given(stream=_streams(), data=st.data())
def test_property_roundtrip_any_chunking(
    stream: tuple[bytes, list[SSEEvent], int, list[int]], data: st.DataObject
) -> None:
    raw, expected, comments, boundaries = stream
    # Either arbitrary cuts, or one event per chunk: the transports' usual case, and
    # the fast path's.
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12)) if data.draw(st.booleans()) else boundaries
    events, decoder = decode(split_at(raw, cuts))
    assert events == expected
    assert decoder.comments == comments
    assert decoder.pending_bytes == 0


_sse_alphabet = st.sampled_from(
    [
        b"data",
        b"data:",
        b"data: ",
        b"event:",
        b"id:",
        b"retry:",
        b":",
        b" ",
        b"\r",
        b"\n",
        b"\r\n",
        b"x",
        b"1",
        b"\x00",
        b"\xef\xbb\xbf",
        b"\xef",
        b"\xff",
        "é".encode(),
        b"[DONE]",
    ]
)
_sse_like = st.lists(_sse_alphabet, max_size=60).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(st.binary(max_size=200), _sse_like), data=st.data())
def test_property_arbitrary_bytes(raw: bytes, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    events, decoder = decode(split_at(raw, cuts))
    # Any chunking gives exactly what the literal spec algorithm gives on the whole stream.
    assert (events, decoder.comments, decoder.last_event_id, decoder.retry) == reference_decode(raw)
    for event in events:
        assert b"\r" not in event.data


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(st.binary(max_size=300), _sse_like), limit=st.integers(1, 64), data=st.data())
def test_property_only_lorax_errors(raw: bytes, limit: int, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    decoder = SSEDecoder(max_event_bytes=limit)
    events: list[SSEEvent] = []
    error: LoraxError | None = None
    try:
        for chunk in split_at(raw, cuts):
            events += decoder.feed(chunk)
        events += decoder.close()
    except LoraxError as exc:
        error = exc
    assert all(len(event.data) < limit for event in events)
    if error is not None:
        assert type(error) is ProtocolError
        assert f"max_event_bytes={limit}" in str(error)
        assert decoder.pending_bytes == 0


def _chunks_for(sizes: Sequence[int], raw: bytes) -> list[bytes]:
    out: list[bytes] = []
    pos = 0
    for size in sizes:
        out.append(raw[pos : pos + size])
        pos += size
    out.append(raw[pos:])
    return out


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(0, 300), max_size=30))
def test_property_spec_stream_any_sizes(sizes: list[int]) -> None:
    events, _ = decode(_chunks_for(sizes, SPEC_STREAM))
    assert [e.data for e in events] == [f[len(b"data: ") : -2] for f in frames(SPEC_STREAM)]


def test_feed_data_after_a_failure_keeps_refusing() -> None:
    # A failed decoder is back at its start state; the first-chunk shortcut must not
    # let a later chunk through as if the stream began again.
    decoder = SSEDecoder(max_event_bytes=16)
    with pytest.raises(ProtocolError, match="max_event_bytes=16"):
        decoder.feed_data(b"data: " + b"z" * 40 + b"\n\n")
    with pytest.raises(ProtocolError, match="already failed"):
        decoder.feed_data(b"data: 1\n\n")
