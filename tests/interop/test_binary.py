"""Binary protobuf between Python and Node (protobuf-es): Python writes, Node reads and
checks every field against its own fixtures, writes back, and Python compares with ==."""

from __future__ import annotations

from pathlib import Path

import pytest
from interop_fixtures import (
    DEADLINE_MS,
    MAX_U64,
    SEED,
    frames,
    generate_request,
    generate_request_struct,
    read_size_delimited,
    size_delimited,
    stream_responses,
    stream_responses_struct,
)
from interop_helpers import b64, run_node, unb64

from lorax import types as T
from lorax.v1 import generate_pb2 as g
from lorax.v1 import websocket_pb2 as ws


@pytest.fixture(scope="module")
def node_result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    payload = {
        "generate_request": b64(generate_request().SerializeToString()),
        "stream": b64(size_delimited(stream_responses())),
        "frames": [b64(f.SerializeToString()) for f in frames()],
    }
    return run_node("binary", payload=payload, tmp_path=tmp_path_factory.mktemp("binary"))


@pytest.mark.parametrize("side", ["echo", "built"])
def test_generate_request(node_result: dict, side: str) -> None:
    got = g.GenerateRequest.FromString(unb64(node_result[side]["generate_request"]))
    assert got == generate_request()
    # The fields a JS number or a canonical-JSON detour would break, named explicitly.
    assert got.parameters.seed == SEED > 2**53
    assert got.parameters.response_format.schema == generate_request().parameters.response_format.schema
    assert got.parameters.HasField("ignore_eos_token")
    assert got.parameters.HasField("presence_penalty")
    assert got.parameters.merged_adapters.merge_strategy == g.MERGE_STRATEGY_TIES
    # What Node wrote, as the public Struct: presence survives (False and 0.0, not None).
    struct = T.GenerateRequest.from_proto(got)
    assert struct == generate_request_struct()
    assert struct.parameters.ignore_eos_token is False
    assert struct.parameters.presence_penalty == 0.0
    assert struct.parameters.seed == SEED
    assert struct.parameters.merged_adapters.merge_strategy == T.MergeStrategy.TIES == "ties"


@pytest.mark.parametrize("side", ["echo", "built"])
def test_stream_size_delimited(node_result: dict, side: str) -> None:
    got = read_size_delimited(unb64(node_result[side]["stream"]), g.StreamResponse)
    assert got == stream_responses()
    assert not got[2].token.HasField("logprob")
    assert got[4].details.seed == SEED
    structs = [T.StreamResponse.from_proto(e) for e in got]
    assert structs == stream_responses_struct()
    assert structs[2].token.logprob is None  # unset in binary: None, never 0.0


@pytest.mark.parametrize("side", ["echo", "built"])
def test_frames(node_result: dict, side: str) -> None:
    got = [ws.Frame.FromString(unb64(f)) for f in node_result[side]["frames"]]
    want = frames()
    assert [f.WhichOneof("kind") for f in got] == ["call", "headers", "message", "end", "error", "error", "cancel"]
    # Serializers need not agree byte for byte on nested messages: compare them parsed.
    assert g.GenerateRequest.FromString(got[0].call.request) == generate_request()
    assert g.StreamResponse.FromString(got[2].message.message) == stream_responses()[4]
    for f in (*got, *want):
        if f.HasField("call"):
            f.call.request = b""
        if f.HasField("message"):
            f.message.message = b""
    assert got == want
    assert got[0].call.deadline_ms == DEADLINE_MS
    assert got[-1].call_id == MAX_U64
    assert not got[5].error.HasField("error_type")
    assert not got[5].error.HasField("body")


def test_bytes_identical_for_map_free_messages(node_result: dict) -> None:
    """Not a protobuf guarantee, but true today: both write fields in number order."""
    assert unb64(node_result["built"]["generate_request"]) == generate_request().SerializeToString()
    assert unb64(node_result["built"]["stream"]) == size_delimited(stream_responses())


def test_node_rejects_a_changed_field(tmp_path: Path) -> None:
    """The Node side really checks: a different seed makes it fail."""
    request = generate_request()
    request.parameters.seed = SEED - 1
    payload = {
        "generate_request": b64(request.SerializeToString()),
        "stream": b64(size_delimited(stream_responses())),
        "frames": [b64(f.SerializeToString()) for f in frames()],
    }
    with pytest.raises(pytest.fail.Exception, match="seed"):
        run_node("binary", payload=payload, tmp_path=tmp_path)
