"""A sans-I/O decoder of HTTP/1.1 chunked bodies (RFC 9112 section 7.1).

Bytes in, body data out; no sockets, so every case is tested with byte fixtures cut at
every position. LoRAX's streaming routes send one SSE event per chunk, so the synchronous
transport de-chunks everything one read brought in a single :meth:`ChunkedDecoder.feed`:
under a backlog, that is many chunks for one call, where urllib3's ``read_chunked``
costs a ``readline`` and two reads per chunk.

::

    decoder = ChunkedDecoder()
    data = decoder.feed(b"5\\r\\nhello\\r\\n0\\r\\n\\r\\n")   # b"hello"
    assert decoder.done and decoder.unused == b""

Malformed framing raises :class:`ChunkedBodyError` (a ``ValueError``) naming what was
wrong; the transports map it to :mod:`lorax.errors` (the body broke off).
"""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_LINE", "DEFAULT_MAX_TRAILER_BYTES", "ChunkedBodyError", "ChunkedDecoder"]

#: The longest chunk-size line (size and extensions) accepted, in bytes.
DEFAULT_MAX_LINE = 4096
#: The most bytes of trailer fields accepted after the last chunk (LoRAX sends none).
DEFAULT_MAX_TRAILER_BYTES = 64 * 1024

_HEX = b"0123456789abcdefABCDEF"
_MAX_SIZE_DIGITS = 16  # 2**64 - 1: no real chunk is larger

# States.
_SIZE = 0  # reading a chunk-size line
_DATA = 1  # inside a chunk's data
_CRLF = 2  # after a chunk's data: its CRLF
_TRAILER = 3  # after the last chunk: trailer lines, then an empty line
_DONE = 4


class ChunkedBodyError(ValueError):
    """The chunked framing of a body is malformed."""


