#!/usr/bin/env node
// The Node side of the cross-language checks (driven by tests/interop/*.py).
//
//   node roundtrip.mjs binary CASE.json       binary messages: Python -> Node -> Python
//   node roundtrip.mjs json CASE.json         LoRAX JSON: Python -> Node -> Python
//   node roundtrip.mjs differences            LoRAX JSON vs protobuf-es canonical JSON
//   node roundtrip.mjs gateway URL CASE.json  a real WebSocket client of `lorax gateway`
//
// Every mode prints one JSON object on stdout. A failed check prints
// {"ok": false, "failures": [...]} and exits with status 1.

import { readFileSync } from "node:fs";
import {
  clone,
  create,
  createRegistry,
  equals,
  fromBinary,
  fromJsonString,
  toBinary,
  toJsonString,
} from "@bufbuild/protobuf";
import { base64Decode, base64Encode, sizeDelimitedDecodeStream, sizeDelimitedEncode } from "@bufbuild/protobuf/wire";

import * as fixtures from "./fixtures.mjs";
import { GatewayClient } from "./gateway_client.mjs";
import { LoraxErrorBody, formatF32, fromLoraxJson, toLoraxJson } from "./loraxjson.mjs";
import { file_lorax_v1_embed } from "./gen/lorax/v1/embed_pb.js";
import {
  CompatGenerateResponseSchema,
  GenerateRequestSchema,
  GenerateResponseSchema,
  MergeStrategy,
  ResponseFormatSchema,
  ResponseFormatType,
  StreamResponseSchema,
  TokenSchema,
  file_lorax_v1_generate,
} from "./gen/lorax/v1/generate_pb.js";
import { ChatCompletionRequestSchema, file_lorax_v1_openai } from "./gen/lorax/v1/openai_pb.js";
import { file_lorax_v1_server } from "./gen/lorax/v1/server_pb.js";
import { file_lorax_v1_service } from "./gen/lorax/v1/service_pb.js";
import { file_lorax_v1_tokenize } from "./gen/lorax/v1/tokenize_pb.js";
import { FrameSchema, file_lorax_v1_websocket } from "./gen/lorax/v1/websocket_pb.js";

const registry = createRegistry(
  file_lorax_v1_embed,
  file_lorax_v1_generate,
  file_lorax_v1_openai,
  file_lorax_v1_server,
  file_lorax_v1_service,
  file_lorax_v1_tokenize,
  file_lorax_v1_websocket
);

const failures = [];

function check(condition, what) {
  if (!condition) failures.push(what);
  return condition;
}

/** The proto field names whose values differ (for a readable failure). */
function diff(schema, a, b) {
  const canonical = (m) => JSON.parse(toJsonString(schema, m, { useProtoFieldName: true, alwaysEmitImplicit: true }));
  const ja = canonical(a);
  const jb = canonical(b);
  return Object.keys({ ...ja, ...jb }).filter((k) => JSON.stringify(ja[k]) !== JSON.stringify(jb[k]));
}

function expectEqual(schema, got, want, what) {
  if (!equals(schema, got, want)) failures.push(`${what}: fields differ: ${diff(schema, got, want).join(", ")}`);
}

function messageSchema(typeName) {
  const schema = registry.getMessage(typeName);
  if (schema === undefined) throw new Error(`unknown message type ${typeName}`);
  return schema;
}

