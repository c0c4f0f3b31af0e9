// A minimal client of the `lorax gateway` WebSocket protocol (proto/lorax/v1/websocket.proto),
// written from the .proto comments alone: a second implementation next to the Python
// one (lorax.transports.websocket), to keep the protocol description honest.
//
//   const client = await GatewayClient.connect("ws://127.0.0.1:8090/", { token });
//   const { headers, message } = await client.unary(
//     "lorax.v1.LoraxService.Generate", GenerateRequestSchema, request, GenerateResponseSchema);
//   for await (const event of client.stream(
//     "lorax.v1.LoraxService.GenerateStream", GenerateRequestSchema, request, StreamResponseSchema)) { ... }
//   await client.close();
//
// Flow control (websocket.proto, FLOW CONTROL): every call asks for a window of
// `windowBytes` (1 MiB by default; 0 switches it off) and, when FrameHeaders grants it,
// gives back with FrameWindowUpdate what the caller consumed, once that reaches half the
// window; so a slow `for await` loop buffers at most the window plus one message.
// Heartbeats (LIVENESS) are asked for with `heartbeats: true`; they are counted, not queued.

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import WebSocket from "ws";

import { FrameSchema } from "./gen/lorax/v1/websocket_pb.js";

export const SUBPROTOCOL = "lorax.v1";
const PING_INTERVAL_MS = 20_000;
const PONG_TIMEOUT_MS = 20_000;
export const DEFAULT_WINDOW_BYTES = 1024 * 1024;

/** A call that ended with FrameError (the fields mirror an HTTP error). */
export class GatewayCallError extends Error {
  constructor(error) {
    super(`${error.status}${error.errorType ? ` ${error.errorType}` : ""}: ${error.message}`);
    this.name = "GatewayCallError";
    this.status = error.status;
    this.errorMessage = error.message;
    this.errorType = error.errorType;
    this.headers = error.headers;
    this.body = error.body;
  }
}

/** The connection closed, or the gateway broke the protocol, while the call was in flight. */
export class GatewayConnectionError extends Error {
  constructor(message, code) {
    super(message);
    this.name = "GatewayConnectionError";
    this.code = code;
  }
}

class Call {
  constructor(id, client) {
    this.id = id;
    this.client = client;
    this.headers = undefined;
    this.queue = []; // FrameMessage payloads not yet taken
    this.window = 0; // the window FrameHeaders granted (0: no flow control)
    this.consumed = 0; // message bytes taken since the last FrameWindowUpdate
    this.updatesSent = 0;
    this.heartbeats = 0;
    this.done = false;
    this.error = undefined;
    this.wake = undefined;
    this.headersSeen = new Promise((resolve, reject) => {
      this.resolveHeaders = resolve;
      this.rejectHeaders = reject;
    });
    this.headersSeen.catch(() => {}); // observed through next() as well
  }
  notify() {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
  fail(error) {
    if (this.done) return;
    this.done = true;
    this.error = error;
    this.rejectHeaders(error);
    this.notify();
  }
  async next() {
    for (;;) {
      if (this.queue.length) {
        const value = this.queue.shift();
        this.consumed += value.length;
        if (this.window > 0 && this.consumed >= Math.ceil(this.window / 2)) {
          this.client.grant(this, this.consumed);
          this.consumed = 0;
        }
        return { value, done: false };
      }
      if (this.error) throw this.error;
      if (this.done) return { value: undefined, done: true };
      await new Promise((resolve) => {
        this.wake = resolve;
      });
    }
  }
}

export class GatewayClient {
  /** Open a connection; `token` is sent as `Authorization: Bearer` in the handshake. */
  static connect(url, { token, headers = {}, handshakeTimeoutMs = 10_000 } = {}) {
    const ws = new WebSocket(url, [SUBPROTOCOL], {
      headers: token ? { ...headers, authorization: `Bearer ${token}` } : headers,
      handshakeTimeout: handshakeTimeoutMs,
      maxPayload: 64 * 1024 * 1024,
      perMessageDeflate: false,
    });
    ws.binaryType = "nodebuffer";
    return new Promise((resolve, reject) => {
      ws.once("unexpected-response", (_req, res) => {
        reject(new GatewayConnectionError(`handshake refused with HTTP ${res.statusCode}`, res.statusCode));
        ws.terminate();
      });
      ws.once("error", reject);
      ws.once("open", () => {
        ws.off("error", reject);
        if (ws.protocol !== SUBPROTOCOL) {
          ws.close(1002, "subprotocol lorax.v1 not selected");
          reject(new GatewayConnectionError(`the gateway selected subprotocol "${ws.protocol}"`, 1002));
          return;
        }
        resolve(new GatewayClient(ws));
      });
    });
  }

  constructor(ws) {
    this.ws = ws;
    this.nextId = 1n; // call ids: a counter from 1, never reused
    this.calls = new Map(); // call_id (bigint) -> Call
    this.used = [];
    this.closed = undefined;
    ws.on("message", (data, isBinary) => this.onMessage(data, isBinary));
    ws.on("close", (code, reason) => this.onClose(code, reason.toString()));
    ws.on("error", () => {}); // 'close' follows and fails the calls
    // Keepalive: ping every 20 s, give up when no pong comes back within 20 s.
    this.alive = true;
    ws.on("pong", () => {
      this.alive = true;
    });
    this.pinger = setInterval(() => {
      if (!this.alive) {
        ws.terminate();
        return;
      }
      this.alive = false;
      ws.ping();
      setTimeout(() => {
        if (!this.alive) ws.terminate();
      }, PONG_TIMEOUT_MS).unref();
    }, PING_INTERVAL_MS);
    this.pinger.unref();
  }

