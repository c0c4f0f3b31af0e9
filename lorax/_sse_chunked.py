"""A sans-I/O decoder from a chunked ``text/event-stream`` body to its events' data.

The synchronous transport's per-token path: the raw bytes of each socket read go in,
the data of every event they completed comes out, de-chunked and SSE-split in one
pass of C-level operations over the read (no Python step per event)::

    decoder = ChunkedEventDecoder(max_event_bytes=1 << 20)
    decoder.feed(b"f\\r\\ndata: {\\"a\\":1}\\n\\n\\r\\n0\\r\\n\\r\\n")   # [b'{"a":1}']
    assert decoder.done

LoRAX sends one ``data: <json>\\n\\n`` event per HTTP chunk (docs/wire.md, "Streams"),
so a read holds many whole chunks, then the start of one more. The fast path splits
the read on CRLF, which gives size, data, size, data, ...; it proves the framing by
comparing all the sizes with all the data lengths at once, and hands the joined data
to :meth:`lorax._sse.SSEDecoder.feed_whole`. The cut chunk at the end of the read is
kept (up to ``carry_max`` bytes) and read again in front of the next read, so that
the next read starts on a chunk boundary and can take the fast path too.

Anything else (a chunk extension, a chunk that is not whole events, comments, the
last chunk and trailers, a chunk larger than ``carry_max``) goes through
:class:`lorax._chunked.ChunkedDecoder` and :meth:`lorax._sse.SSEDecoder.feed_data`,
the general decoders, so the result is always theirs, with their limits and errors.
"""

from __future__ import annotations

from typing import cast

from lorax._chunked import DEFAULT_MAX_TRAILER_BYTES, ChunkedDecoder
from lorax._sse import SSEDecoder

__all__ = ["DEFAULT_CARRY_MAX", "ChunkedEventDecoder"]

#: The most bytes of a cut chunk kept for the next read; a larger chunk streams
#: through the general decoders instead.
DEFAULT_CARRY_MAX = 64 * 1024

_HEX = b"0123456789abcdefABCDEF"
_MAX_SIZE_DIGITS = 16  # as ChunkedDecoder: longer size lines go to it, which refuses them

# The size lines seen (bare hex digits, as LoRAX sends them) and their values, shared by
# all decoders: a token event's size takes a few values, and a dict lookup costs a
# third of checking and converting the line again. Bounded: past _KNOWN_MAX entries,
# new lines are checked and converted every time.
_KNOWN: dict[bytes, int] = {}
_KNOWN_MAX = 4096
_SIZE_OF = _KNOWN.get


def _sizes(lines: list[bytes]) -> list[int] | None:
    """The sizes of bare-hex size lines, learning the new ones; None if one is not that.

    Hex digits only: ``int(line, 16)`` would also take spaces, signs, ``0x`` and ``_``.
    An extension, an empty or a too long line is left to ChunkedDecoder.
    """
    out: list[int] = []
    for line in lines:
        size = _KNOWN.get(line)
        if size is None:
            if not line or len(line) > _MAX_SIZE_DIGITS or line.translate(None, _HEX):
                return None
            size = int(line, 16)
            if len(_KNOWN) < _KNOWN_MAX:
                _KNOWN[line] = size
        out.append(size)
    return out


class ChunkedEventDecoder:
    """Incremental decoder: chunked ``text/event-stream`` body bytes in, events' data out.

    Args:
        max_event_bytes: the most bytes one event may buffer (see
            :class:`~lorax._sse.SSEDecoder`); more raises
            :class:`~lorax.errors.ProtocolError`.
        max_trailer_bytes: the most trailer bytes accepted after the last chunk.
        carry_max: the most bytes of a cut chunk kept for the next read.

    Attributes:
        chunked: the general chunked-body decoder (``trailers``, ``unused``).
        sse: the general SSE decoder (``comments``, ``last_event_id``, ``retry``).
    """

    __slots__ = ("_carry", "_carry_max", "chunked", "sse")

    def __init__(
        self,
        *,
        max_event_bytes: int = 64 * 1024 * 1024,
        max_trailer_bytes: int = DEFAULT_MAX_TRAILER_BYTES,
        carry_max: int = DEFAULT_CARRY_MAX,
    ) -> None:
        if carry_max < 0:
            raise ValueError("carry_max must be >= 0")
        self.chunked = ChunkedDecoder(max_trailer_bytes=max_trailer_bytes)
        self.sse = SSEDecoder(max_event_bytes=max_event_bytes)
        self._carry = b""
        self._carry_max = carry_max

    @property
    def done(self) -> bool:
        """Whether the whole body (last chunk and trailers) has been read."""
        return self.chunked.done

    @property
    def pending_bytes(self) -> int:
        """Bytes received and not yet part of a returned event (kept or buffered)."""
        return len(self._carry) + self.sse.pending_bytes

    def feed(self, data: bytes) -> list[bytes]:
        """Feed raw body bytes as they arrive; return the data of the events completed.

        Any split of the body works. The result is exactly
        ``SSEDecoder.feed_data(ChunkedDecoder.feed(...))`` over the same bytes, except
        that events of a cut chunk come out with the read that completes the chunk.

        Raises:
            ChunkedBodyError: malformed chunked framing (see :class:`~lorax._chunked.ChunkedDecoder`).
            ProtocolError: an event larger than ``max_event_bytes``.
        """
        if self._carry:
            data = self._carry + data
            self._carry = b""
        if self.chunked.at_chunk_start and not self.chunked.done:
            parts = data.split(b"\r\n")
            k = (len(parts) - 1) >> 1  # whole chunks: each data part has a CRLF after it
            if not k:
                # Not even one whole chunk (a short read, or a large chunk's start).
                if len(data) <= self._carry_max:
                    self._carry = data
                    return []
                return self._general(data)
            sizes = parts[0 : 2 * k : 2]
            datas = parts[1 : 2 * k : 2]
            # Each size line is a known one (a dict lookup, in C), or is checked and
            # learnt; then each size must equal its data's length (which also proves that
            # no data held a CRLF). Checked for the whole read at once.
            known = list(map(_SIZE_OF, sizes))
            ints = _sizes(sizes) if None in known else cast("list[int]", known)
            if ints is None:
                return self._general(data)
            if ints != list(map(len, datas)):
                return self._general(data)
            last = 0 in ints  # the last chunk: it and what follows go to ChunkedDecoder
            if last:
                k = ints.index(0)
                del sizes[k:], datas[k:]
            events = self.sse.feed_events(datas) if datas else []
            if events is None:
                events = self.sse.feed_whole(b"".join(datas))
                if events is None:
                    return self._general(data)
            rest = data[sum(map(len, sizes)) + sum(ints[:k]) + 4 * k :]
            if rest:
                if last or len(rest) > self._carry_max:
                    events += self._general(rest)
                else:
                    self._carry = rest
            return events
        return self._general(data)

    def _general(self, data: bytes) -> list[bytes]:
        return self.sse.feed_data(self.chunked.feed(data))

    def close(self) -> None:
        """Drop whatever is buffered (the body broke off or was abandoned)."""
        self._carry = b""
        self.sse.close()