async function* chunks(bytes, size) {
  // Feed the size-delimited stream in small pieces, as a socket would.
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

function finish(result) {
  if (failures.length) {
    process.stdout.write(`${JSON.stringify({ ok: false, failures })}\n`);
    process.exit(1);
  }
  process.stdout.write(`${JSON.stringify({ ok: true, ...result })}\n`);
}

// ---------------------------------------------------------------------------------
// binary: GenerateRequest, a size-delimited stream of StreamResponse, and Frames.

async function binaryMode(casePath) {
  const input = JSON.parse(readFileSync(casePath, "utf8"));

  // GenerateRequest: every field against fixtures.generateRequest().
  const request = fromBinary(GenerateRequestSchema, base64Decode(input.generate_request));
  const want = fixtures.generateRequest();
  expectEqual(GenerateRequestSchema, request, want, "GenerateRequest");
  const p = request.parameters;
  check(typeof p?.seed === "bigint" && p.seed === fixtures.SEED, `seed is ${typeof p?.seed} ${p?.seed}, want bigint ${fixtures.SEED}`);
  check(p?.seed > BigInt(Number.MAX_SAFE_INTEGER), "the seed fixture must be above 2^53");
  check(p?.responseFormat?.schema === fixtures.SCHEMA_TEXT, "response_format.schema text differs");
  check(p?.responseFormat?.type === ResponseFormatType.JSON_SCHEMA, "response_format.type");
  check(p?.mergedAdapters?.mergeStrategy === MergeStrategy.TIES, "merged_adapters.merge_strategy");
  check(JSON.stringify(p?.mergedAdapters?.weights) === "[0.7,0.3]", "merged_adapters.weights");
  check(p?.ignoreEosToken === false && p?.presencePenalty === 0, "zero values with presence");
  check(request.inputs === fixtures.INPUTS, "inputs (non-ASCII, quotes, control characters)");

  // A size-delimited stream of five StreamResponse events.
  const events = [];
  for await (const event of sizeDelimitedDecodeStream(StreamResponseSchema, chunks(base64Decode(input.stream), 7))) {
    events.push(event);
  }
  const wantEvents = fixtures.streamResponses();
  check(events.length === wantEvents.length, `stream has ${events.length} events, want ${wantEvents.length}`);
  events.forEach((event, i) => expectEqual(StreamResponseSchema, event, wantEvents[i], `StreamResponse[${i}]`));
  check(events[2]?.token?.logprob === undefined, "StreamResponse[2].token.logprob must be unset");
  check(Object.is(events[3]?.token?.logprob, -0), "StreamResponse[3].token.logprob must be -0.0");
  check(events[4]?.details?.seed === fixtures.SEED, "StreamResponse[4].details.seed");

  // Frames of every kind; the payload bytes of call and message frames decode too.
  const frames = input.frames.map((b64) => fromBinary(FrameSchema, base64Decode(b64)));
  const wantFrames = fixtures.frames();
  check(frames.length === wantFrames.length, `${frames.length} frames, want ${wantFrames.length}`);
  frames.forEach((frame, i) => {
    const wantFrame = wantFrames[i];
    check(frame.callId === wantFrame.callId, `Frame[${i}].call_id ${frame.callId}, want ${wantFrame.callId}`);
    check(frame.kind.case === wantFrame.kind.case, `Frame[${i}] is ${frame.kind.case}, want ${wantFrame.kind.case}`);
    if (frame.kind.case === "call" && wantFrame.kind.case === "call") {
      // Compare the nested request as a message: serializers need not agree on bytes.
      const nested = fromBinary(GenerateRequestSchema, frame.kind.value.request);
      expectEqual(GenerateRequestSchema, nested, want, `Frame[${i}].call.request`);
      const a = clone(FrameSchema, frame);
      const b = clone(FrameSchema, wantFrame);
      a.kind.value.request = new Uint8Array();
      b.kind.value.request = new Uint8Array();
      expectEqual(FrameSchema, a, b, `Frame[${i}]`);
    } else if (frame.kind.case === "message" && wantFrame.kind.case === "message") {
      const nested = fromBinary(StreamResponseSchema, frame.kind.value.message);
      expectEqual(StreamResponseSchema, nested, wantEvents[4], `Frame[${i}].message.message`);
    } else {
      expectEqual(FrameSchema, frame, wantFrame, `Frame[${i}]`);
    }
  });
  check(frames[0]?.kind.value.deadlineMs === fixtures.DEADLINE_MS, "FrameCall.deadline_ms above 2^53");
  check(frames[5]?.kind.value.errorType === undefined && frames[5]?.kind.value.body === undefined, "FrameError optional fields unset");
  check(frames[6]?.callId === fixtures.MAX_U64, "call_id 2^64-1");

  const streamBytes = (list) => {
    const parts = list.map((m) => sizeDelimitedEncode(StreamResponseSchema, m));
    const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
    let at = 0;
    for (const part of parts) {
      out.set(part, at);
      at += part.length;
    }
    return base64Encode(out);
  };
  finish({
    // What Node read, written again.
    echo: {
      generate_request: base64Encode(toBinary(GenerateRequestSchema, request)),
      stream: streamBytes(events),
      frames: frames.map((f) => base64Encode(toBinary(FrameSchema, f))),
    },
    // Node's own fixtures.
    built: {
      generate_request: base64Encode(toBinary(GenerateRequestSchema, want)),
      stream: streamBytes(wantEvents),
      frames: wantFrames.map((f) => base64Encode(toBinary(FrameSchema, f))),
    },
  });
}

// ---------------------------------------------------------------------------------
// json: LoRAX JSON written by lorax.codec.to_json, read and written again by
// loraxjson.mjs (the options read from the descriptors).

function jsonMode(casePath) {
  const cases = JSON.parse(readFileSync(casePath, "utf8"));
  const results = cases.map(({ name, type, json, expect_error }) => {
    const schema = messageSchema(type);
    try {
      const msg = fromLoraxJson(schema, json);
      check(!expect_error, `${name}: expected a LoRAX error body, decoded a message`);
      return { name, binary: base64Encode(toBinary(schema, msg)), lorax_json: toLoraxJson(schema, msg) };
    } catch (e) {
      if (e instanceof LoraxErrorBody) {
        check(expect_error, `${name}: unexpected error body ${e.message}`);
        return { name, error: e.error, error_type: e.errorType ?? null };
      }
      failures.push(`${name}: ${e.stack}`);
      return { name };
    }
  });
  finish({
    results,
    built: {
      generate_request: toLoraxJson(GenerateRequestSchema, fixtures.generateRequest()),
      stream: fixtures.streamResponses().map((m) => toLoraxJson(StreamResponseSchema, m)),
    },
  });
}

// ---------------------------------------------------------------------------------
// differences: where protobuf-es' canonical proto3 JSON and LoRAX JSON disagree.
// Each entry is checked against the table in README.md ("Using the schemas from
// another language") by tests/interop/test_json.py.

/** The `"key":value` member of a compact JSON text (value up to its balanced end). */
function member(text, key) {
  const at = text.indexOf(`"${key}":`);
  if (at < 0) return `(no "${key}")`;
  let i = at + key.length + 3;
  let depth = 0;
  let inString = false;
  for (; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === "{" || c === "[") depth++;
    else if (c === "}" || c === "]") {
      if (depth === 0) break;
      depth--;
    } else if (c === "," && depth === 0) break;
  }
  return text.slice(at, i);
}

