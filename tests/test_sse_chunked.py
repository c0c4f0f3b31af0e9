"""lorax._sse_chunked.ChunkedEventDecoder against byte fixtures cut at every position.

Its result must always be the general decoders' (ChunkedDecoder, then
SSEDecoder.feed_data) over the same bytes, with their limits and errors; the tests
also check that LoRAX-shaped reads take the fast path (nothing reaches the general
SSE parser, a cut chunk is kept raw).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from lorax._chunked import ChunkedBodyError, ChunkedDecoder
from lorax._sse import DONE, SSEDecoder
from lorax._sse_chunked import ChunkedEventDecoder
from lorax.errors import ProtocolError


def chunk(data: bytes, size: bytes | None = None) -> bytes:
    return (size if size is not None else b"%x" % len(data)) + b"\r\n" + data + b"\r\n"


def events(*datas: bytes) -> bytes:
    """LoRAX's framing: one ``data: <json>\\n\\n`` event per chunk."""
    return b"".join(chunk(b"data: " + d + b"\n\n") for d in datas)


END = b"0\r\n\r\n"
TOKENS = [b'{"token":{"id":%d,"text":" t%d"},"generated_text":null}' % (i, i) for i in range(12)]

CASES = [
    ("lorax", events(*TOKENS) + END),
    ("lorax-done", events(*TOKENS[:3], DONE) + END),
    ("two-events-one-chunk", chunk(b"data: a\n\ndata: b\n\n") + events(b"c") + END),
    ("event-across-chunks", chunk(b"data: a") + chunk(b"bc\n\n") + events(b"d") + END),
    ("keep-alive", events(b"a") + chunk(b":\n\n") + events(b"b") + END),
    ("old-spelling", chunk(b"data:a\n\n") + chunk(b"data:b\n\n") + END),
    ("crlf-events", chunk(b"data: a\r\n\r\n") + events(b"b") + END),
    ("lone-cr", chunk(b"data: a\r\r") + events(b"b") + END),
    ("multi-line", chunk(b"data: a\ndata: b\n\n") + events(b"c") + END),
    ("fields", chunk(b"event: e\nid: 7\ndata: a\n\n") + events(b"b") + END),
    ("extension", chunk(b"data: a\n\n", b"9;x=y") + events(b"b") + END),
    ("upper-hex-leading-zero", chunk(b"data: " + b"x" * 20 + b"\n\n", b"001C") + events(b"b") + END),
    ("trailers", events(b"a") + b"0\r\nX-A: 1\r\n\r\n"),
    ("after-end", events(b"a") + END + b"junk"),
    ("bom", chunk(b"\xef\xbb\xbfdata: a\n\n") + events(b"b") + END),
    ("empty-data", events(b"", b"x") + END),
    ("data-prefix-in-data", events(b"data: x") + END),
    ("stray-blank", events(b"a") + chunk(b"\n\n") + events(b"b") + END),
    ("unfinished", events(b"a") + chunk(b"data: b\n")),
    ("data-with-crlf", chunk(b"data: a\r\n\r\n\r\n") + events(b"b") + END),
]


def chunkings(raw: bytes) -> Iterator[list[bytes]]:
    """Whole, byte by byte, and every split in two (and in three for short fixtures)."""
    yield [raw]
    yield [raw[i : i + 1] for i in range(len(raw))]
    for i in range(len(raw) + 1):
        yield [raw[:i], raw[i:]]
    if len(raw) <= 120:
        for i, j in itertools.combinations(range(0, len(raw) + 1, 3), 2):
            yield [raw[:i], raw[i:j], raw[j:]]


def general(pieces: list[bytes]) -> tuple[list[bytes], ChunkedDecoder, SSEDecoder]:
    chunked, sse = ChunkedDecoder(), SSEDecoder()
    out = [d for piece in pieces for d in sse.feed_data(chunked.feed(piece))]
    return out, chunked, sse


@pytest.mark.parametrize("raw", [c[1] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("carry_max", [0, 16, 64 * 1024])
def test_same_events_as_the_general_decoders_for_every_cut(raw: bytes, carry_max: int) -> None:
    for pieces in chunkings(raw):
        expected, chunked, sse = general(pieces)
        decoder = ChunkedEventDecoder(carry_max=carry_max)
        got = [d for piece in pieces for d in decoder.feed(piece)]
        assert (pieces, got) == (pieces, expected)
        assert decoder.done == chunked.done
        assert (decoder.chunked.trailers, decoder.chunked.unused) == (chunked.trailers, chunked.unused)
        assert (decoder.sse.comments, decoder.sse.last_event_id) == (sse.comments, sse.last_event_id)


def test_lorax_reads_take_the_fast_path() -> None:
    raw = events(*TOKENS) + END
    cut = raw.index(b"\r\n", len(chunk(b"data: " + TOKENS[0] + b"\n\n")) * 5) + 9  # inside chunk 6's data
    decoder = ChunkedEventDecoder()
    assert decoder.feed(raw[:cut]) == TOKENS[:5]
    # The cut chunk is kept raw (for the next read to start on a chunk boundary); the
    # general SSE parser has buffered nothing.
    assert decoder.pending_bytes == cut - len(events(*TOKENS[:5]))
    assert decoder.sse.pending_bytes == 0
    assert decoder.chunked.at_chunk_start
    assert decoder.feed(raw[cut:]) == TOKENS[5:]
    assert decoder.done
    assert decoder.pending_bytes == 0


def test_a_chunk_larger_than_carry_max_streams_through_the_general_decoders() -> None:
    big = b'{"text":"' + b"x" * 5000 + b'"}'
    raw = events(b"a", big, b"b") + END
    decoder = ChunkedEventDecoder(carry_max=256)
    got: list[bytes] = []
    most = 0
    for i in range(0, len(raw), 100):
        got += decoder.feed(raw[i : i + 100])
        most = max(most, decoder.pending_bytes - decoder.sse.pending_bytes)
    assert got == [b"a", big, b"b"]
    assert decoder.done
    assert most <= 256 + 100  # what is kept raw stays bounded


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (events(b"a") + b"+5\r\ndata:\r\n", "invalid chunk size line"),
        (events(b"a") + b"0x5\r\nab\n\n\r\n", "invalid chunk size line"),
        (events(b"a") + b" 5\r\nab\n\n\r\n", "invalid chunk size line"),
        (events(b"a") + b"5_\r\nab\n\n\r\n", "invalid chunk size line"),
        (events(b"a") + b"\r\nab\n\n\r\n", "invalid chunk size line"),
        (events(b"a") + b"3\r\nab\n\n\r\n", "chunk data not followed by CRLF"),
        (events(b"a") + b"00000000000000009\r\ndata: a\n\n\r\n", "invalid chunk size line"),
    ],
)
def test_malformed_framing_raises_what_chunked_decoder_raises(raw: bytes, message: str) -> None:
    with pytest.raises(ChunkedBodyError, match=message):
        ChunkedDecoder().feed(raw)
    decoder = ChunkedEventDecoder()
    with pytest.raises(ChunkedBodyError, match=message):
        decoder.feed(raw)


