"""The sans-I/O chunked-body decoder, against byte fixtures cut at every position."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from lorax._chunked import ChunkedBodyError, ChunkedDecoder


def chunkings(raw: bytes) -> Iterator[list[bytes]]:
    """The whole fixture, one byte at a time, and every split in two and three pieces."""
    yield [raw]
    yield [raw[i : i + 1] for i in range(len(raw))]
    for i in range(len(raw) + 1):
        yield [raw[:i], raw[i:]]
    if len(raw) <= 80:
        for i, j in itertools.combinations(range(len(raw) + 1), 2):
            yield [raw[:i], raw[i:j], raw[j:]]


def decode(pieces: list[bytes]) -> tuple[bytes, ChunkedDecoder]:
    decoder = ChunkedDecoder()
    return b"".join(decoder.feed(piece) for piece in pieces), decoder


SSE = b"data: {}\n\n"

GOOD = [
    ("one", b"5\r\nhello\r\n0\r\n\r\n", b"hello", [], b""),
    ("two", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world", [], b""),
    ("hex-upper-lower", b"A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", b"0123456789abcdefghij", [], b""),
    ("leading-zeros", b"0005\r\nhello\r\n000\r\n\r\n", b"hello", [], b""),
    ("extension", b"5;name=value\r\nhello\r\n0;last\r\n\r\n", b"hello", [], b""),
    ("extension-bws", b"5 ;a=b\r\nhello\r\n0\t;x\r\n\r\n", b"hello", [], b""),
    ("quoted-extension", b'5;a="b;c"\r\nhello\r\n0\r\n\r\n', b"hello", [], b""),
    ("trailers", b"5\r\nhello\r\n0\r\nX-A: 1\r\nX-B:2\r\n\r\n", b"hello", [b"X-A: 1", b"X-B:2"], b""),
    ("data-with-crlf-inside", b"4\r\n\r\n\r\n\r\n0\r\n\r\n", b"\r\n\r\n", [], b""),
    ("lorax-sse", b"a\r\n" + SSE + b"\r\na\r\n" + SSE + b"\r\n0\r\n\r\n", SSE + SSE, [], b""),
    ("bytes-after-the-end", b"1\r\nx\r\n0\r\n\r\nHTTP/1.1", b"x", [], b"HTTP/1.1"),
    ("empty-body", b"0\r\n\r\n", b"", [], b""),
]


@pytest.mark.parametrize(("raw", "body", "trailers", "unused"), [c[1:] for c in GOOD], ids=[c[0] for c in GOOD])
def test_every_chunking_decodes_the_same(raw: bytes, body: bytes, trailers: list[bytes], unused: bytes) -> None:
    for pieces in chunkings(raw):
        got, decoder = decode(pieces)
        assert (pieces, got) == (pieces, body)
        assert decoder.done
        assert decoder.trailers == trailers
        assert decoder.unused == unused


@pytest.mark.parametrize(("raw", "body", "trailers", "unused"), [c[1:] for c in GOOD], ids=[c[0] for c in GOOD])
def test_a_cut_body_is_not_done(raw: bytes, body: bytes, trailers: list[bytes], unused: bytes) -> None:
    end = len(raw) - len(unused)
    for cut in range(end):
        got, decoder = decode([raw[:cut]])
        assert not decoder.done
        assert body.startswith(got)


BAD = [
    ("not-hex", b"5x\r\nhello\r\n", "invalid chunk size line b'5x'"),
    ("empty-size", b"\r\nhello\r\n", "invalid chunk size line b''"),
    ("negative", b"-5\r\nhello\r\n", "invalid chunk size line b'-5'"),
    ("plus-sign", b"+5\r\nhello\r\n", "invalid chunk size line b'+5'"),
    ("0x-prefix", b"0x5\r\nhello\r\n", "invalid chunk size line b'0x5'"),
    ("underscore", b"1_0\r\n", "invalid chunk size line b'1_0'"),
    ("space-before", b" 5\r\nhello\r\n", "invalid chunk size line b' 5'"),
    ("bare-lf", b"5\nhello\r\n0\r\n\r\n", "invalid chunk size line"),
    ("too-many-digits", b"1" * 17 + b"\r\n", "invalid chunk size line"),
    ("no-crlf-after-data", b"5\r\nhelloXY0\r\n\r\n", "chunk data not followed by CRLF (got b'X"),
    ("lf-only-after-data", b"5\r\nhello\n0\r\n\r\n", "chunk data not followed by CRLF"),
    ("trailer-without-colon", b"0\r\nnot a field\r\n\r\n", "malformed trailer field b'not a field'"),
    ("trailer-obs-fold", b"0\r\nX-A: 1\r\n folded\r\n\r\n", "malformed trailer field"),
]


@pytest.mark.parametrize(("raw", "message"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_framing_raises_a_typed_error_in_every_chunking(raw: bytes, message: str) -> None:
    for pieces in chunkings(raw):
        with pytest.raises(ChunkedBodyError) as info:
            decode(pieces)
        assert message in str(info.value), pieces
    assert issubclass(ChunkedBodyError, ValueError)


def test_size_line_length_is_bounded() -> None:
    decoder = ChunkedDecoder(max_line=8)
    assert decoder.feed(b"5;abcd") == b""  # still within the limit: buffered
    with pytest.raises(ChunkedBodyError, match="chunk size line longer than 8 bytes"):
        decoder.feed(b"efgh")
    with pytest.raises(ChunkedBodyError, match="longer than 8 bytes"):
        ChunkedDecoder(max_line=8).feed(b"5" + b";" * 20)
    # Exactly at the limit is fine.
    assert ChunkedDecoder(max_line=8).feed(b"5;abcdef\r\nhello\r\n") == b"hello"


def test_trailers_are_bounded() -> None:
    decoder = ChunkedDecoder(max_trailer_bytes=10)
    decoder.feed(b"0\r\nX-A: 1\r\n")
    with pytest.raises(ChunkedBodyError, match="trailers larger than 10 bytes"):
        decoder.feed(b"X-B: 2\r\n\r\n")
    with pytest.raises(ChunkedBodyError, match="trailers larger than 10 bytes"):
        ChunkedDecoder(max_trailer_bytes=10).feed(b"0\r\n" + b"X" * 40)


def test_large_chunk_in_small_reads_is_returned_as_it_arrives() -> None:
    decoder = ChunkedDecoder()
    body = bytes(range(256)) * 64
    raw = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    got = [decoder.feed(raw[i : i + 1000]) for i in range(0, len(raw), 1000)]
    assert b"".join(got) == body
    assert all(got[:16])  # data came out with every read, not only at the chunk's end
    assert decoder.done


def test_many_chunks_in_one_read_come_out_joined() -> None:
    events = [b'data: {"n": %d}\n\n' % i for i in range(100)]
    raw = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events)
    decoder = ChunkedDecoder()
    assert decoder.feed(raw) == b"".join(events)
    assert not decoder.done
    assert decoder.feed(b"0\r\n\r\n") == b""
    assert decoder.done


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_line"):
        ChunkedDecoder(max_line=0)