/**
 * What protobuf-es' fromJsonString (with ignoreUnknownFields) makes of LoRAX JSON:
 * "ok", "wrong value" (silently), "unset" (silently dropped) or "throws".
 */
function readWithProtobufEs(schema, loraxJson, accessor, loraxValue) {
  let msg;
  try {
    msg = fromJsonString(schema, loraxJson, { ignoreUnknownFields: true });
  } catch {
    return "throws";
  }
  const got = accessor(msg);
  if (got === undefined) return loraxValue === undefined ? "ok" : "unset";
  if (typeof got === "bigint" || typeof loraxValue === "bigint") return got === loraxValue ? "ok" : "wrong value";
  return JSON.stringify(got) === JSON.stringify(loraxValue) ? "ok" : "wrong value";
}

function differencesMode() {
  const opts = { useProtoFieldName: true };
  const req = fixtures.generateRequest();
  const lReq = toLoraxJson(GenerateRequestSchema, req);
  const pReq = toJsonString(GenerateRequestSchema, req, opts);
  const pReqCamel = toJsonString(GenerateRequestSchema, req);
  const rows = [];
  const row = (id, lorax, protobufEs, read) => rows.push({ id, lorax, protobuf_es: protobufEs, read });

  // Field names: protobuf-es prints lowerCamelCase unless useProtoFieldName (and reads both).
  row("keys", member(lReq, "max_new_tokens"), member(pReqCamel, "maxNewTokens"),
    readWithProtobufEs(GenerateRequestSchema, '{"inputs":"x","parameters":{"max_new_tokens":64}}', (m) => m.parameters?.maxNewTokens, 64));

  // Enums: wire_value spellings vs proto enum names.
  row("enum", member(lReq, "merge_strategy"), member(pReq, "merge_strategy"),
    readWithProtobufEs(GenerateRequestSchema, `{"parameters":{"merged_adapters":{"ids":["a"],"merge_strategy":"ties"}}}`,
      (m) => m.parameters?.mergedAdapters?.mergeStrategy, MergeStrategy.TIES));

  // 64-bit integers: numbers vs strings; JSON.parse rounds a u64 above 2^53 (and one
  // that rounds past 2^64-1, like fixtures.SEED, makes fromJson throw).
  const seeded = create(GenerateRequestSchema, { inputs: "x", parameters: { seed: 2n ** 53n + 1n } });
  const lSeeded = toLoraxJson(GenerateRequestSchema, seeded);
  row("uint64", member(lSeeded, "seed"), member(toJsonString(GenerateRequestSchema, seeded, opts), "seed"),
    readWithProtobufEs(GenerateRequestSchema, lSeeded, (m) => m.parameters?.seed, 2n ** 53n + 1n));

  // raw_json: a JSON value spliced in vs a JSON string holding the text. Read back
  // through JSON.parse, key order ("10" first), integer-ness (1.0) and u64 would be lost.
  const rf = create(ResponseFormatSchema, { type: ResponseFormatType.JSON_OBJECT, schema: '{"b":1.0,"10":18446744073709551615}' });
  const lRf = toLoraxJson(ResponseFormatSchema, rf);
  row("raw_json", member(lRf, "schema"), member(toJsonString(ResponseFormatSchema, rf, opts), "schema"),
    readWithProtobufEs(ResponseFormatSchema, lRf, (m) => m.schema, rf.schema));

  // null_if_unset: explicit nulls vs omitted keys.
  const first = fixtures.streamResponses()[0];
  const lFirst = toLoraxJson(StreamResponseSchema, first);
  const pFirst = toJsonString(StreamResponseSchema, first, opts);
  row("null_if_unset", member(lFirst, "generated_text"), member(pFirst, "generated_text"),
    readWithProtobufEs(StreamResponseSchema, lFirst, (m) => m.generatedText, undefined));

  // Fields without presence are always printed by LoRAX, at their zero value too.
  row("implicit_defaults", member(lFirst, "special"), member(pFirst, "special"),
    readWithProtobufEs(StreamResponseSchema, lFirst, (m) => m.token?.special, false));

  // f32: Rust's shortest f32 form, also for values that went through an f32.
  const tok = create(TokenSchema, { id: 1, text: "a", logprob: Math.fround(-0.34) });
  const lTok = toLoraxJson(TokenSchema, tok);
  const pTok = toJsonString(TokenSchema, tok, opts);
  row("f32", member(lTok, "logprob"), member(pTok, "logprob"),
    readWithProtobufEs(TokenSchema, lTok, (m) => m.logprob, -0.34));
  const one = create(GenerateRequestSchema, { inputs: "x", parameters: { temperature: 1 } });
  row("f32_integral", member(toLoraxJson(GenerateRequestSchema, one), "temperature"),
    member(toJsonString(GenerateRequestSchema, one, opts), "temperature"),
    readWithProtobufEs(GenerateRequestSchema, toLoraxJson(GenerateRequestSchema, one), (m) => m.parameters?.temperature, 1));

  // Non-finite floats: null vs "NaN"/"-Infinity" strings.
  const inf = create(TokenSchema, { id: 1, text: "a", logprob: Number.NEGATIVE_INFINITY });
  const lInf = toLoraxJson(TokenSchema, inf);
  row("non_finite", member(lInf, "logprob"), member(toJsonString(TokenSchema, inf, opts), "logprob"),
    readWithProtobufEs(TokenSchema, lInf, (m) => m.logprob, undefined));

  // unwrap: a bare array vs an object holding the repeated field.
  const compat = create(CompatGenerateResponseSchema, { responses: [{ generatedText: "hi" }] });
  const lCompat = toLoraxJson(CompatGenerateResponseSchema, compat);
  row("unwrap", lCompat, toJsonString(CompatGenerateResponseSchema, compat, opts),
    readWithProtobufEs(CompatGenerateResponseSchema, lCompat, (m) => m.responses[0]?.generatedText, "hi"));

  // Oneofs: inline under the oneof's name, member picked by JSON type.
  const chat = create(ChatCompletionRequestSchema, {
    model: "",
    messages: [{ role: "user", content: { case: "text", value: "hi" } }],
    toolChoice: { choice: { case: "function", value: { function: { name: "get_weather" } } } },
  });
  const lChat = toLoraxJson(ChatCompletionRequestSchema, chat);
  const pChat = toJsonString(ChatCompletionRequestSchema, chat, opts);
  row("oneof", member(lChat, "content"), member(pChat, "text"),
    readWithProtobufEs(ChatCompletionRequestSchema, lChat, (m) => m.messages[0]?.content.value, "hi"));

  // wire_name (and unwrap of ToolChoice): {"Function":{...}} vs {"choice"...}.
  row("wire_name", member(lChat, "tool_choice"), member(pChat, "tool_choice"),
    readWithProtobufEs(ChatCompletionRequestSchema, lChat, (m) => m.toolChoice?.choice.value?.function?.name, "get_weather"));

  // An error body where a message was expected.
  const errorJson = '{"error":"Model is overloaded","error_type":"overloaded"}';
  let loraxRead;
  try {
    fromLoraxJson(StreamResponseSchema, errorJson);
    loraxRead = "decoded";
  } catch (e) {
    loraxRead = e instanceof LoraxErrorBody ? `LoraxErrorBody (${e.errorType})` : `other error: ${e.message}`;
  }
  let esRead;
  try {
    const m = fromJsonString(StreamResponseSchema, errorJson, { ignoreUnknownFields: true });
    esRead = equals(StreamResponseSchema, m, create(StreamResponseSchema)) ? "empty message" : "message";
  } catch {
    esRead = "throws";
  }
  row("error_body", loraxRead, errorJson, esRead);

  finish({ rows, f32_check: formatF32(Math.fround(-0.34)) });
}