class ChunkedDecoder:
    """Incremental chunked-body decoder.

    Args:
        max_line: the longest chunk-size line (with extensions) accepted.
        max_trailer_bytes: the most trailer bytes accepted after the last chunk.

    Attributes:
        done: the last chunk and the trailer section have been read.
        trailers: the trailer field lines (raw bytes, without CRLF), in order.
        unused: bytes fed after the end of the body (not part of it).
    """

    __slots__ = (
        "_buf",
        "_crlf",
        "_left",
        "_max_line",
        "_max_trailer",
        "_state",
        "_trailer_bytes",
        "trailers",
        "unused",
    )

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE, max_trailer_bytes: int = DEFAULT_MAX_TRAILER_BYTES) -> None:
        if max_line < 1 or max_trailer_bytes < 0:
            raise ValueError("max_line must be >= 1 and max_trailer_bytes >= 0")
        self._max_line = max_line
        self._max_trailer = max_trailer_bytes
        self._state = _SIZE
        self._buf = b""  # an incomplete size or trailer line
        self._left = 0  # data bytes of the current chunk still to come
        self._crlf = 0  # bytes of the current chunk's CRLF already seen
        self._trailer_bytes = 0
        self.trailers: list[bytes] = []
        self.unused = b""

    @property
    def done(self) -> bool:
        """Whether the whole body (last chunk and trailers) has been read."""
        return self._state == _DONE

    @property
    def at_chunk_start(self) -> bool:
        """Whether the next byte fed starts a chunk-size line (nothing is buffered).

        :class:`lorax._sse_chunked.ChunkedEventDecoder` frames whole chunks itself from
        here, and hands the bytes back to :meth:`feed` whenever they are not that.
        """
        return self._state == _SIZE and not self._buf

    def feed(self, data: bytes) -> bytes:
        """Feed bytes as they arrive; return the body data they completed (maybe b"").

        Any split works, including inside a size line, inside a chunk's CRLF or
        inside the trailers. After the end of the body, further bytes go to
        ``unused``.

        Raises:
            ChunkedBodyError: a size that is not hexadecimal, a line too long, data
                not followed by CRLF, or trailers over the limit.
        """
        if data == b"0\r\n\r\n" and self._state == _SIZE and not self._buf:
            self._state = _DONE  # the last chunk without trailers: how every stream ends
            return b""
        if self._buf:
            data = self._buf + data
            self._buf = b""
        out: list[bytes] = []
        pos = 0
        if self._state in (_DATA, _CRLF):
            # A read ends anywhere: finish the chunk it cut, then take the fast path.
            pos = self._run(data, 0, out, until_size=True)
            if 0 < pos < len(data):
                data = data[pos:]
                pos = 0
        if self._state == _SIZE and pos < len(data):
            # The fast path for many small chunks (LoRAX's one SSE event per chunk):
            # one C-level split on CRLF gives size, data, size, data, ... as long as
            # the data holds no CRLF, which the length check proves. It takes whole
            # chunks from the start; _run goes on from where it stopped.
            parts = data.split(b"\r\n")
            last = len(parts) - 2  # the data at parts[i + 1] needs a CRLF after it
            i = 0
            while i < last:
                line = parts[i]
                chunk = parts[i + 1]
                if not line or len(line) > 8 or line.translate(None, _HEX):
                    break
                n = int(line, 16)
                if n == 0 or len(chunk) != n:
                    break
                out.append(chunk)
                pos += len(line) + n + 4
                i += 2
        if pos < len(data):
            self._run(data, pos, out, until_size=False)
        if not out:
            return b""
        return out[0] if len(out) == 1 else b"".join(out)

    def _run(self, data: bytes, pos: int, out: list[bytes], *, until_size: bool) -> int:
        """The general state machine from `pos`; returns where it stopped."""
        size = len(data)
        state = self._state
        while pos < size:
            if state == _SIZE:
                if until_size:
                    break
                eol = data.find(b"\r\n", pos, pos + self._max_line + 2)
                if eol < 0:
                    if size - pos > self._max_line:
                        raise ChunkedBodyError(f"chunk size line longer than {self._max_line} bytes")
                    self._buf = data[pos:]
                    pos = size
                    break
                n = _chunk_size(data[pos:eol])
                pos = eol + 2
                if n == 0:
                    state = _TRAILER
                    continue
                end = pos + n
                if end + 2 <= size:
                    if data[end : end + 2] != b"\r\n":
                        raise ChunkedBodyError(f"chunk data not followed by CRLF (got {data[end : end + 2]!r})")
                    out.append(data[pos:end])
                    pos = end + 2
                    continue
                if end <= size:
                    out.append(data[pos:end])
                    pos = end
                    self._crlf = 0
                    state = _CRLF
                    continue
                out.append(data[pos:])
                self._left = end - size
                state = _DATA
                pos = size
                break
            if state == _DATA:
                end = pos + self._left
                if end > size:
                    out.append(data[pos:])
                    self._left = end - size
                    pos = size
                    break
                out.append(data[pos:end])
                pos = end
                self._left = 0
                self._crlf = 0
                state = _CRLF
            elif state == _CRLF:
                seen = self._crlf
                want = b"\r\n"[seen:]
                got = data[pos : pos + len(want)]
                if not want.startswith(got):
                    raise ChunkedBodyError(f"chunk data not followed by CRLF (got {got!r})")
                pos += len(got)
                self._crlf = seen + len(got)
                if self._crlf == 2:
                    state = _SIZE
            elif state == _TRAILER:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    rest = data[pos:]
                    if self._trailer_bytes + len(rest) > self._max_trailer + 1:
                        raise ChunkedBodyError(f"chunked body trailers larger than {self._max_trailer} bytes")
                    self._buf = rest
                    pos = size
                    break
                line = data[pos:eol]
                pos = eol + 2
                if not line:
                    state = _DONE
                    continue
                self._trailer_bytes += len(line) + 2
                if self._trailer_bytes > self._max_trailer:
                    raise ChunkedBodyError(f"chunked body trailers larger than {self._max_trailer} bytes")
                if b":" not in line or line[:1] in (b" ", b"\t"):
                    raise ChunkedBodyError(f"malformed trailer field {line[:40]!r}")
                self.trailers.append(line)
            else:  # _DONE
                self.unused += data[pos:]
                pos = size
                break
        self._state = state
        return pos


def _chunk_size(line: bytes) -> int:
    """The size of a chunk-size line: ``1*HEXDIG [BWS] *( ";" chunk-ext )``."""
    semi = line.find(b";")
    digits = line if semi < 0 else line[:semi].rstrip(b" \t")
    # int(x, 16) would also take "0x", "_", signs and spaces: check the digits first.
    if not digits or digits.translate(None, _HEX) or len(digits) > _MAX_SIZE_DIGITS:
        raise ChunkedBodyError(f"invalid chunk size line {line[:40]!r}")
    if semi >= 0 and (b"\r" in line or b"\n" in line):
        raise ChunkedBodyError(f"invalid chunk extension {line[:40]!r}")
    return int(digits, 16)
