"""The sync Stream's two ways in: ``for`` (a generator over the stream's state) and
``next()``, mixed in any order, over a real FakeLorax on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from lorax import Client
from lorax.testing import FakeLorax

PROMPT = "What is the capital of France?"


@pytest.fixture
def client() -> Iterator[Client]:
    with FakeLorax() as server, Client(server.url) as client:
        yield client


def texts(events: list[object]) -> list[str]:
    return [e.token.text for e in events]  # type: ignore[attr-defined]


def test_next_and_loops_mixed_give_one_sequence(client: Client) -> None:
    whole = list(client.generate_stream(PROMPT, max_new_tokens=12, seed=3))
    assert len(whole) == 12
    stream = client.generate_stream(PROMPT, max_new_tokens=12, seed=3)
    got = [next(stream)]
    for event in stream:
        got.append(event)
        if len(got) == 4:
            break
    got.append(next(stream))
    it = iter(stream)
    got.append(next(it))
    got.append(next(stream))  # the generator's position is the stream's
    got.append(next(it))
    got += list(stream)
    assert texts(got) == texts(whole)
    assert stream.final is got[-1]
    assert got[-1].generated_text == whole[-1].generated_text
    assert repr(stream).endswith("closed, 12 event(s)>")
    with pytest.raises(StopIteration):
        next(stream)
    assert list(stream) == []


def test_close_inside_a_for_loop_ends_it(client: Client) -> None:
    stream = client.generate_stream(PROMPT, max_new_tokens=20)
    seen = 0
    for _ in stream:
        seen += 1
        if seen == 3:
            stream.close()
    assert seen == 3
    assert list(stream) == []


def test_close_from_another_thread_ends_a_for_loop() -> None:
    # Tokens paced 20 ms apart: the loop is waiting in a read when close() comes.
    with FakeLorax(token_latency=0.02) as server, Client(server.url) as client:
        stream = client.generate_stream(PROMPT, max_new_tokens=500)
        seen = 0
        timer = None
        for _ in stream:
            seen += 1
            if seen == 2:
                timer = threading.Timer(0.1, stream.close)
                timer.start()
        assert timer is not None
        timer.join()
        assert 2 <= seen < 500
        assert list(stream) == []
