"""A gateway shared by many clients: one flooding client cannot starve the others.

lorax.testing's fake LoRAX stalls every call of the flooder (``stall=all`` in the
fault header, which the gateway forwards with the call) while a well-behaved client
makes ordinary calls on its own connection through the same gateway. The gateway's
upstream pool is small here (4 connections) so that, without the per-connection cap
on upstream calls, the flooder's stalled calls would hold all of it.
"""

from __future__ import annotations

import time

from websockets.sync.client import connect

from lorax import Client, _routes
from lorax._timeout import Timeout
from lorax.gateway import GatewayThread
from lorax.testing import FAULT_HEADER, FakeLorax
from lorax.transports import _ws_frames as wsf
from lorax.v1.generate_pb2 import GenerateRequest
from lorax.v1.websocket_pb2 import Frame

from ._harness import eventually

FLOOD = 32


def _flood_call(call_id: int) -> bytes:
    request = GenerateRequest(inputs="flood")
    request.parameters.max_new_tokens = 4
    return wsf.encode_call(
        call_id,
        _routes.GENERATE.full_name,
        request.SerializeToString(),
        {FAULT_HEADER: "stall=all"},
        read_timeout=3600.0,  # asks for an hour; the gateway allows 3 s
        deadline=None,
    )


def test_a_flooding_client_does_not_starve_a_well_behaved_one(fake_server: FakeLorax) -> None:
    with GatewayThread(
        upstream=fake_server.url,
        upstream_pool_size=4,
        max_upstream_calls_per_connection=2,
        max_calls_per_connection=FLOOD,
        upstream_timeout=Timeout(connect=5.0, read=3.0),
    ) as gw:
        gateway = gw.gateway
        assert gateway is not None
        base = fake_server.stats.requests
        with connect(gw.url, subprotocols=[wsf.SUBPROTOCOL], open_timeout=5) as flooder:
            for call_id in range(1, FLOOD + 1):
                flooder.send(_flood_call(call_id))
            # One more than its limit: refused at once, nothing sent upstream.
            flooder.send(_flood_call(FLOOD + 1))
            refused = Frame.FromString(flooder.recv(timeout=5))
            assert refused.call_id == FLOOD + 1
            assert (refused.error.status, refused.error.error_type) == (429, "too_many_calls")
            # The flooder holds its two upstream slots with stalled calls, and no more:
            # its other calls wait at the gateway.
            assert eventually(lambda: fake_server.stats.requests - base >= 2, 5)
            time.sleep(0.3)
            assert fake_server.stats.requests - base == 2

            timeout = Timeout(connect=5.0, read=5.0)
            with Client(gw.url, timeout=timeout, max_retries=0) as good:
                latencies = []
                for n in range(10):
                    started = time.monotonic()
                    response = good.generate(f"good {n}", max_new_tokens=4)
                    latencies.append(time.monotonic() - started)
                    assert response.details.generated_tokens == 4
            # Each call answers about as fast as with an idle gateway (the fake LoRAX
            # answers in milliseconds); generous bound against a loaded machine.
            assert max(latencies) < 3.0, latencies

            # The flooder's stalled calls end with the gateway's read timeout (3 s), not
            # the hour they asked for.
            started = time.monotonic()
            frame = Frame.FromString(flooder.recv(timeout=10))
            assert frame.WhichOneof("kind") == "error"
            assert frame.error.error_type == wsf.READ_TIMEOUT
            assert time.monotonic() - started < 5.0