// ---------------------------------------------------------------------------------
// gateway: a unary Generate and a GenerateStream call through `lorax gateway`.

async function gatewayMode(url, casePath) {
  const input = JSON.parse(readFileSync(casePath, "utf8"));
  const request = fromLoraxJson(GenerateRequestSchema, input.request_json);
  const client = await GatewayClient.connect(url, { token: input.token });
  try {
    const [unary, stream] = await Promise.all([
      client.unary("lorax.v1.LoraxService.Generate", GenerateRequestSchema, request, GenerateResponseSchema),
      client.serverStream("lorax.v1.LoraxService.GenerateStream", GenerateRequestSchema, request, StreamResponseSchema),
    ]);
    check(unary.headers.status === 200, `Generate: FrameHeaders.status ${unary.headers.status}`);
    check(stream.headers.status === 200, `GenerateStream: FrameHeaders.status ${stream.headers.status}`);
    const last = stream.messages.at(-1);
    check(last?.generatedText !== undefined, "GenerateStream: the last event has generated_text");
    const err = await client
      .unary("lorax.v1.LoraxService.Generate", GenerateRequestSchema, create(GenerateRequestSchema, { inputs: "" }), GenerateResponseSchema)
      .then(() => null, (e) => e);
    const unknown = await client
      .unary("lorax.v1.LoraxService.NoSuchMethod", GenerateRequestSchema, request, GenerateResponseSchema)
      .then(() => null, (e) => e);
    // Stop a stream after two events (FrameCancel), then use the connection again.
    let seen = 0;
    const long = create(GenerateRequestSchema, { inputs: request.inputs, parameters: { maxNewTokens: 200 } });
    for await (const _event of client.stream("lorax.v1.LoraxService.GenerateStream", GenerateRequestSchema, long, StreamResponseSchema)) {
      if (++seen === 2) break;
    }
    const again = await client.unary("lorax.v1.LoraxService.Generate", GenerateRequestSchema, request, GenerateResponseSchema);
    // Flow control: a window smaller than one event, so every event needs a grant; and
    // a call that does not ask for one (as an older client), which the gateway leaves unpaced.
    const paced = await client.serverStream("lorax.v1.LoraxService.GenerateStream", GenerateRequestSchema, long, StreamResponseSchema, {
      windowBytes: 8,
      heartbeats: true,
    });
    const unpaced = await client.serverStream("lorax.v1.LoraxService.GenerateStream", GenerateRequestSchema, long, StreamResponseSchema, {
      windowBytes: 0,
    });
    // A handshake with a wrong token is refused.
    const refused = await GatewayClient.connect(url, { token: `${input.token ?? ""}-wrong` }).then(
      async (c) => {
        await c.close();
        return null;
      },
      (e) => e.code ?? String(e)
    );
    finish({
      generate: {
        generated_text: unary.message.generatedText,
        lorax_json: toLoraxJson(GenerateResponseSchema, unary.message),
        header_names: Object.keys(unary.headers.headers).sort(),
      },
      generate_stream: {
        tokens: stream.messages.map((m) => m.token?.text ?? null),
        generated_text: last?.generatedText ?? null,
        finish_reason: last?.details?.finishReason ?? null,
        lorax_json: stream.messages.map((m) => toLoraxJson(StreamResponseSchema, m)),
      },
      empty_inputs_error: err && { status: err.status, error_type: err.errorType ?? null, message: err.errorMessage ?? err.message },
      unknown_method_error: unknown && { status: unknown.status, error_type: unknown.errorType ?? null },
      cancelled_after: seen,
      after_cancel_text: again.message.generatedText,
      flow: {
        window_granted: paced.headers.windowBytes === undefined ? null : String(paced.headers.windowBytes),
        events: paced.messages.length,
        updates_sent: paced.updatesSent,
        generated_text: paced.messages.at(-1)?.generatedText ?? null,
      },
      unpaced: {
        window_granted: unpaced.headers.windowBytes === undefined ? null : String(unpaced.headers.windowBytes),
        events: unpaced.messages.length,
        updates_sent: unpaced.updatesSent,
        generated_text: unpaced.messages.at(-1)?.generatedText ?? null,
      },
      wrong_token_status: refused,
      call_ids: client.callIdsUsed(),
    });
  } finally {
    await client.close();
  }
}

const [mode, ...args] = process.argv.slice(2);
const modes = { binary: binaryMode, json: jsonMode, differences: differencesMode, gateway: gatewayMode };
if (!(mode in modes)) {
  process.stderr.write("usage: node roundtrip.mjs binary|json|differences|gateway ...\n");
  process.exit(2);
}
await modes[mode](...args);
