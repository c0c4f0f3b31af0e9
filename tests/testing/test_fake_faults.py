"""Fault injection, crash behaviour, request recording and client-disconnect detection."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest

from lorax.testing import CRASH_HTTP_500, FakeLorax, FaultError, FaultSpec, parse_faults

from ._fake_http import post, sse_events

EXAMPLES = json.loads((Path(__file__).parents[1] / "fixtures" / "wire-examples.json").read_text())
BODY = {"inputs": "What is the capital of France?", "parameters": {"max_new_tokens": 5}}
FAULT = "x-lorax-fake-fault"


def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def test_parse_faults() -> None:
    spec = parse_faults("token-latency=20ms; ttfb=1.5s, overloaded; retry-after=2; error-after=3; drop-after=1")
    assert spec == FaultSpec(
        token_latency=0.02, time_to_first_byte=1.5, overloaded=True, retry_after=2, error_after=3, drop_after=1
    )
    assert parse_faults("stall=headers").stall == "headers"
    assert parse_faults("bad-gateway; keep-alive=100ms") == FaultSpec(bad_gateway=True, keep_alive=0.1)
    for bad in ("nope", "token-latency=5", "stall=maybe", "error-after=-1", "overloaded=1", "error-type=x"):
        with pytest.raises(FaultError):
            parse_faults(bad)


def test_invalid_fault_header_is_a_loud_400(lorax_server: FakeLorax) -> None:
    raw = post(lorax_server.url, "/generate", BODY, headers={FAULT: "explode"})
    assert raw.status == 400
    assert raw.body == b"invalid x-lorax-fake-fault: unknown directive 'explode'"


def test_token_latency_and_ttfb(lorax_server: FakeLorax) -> None:
    start = time.monotonic()
    post(lorax_server.url, "/generate", BODY, headers={FAULT: "token-latency=30ms"})
    assert time.monotonic() - start >= 0.15
    lorax_server.faults.set(time_to_first_byte=0.1)
    start = time.monotonic()
    raw = post(lorax_server.url, "/generate_stream", BODY)
    assert time.monotonic() - start >= 0.1
    assert len(sse_events(raw.body)) == 5
    lorax_server.faults.clear()
    start = time.monotonic()
    post(lorax_server.url, "/generate", BODY)
    assert time.monotonic() - start < 0.1


def test_overloaded_next_n_with_retry_after(lorax_server: FakeLorax) -> None:
    lorax_server.faults.overload_next(2, retry_after=3)
    # GET routes do not consume queued faults.
    assert post(lorax_server.url, "/tokenize", {"inputs": "x"}).status == 200
    for _ in range(2):
        raw = post(lorax_server.url, "/generate", BODY)
        assert raw.status == 429
        assert raw.body == orjson.dumps(EXAMPLES["error.overloaded"]["body"])
        assert raw.header("retry-after") == "3"
    assert post(lorax_server.url, "/generate", BODY).status == 200
    assert lorax_server.stats.overloaded == 2


def test_overloaded_stream_is_an_event(lorax_server: FakeLorax) -> None:
    raw = post(lorax_server.url, "/generate_stream", BODY, headers={FAULT: "overloaded"})
    assert raw.status == 200
    assert raw.body == EXAMPLES["generate_stream.event.error_overloaded"]["raw"].encode()
    embed = post(lorax_server.url, "/embed", {"inputs": "x"}, headers={FAULT: "overloaded"})
    assert embed.status == 429


def test_error_after(lorax_server: FakeLorax) -> None:
    raw = post(lorax_server.url, "/generate_stream", BODY, headers={FAULT: "error-after=2"})
    events = sse_events(raw.body)
    assert len(events) == 3
    assert raw.complete
    assert orjson.loads(events[-1]) == {
        "error": "Request failed during generation: Server error: injected fault (lorax.testing)",
        "error_type": "generation",
    }
    raw = post(lorax_server.url, "/generate", BODY, headers={FAULT: "error-after=2"})
    assert raw.status == 424
    assert raw.json()["error_type"] == "generation"
    raw = post(
        lorax_server.url, "/generate_stream", BODY, headers={FAULT: "error-after=1; error-type=incomplete_generation"}
    )
    assert raw.chunks[-1] == EXAMPLES["generate_stream.event.error_incomplete"]["raw"].encode()
    raw = post(
        lorax_server.url,
        "/v1/completions",
        {"model": "", "prompt": "x", "stream": True},
        headers={FAULT: "error-after=1"},
    )
    assert b"[DONE]" not in raw.body
    assert raw.body.endswith(b'"error_type":"generation"}\n\n')


def test_drop_after(lorax_server: FakeLorax) -> None:
    raw = post(lorax_server.url, "/generate_stream", BODY, headers={FAULT: "drop-after=2"})
    assert raw.status == 200
    assert not raw.complete
    assert len(sse_events(raw.body)) == 2
    raw = post(lorax_server.url, "/generate", BODY, headers={FAULT: "drop-after=2"})
    assert raw.status == 0  # nothing at all
    assert lorax_server.stats.dropped == 2


def test_bad_gateway(lorax_server: FakeLorax) -> None:
    raw = post(lorax_server.url, "/generate", BODY, headers={FAULT: "bad-gateway"})
    assert raw.status == 502
    assert raw.header("content-type") == "text/html"
    assert raw.body.startswith(b"<html>")


def test_stall_all_and_headers(lorax_server: FakeLorax) -> None:
    with pytest.raises(TimeoutError):
        post(lorax_server.url, "/generate", BODY, headers={FAULT: "stall=all"}, timeout=0.3)
    parts = urlsplit(lorax_server.url)
    assert parts.hostname is not None
    assert parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=0.3) as sock:
        body = orjson.dumps(BODY)
        sock.sendall(
            b"POST /generate_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + FAULT.encode()
            + b": stall=headers\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 200 OK")
        with pytest.raises(TimeoutError):
            sock.recv(4096)
    # Stalled handlers do not keep the server from stopping (the fixture stops it next).


def test_queued_fault_spec(lorax_server: FakeLorax) -> None:
    lorax_server.faults.push("drop-after=0", times=1)
    assert post(lorax_server.url, "/generate", BODY).status == 0
    assert post(lorax_server.url, "/generate", BODY).status == 200


def test_recording(lorax_server: FakeLorax) -> None:
    post(lorax_server.url, "/generate", BODY, headers={"Authorization": "Bearer tok", "X-Custom": "1"})
    req = lorax_server.last_request
    assert (req.method, req.path, req.query) == ("POST", "/generate", "")
    assert req.body == orjson.dumps(BODY)
    assert req.header("authorization") == "Bearer tok"
    assert req.header("X-CUSTOM") == "1"
    post(lorax_server.url, "/nope?x=1", {})
    assert lorax_server.requests[-1].query == "x=1"
    assert lorax_server.stats.requests == 2
    lorax_server.clear_requests()
    assert lorax_server.requests == []


def test_completed_or_refused_streams_are_not_cancellations(lorax_server: FakeLorax) -> None:
    post(lorax_server.url, "/generate_stream", BODY)
    post(lorax_server.url, "/generate_stream", {"inputs": "x", "parameters": {"temperature": -1}})
    post(lorax_server.url, "/generate_stream", BODY, headers={FAULT: "error-after=1"})
    post(lorax_server.url, "/v1/completions", {"model": "", "prompt": "x", "stream": True})
    assert lorax_server.stats.cancelled == 0
    assert lorax_server.stats.in_flight == 0


def test_client_disconnect_cancels_generation(lorax_server: FakeLorax) -> None:
    parts = urlsplit(lorax_server.url)
    assert parts.hostname is not None
    assert parts.port is not None
    body = orjson.dumps({"inputs": "x", "parameters": {"max_new_tokens": 100, "ignore_eos_token": True}})
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(
            b"POST /generate_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + FAULT.encode()
            + b": token-latency=20ms\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert b"data: " in sock.recv(65536) or b"data: " in sock.recv(65536)
    wait_for(lambda: lorax_server.stats.cancelled == 1)
    wait_for(lambda: lorax_server.stats.in_flight == 0)
    # A non-stream generation is cancelled too when its client goes away.
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(
            b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + FAULT.encode()
            + b": token-latency=20ms\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(0.1)
    wait_for(lambda: lorax_server.stats.cancelled == 2)
    wait_for(lambda: lorax_server.stats.in_flight == 0)


@pytest.mark.lorax_server(max_concurrent_requests=1)
def test_concurrency_limit(lorax_server: FakeLorax) -> None:
    slow = threading.Thread(
        target=post, args=(lorax_server.url, "/generate", BODY), kwargs={"headers": {FAULT: "token-latency=100ms"}}
    )
    slow.start()
    try:
        wait_for(lambda: lorax_server.stats.in_flight == 1)
        raw = post(lorax_server.url, "/generate", BODY)
        assert raw.status == 429
        assert raw.json()["error"] == "Model is overloaded"
    finally:
        slow.join()


CRASHES = [
    {"merged_adapters": {"ids": ["a"], "weights": [1.0], "merge_strategy": "bogus"}},
    {"merged_adapters": {"ids": ["a"], "weights": [1.0], "majority_sign_method": "most"}},
    {"adapter_id": "bad\nid"},
    {"adapter_id": "ok", "adapter_source": "hub\r"},
]


@pytest.mark.parametrize("params", CRASHES)
def test_crash_inputs_abort_the_connection(lorax_server: FakeLorax, params: dict[str, object]) -> None:
    raw = post(lorax_server.url, "/generate", {"inputs": "x", "parameters": params})
    assert raw.status == 0
    assert lorax_server.stats.crashes == 1
    stream = post(lorax_server.url, "/generate_stream", {"inputs": "x", "parameters": params})
    if "merged_adapters" in params:
        # Found by the adapter loader after the 200 head went out: the stream is cut.
        assert stream.status == 200
        assert not stream.complete
        assert stream.body == b""
    else:
        assert stream.status == 0  # the header is built before anything is sent
    assert lorax_server.stats.crashes == 2
    # The server itself keeps serving.
    assert post(lorax_server.url, "/generate", BODY).status == 200


def test_validation_comes_before_a_loader_crash(lorax_server: FakeLorax) -> None:
    params = {"merged_adapters": {"ids": ["a"], "weights": [1.0], "merge_strategy": "bogus"}, "temperature": -1}
    assert post(lorax_server.url, "/generate", {"inputs": "x", "parameters": params}).status == 422
    # Known strategies in any case are fine.
    params = {"merged_adapters": {"ids": ["a"], "weights": [1.0], "merge_strategy": "Dare_Ties"}, "max_new_tokens": 1}
    assert post(lorax_server.url, "/generate", {"inputs": "x", "parameters": params}).status == 200
    # Base-model requests never build the adapter header, so a bad source is harmless there.
    assert post(lorax_server.url, "/generate", {"inputs": "x", "parameters": {"adapter_source": "a\nb"}}).status == 200


@pytest.mark.lorax_server(crash_behaviour=CRASH_HTTP_500)
def test_crash_as_http_500(lorax_server: FakeLorax) -> None:
    raw = post(lorax_server.url, "/generate", {"inputs": "x", "parameters": CRASHES[0]})
    assert raw.status == 500
    assert raw.header("content-type") == "text/plain; charset=utf-8"
    assert b"would have aborted" in raw.body
