"""Embeddings, classification, tokenization and the operational routes."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from lorax.testing import FakeLorax
from lorax.testing._metrics import DURATION_BUCKETS
from lorax.testing._serde import rust_f64

from ._fake_http import post, request

EXAMPLES = json.loads((Path(__file__).parents[1] / "fixtures" / "wire-examples.json").read_text())


def test_embed(lorax_server: FakeLorax) -> None:
    raw = post(lorax_server.url, "/embed", EXAMPLES["embed.request"]["body"])
    body = raw.json()
    assert list(body) == ["embeddings"]
    assert len(body["embeddings"]) == 32
    assert all(isinstance(v, float) for v in body["embeddings"])
    assert not [n for n in raw.header_names if n.startswith("x-")]  # embed sets no x-* headers
    again = post(lorax_server.url, "/embed", EXAMPLES["embed.request"]["body"])
    assert again.body == raw.body
    other = post(lorax_server.url, "/embed", EXAMPLES["embed.request.with_adapter"]["body"])
    assert other.status == 200
    assert other.body != raw.body
    assert post(lorax_server.url, "/embed", {"inputs": "x", "parameters": None}).status == 200
    assert post(lorax_server.url, "/embed", {"inputs": ""}).status == 200  # empty input is not rejected


@pytest.mark.lorax_server(embedding_dim=8)
def test_v1_embeddings(lorax_server: FakeLorax) -> None:
    single = post(lorax_server.url, "/v1/embeddings", EXAMPLES["v1_embeddings.request.string"]["body"]).json()
    (item,) = single["embeddings"]
    assert list(item) == ["index", "embedding", "object"]
    assert (item["index"], item["object"], len(item["embedding"])) == (0, "embedding", 8)
    many = post(lorax_server.url, "/v1/embeddings", EXAMPLES["v1_embeddings.request.list"]["body"]).json()
    assert [e["index"] for e in many["embeddings"]] == [0, 1]
    assert many["embeddings"][0]["embedding"] == item["embedding"]
    empty = post(lorax_server.url, "/v1/embeddings", {"model": "m", "input": []})
    assert (empty.status, empty.body) == (500, orjson.dumps(EXAMPLES["embed.error.empty_batch"]["body"]))
    assert post(lorax_server.url, "/v1/embeddings", {"input": "x"}).status == 422  # model is required


def test_classify(lorax_server: FakeLorax) -> None:
    raw = post(lorax_server.url, "/classify", EXAMPLES["classify.request"]["body"])
    entities = raw.json()
    assert isinstance(entities, list)
    expected = EXAMPLES["classify.response"]["body"]
    # Same spans, words and "0" quirk as the example; only the tags and scores are the toy's.
    assert [(e["word"], e["start"], e["end"]) for e in entities] == [
        (e["word"], e["start"], e["end"]) for e in expected
    ]
    assert [e["entity_group"] == "0" for e in entities] == [e["entity_group"] == "0" for e in expected]
    assert list(entities[0]) == ["entity_group", "score", "word", "start", "end"]
    for name in ("x-compute-type", "x-compute-time", "x-validation-time", "x-queue-time", "x-inference-time"):
        assert raw.header(name) is not None


def test_classify_byte_offsets(lorax_server: FakeLorax) -> None:
    text = "Zoë visits Paris."
    entities = post(lorax_server.url, "/classify", {"inputs": text}).json()
    data = text.encode()
    for e in entities:
        assert data[e["start"] : e["end"]].decode().lower() == e["word"].lower()
    assert entities[0]["word"] == "zoë"  # ASCII-lowercased: ë unchanged


def test_classify_batch(lorax_server: FakeLorax) -> None:
    raw = post(lorax_server.url, "/classify_batch", EXAMPLES["classify_batch.request"]["body"])
    result = raw.json()
    expected = EXAMPLES["classify_batch.response"]["body"]
    assert [[(e["word"], e["start"], e["end"]) for e in r] for r in result] == [
        [(e["word"], e["start"], e["end"]) for e in r] for r in expected
    ]
    assert raw.header("x-validation-time") == "0"
    empty = post(lorax_server.url, "/classify_batch", {"inputs": []})
    assert (empty.status, empty.body) == (500, orjson.dumps(EXAMPLES["classify.error.empty_batch"]["body"]))
    assert post(lorax_server.url, "/classify_batch", {"inputs": "x"}).status == 422


def test_tokenize(lorax_server: FakeLorax) -> None:
    body = post(lorax_server.url, "/tokenize", EXAMPLES["tokenize.request"]["body"]).json()
    expected = EXAMPLES["tokenize.response"]["body"]
    assert [(t["text"], t["start"], t["stop"]) for t in body] == [(t["text"], t["start"], t["stop"]) for t in expected]
    assert body[0]["id"] == 1
    no_special = post(lorax_server.url, "/tokenize", {"inputs": "What is", "add_special_tokens": False}).json()
    assert [t["text"] for t in no_special] == ["▁What", "▁is"]
    # Character offsets, not bytes.
    accents = post(lorax_server.url, "/tokenize", {"inputs": "héé ok", "add_special_tokens": None}).json()
    assert [(t["start"], t["stop"]) for t in accents] == [(0, 0), (0, 3), (3, 6)]


@pytest.mark.lorax_server(has_tokenizer=False)
def test_tokenize_without_tokenizer(lorax_server: FakeLorax) -> None:
    raw = post(lorax_server.url, "/tokenize", {"inputs": "x"})
    assert (raw.status, raw.body) == (404, orjson.dumps(EXAMPLES["tokenize.error.no_tokenizer"]["body"]))


def test_info(lorax_server: FakeLorax) -> None:
    body = request(lorax_server.url, "GET", "/info").json()
    assert list(body) == list(EXAMPLES["info.response"]["body"])
    assert body["max_best_of"] == 2
    assert body["max_stop_sequences"] == 4
    assert body["version"] == "0.1.0"
    assert body["sha"] is None


@pytest.mark.lorax_server(max_total_tokens=64, model_id="my/model", docker_label="sha-1")
def test_info_is_configurable(lorax_server: FakeLorax) -> None:
    body = request(lorax_server.url, "GET", "/info").json()
    assert (body["max_total_tokens"], body["model_id"], body["docker_label"]) == (64, "my/model", "sha-1")


def test_health_routes(lorax_server: FakeLorax) -> None:
    for path in ("/", "/health", "/ping", "/startup"):
        raw = request(lorax_server.url, "GET", path)
        assert (raw.status, raw.body, raw.header("content-length")) == (200, b"", "0")
        assert raw.header("content-type") is None
    lorax_server.config.healthy = False
    for path in ("/", "/health", "/ping"):
        raw = request(lorax_server.url, "GET", path)
        assert (raw.status, raw.body) == (503, orjson.dumps(EXAMPLES["health.response.unhealthy"]["body"]))
    lorax_server.config.startup_ready = False
    raw = request(lorax_server.url, "GET", "/startup")
    assert (raw.status, raw.body) == (500, orjson.dumps(EXAMPLES["startup.response.empty_generation"]["body"]))


def test_head_on_get_routes(lorax_server: FakeLorax) -> None:
    raw = request(lorax_server.url, "HEAD", "/info")
    assert raw.status == 200
    assert raw.body == b""


def test_unknown_path_and_wrong_method(lorax_server: FakeLorax) -> None:
    raw = request(lorax_server.url, "GET", "/v1/models")
    assert (raw.status, raw.body, raw.header("access-control-allow-origin")) == (404, b"", "*")
    assert request(lorax_server.url, "POST", "/generate/", b"{}").status == 404
    raw = request(lorax_server.url, "PUT", "/", b"{}")
    assert (raw.status, raw.header("allow"), raw.body) == (405, "GET,HEAD,POST", b"")
    assert request(lorax_server.url, "POST", "/info", b"{}").header("allow") == "GET,HEAD"
    assert request(lorax_server.url, "GET", "/tokenize").header("allow") == "POST"


def test_cors_preflight(lorax_server: FakeLorax) -> None:
    raw = request(
        lorax_server.url,
        "OPTIONS",
        "/generate",
        headers={"Origin": "http://x", "Access-Control-Request-Method": "POST"},
    )
    assert raw.status == 200
    assert raw.header("access-control-allow-methods") == "GET,POST"
    assert raw.header("access-control-allow-headers") == "content-type"
    assert raw.header("access-control-allow-origin") == "*"


def test_metrics_prometheus_counts(lorax_server: FakeLorax) -> None:
    post(lorax_server.url, "/generate", {"inputs": "x", "parameters": {"max_new_tokens": 1}})
    post(lorax_server.url, "/generate", {"inputs": "x", "parameters": {"max_new_tokens": 1}})
    post(lorax_server.url, "/generate", {"inputs": "x", "parameters": {"temperature": -1}})
    raw = request(lorax_server.url, "GET", "/metrics")
    assert raw.header("content-type") == "text/plain"
    text = raw.body.decode()
    assert "# TYPE lorax_request_count counter\nlorax_request_count 3\n\n" in text
    assert "lorax_request_success 2\n" in text
    assert 'lorax_request_failure{err="validation"} 1\n' in text
    assert f'lorax_request_duration_bucket{{le="{rust_f64(DURATION_BUCKETS[0])}"}}' in text
    assert 'le="0.00015000000000000001"' in text
    assert 'le="145.61096060497135"' in text
    assert text.index("counter") < text.index("histogram")
    assert text.endswith("\n\n")


def test_metrics_json_only_with_accept(lorax_server: FakeLorax) -> None:
    post(lorax_server.url, "/generate", {"inputs": "x", "parameters": {"max_new_tokens": 1}})
    raw = request(lorax_server.url, "GET", "/metrics", headers={"Accept": "text/html, application/json"})
    assert raw.header("content-type") == "application/json"
    body = raw.json()
    # parse_text_to_metrics keys a plain sample whose name ends in "_count" as "count", so the
    # lorax_request_count counter itself gets "count" (wire-examples.json shows "", the code says otherwise).
    assert body["lorax_request_count"] == {"type": "counter", "data": [{"key": "count", "value": 1.0}]}
    assert body["lorax_request_success"] == {"type": "counter", "data": [{"key": "", "value": 1.0}]}
    assert b'"value":1.0' in raw.body
    duration = body["lorax_request_duration"]
    assert duration["type"] == "histogram"
    assert [d["key"] for d in duration["data"][-2:]] == ["sum", "count"]
    # ?format=json is documented but never works in LoRAX.
    assert request(lorax_server.url, "GET", "/metrics?format=json").header("content-type") == "text/plain"
