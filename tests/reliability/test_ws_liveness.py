"""Liveness: a call kept alive by LoRAX's keep-alive comments alone never times out.

Over HTTP the comments' bytes reset the client's read timer. Over the WebSocket only
the gateway sees them; it sends FrameHeartbeat frames for the call instead (see
websocket.proto, LIVENESS), and once those flow the client notices silence after the
read timeout plus a margin of at most 1 s. Here each token comes 1.5 s after the
last, with keep-alive comments every 100 ms in between, and the read timeout is
0.5 s: every transport must deliver the whole stream. A stall without keep-alives
must end in a read timeout on every transport, within a few read timeouts.
"""

from __future__ import annotations

from collections.abc import Callable

from lorax import errors
from lorax.testing import FAULT_HEADER, FakeLorax

from ._harness import Op, run

KEEP_ALIVE_ONLY = Op(stream=True, max_new_tokens=3, headers={FAULT_HEADER: "token-latency=1.5s;keep-alive=100ms"})
STALLED = Op(stream=True, max_new_tokens=3, headers={FAULT_HEADER: "stall=headers"})


def test_keep_alive_comments_keep_a_call_alive(
    transport: str, fake_server: FakeLorax, record: Callable[..., None]
) -> None:
    outcome = run(transport, fake_server.url, KEEP_ALIVE_ONLY, read=0.5, retry=0)
    record("keep-alive comments only, 1.5 s per token, read timeout 0.5 s", outcome.label())
    assert outcome.error is None, outcome.error
    assert len(outcome.events) == 3
    assert outcome.value.details.generated_tokens == 3
    # The token latency applies before the first token and between tokens.
    assert outcome.elapsed >= 3 * 1.5


def test_a_silent_upstream_is_noticed_within_the_read_timeout(
    transport: str, fake_server: FakeLorax, record: Callable[..., None]
) -> None:
    outcome = run(transport, fake_server.url, STALLED, read=0.5, retry=0)
    record("stream head, then silence (no keep-alives), read timeout 0.5 s", outcome.label())
    assert isinstance(outcome.error, errors.APITimeoutError), outcome.error
    assert outcome.error.phase == "read"
    assert outcome.elapsed < 3.0