def test_size_line_longer_than_the_limit_without_crlf_is_refused() -> None:
    decoder = ChunkedEventDecoder(carry_max=64)
    for _ in range(40):
        assert decoder.feed(b"1" * 100) == []
    with pytest.raises(ChunkedBodyError, match="chunk size line longer than 4096 bytes"):
        decoder.feed(b"1" * 100)


def test_max_event_bytes_holds_on_the_fast_path() -> None:
    decoder = ChunkedEventDecoder(max_event_bytes=64)
    assert decoder.feed(events(b"x")) == [b"x"]
    with pytest.raises(ProtocolError, match="max_event_bytes=64"):
        decoder.feed(events(b"y", b"z" * 100))
    with pytest.raises(ProtocolError, match="already failed"):
        decoder.feed(events(b"a"))


def test_max_event_bytes_counts_a_batch_of_small_events_as_the_general_parser_does() -> None:
    # 10 events of 20 bytes in one read: the read is over the limit, each event is not.
    raw = events(*[b"e" * 20] * 10)
    expected, _, _ = general([raw])
    decoder = ChunkedEventDecoder(max_event_bytes=64)
    assert decoder.feed(raw) == expected == [b"e" * 20] * 10


def test_feed_whole_refuses_what_it_cannot_prove() -> None:
    for body in (
        b"data: a\n\n:\n\n",
        b"data: a\n\ndata:b\n\n",
        b"data: a\r\n\r\n",
        b"data: a\n\ndata: b",
        b"data: a\n\n\n",
        b"data: a\n\n\n\ndata: b\n\n",
        b"data: a\nid: 1\n\n",
        b"event: x\ndata: a\n\n",
    ):
        decoder = SSEDecoder()
        assert decoder.feed_whole(body) is None, body
        assert decoder.pending_bytes == 0
    decoder = SSEDecoder()
    assert decoder.feed_data(b"data: a") == []
    assert decoder.feed_whole(b"data: b\n\n") is None  # something is buffered
    fresh = SSEDecoder()
    assert fresh.feed_whole(b"data: a\n\ndata: data: b\n\ndata: \n\n") == [b"a", b"data: b", b""]


def test_feed_events_takes_only_one_whole_data_event_per_chunk() -> None:
    for chunks in (
        [b"data: a\n\n", b"data:b\n\n"],
        [b"data: a\n\ndata: b\n\n"],
        [b"data: a\r\n\r\n"],
        [b"data: a\n", b"\n"],
        [b"data:\n\n"],
        [b"data: a\nb\n\n"],
        [b":\n\n"],
        [b"data: a\n\n", b"\n\n"],
    ):
        decoder = SSEDecoder()
        assert decoder.feed_events(chunks) is None, chunks
    decoder = SSEDecoder()
    assert decoder.feed_events([b"data: \n\n", b"data: data: x\n\n", b'data: {"a":1}\n\n']) == [
        b"",
        b"data: x",
        b'{"a":1}',
    ]
    assert SSEDecoder(max_event_bytes=20).feed_events([b"data: 0123456789\n\n", b"data: x\n\n"]) is None
    assert SSEDecoder(max_event_bytes=20).feed_events([b"data: 0123456789\n\n"]) == [b"0123456789"]


def test_the_known_size_lines_stay_bounded_and_never_hold_a_bad_line() -> None:
    from lorax import _sse_chunked

    decoder = ChunkedEventDecoder()
    for i in range(5000):  # 5000 chunk lengths: 5000 size lines never seen before
        assert decoder.feed(chunk(b"data: " + b"x" * i + b"\n\n", b"%06X" % (i + 8))) == [b"x" * i]
    with pytest.raises(ChunkedBodyError, match="invalid chunk size line b'0x9'"):
        decoder.feed(chunk(b"data: y\n\n", b"0x9"))
    assert b"0x9" not in _sse_chunked._KNOWN
    assert len(_sse_chunked._KNOWN) == _sse_chunked._KNOWN_MAX
    assert all(not line.translate(None, b"0123456789abcdefABCDEF") for line in _sse_chunked._KNOWN)
    assert all(int(line, 16) == size for line, size in _sse_chunked._KNOWN.items())
