"""A sans-I/O decoder for Server-Sent Events (``text/event-stream``).

It follows the WHATWG HTML "Parsing an event stream" algorithm
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation)
and does no I/O: a transport feeds it the bytes it reads, in whatever chunks they
arrive, and gets back the events those bytes completed::

    decoder = SSEDecoder()
    for chunk in response_chunks:
        for event in decoder.feed(chunk):
            if event.data == DONE:
                break
            handle(orjson.loads(event.data))
    decoder.close()

Deviations from the browser algorithm, all on purpose:

* ``data`` stays raw bytes. A browser decodes the whole stream as UTF-8 with
  replacement; we hand the bytes to ``orjson.loads``, which wants bytes anyway and
  reports invalid UTF-8 instead of silently turning it into U+FFFD.
* ``SSEEvent.event`` is ``""`` when the event had no ``event:`` field, where a browser
  would say ``"message"``.
* ``SSEEvent.id`` is the ``id:`` field of that event alone (None when it had none). The
  spec's persistent "last event ID string" is :attr:`SSEDecoder.last_event_id`; it is
  None until an ``id:`` field has been committed by a blank line.
* One event's buffered bytes are capped (``max_event_bytes``), so a hostile or broken
  peer cannot make us buffer without bound.

LoRAX itself only ever sends ``data: <json>\\n\\n`` events and ``:\\n\\n`` keep-alives
(docs/wire.md, "Streams"), so :meth:`SSEDecoder.feed` has a fast path for a chunk that is
exactly one such event; everything else goes through the general parser.
"""

from __future__ import annotations

from operator import itemgetter
from typing import NoReturn

from lorax.errors import ProtocolError

__all__ = ["DONE", "SSEDecoder", "SSEEvent"]

#: The data of the end marker the OpenAI-compatible routes send last.
DONE = b"[DONE]"

_BOM = b"\xef\xbb\xbf"

# A data event's parts, for SSEDecoder.feed_events: the data, the "data: " prefix and the
# blank line. A chunk shorter than 8 bytes cannot have both that head and that tail.
_DATA_OF = itemgetter(slice(6, -2))
_HEAD = itemgetter(slice(None, 6))
_TAIL = itemgetter(slice(-2, None))

# An 18-digit retry is already 31 million years; longer values can only be hostile,
# and int() on a huge digit string is slow (or refused by the int_max_str_digits cap).
_MAX_RETRY_DIGITS = 18

# The line and data buffers of a decoder with nothing buffered: one shared empty list,
# never appended to (a buffer gets its own list when something is kept), so that an
# idle decoder holds no lists for the garbage collector to track.
_EMPTY: list[bytes] = []


class SSEEvent:
    """One dispatched event.

    Attributes:
        data: the data buffer: the values of the event's ``data`` fields joined with
            ``b"\\n"``, without a final newline. Raw bytes, not decoded.
        event: the ``event`` field's value, or ``""`` when the event had none (a
            browser would report ``"message"``).
        id: the value of the event's own ``id`` field, or None when it had none.
    """

    __slots__ = ("data", "event", "id")

    def __init__(self, data: bytes, event: str = "", id: str | None = None) -> None:
        self.data = data
        self.event = event
        self.id = id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SSEEvent):
            return NotImplemented
        return self.data == other.data and self.event == other.event and self.id == other.id

    # Equality is by value and the attributes are mutable, so a hash could go stale.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SSEEvent(data={self.data!r}, event={self.event!r}, id={self.id!r})"


