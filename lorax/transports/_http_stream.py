"""The SSE stream of one call over urllib3, decoded into messages.

The per-token path is :meth:`_HTTPMessageStream._fill`: one loop per read, from the
de-chunked bytes to the messages (see :mod:`lorax.transports.http`'s docstring for
closing, timeouts and the connection's return to the pool).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from urllib3.exceptions import (
    DecodeError,
    ReadTimeoutError,
)
from urllib3.exceptions import TimeoutError as U3TimeoutError
from urllib3.response import BaseHTTPResponse

from lorax import codec, errors
from lorax._message import Message
from lorax._routes import Method
from lorax._sse import DONE
from lorax._timeout import Deadline
from lorax.transports import _http_common as common
from lorax.transports._urllib3_conn import (
    _EventBatches,
    _finish,
    _socket,
    _TrackedHTTPConnection,
)
from lorax.transports._urllib3_errors import _broken_reason, _total
from lorax.transports.base import CallOptions, MessageStream, ResponseMeta

if TYPE_CHECKING:
    from lorax.transports.http import HTTPTransport


class _HTTPMessageStream(MessageStream):
    """The SSE stream of one call, decoded into messages."""

    def __init__(
        self,
        transport: HTTPTransport,
        method: Method,
        resp: BaseHTTPResponse,
        meta: ResponseMeta,
        read: float | None,
        deadline: Deadline,
        call: tuple[CallOptions, Message],
    ) -> None:
        self._active = False
        self.meta = meta
        self._transport = transport
        self._resp = resp
        conn = resp.connection
        self._conn: _TrackedHTTPConnection | None = conn if isinstance(conn, _TrackedHTTPConnection) else None
        self._sock = _socket(resp)
        self._gen = self._conn.lorax_gen if self._conn is not None else 0
        self._cls = method.output_type
        self._decode = codec.decoder(method.output_type)
        self._fast = common.fast_decoder(method.output_type)
        self._done_marker = method.done_marker
        self._batches = _EventBatches(resp, max_event_bytes=transport._max_response_bytes)
        self._next_batch = self._batches.__next__
        self._batch: list[Message] = []
        self._pos = 0
        self._failed: BaseException | None = None
        self._ended = False
        self._count = 0
        self._read = read
        self._deadline = deadline if deadline.total is not None else None
        self._lock = threading.Lock()
        self._closing = False
        self._call = call  # where the secrets to scrub out of error events are
        self._active = True

    def __next__(self) -> Message:
        pos = self._pos
        batch = self._batch
        if pos < len(batch) and not self._closing:
            self._pos = pos + 1
            return batch[pos]
        batch = self._batch = self._fill()
        self._pos = 1
        return batch[0]

    def next_batch(self) -> list[Message]:
        pos = self._pos
        batch = self._batch
        if pos < len(batch) and not self._closing:
            self._batch = []
            self._pos = 0
            return batch[pos:] if pos else batch
        self._batch = []
        self._pos = 0
        return self._fill()

    def _fill(self) -> list[Message]:
        """The messages of the next read(s), at least one; StopIteration at the end.

        The hot path, one pass per read: :class:`~lorax._sse_chunked.ChunkedEventDecoder`
        turns the bytes of everything that has arrived into the events' data (no event
        objects, no Python step per event), and ``map`` decodes them into messages, in
        C. A batch that may hold an error event, ``[DONE]`` or an event the direct
        decoder refuses takes the per-event loop instead. An error event (or one that
        does not decode) after some messages ends the batch; it is raised by the next
        call.
        """
        error = self._failed
        if error is not None:
            self._failed = None
            raise error
        if self._ended:
            raise StopIteration
        next_batch = self._next_batch
        lock = self._lock
        fast = self._fast
        done_marker = self._done_marker
        while True:
            lock.acquire()
            try:
                if not self._active or self._closing:
                    self._release()
                    raise StopIteration
                if self._deadline is not None and self._sock is not None:
                    self._sock.settimeout(self._deadline.cap(self._read))
                datas = next_batch()
            except StopIteration:
                # The end of the body: the connection is back in the pool.
                self._release()
                raise
            except BaseException as exc:
                closing = self._closing
                self._release()
                if not isinstance(exc, Exception):
                    raise
                if closing:
                    raise StopIteration from None
                raise self._error(exc) from exc
            finally:
                lock.release()
            if not datas:
                continue
            # One substring search over the batch stands for the per-event check of
            # the loop below (a false alarm only costs the loop).
            if fast is not None and not (done_marker and DONE in datas) and b'"error"' not in b"".join(datas):
                try:
                    out: list[Message] = list(map(fast, datas))
                except common.FAST_DECODE_ERRORS:
                    pass  # the loop below names what is wrong, or decodes the odd case
                else:
                    self._count += len(out)
                    return out
            out = self._decode_each(datas)
            self._count += len(out)
            if out:
                return out
            if self._ended:
                raise StopIteration

    def _decode_each(self, datas: list[bytes]) -> list[Message]:
        """The per-event loop: ``[DONE]``, error events and the careful decoder."""
        decode = self._decode
        fast = self._fast
        out: list[Message] = []
        try:
            for data in datas:
                if data == DONE and self._done_marker:
                    self._ended = True
                    self._after_done()
                    break
                if fast is None or b'"error"' in data:
                    out.append(decode(data))
                    continue
                try:
                    out.append(fast(data))
                except common.FAST_DECODE_ERRORS:
                    out.append(decode(data))  # names what is wrong, or decodes the odd case
        except BaseException as exc:
            # An error event (the server's error, mapped), or an event that does not
            # decode: the stream ends here, without reading on. The server's text may
            # quote the request: scrub its credentials.
            self._ended = True
            self._abandon()
            if isinstance(exc, errors.LoraxError):
                self._transport._secrets(*self._call).scrub_error(exc)
            if not out or not isinstance(exc, Exception):
                raise
            self._failed = exc
        return out

    def _after_done(self) -> None:
        # [DONE] is the last event; the end of the chunked body follows at once. Read
        # it (briefly, boundedly) so that the connection can be reused.
        with self._lock:
            if not self._active:
                return
            try:
                timeout = common.DRAIN_TIMEOUT
                if self._deadline is not None:
                    remaining = self._deadline.remaining()
                    timeout = min(timeout, remaining) if remaining else 0.0
                if timeout > 0 and not self._closing:
                    if self._sock is not None:
                        self._sock.settimeout(timeout)
                    batches = self._batches
                    limit = batches.received + common.DRAIN_LIMIT
                    for _ in batches:
                        if batches.received > limit:
                            break
            except Exception:
                pass
            self._release()

    def _abandon(self) -> None:
        with self._lock:
            self._release()

    def _release(self) -> None:
        # Called with the lock held.
        if not self._active:
            return
        self._active = False
        self._sock = None
        self._batches.close()
        _finish(self._resp)
        self._transport._forget(self)

    def _error(self, exc: Exception) -> errors.LoraxError:
        if isinstance(exc, errors.LoraxError):
            return exc
        where = self._transport._where
        if isinstance(exc, (ReadTimeoutError, TimeoutError, U3TimeoutError)):
            if self._deadline is not None and self._deadline.expired():
                return _total(self._deadline, sent=True)
            return common.timeout_error(
                f"{where} sent nothing for {common.seconds(self._read)} after {self._count} events (read timeout)",
                phase="read",
                request_sent=True,
            )
        if isinstance(exc, DecodeError):
            return errors.ResponseDecodeError(f"the stream from {where} could not be decompressed: {exc}")
        return common.interrupted(self._count, where, _broken_reason(exc))

    def close(self) -> None:
        """Stop the stream now, without reading the rest. Idempotent, thread-safe."""
        if not getattr(self, "_active", False):
            return
        self._closing = True
        if self._lock.acquire(blocking=False):
            try:
                self._release()
            finally:
                self._lock.release()
            return
        # Another thread is reading, most likely blocked in recv(): shut the socket
        # down to wake it (it then ends the stream), as long as the connection is
        # still this stream's.
        conn, sock = self._conn, self._sock
        if conn is not None and sock is not None and self._resp.connection is not None:
            conn.lorax_shutdown(self._gen, sock)
        with self._lock:
            self._release()

    def __del__(self) -> None:
        # Dropped without close(): close the socket now (the server stops generating)
        # and let the transport return the pool slot on its next call; the pool's
        # locks must not be taken from the garbage collector.
        if getattr(self, "_active", False):
            self._active = False
            resp = self._resp
            try:
                if resp.connection is not None:
                    resp.close()
                    self._transport._orphans.append(resp)
            except Exception:
                pass

    def __repr__(self) -> str:
        state = "open" if self._active else "closed"
        name = self._cls.__name__
        return f"<HTTP stream {name} from {self._transport.describe()}: {state}, {self._count} events>"
