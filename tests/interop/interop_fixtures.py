"""The interop fixtures, written out independently of the Node ones (interop/fixtures.mjs).

The Node side checks what Python sends against its own copy and sends its copy back, so
both sides must agree on every field.
"""

from __future__ import annotations

import json

from lorax import types as T
from lorax.v1 import generate_pb2 as g
from lorax.v1 import websocket_pb2 as ws

# Above 2^53: a double (and so a JS number) cannot hold it.
SEED = 18446744073709551557  # the largest prime below 2^64
DEADLINE_MS = 2**53 + 1
MAX_U64 = 2**64 - 1

# Key order ("b" before "a" before "10"), an integer at 2^64-1 and `1.0` must all survive.
SCHEMA_TEXT = (
    '{"type":"object","properties":{"b":{"type":"integer","maximum":18446744073709551615},'
    '"a":{"type":"number","minimum":1.0},"10":{"type":"string"}},"required":["b","a"]}'
)

INPUTS = '[INST] Wie geht\'s? 你好 🚀 "quoted"\n\t[/INST]'


def generate_request() -> g.GenerateRequest:
    """Every parameter set (some to their zero value, which presence keeps)."""
    return g.GenerateRequest(
        inputs=INPUTS,
        parameters=g.GenerateParameters(
            adapter_id="acme/adapter-a",
            adapter_source="s3",
            merged_adapters=g.MergedAdapters(
                ids=["acme/a", "acme/b"],
                weights=[0.7, 0.3],
                merge_strategy=g.MERGE_STRATEGY_TIES,
                density=0.5,
                majority_sign_method=g.MAJORITY_SIGN_METHOD_FREQUENCY,
            ),
            api_token="tok-123",
            best_of=2,
            temperature=0.7,
            repetition_penalty=1.1,
            frequency_penalty=-0.5,
            presence_penalty=0.0,
            top_k=50,
            top_p=0.95,
            typical_p=0.9,
            do_sample=True,
            max_new_tokens=64,
            ignore_eos_token=False,
            return_full_text=False,
            stop=["</s>", "\n\n"],
            truncate=1024,
            watermark=False,
            details=True,
            decoder_input_details=True,
            return_k_alternatives=3,
            apply_chat_template=False,
            seed=SEED,
            response_format=g.ResponseFormat(type=g.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, schema=SCHEMA_TEXT),
        ),
    )


def generate_request_struct() -> T.GenerateRequest:
    """generate_request() built with the public Struct classes (what users write)."""
    return T.GenerateRequest(
        inputs=INPUTS,
        parameters=T.GenerateParameters(
            adapter_id="acme/adapter-a",
            adapter_source="s3",
            merged_adapters=T.MergedAdapters(
                ids=["acme/a", "acme/b"],
                weights=[0.7, 0.3],
                merge_strategy="ties",
                density=0.5,
                majority_sign_method=T.MajoritySignMethod.FREQUENCY,
            ),
            api_token="tok-123",
            best_of=2,
            temperature=0.7,
            repetition_penalty=1.1,
            frequency_penalty=-0.5,
            presence_penalty=0.0,
            top_k=50,
            top_p=0.95,
            typical_p=0.9,
            do_sample=True,
            max_new_tokens=64,
            ignore_eos_token=False,
            return_full_text=False,
            stop=["</s>", "\n\n"],
            truncate=1024,
            watermark=False,
            details=True,
            decoder_input_details=True,
            return_k_alternatives=3,
            apply_chat_template=False,
            seed=SEED,
            response_format=T.ResponseFormat(type="json_schema", schema=json.loads(SCHEMA_TEXT)),
        ),
    )


def stream_responses_struct() -> list[T.StreamResponse]:
    """stream_responses() built with the public Struct classes."""
    tokens = [
        T.Token(id=22557, text="Hello", logprob=-0.25, special=False),
        T.Token(
            id=28725,
            text=",",
            logprob=-1.5,
            alternative_tokens=[
                T.AlternativeToken(id=28723, text=".", logprob=-2.0),
                T.AlternativeToken(id=28808, text="!"),
            ],
        ),
        T.Token(id=1526, text=" world", skipped=True),
        T.Token(id=28808, text="!", logprob=-0.0),
        T.Token(id=2, text="</s>", logprob=-0.125, special=True),
    ]
    events = [T.StreamResponse(token=t) for t in tokens]
    events[-1].generated_text = "Hello, world!"
    events[-1].details = T.StreamDetails(finish_reason="eos_token", prompt_tokens=7, generated_tokens=5, seed=SEED)
    return events


def stream_responses() -> list[g.StreamResponse]:
    """Five /generate_stream events; the last carries generated_text and details."""
    tokens = [
        g.Token(id=22557, text="Hello", logprob=-0.25, special=False),
        g.Token(
            id=28725,
            text=",",
            logprob=-1.5,
            alternative_tokens=[
                g.AlternativeToken(id=28723, text=".", logprob=-2.0),
                g.AlternativeToken(id=28808, text="!"),
            ],
        ),
        g.Token(id=1526, text=" world", skipped=True),  # logprob unset: null on the wire
        g.Token(id=28808, text="!", logprob=-0.0),
        g.Token(id=2, text="</s>", logprob=-0.125, special=True),
    ]
    events = [g.StreamResponse(token=t) for t in tokens]
    events[-1].generated_text = "Hello, world!"
    events[-1].details.CopyFrom(
        g.StreamDetails(finish_reason="eos_token", prompt_tokens=7, generated_tokens=5, seed=SEED)
    )
    return events


def frames() -> list[ws.Frame]:
    """One WebSocket frame of every kind."""
    request = generate_request().SerializeToString()
    event = stream_responses()[4].SerializeToString()
    return [
        ws.Frame(
            call_id=1,
            call=ws.FrameCall(
                method="lorax.v1.LoraxService.GenerateStream",
                request=request,
                headers={"authorization": "Bearer abc", "x-request-id": "r-1"},
                read_timeout_ms=30000,
                deadline_ms=DEADLINE_MS,
            ),
        ),
        ws.Frame(
            call_id=1,
            headers=ws.FrameHeaders(
                status=200, headers={"content-type": "text/event-stream", "x-compute-time": "0.25"}
            ),
        ),
        ws.Frame(call_id=1, message=ws.FrameMessage(message=event)),
        ws.Frame(call_id=1, end=ws.FrameEnd()),
        ws.Frame(
            call_id=2,
            error=ws.FrameError(
                status=422,
                error_type="validation",
                message="`inputs` cannot be empty",
                headers={"content-type": "application/json"},
                body='{"error":"`inputs` cannot be empty","error_type":"validation"}',
            ),
        ),
        ws.Frame(call_id=3, error=ws.FrameError(status=0, message="incomplete generation")),
        ws.Frame(call_id=MAX_U64, cancel=ws.FrameCancel()),
    ]


def size_delimited(messages: list[g.StreamResponse]) -> bytes:
    """Messages each prefixed by its length as a varint (Java's writeDelimitedTo)."""
    out = bytearray()
    for message in messages:
        data = message.SerializeToString()
        n = len(data)
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
        out += data
    return bytes(out)


def read_size_delimited(data: bytes, message_class: type[g.StreamResponse]) -> list[g.StreamResponse]:
    messages = []
    i = 0
    while i < len(data):
        n = shift = 0
        while True:
            byte = data[i]
            i += 1
            n |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        messages.append(message_class.FromString(data[i : i + n]))
        i += n
    return messages