class SSEDecoder:
    """Incremental ``text/event-stream`` parser: bytes in, :class:`SSEEvent` out.

    Args:
        max_event_bytes: the most bytes one event may buffer (the line being
            assembled plus its data buffer). Going over raises
            :class:`~lorax.errors.ProtocolError`.

    Attributes:
        comments: how many comment lines (``:`` keep-alives) were seen; a caller
            watching liveness can compare it between reads.
        last_event_id: the spec's "last event ID string": the last ``id`` field value
            committed by a blank line, whether or not that event had data. None until
            the first one; ``""`` after an empty ``id:`` (the spec's reset).
        retry: the last valid ``retry`` field, in milliseconds, or None.
    """

    __slots__ = (
        "_bom",
        "_data",
        "_data_len",
        "_error",
        "_event",
        "_event_id",
        "_id_buffer",
        "_idle",
        "_line",
        "_line_len",
        "_max",
        "_skip_lf",
        "_start",
        "comments",
        "last_event_id",
        "retry",
    )

    def __init__(self, *, max_event_bytes: int = 64 * 1024 * 1024) -> None:
        if max_event_bytes < 1:
            raise ValueError("max_event_bytes must be positive")
        self._max = max_event_bytes
        self.comments = 0
        self.last_event_id: str | None = None
        self.retry: int | None = None
        self._error: str | None = None
        self._reset()

    def _reset(self) -> None:
        # Per-stream parsing state. last_event_id and retry survive a reset, because
        # a reconnection needs them (browsers keep the id too). An id: field of an
        # event that never got its blank line is dropped with that event.
        self._id_buffer = self.last_event_id
        self._start = True  # a BOM may still come
        self._bom = b""  # the start of a BOM split across chunks
        self._skip_lf = False  # the last chunk ended in CR: an LF next is its pair
        self._line: list[bytes] = _EMPTY
        self._line_len = 0
        self._data: list[bytes] = _EMPTY
        self._data_len = 0
        self._event = ""
        self._event_id: str | None = None
        # True when nothing at all is buffered: the fast path is only exact then.
        self._idle = False

    @property
    def pending_bytes(self) -> int:
        """Bytes received but not yet dispatched or discarded (partial line + data)."""
        return len(self._bom) + self._line_len + self._data_len

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Feed raw bytes from the network and return the events they completed.

        Any chunking works, including a split inside a line, inside a CRLF pair or
        inside a multi-byte UTF-8 character.

        Raises:
            ProtocolError: an event grew past ``max_event_bytes``. The decoder is then
                unusable: every later ``feed`` raises too.
        """
        # The fast path: LoRAX sends each token as one body frame that is exactly
        # b"data: " + json + b"\n\n" (b"data:" up to v0.11; docs/wire.md, "Streams"), so most
        # chunks are one whole event. With nothing buffered and no other CR or LF
        # inside, the general algorithm would produce exactly this event.
        # The checks are spelled for speed: indexing and `int in bytes` (a bare
        # memchr) cost a fraction of a slice compare or a method call. Once the prefix
        # matched, chunk[-2] exists, and chunk[5] does too if chunk[-1] is an LF.
        if self._idle and chunk[:5] == b"data:" and chunk[-1] == 0x0A and chunk[-2] == 0x0A:
            data = chunk[6:-2] if chunk[5] == 0x20 else chunk[5:-2]
            if 0x0A not in data and 0x0D not in data:
                return [SSEEvent(data)]
        return self._feed(chunk)

    def feed_data(self, chunk: bytes) -> list[bytes]:
        """Like :meth:`feed`, but return only the events' data buffers.

        The streaming transports' hot path: no :class:`SSEEvent` per event, and a chunk
        made only of whole ``data: <json>\\n\\n`` events (what LoRAX sends, many at
        a time under a backlog) is split in one pass. Anything else (comments, other
        fields, a split event, CRs) goes through the general parser, so the result is
        exactly ``[e.data for e in feed(chunk)]``.
        """
        if self._start and not self._bom and chunk[:5] == b"data:" and self._error is None:
            # The stream's first bytes (a failed decoder is back at the start too, and
            # must go on refusing), and no BOM: nothing is buffered, so the fast
            # path below is exact from the first chunk on (often the whole body, when
            # the server was quicker than the reader).
            self._start = False
            self._idle = True
        elif (
            self._line
            and not self._idle
            and self._line_len < 65536
            and not (self._data or self._event or self._event_id is not None or self._skip_lf or self._start)
        ):
            # The last read ended inside a line (reads end anywhere), with nothing
            # else buffered: joining that line's start to this chunk is exact, and
            # lets the fast path below go on.
            self._line.append(chunk)
            chunk = b"".join(self._line)
            self._line = _EMPTY
            self._line_len = 0
            self._idle = True
        if self._idle and chunk[:5] == b"data:" and 0x0D not in chunk:
            parts = chunk.split(b"\n\n")
            tail = parts.pop()  # b"" when the chunk ended with an event's blank line
            limit = self._max
            n = len(parts)
            end = len(chunk) - len(tail)
            out: list[bytes]
            if (
                len(chunk) < limit
                and chunk[5:6] == b" "
                and chunk.count(b"\n", 0, end) == 2 * n
                and chunk.count(b"\n\ndata: ", 0, end) == n - 1
            ):
                # Counted in C: no LF inside any part, and every part starts with
                # "data: " (LoRAX's spelling), so each is exactly one data line.
                out = [part[6:] for part in parts]
            else:
                out = []
                for part in parts:
                    # Each part must be exactly one data line, small enough that the
                    # general parser would not refuse it.
                    if part[:5] != b"data:" or 0x0A in part or len(part) >= limit:
                        return [event.data for event in self._feed(chunk)]
                    out.append(part[6:] if part[5:6] == b" " else part[5:])
            if tail:
                # The start of the next event (a read ends anywhere): from the state
                # every whole event leaves, the general parser buffers it.
                out += [event.data for event in self._feed(tail)]
            return out
        return [event.data for event in self._feed(chunk)]

    def feed_whole(self, body: bytes) -> list[bytes] | None:
        """The events' data when `body` is exactly whole ``data: <json>\\n\\n`` events.

        The all-in-C path of :class:`lorax._sse_chunked.ChunkedEventDecoder`: with
        nothing buffered, a body of one-line ``data: `` events (LoRAX's spelling, many
        at a time under a backlog) is split with one ``replace`` and one ``split``, and
        proved to be exactly that by counting its LFs and the bytes the ``replace``
        removed. Returns None, and changes nothing, for anything else (a comment, a CR,
        another field, ``data:`` without its space, an event cut off at the end, a body
        of ``max_event_bytes`` or more): feed that to :meth:`feed_data`, which gives the
        same result as this whenever this gives one.
        """
        if self._error is not None or not (self._idle or (self._start and not self._bom)):
            return None
        if len(body) >= self._max or body[:6] != b"data: " or body[-2:] != b"\n\n" or 0x0D in body:
            return None
        # Every event's "data: " but the first goes with the blank line before it.
        rest = body[6:].replace(b"\n\ndata: ", b"\n\n")
        datas = rest.split(b"\n\n")
        datas.pop()  # the b"" after the last blank line
        n = len(datas)
        # 2n LFs: all of them are the n blank lines, so no data holds an LF; and the
        # replace removed n - 1 prefixes: one after every blank line but the last.
        if rest.count(b"\n") != 2 * n or len(rest) != len(body) - 6 * n:
            return None
        # From the start (no BOM: the body starts with "data: ") or from idle, the
        # general parser would end idle too, with these events dispatched.
        self._start = False
        self._idle = True
        return datas

    def feed_events(self, chunks: list[bytes]) -> list[bytes] | None:
        """The events' data when each of `chunks` is exactly one ``data: <json>\\n\\n`` event.

        What LoRAX sends: one such event per HTTP chunk. It gives what
        :meth:`feed_whole` gives for ``b"".join(chunks)``, for less: each event's data is
        sliced out of its chunk (``map`` with an ``itemgetter``, in C), and the framing
        is proved by comparing all the chunks' first six and last two bytes at once and
        looking for a CR or LF in all the data with one ``memchr`` each. Returns None,
        and changes nothing, when that is not so (then try :meth:`feed_whole`).
        """
        if self._error is not None or not (self._idle or (self._start and not self._bom)):
            return None
        n = len(chunks)
        datas = list(map(_DATA_OF, chunks))
        joined = b"".join(datas)
        if (
            len(joined) + 8 * n >= self._max
            or 0x0A in joined
            or 0x0D in joined
            or b"".join(map(_HEAD, chunks)) != b"data: " * n
            or b"".join(map(_TAIL, chunks)) != b"\n\n" * n
        ):
            return None
        self._start = False
        self._idle = True
        return datas

    def close(self) -> list[SSEEvent]:
        """Signal the end of the stream and return the events it completed.

        Per the spec, an event not terminated by a blank line is discarded, so this
        always returns ``[]``; whatever was buffered is dropped. The decoder can then
        be fed a new stream (a reconnection): ``last_event_id``, ``retry`` and
        ``comments`` are kept. After a :class:`~lorax.errors.ProtocolError` it stays
        failed.
        """
        if self._error is None:
            self._reset()
        return []

    def _fail(self, size: int) -> NoReturn:
        self._error = (
            f"SSE event larger than max_event_bytes={self._max} ({size} bytes buffered without an event boundary)"
        )
        self._reset()
        raise ProtocolError(self._error)

    def _feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._error is not None:
            raise ProtocolError(f"SSE decoder already failed: {self._error}")
        if not chunk:
            return []
        if self._start:
            chunk = self._bom + chunk
            if len(chunk) < 3 and _BOM.startswith(chunk):
                self._bom = chunk
                return []
            self._start = False
            self._bom = b""
            if chunk[:3] == _BOM:
                chunk = chunk[3:]
                if not chunk:
                    self._idle = True  # nothing can be buffered before the BOM
                    return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
                if not chunk:
                    self._idle = not (self._line or self._data or self._event or self._event_id is not None)
                    return []
        if 0x0D in chunk:
            # Every CR, LF and CRLF ends a line. Inside one chunk, rewriting them all
            # to LF is exact; a CR at the very end may pair with an LF in the next
            # chunk, which _skip_lf then swallows.
            self._skip_lf = chunk[-1] == 0x0D
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

        lines = chunk.split(b"\n")
        tail = lines.pop()  # the start of a line still to be finished (often b"")
        events: list[SSEEvent] = []
        limit = self._max
        data = self._data or []  # never the shared _EMPTY: appended to below
        data_len = self._data_len
        if lines:
            if self._line:
                self._line.append(lines[0])
                lines[0] = b"".join(self._line)
                self._line = _EMPTY
                self._line_len = 0
            event = self._event
            event_id = self._event_id
            for line in lines:
                if not line:
                    # The id is committed by every blank line, even one that has
                    # no data to dispatch: that is how an id-only event works.
                    self.last_event_id = self._id_buffer
                    if data:
                        events.append(SSEEvent(data[0] if len(data) == 1 else b"\n".join(data), event, event_id))
                        data = []
                        data_len = 0
                    event = ""
                    event_id = None
                elif line[:5] == b"data:":
                    value = line[6:] if line[5:6] == b" " else line[5:]
                    data.append(value)
                    data_len += len(value) + 1
                    if data_len > limit:
                        self._fail(data_len)
                elif line[0] == 0x3A:
                    self.comments += 1
                else:
                    colon = line.find(b":")
                    if colon == -1:
                        name = line
                        value = b""
                    else:
                        name = line[:colon]
                        value = line[colon + 2 :] if line[colon + 1 : colon + 2] == b" " else line[colon + 1 :]
                    if name == b"data":
                        data.append(value)
                        data_len += len(value) + 1
                        if data_len > limit:
                            self._fail(data_len)
                    elif name == b"event":
                        event = value.decode("utf-8", "replace")
                    elif name == b"id":
                        if 0 not in value:
                            event_id = self._id_buffer = value.decode("utf-8", "replace")
                    # bytes.isdigit() is ASCII-only, as the spec requires.
                    elif name == b"retry" and value.isdigit():
                        digits = value.lstrip(b"0") or b"0"
                        if len(digits) <= _MAX_RETRY_DIGITS:
                            self.retry = int(digits)
                    # Any other field is ignored, as the spec says.
            self._event = event
            self._event_id = event_id
            self._data = data if data else _EMPTY
            self._data_len = data_len
        if tail:
            if self._line:
                self._line.append(tail)
            else:
                self._line = [tail]
            self._line_len += len(tail)
            if self._line_len + data_len > limit:
                self._fail(self._line_len + data_len)
        self._idle = not (self._line or data or self._event or self._event_id is not None or self._skip_lf)
        return events
