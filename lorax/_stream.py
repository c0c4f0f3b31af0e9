"""Stream objects handed to users: iterable, closeable, context managers.

A stream opens lazily, on the first ``next()`` (so ``async for r in
client.generate_stream(...)`` needs no ``await``), retries its opening until the first
event arrives (never after), checks that the route's final event came, and releases
its connection on every way out: the end, an error, ``break`` followed by ``close()``,
the ``with`` block, or cancellation.
"""

from __future__ import annotations

# asyncio is imported where AsyncStream uses it, so that `import lorax` stays cheap for
# sync code (it is about a third of the import time).
import collections
import logging
import operator
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from itertools import repeat
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import asyncio

from lorax import errors
from lorax._core import DRAIN_AFTER_FINAL, StreamTracker
from lorax.transports.base import AsyncMessageStream, MessageStream, ResponseMeta

T = TypeVar("T")

logger = logging.getLogger("lorax")

Opened = tuple[MessageStream, Any]
AsyncOpened = tuple[AsyncMessageStream, Any]

# What a sync opener is handed: call it with None before each attempt and with the
# transport stream as soon as it exists (before waiting for its first event), so that
# close() from another thread can interrupt that wait and no attempt starts after it.
# It raises ClientClosedError once the stream was closed.
Attach = Callable[[MessageStream | None], None]
# The async opener is handed the same (so both clients' openers are one source); an
# AsyncStream stops an opening by cancelling it instead, so its attach only refuses
# to start an attempt after aclose().
AsyncAttach = Callable[[AsyncMessageStream | None], None]


# The batch of a stream between reads: shared, never changed (a stream replaces its batch
# and only reads it). One list less per stream and per read for the garbage collector.
_NO_BATCH: list[Any] = []


class _StreamBase(Generic[T]):
    """What Stream and AsyncStream share: the state, the end rules and the reporting."""

    _inner: Any

    def __init__(self, tracker: StreamTracker) -> None:
        self._tracker = tracker
        self._inner = None
        self._closed = False
        self.meta: ResponseMeta | None = None
        self.final: T | None = None
        # The per-token path reads messages from the transport's last batch (all it
        # decoded from one read). `_open` is False before the start, after the final
        # event and after close(), which sends every call down the slow path.
        self._batch: list[Any] = _NO_BATCH
        self._pos = 0
        self._open = False
        # The native routes' final event is the one with generated_text; checked
        # inline. The OpenAI routes' rule (a choice with a finish_reason) is a call.
        self._final_field: str | None = None if tracker.method.done_marker else "generated_text"

    def _check_final(self, message: Any) -> T:
        if self._tracker._is_final(message):
            self._open = False
            self._tracker.finished = True
            if self.final is None:
                self.final = message
        result: T = message
        return result

    def _count(self) -> None:
        # The tracker counts whole batches; the messages of this one are added here.
        self._tracker.count += self._pos
        self._batch = _NO_BATCH
        self._pos = 0

    def _take(self, message: T) -> T:
        """Hand out the batch's next message (`message`), noting the final event."""
        self._pos += 1
        field = self._final_field
        if field is not None and getattr(message, field) is None:
            return message
        return self._check_final(message)

    def _drop_late_in_batch(self) -> int:
        """After the final event: drop the events behind it in its batch; how many more to read.

        At most ``DRAIN_AFTER_FINAL`` events are read past the final one in all, so a
        misbehaving server cannot keep the stream from giving its connection back.
        """
        late = min(len(self._batch) - self._pos, DRAIN_AFTER_FINAL)
        self._count()
        for _ in range(late):
            self._dropped_late_event()
        return DRAIN_AFTER_FINAL - late

    def _dropped_late_event(self) -> None:
        logger.warning(
            "lorax: dropped an event that came after the final event of a %s stream", self._tracker.method.name
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._inner is not None else "not started")
        count = self._tracker.count + self._pos
        return f"<{type(self).__name__} {self._tracker.method.name} {state}, {count} event(s)>"