  callIdsUsed() {
    return this.used.map(String);
  }

  protocolError(reason) {
    this.ws.close(1002, reason);
    this.onClose(1002, reason);
  }

  onMessage(data, isBinary) {
    if (!isBinary) {
      this.ws.close(1003, "text message");
      return;
    }
    let frame;
    try {
      frame = fromBinary(FrameSchema, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    } catch (e) {
      this.protocolError(`frame does not parse: ${e.message}`);
      return;
    }
    if (frame.callId === 0n) {
      this.protocolError("call_id 0");
      return;
    }
    const call = this.calls.get(frame.callId);
    if (call === undefined) return; // a cancelled or finished call: ignore late frames
    const { case: kind, value } = frame.kind;
    switch (kind) {
      case "headers":
        if (call.headers !== undefined) return this.protocolError("second FrameHeaders");
        call.headers = value;
        // Flow control is on only when the gateway says so (an older one ignores the ask).
        call.window = value.windowBytes === undefined ? 0 : Number(value.windowBytes);
        call.resolveHeaders(value);
        return;
      case "message":
        if (call.headers === undefined) return this.protocolError("FrameMessage before FrameHeaders");
        call.queue.push(value.message);
        call.notify();
        return;
      case "end":
        if (call.headers === undefined) return this.protocolError("FrameEnd before FrameHeaders");
        this.calls.delete(frame.callId);
        call.done = true;
        call.notify();
        return;
      case "error":
        this.calls.delete(frame.callId);
        call.fail(new GatewayCallError(value));
        return;
      case "heartbeat":
        call.heartbeats++; // the call is alive at the gateway
        return;
      default:
        this.protocolError(`a gateway may not send ${kind ?? "a frame without a kind"}`);
    }
  }

  onClose(code, reason) {
    clearInterval(this.pinger);
    if (this.closed === undefined) this.closed = { code, reason };
    for (const call of this.calls.values()) {
      call.fail(new GatewayConnectionError(`connection closed (${code} ${reason}) with the call in flight`, code));
    }
    this.calls.clear();
  }

  send(frame) {
    this.ws.send(toBinary(FrameSchema, create(FrameSchema, frame)), { binary: true });
  }

  /** Give `bytes` more window to a flow-controlled call still in flight. */
  grant(call, bytes) {
    if (!this.calls.has(call.id) || this.ws.readyState !== WebSocket.OPEN) return;
    call.updatesSent++;
    this.send({ callId: call.id, kind: { case: "windowUpdate", value: { bytes: BigInt(bytes) } } });
  }

  start(
    method,
    requestSchema,
    request,
    { headers = {}, readTimeoutMs, deadlineMs, windowBytes = DEFAULT_WINDOW_BYTES, heartbeats = false } = {}
  ) {
    if (this.closed !== undefined || this.ws.readyState !== WebSocket.OPEN) {
      throw new GatewayConnectionError("the connection is closed", this.closed?.code);
    }
    const id = this.nextId++;
    const call = new Call(id, this);
    this.calls.set(id, call);
    this.used.push(id);
    this.send({
      callId: id,
      kind: {
        case: "call",
        value: {
          method,
          request: toBinary(requestSchema, request),
          headers,
          readTimeoutMs: readTimeoutMs === undefined ? undefined : BigInt(readTimeoutMs),
          deadlineMs: deadlineMs === undefined ? undefined : BigInt(deadlineMs),
          windowBytes: windowBytes > 0 ? BigInt(windowBytes) : undefined,
          heartbeats,
        },
      },
    });
    return call;
  }

  cancel(call) {
    if (!this.calls.delete(call.id)) return;
    call.fail(new GatewayConnectionError("cancelled", undefined));
    if (this.ws.readyState === WebSocket.OPEN) this.send({ callId: call.id, kind: { case: "cancel", value: {} } });
  }

  /** A server-streaming call as an async iterator of response messages. */
  async *stream(method, requestSchema, request, responseSchema, options) {
    const call = this.start(method, requestSchema, request, options);
    let finished = false;
    try {
      for (;;) {
        const { value, done } = await call.next();
        if (done) {
          finished = true;
          return;
        }
        yield fromBinary(responseSchema, value);
      }
    } catch (e) {
      finished = true;
      throw e;
    } finally {
      if (!finished) this.cancel(call); // the caller stopped early
    }
  }

  /** A server-streaming call, collected: {headers, messages, updatesSent, heartbeats}. */
  async serverStream(method, requestSchema, request, responseSchema, options) {
    const call = this.start(method, requestSchema, request, options);
    const messages = [];
    for (;;) {
      const { value, done } = await call.next();
      if (done) break;
      messages.push(fromBinary(responseSchema, value));
    }
    return { headers: call.headers, messages, updatesSent: call.updatesSent, heartbeats: call.heartbeats };
  }

  /** A unary call: {headers, message}; exactly one FrameMessage on success. */
  async unary(method, requestSchema, request, responseSchema, options) {
    const { headers, messages } = await this.serverStream(method, requestSchema, request, responseSchema, options);
    if (messages.length !== 1) throw new GatewayConnectionError(`unary call answered ${messages.length} messages`, 1002);
    return { headers, message: messages[0] };
  }

  close() {
    clearInterval(this.pinger);
    if (this.ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise((resolve) => {
      this.ws.once("close", () => resolve());
      this.ws.close(1000);
    });
  }
}
