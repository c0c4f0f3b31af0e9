// The interop fixtures, written out independently of the Python ones
// (tests/interop/fixtures.py). roundtrip.mjs checks what Python sent against these
// and sends them back, so both sides must agree on every field.

import { create, toBinary } from "@bufbuild/protobuf";
import {
  FrameSchema,
} from "./gen/lorax/v1/websocket_pb.js";
import {
  GenerateRequestSchema,
  MajoritySignMethod,
  MergeStrategy,
  ResponseFormatType,
  StreamResponseSchema,
} from "./gen/lorax/v1/generate_pb.js";

// Above 2^53: a JS number cannot hold it, a bigint can.
export const SEED = 18446744073709551557n; // the largest prime below 2^64
export const DEADLINE_MS = 9007199254740993n; // 2^53 + 1
export const MAX_U64 = 18446744073709551615n;

// Free-form JSON text whose key order ("b" before "a" before "10"), integer above
// 2^64-1 ... kept verbatim, and `1.0` must survive: JSON.parse would move "10" first,
// round 18446744073709551615 and print 1.0 as 1.
export const SCHEMA_TEXT =
  '{"type":"object","properties":{"b":{"type":"integer","maximum":18446744073709551615},' +
  '"a":{"type":"number","minimum":1.0},"10":{"type":"string"}},"required":["b","a"]}';

export const INPUTS = '[INST] Wie geht\'s? 你好 🚀 "quoted"\n\t[/INST]';

/** A GenerateRequest with every parameter set (some to their zero value, which presence keeps). */
export function generateRequest() {
  return create(GenerateRequestSchema, {
    inputs: INPUTS,
    parameters: {
      adapterId: "acme/adapter-a",
      adapterSource: "s3",
      mergedAdapters: {
        ids: ["acme/a", "acme/b"],
        weights: [0.7, 0.3],
        mergeStrategy: MergeStrategy.TIES,
        density: 0.5,
        majoritySignMethod: MajoritySignMethod.FREQUENCY,
      },
      apiToken: "tok-123",
      bestOf: 2,
      temperature: 0.7,
      repetitionPenalty: 1.1,
      frequencyPenalty: -0.5,
      presencePenalty: 0.0,
      topK: 50,
      topP: 0.95,
      typicalP: 0.9,
      doSample: true,
      maxNewTokens: 64,
      ignoreEosToken: false,
      returnFullText: false,
      stop: ["</s>", "\n\n"],
      truncate: 1024,
      watermark: false,
      details: true,
      decoderInputDetails: true,
      returnKAlternatives: 3,
      applyChatTemplate: false,
      seed: SEED,
      responseFormat: { type: ResponseFormatType.JSON_SCHEMA, schema: SCHEMA_TEXT },
    },
  });
}

const TOKENS = [
  { id: 22557, text: "Hello", logprob: -0.25, special: false },
  { id: 28725, text: ",", logprob: -1.5, special: false, alternativeTokens: [{ id: 28723, text: ".", logprob: -2.0 }, { id: 28808, text: "!" }] },
  { id: 1526, text: " world", special: false, skipped: true }, // logprob unset: null on the wire
  { id: 28808, text: "!", logprob: -0.0, special: false },
  { id: 2, text: "</s>", logprob: -0.125, special: true },
];

/** Five /generate_stream events; the last carries generated_text and details. */
export function streamResponses() {
  return TOKENS.map((token, i) =>
    create(StreamResponseSchema, {
      token,
      ...(i === TOKENS.length - 1
        ? {
            generatedText: "Hello, world!",
            details: { finishReason: "eos_token", promptTokens: 7, generatedTokens: 5, seed: SEED },
          }
        : {}),
    })
  );
}

/** One WebSocket frame of every kind (websocket.proto). */
export function frames() {
  const request = toBinary(GenerateRequestSchema, generateRequest());
  const event = toBinary(StreamResponseSchema, streamResponses()[4]);
  return [
    {
      callId: 1n,
      kind: {
        case: "call",
        value: {
          method: "lorax.v1.LoraxService.GenerateStream",
          request,
          headers: { authorization: "Bearer abc", "x-request-id": "r-1" },
          readTimeoutMs: 30000n,
          deadlineMs: DEADLINE_MS,
        },
      },
    },
    {
      callId: 1n,
      kind: { case: "headers", value: { status: 200, headers: { "content-type": "text/event-stream", "x-compute-time": "0.25" } } },
    },
    { callId: 1n, kind: { case: "message", value: { message: event } } },
    { callId: 1n, kind: { case: "end", value: {} } },
    {
      callId: 2n,
      kind: {
        case: "error",
        value: {
          status: 422,
          errorType: "validation",
          message: "`inputs` cannot be empty",
          headers: { "content-type": "application/json" },
          body: '{"error":"`inputs` cannot be empty","error_type":"validation"}',
        },
      },
    },
    { callId: 3n, kind: { case: "error", value: { status: 0, message: "incomplete generation" } } },
    { callId: MAX_U64, kind: { case: "cancel", value: {} } },
  ].map((init) => create(FrameSchema, init));
}