class Stream(_StreamBase[T]):
    """The events of a streaming call.

    Iterate it; close it (or use ``with``) when you stop early: that releases the
    connection and makes LoRAX stop generating. ``meta`` holds the response status and
    headers once the stream has started; ``final`` the last event once it arrived.
    """

    _inner: MessageStream | None

    def __init__(self, opener: Callable[[Attach], Opened], tracker: StreamTracker) -> None:
        super().__init__(tracker)
        self._opener = opener
        self._opening: MessageStream | None = None  # the attempt waiting for its first event
        self._lock = threading.Lock()
        # The rest of a batch that holds no final event, handed to a for loop whole (see
        # _events): next() takes from it too, close() empties it.
        self._tail: Iterator[Any] | None = None
        self._final_of = operator.attrgetter(self._final_field) if self._final_field is not None else None

    def __iter__(self) -> Iterator[T]:
        # A generator over the same state as __next__: a for loop then resumes a
        # generator per event, which costs a fraction of calling __next__ from C. The
        # position lives in the stream, read again after every yield, so next(stream),
        # another loop and close() from another thread all see one sequence.
        return self._events()

    def _events(self) -> Iterator[T]:
        field = self._final_field
        final_of = self._final_of
        while True:
            tail = self._tail
            if tail is not None:  # left by a loop that broke off
                yield from tail
                if self._tail is tail:
                    self._tail = None
                continue
            pos = self._pos
            batch = self._batch
            n = len(batch)
            if pos < n and self._open:
                if final_of is not None and n - pos > 1:
                    # One pass in C over the rest of the batch finds the final event (the
                    # first with generated_text); the events before it go to the loop
                    # through `yield from` over a list, with no Python step per event.
                    # They count as read; the iterator is shared: next() takes from it
                    # first, close() empties it. The final event takes the path below.
                    rest = batch[pos:]
                    try:
                        k = list(map(operator.is_, map(final_of, rest), repeat(None))).index(False)
                    except ValueError:
                        k = n - pos
                    if k > 1:
                        self._pos = pos + k
                        tail = self._tail = iter(rest[:k] if k < n - pos else rest)
                        yield from tail
                        if self._tail is tail:
                            self._tail = None
                        continue
                message = batch[pos]
                self._pos = pos + 1
                if field is None or getattr(message, field) is not None:
                    self._check_final(message)
                yield message
                continue
            try:
                message = self._next_slow()
            except StopIteration:
                return
            yield message

    def __next__(self) -> T:
        pos = self._pos
        batch = self._batch
        if pos < len(batch) and self._open and self._tail is None:
            return self._take(batch[pos])
        return self._next_slow()

    def _next_slow(self) -> T:
        tail = self._tail
        if tail is not None:
            # A for loop left the rest of a batch (no final event in it): it comes first.
            for message in tail:
                result: T = message
                return result
            self._tail = None
            if self._pos < len(self._batch):
                return self.__next__()  # the final event that came after it
        if self._closed:
            raise StopIteration
        if self._inner is None:
            self._start()
            return self.__next__()
        if self._tracker.finished:
            self._drain()
            raise StopIteration
        inner = self._inner
        self._count()
        try:
            batch = inner.next_batch()
        except StopIteration:
            closed_by_user = self._closed
            self.close()
            if closed_by_user:
                raise
            raise self._tracker.incomplete() from None
        except Exception:
            closed_by_user = self._closed
            self.close()
            if closed_by_user:  # closed from another thread: the read failed because of it
                raise StopIteration from None
            raise
        except BaseException:
            self.close()
            raise
        self._batch = batch
        self._pos = 1
        return self._check_final(batch[0])

    def _attach(self, inner: MessageStream | None) -> None:
        with self._lock:
            closed = self._closed
            if not closed:
                self._opening = inner
        if closed:
            if inner is not None:
                inner.close()
            raise errors.ClientClosedError("the stream was closed")

    def _start(self) -> None:
        try:
            inner, first = self._opener(self._attach)
        except Exception:
            with self._lock:
                closed_by_user = self._closed
                self._closed = True
                self._opening = None
            if closed_by_user:  # close() stopped the opening; end quietly
                raise StopIteration from None
            raise
        except BaseException:
            with self._lock:
                self._closed = True
                self._opening = None
            raise
        with self._lock:
            self._inner = inner
            self._opening = None
            self.meta = inner.meta
            closed = self._closed
        if closed:  # closed from another thread while opening
            inner.close()
            raise StopIteration
        if first is None:
            self.close()
            raise self._tracker.incomplete()
        self._batch = [first]
        self._pos = 0
        with self._lock:
            self._open = not self._closed

    def _drain(self) -> None:
        # The final event came; read the (normally empty) rest so the connection can
        # go back to the pool, but never wait on a misbehaving server for long.
        inner = self._inner
        try:
            if inner is not None:
                for _ in range(self._drop_late_in_batch()):
                    next(inner)
                    self._dropped_late_event()
        except StopIteration:
            pass
        except Exception as exc:  # the answer is complete; a late failure does not change it
            logger.debug("lorax: ignoring an error after the final event: %r", exc)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the stream and release its connection. Idempotent, thread-safe."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._open = False
            inner = self._inner if self._inner is not None else self._opening
            tail, self._tail = self._tail, None
        if tail is not None:
            # A for loop may be yielding from it in another thread: it ends at once.
            collections.deque(tail, maxlen=0)
        if inner is not None:
            inner.close()

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncStream(_StreamBase[T]):
    """The events of a streaming call on :class:`lorax.AsyncClient`.

    ``async for`` over it directly; ``await stream.aclose()`` (or ``async with``) when
    you stop early. ``aclose()`` may be called from another task. Cancelling the task
    that iterates closes the HTTP response, so LoRAX stops generating.
    """

    _inner: AsyncMessageStream | None

    def __init__(self, opener: Callable[[AsyncAttach], Awaitable[AsyncOpened]], tracker: StreamTracker) -> None:
        super().__init__(tracker)
        # Dropped once used: the opener is a closure (the client, its request) that a
        # stream open for minutes need not keep alive for the garbage collector to scan.
        self._opener: Callable[[AsyncAttach], Awaitable[AsyncOpened]] | None = opener
        # The opening (attempts, backoff, first event) runs as a task of its own, so
        # that aclose() from another task can cancel it.
        self._opening: asyncio.Future[AsyncOpened] | None = None

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        pos = self._pos
        batch = self._batch
        if pos < len(batch) and self._open:
            return self._take(batch[pos])
        if not self._open:  # not started, closed, or past the final event
            return await self._next_slow()
        inner = self._inner
        assert inner is not None
        self._count()
        try:
            batch = await inner.next_batch()
        except StopAsyncIteration:
            closed_by_user = self._closed
            await self.aclose()
            if closed_by_user:
                raise
            raise self._tracker.incomplete() from None
        except Exception:
            closed_by_user = self._closed
            await self.aclose()
            if closed_by_user:  # aclose() from another task made the read fail
                raise StopAsyncIteration from None
            raise
        except BaseException:
            await self.aclose()
            raise
        self._batch = batch
        self._pos = 1
        head: Any = batch[0]
        field = self._final_field
        if field is not None and getattr(head, field) is None:  # as above: a paced stream reads one per call
            first: T = head
            return first
        return self._check_final(head)

    async def _next_slow(self) -> T:
        if self._closed:
            raise StopAsyncIteration
        if self._inner is None:
            await self._start()
            return await self.__anext__()
        if self._tracker.finished:
            await self._drain()
        else:  # not reached: a started stream is open until its end, close or final event
            await self.aclose()
        raise StopAsyncIteration

    def _attach(self, inner: AsyncMessageStream | None) -> None:
        # Reached only while the opening task runs; aclose() cancels that task, which
        # closes the attempt's stream, so there is nothing to record here.
        if self._closed:
            raise errors.ClientClosedError("the stream was closed")

    async def _start(self) -> None:
        import asyncio

        opener, self._opener = self._opener, None
        if opener is None:  # a second start: the first failed and closed the stream
            raise StopAsyncIteration
        opening = self._opening = asyncio.ensure_future(opener(self._attach))
        try:
            inner, first = await opening
        except asyncio.CancelledError:
            closed_by_user = self._closed
            self._closed = True
            if closed_by_user and opening.cancelled() and not _cancelling():
                raise StopAsyncIteration from None  # aclose() stopped the opening
            raise
        except Exception:
            closed_by_user = self._closed
            self._closed = True
            if closed_by_user:
                raise StopAsyncIteration from None
            raise
        except BaseException:
            self._closed = True
            raise
        finally:
            self._opening = None
        self._inner = inner
        self.meta = inner.meta
        if self._closed:
            await inner.aclose()
            raise StopAsyncIteration
        if first is None:
            await self.aclose()
            raise self._tracker.incomplete()
        self._batch = [first]
        self._pos = 0
        self._open = not self._closed

    async def _drain(self) -> None:
        inner = self._inner
        try:
            if inner is not None:
                for _ in range(self._drop_late_in_batch()):
                    await inner.__anext__()
                    self._dropped_late_event()
        except StopAsyncIteration:
            pass
        except Exception as exc:
            logger.debug("lorax: ignoring an error after the final event: %r", exc)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop the stream and release its connection. Idempotent; safe from another task."""
        opening = self._opening
        if opening is not None and not opening.done():
            # Still opening (or in a retry's backoff): cancelling the opener closes its
            # transport stream, and the iterating task ends quietly.
            self._closed = True
            opening.cancel()
            import asyncio

            await asyncio.wait([opening])
            return
        if self._closed and self._inner is None:
            return
        self._closed = True
        self._open = False
        inner, self._inner = self._inner, None
        if inner is not None:
            await inner.aclose()

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _cancelling() -> bool:
    """Whether the current task itself is being cancelled (Python 3.11+; False before)."""
    import asyncio

    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling()) if cancelling is not None else False
