// LoRAX JSON for protobuf-es messages, driven by the lorax.v1 descriptors and the
// custom options in proto/lorax/v1/options.proto.
//
// This is the JavaScript counterpart of the Python codec (lorax/codec.py,
// lorax/_jsonmap.py): nothing in it is written per message. It reads the options
// from the descriptors that protoc-gen-es embeds in the generated code
// (getOption(field, json), getOption(enumValue, wire_value), ...) and applies the
// mapping rules documented at the top of options.proto:
//
//   * keys are proto field names (or the `wire_name` option), never lowerCamelCase;
//   * a field without presence is always printed; a field with presence only when set,
//     or as `null` with `null_if_unset`; repeated/map fields are always printed unless
//     `omit_empty` and empty;
//   * 64-bit integers are JSON numbers (read losslessly: JSON.parse would round a u64
//     seed above 2^53, so this module has its own small JSON reader);
//   * enums print as their `wire_value`; decoding also accepts `wire_alias` spellings,
//     then any case-insensitive match, and an unknown spelling decodes to 0;
//   * `raw_json` strings are spliced into the JSON verbatim (and read back as the
//     value's source text without insignificant whitespace);
//   * `f32` doubles print as the shortest decimal that round-trips as an f32, in
//     Rust's format (`0.7`, `-1.0`, `-3.5762787e-7`); other doubles in Rust's f64
//     format; non-finite values print as null;
//   * a real oneof is printed inline under the oneof's name; decoding picks the member
//     by the JSON type of the value;
//   * a message with `unwrap` prints as its only field's (or oneof's) value;
//   * on decoding, unknown keys are ignored and null means unset; a LoRAX error body
//     {"error": ..., "error_type": ...} where a message was expected throws
//     LoraxErrorBody.

import { ScalarType, create, getOption, hasOption, isFieldSet } from "@bufbuild/protobuf";
import { json as jsonOption, unwrap as unwrapOption, wire_alias, wire_value } from "./gen/lorax/v1/options_pb.js";

/** Thrown when a body is a LoRAX error ({"error": ..., "error_type": ...}). */
export class LoraxErrorBody extends Error {
  constructor(message, errorType) {
    super(`LoRAX error${errorType ? ` (${errorType})` : ""}: ${message}`);
    this.name = "LoraxErrorBody";
    this.error = message;
    this.errorType = errorType;
  }
}

/** Thrown when JSON does not fit the message, or a message cannot be written as LoRAX JSON. */
export class LoraxJsonError extends Error {
  constructor(message) {
    super(message);
    this.name = "LoraxJsonError";
  }
}

// ---------------------------------------------------------------------------------
// A lossless JSON reader: numbers keep their source text, objects keep key order
// (a JS object would move integer-like keys first), and every value keeps its span in
// the source (for raw_json fields).

export class JsonNumber {
  constructor(text) {
    this.text = text;
  }
  get isInteger() {
    return /^-?\d+$/.test(this.text);
  }
  toNumber() {
    return Number(this.text);
  }
}

export class JsonObject {
  constructor() {
    this.entries = new Map(); // key -> value
    this.spans = new Map(); // key -> [start, end) of the value in the source
  }
}

export class JsonArray {
  constructor() {
    this.items = [];
    this.spans = [];
  }
}

const WS = new Set([" ", "\t", "\n", "\r"]);

export function parseJson(text) {
  let i = 0;
  const fail = (what) => {
    throw new LoraxJsonError(`invalid JSON at offset ${i}: ${what}`);
  };
  const skip = () => {
    while (i < text.length && WS.has(text[i])) i++;
  };
  const value = () => {
    skip();
    const c = text[i];
    if (c === "{") {
      i++;
      const obj = new JsonObject();
      skip();
      if (text[i] === "}") {
        i++;
        return obj;
      }
      for (;;) {
        skip();
        if (text[i] !== '"') fail("expected a key");
        const key = string();
        skip();
        if (text[i] !== ":") fail("expected ':'");
        i++;
        skip();
        const start = i;
        const v = value();
        obj.entries.set(key, v);
        obj.spans.set(key, [start, i]);
        skip();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "}") {
          i++;
          return obj;
        }
        fail("expected ',' or '}'");
      }
    }
    if (c === "[") {
      i++;
      const arr = new JsonArray();
      skip();
      if (text[i] === "]") {
        i++;
        return arr;
      }
      for (;;) {
        skip();
        const start = i;
        arr.items.push(value());
        arr.spans.push([start, i]);
        skip();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "]") {
          i++;
          return arr;
        }
        fail("expected ',' or ']'");
      }
    }
    if (c === '"') return string();
    if (text.startsWith("true", i)) {
      i += 4;
      return true;
    }
    if (text.startsWith("false", i)) {
      i += 5;
      return false;
    }
    if (text.startsWith("null", i)) {
      i += 4;
      return null;
    }
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
    if (m === null || m[0] === "") fail("unexpected character");
    i += m[0].length;
    return new JsonNumber(m[0]);
  };
  const string = () => {
    const start = i;
    i++;
    while (i < text.length) {
      const c = text[i];
      if (c === '"') {
        i++;
        return JSON.parse(text.slice(start, i));
      }
      if (c === "\\") i += 2;
      else if (c < " ") fail("control character in string");
      else i++;
    }
    return fail("unterminated string");
  };
  const result = value();
  skip();
  if (i !== text.length) fail("trailing characters");
  return result;
}

/** JSON text without insignificant whitespace (strings, numbers and key order untouched). */
export function minifyJson(text) {
  let out = "";
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      out += c;
      if (c === "\\") out += text[++i];
      else if (c === '"') inString = false;
    } else if (c === '"') {
      inString = true;
      out += c;
    } else if (!WS.has(c)) {
      out += c;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------
// Number formatting: Rust's ryu output, which is what LoRAX (serde_json) prints.

function shortestF32(single) {
  // The fewest significant digits whose decimal reads back as the same f32.
  let text = "";
  for (let precision = 0; precision < 9; precision++) {
    text = single.toExponential(precision);
    if (Math.fround(Number(text)) === single) break;
  }
  return text;
}

function ryuFormat(expText, negative, plainMax, plainMin) {
  // expText: "d.ddde±x" for |value|; the layout rules of ryu's pretty printer.
  const [mantissa, exponent] = expText.split("e");
  const digits = mantissa.replace(".", "").replace(/0+$/, "") || "0";
  const length = digits.length;
  const kk = Number(exponent) + 1; // 10**(kk-1) <= |v| < 10**kk
  const k = kk - length;
  const sign = negative ? "-" : "";
  if (k >= 0 && kk <= plainMax) return `${sign}${digits}${"0".repeat(k)}.0`;
  if (kk > 0 && kk <= plainMax) return `${sign}${digits.slice(0, kk)}.${digits.slice(kk)}`;
  if (kk > plainMin && kk <= 0) return `${sign}0.${"0".repeat(-kk)}${digits}`;
  if (length === 1) return `${sign}${digits}e${kk - 1}`;
  return `${sign}${digits[0]}.${digits.slice(1)}e${kk - 1}`;
}

/** A double as LoRAX prints an f32 (null when not finite as an f32). */
export function formatF32(value) {
  if (value === 0) return Object.is(value, -0) ? "-0.0" : "0.0";
  const single = Math.fround(value);
  if (!Number.isFinite(single)) return null;
  if (single === 0) return Object.is(single, -0) || value < 0 ? "-0.0" : "0.0";
  return ryuFormat(shortestF32(Math.abs(single)), single < 0, 13, -6);
}

/** A double as LoRAX prints an f64 (null when not finite). */
export function formatF64(value) {
  if (value === 0) return Object.is(value, -0) ? "-0.0" : "0.0";
  if (!Number.isFinite(value)) return null;
  return ryuFormat(Math.abs(value).toExponential(), value < 0, 16, -5);
}

// ---------------------------------------------------------------------------------
// The JSON shape of each message, read once from its descriptor and options.

const INT64 = new Set([ScalarType.INT64, ScalarType.UINT64, ScalarType.SINT64, ScalarType.FIXED64, ScalarType.SFIXED64]);
const INT32 = new Set([ScalarType.INT32, ScalarType.SINT32, ScalarType.SFIXED32]);
const UINT32 = new Set([ScalarType.UINT32, ScalarType.FIXED32]);
const FLOAT = new Set([ScalarType.DOUBLE, ScalarType.FLOAT]);

function kindOf(field) {
  // For list and map fields: the kind of one element / value.
  const k = field.fieldKind === "list" ? field.listKind : field.fieldKind === "map" ? field.mapKind : field.fieldKind;
  if (k === "enum" || k === "message") return k;
  const s = field.scalar;
  if (s === ScalarType.STRING) return "string";
  if (s === ScalarType.BOOL) return "bool";
  if (s === ScalarType.BYTES) return "bytes";
  if (FLOAT.has(s)) return "float";
  return "int";
}

const enumMaps = new Map();

/** An enum's wire spellings from its wire_value / wire_alias options. */
export function enumMap(descEnum) {
  let m = enumMaps.get(descEnum.typeName);
  if (m !== undefined) return m;
  m = { typeName: descEnum.typeName, toWire: new Map(), fromWire: new Map(), fromLower: new Map() };
  for (const v of descEnum.values) {
    const wire = hasOption(v, wire_value) ? getOption(v, wire_value) : "";
    if (wire) {
      m.toWire.set(v.number, wire);
      m.fromWire.set(wire, v.number);
      if (!m.fromLower.has(wire.toLowerCase())) m.fromLower.set(wire.toLowerCase(), v.number);
    }
    for (const alias of getOption(v, wire_alias)) {
      m.fromWire.set(alias, v.number);
      if (!m.fromLower.has(alias.toLowerCase())) m.fromLower.set(alias.toLowerCase(), v.number);
    }
    // The proto name is accepted on input too (canonical proto JSON spells enums so).
    if (!m.fromLower.has(v.name.toLowerCase())) m.fromLower.set(v.name.toLowerCase(), v.number);
  }
  m.decode = (text) => m.fromWire.get(text) ?? m.fromLower.get(text.toLowerCase()) ?? 0;
  enumMaps.set(descEnum.typeName, m);
  return m;
}

function fieldMap(field) {
  const opts = hasOption(field, jsonOption) ? getOption(field, jsonOption) : undefined;
  const kind = kindOf(field);
  return {
    field,
    name: field.name,
    key: opts?.wireName || field.name,
    kind,
    scalar: field.scalar,
    repeated: field.fieldKind === "list",
    isMap: field.fieldKind === "map",
    // Explicit presence: proto3 `optional`, or a singular message field.
    presence: (field.fieldKind === "scalar" || field.fieldKind === "enum" || field.fieldKind === "message") &&
      field.oneof === undefined && (field.fieldKind === "message" || field.proto.proto3Optional === true),
    rawJson: opts?.rawJson ?? false,
    nullIfUnset: opts?.nullIfUnset ?? false,
    omitEmpty: opts?.omitEmpty ?? false,
    f32: opts?.f32 ?? false,
    oneof: field.oneof,
    enum: kind === "enum" ? enumMap(field.enum) : undefined,
    message: kind === "message" ? field.message : undefined,
  };
}

const messageMaps = new Map();

/** How one message maps to LoRAX JSON (cached). */
export function messageMap(desc) {
  let mm = messageMaps.get(desc.typeName);
  if (mm !== undefined) return mm;
  const fields = desc.fields.map(fieldMap);
  const byField = new Map(fields.map((fm) => [fm.field, fm]));
  const unwrap = hasOption(desc, unwrapOption) && getOption(desc, unwrapOption);
  if (unwrap && !(fields.length === 1 || (desc.oneofs.length === 1 && fields.every((f) => f.oneof)))) {
    throw new LoraxJsonError(`${desc.typeName}: unwrap needs exactly one field or one oneof`);
  }
  mm = {
    desc,
    fields,
    // Members in declaration order: a field map, or a oneof with its members' maps.
    members: desc.members.map((m) =>
      m.kind === "oneof" ? { oneof: m, members: m.fields.map((f) => byField.get(f)) } : byField.get(m)
    ),
    byKey: new Map(fields.map((fm) => [fm.key, fm])),
    oneofByName: new Map(desc.oneofs.map((o) => [o.name, o.fields.map((f) => byField.get(f))])),
    unwrap,
  };
  messageMaps.set(desc.typeName, mm);
  return mm;
}

// ---------------------------------------------------------------------------------
// Encoding: a message to LoRAX JSON text.

function encodeValue(fm, value) {
  if (fm.rawJson) {
    try {
      parseJson(value);
    } catch (e) {
      throw new LoraxJsonError(`${fm.name}: not valid JSON text: ${e.message}`);
    }
    return value;
  }
  switch (fm.kind) {
    case "string":
      return JSON.stringify(value);
    case "bool":
      return value ? "true" : "false";
    case "int":
      return String(value);
    case "float":
      return (fm.f32 ? formatF32(value) : formatF64(value)) ?? "null";
    case "enum": {
      const wire = fm.enum.toWire.get(value);
      if (wire === undefined) {
        throw new LoraxJsonError(
          `${fm.name}: ${fm.enum.typeName} value ${value} has no LoRAX spelling; set one of ` +
            [...fm.enum.toWire.values()].sort().join(", ")
        );
      }
      return JSON.stringify(wire);
    }
    case "message":
      return encodeMessage(fm.message, value);
    default:
      throw new LoraxJsonError(`${fm.name}: ${fm.kind} fields have no LoRAX JSON form`);
  }
}

function encodeMembers(mm, msg) {
  const out = []; // [key, text]
  for (const member of mm.members) {
    if (member.oneof !== undefined) {
      const { oneof, members } = member;
      const sel = msg[oneof.localName];
      if (sel === undefined || sel.case === undefined) {
        if (members.some((fm) => fm.nullIfUnset)) out.push([oneof.name, "null"]);
        continue;
      }
      const fm = members.find((f) => f.field.localName === sel.case);
      out.push([oneof.name, encodeValue(fm, sel.value)]);
      continue;
    }
    const fm = member;
    const value = msg[fm.field.localName];
    if (fm.isMap) {
      const keys = Object.keys(value);
      if (fm.omitEmpty && keys.length === 0) continue;
      const valueMap = { ...fm, kind: kindOf(fm.field), message: fm.field.message, enum: fm.enum };
      out.push([fm.key, `{${keys.map((k) => `${JSON.stringify(k)}:${encodeValue(valueMap, value[k])}`).join(",")}}`]);
    } else if (fm.repeated) {
      if (fm.omitEmpty && value.length === 0) continue;
      out.push([fm.key, `[${value.map((v) => encodeValue(fm, v)).join(",")}]`]);
    } else if (fm.presence) {
      if (isFieldSet(msg, fm.field)) out.push([fm.key, encodeValue(fm, value)]);
      else if (fm.nullIfUnset) out.push([fm.key, "null"]);
    } else {
      out.push([fm.key, encodeValue(fm, value)]);
    }
  }
  return out;
}

function encodeMessage(desc, msg) {
  const mm = messageMap(desc);
  const members = encodeMembers(mm, msg);
  if (mm.unwrap) {
    const only = mm.desc.oneofs.length ? mm.desc.oneofs[0].name : mm.fields[0].key;
    const found = members.find(([key]) => key === only);
    return found === undefined ? "null" : found[1];
  }
  return `{${members.map(([key, text]) => `${JSON.stringify(key)}:${text}`).join(",")}}`;
}

/** The LoRAX JSON text of `msg` (a message of `schema`), as lorax.codec.to_json writes it. */
export function toLoraxJson(schema, msg) {
  return encodeMessage(schema, msg);
}

// ---------------------------------------------------------------------------------
// Decoding: LoRAX JSON text to a message.

function typeName(v) {
  if (v === null) return "null";
  if (typeof v === "boolean") return "a boolean";
  if (v instanceof JsonNumber) return `a number (${v.text})`;
  if (typeof v === "string") return "a string";
  if (v instanceof JsonArray) return "an array";
  if (v instanceof JsonObject) return "an object";
  return typeof v;
}

function bad(path, expected, v) {
  return new LoraxJsonError(`${path}: expected ${expected}, got ${typeName(v)}`);
}

const NON_FINITE = { NaN: Number.NaN, Infinity: Number.POSITIVE_INFINITY, "-Infinity": Number.NEGATIVE_INFINITY };

function decodeScalar(ctx, fm, v, span, path) {
  if (fm.rawJson) return v === null ? "null" : minifyJson(ctx.source.slice(span[0], span[1]));
  switch (fm.kind) {
    case "string":
      if (typeof v !== "string") throw bad(path, "a string", v);
      return v;
    case "float":
      if (v instanceof JsonNumber) return v.toNumber();
      if (typeof v === "string" && v in NON_FINITE) return NON_FINITE[v];
      throw bad(path, "a number", v);
    case "int": {
      if (!(v instanceof JsonNumber) || !v.isInteger) throw bad(path, "an integer", v);
      if (INT64.has(fm.scalar)) {
        const n = BigInt(v.text);
        const unsigned = fm.scalar === ScalarType.UINT64 || fm.scalar === ScalarType.FIXED64;
        const ok = unsigned ? n >= 0n && n < 2n ** 64n : n >= -(2n ** 63n) && n < 2n ** 63n;
        if (!ok) throw new LoraxJsonError(`${path}: ${v.text} is out of range`);
        return n;
      }
      const n = v.toNumber();
      const ok = UINT32.has(fm.scalar) ? n >= 0 && n <= 0xffffffff : INT32.has(fm.scalar) && n >= -(2 ** 31) && n < 2 ** 31;
      if (!ok) throw new LoraxJsonError(`${path}: ${v.text} is out of range`);
      return n;
    }
    case "bool":
      if (typeof v !== "boolean") throw bad(path, "a boolean", v);
      return v;
    case "enum":
      if (typeof v === "string") return fm.enum.decode(v);
      if (v instanceof JsonNumber && v.isInteger) return v.toNumber();
      throw bad(path, `a ${fm.enum.typeName} string`, v);
    case "message":
      return decodeMessageInit(ctx, messageMap(fm.message), v, span, path);
    default:
      throw bad(path, fm.kind, v);
  }
}

function decodeField(ctx, fm, v, span, path) {
  if (fm.isMap) {
    if (!(v instanceof JsonObject)) throw bad(path, "an object", v);
    const valueMap = { ...fm, kind: kindOf(fm.field), message: fm.field.message };
    const out = {};
    for (const [k, item] of v.entries) out[k] = decodeScalar(ctx, valueMap, item, v.spans.get(k), `${path}.${k}`);
    return out;
  }
  if (fm.repeated) {
    if (!(v instanceof JsonArray)) throw bad(path, "an array", v);
    return v.items.map((item, i) =>
      // LoRAX prints a non-finite f32 as null, inside arrays too.
      fm.kind === "float" && item === null ? Number.NaN : decodeScalar(ctx, fm, item, v.spans[i], `${path}[${i}]`)
    );
  }
  return decodeScalar(ctx, fm, v, span, path);
}

function jsonKind(v) {
  if (typeof v === "string") return "string";
  if (typeof v === "boolean") return "bool";
  if (v instanceof JsonNumber) return v.isInteger ? "int" : "float";
  return undefined;
}

function decodeOneof(ctx, oneof, members, v, span, path) {
  // Pick the member that can hold a JSON value of this type.
  if (v === null) return {};
  const kind = jsonKind(v);
  for (const fm of members) {
    if (kind !== undefined && fm.kind === kind) {
      return { [oneof.localName]: { case: fm.field.localName, value: decodeScalar(ctx, fm, v, span, path) } };
    }
    if (kind === "int" && fm.kind === "float") {
      return { [oneof.localName]: { case: fm.field.localName, value: v.toNumber() } };
    }
    if (fm.kind === "message") {
      const sub = messageMap(fm.message);
      if ((v instanceof JsonArray && sub.unwrap) || (v instanceof JsonObject && !sub.unwrap)) {
        return { [oneof.localName]: { case: fm.field.localName, value: decodeMessageInit(ctx, sub, v, span, path) } };
      }
    }
  }
  throw bad(path, members.map((fm) => (fm.kind === "message" ? "an object or array" : fm.kind)).join(" or "), v);
}

function errorBody(obj) {
  let message = obj.entries.get("error");
  let errorType = obj.entries.get("error_type");
  if (message instanceof JsonObject) {
    // An OpenAI-shaped error event.
    errorType = message.entries.get("type") ?? errorType;
    message = message.entries.get("message") ?? "";
  }
  const text = (x) => (x === null || x === undefined ? undefined : x instanceof JsonNumber ? x.text : String(x));
  return new LoraxErrorBody(text(message) ?? "", text(errorType));
}

function decodeMessageInit(ctx, mm, v, span, path) {
  if (v instanceof JsonObject && v.entries.has("error") && !mm.byKey.has("error")) throw errorBody(v);
  if (mm.unwrap) {
    if (mm.desc.oneofs.length) {
      const oneof = mm.desc.oneofs[0];
      return decodeOneof(ctx, oneof, mm.oneofByName.get(oneof.name), v, span, path);
    }
    const only = mm.fields[0];
    if (v === null) return {};
    return { [only.field.localName]: decodeField(ctx, only, v, span, path) };
  }
  if (!(v instanceof JsonObject)) throw bad(path, `an object (${mm.desc.typeName})`, v);
  const init = {};
  for (const [key, value] of v.entries) {
    const fm = mm.byKey.get(key);
    const valueSpan = v.spans.get(key);
    if (fm === undefined) {
      const members = mm.oneofByName.get(key);
      if (members !== undefined && value !== null) {
        const oneof = mm.desc.oneofs.find((o) => o.name === key);
        Object.assign(init, decodeOneof(ctx, oneof, members, value, valueSpan, `${path}.${key}`));
      }
      continue; // an unknown key: a newer server's field
    }
    // null means unset, never 0 or "". A raw JSON field keeps a null as the text `null`
    // (response_format's schema: null differs from absent), unless it also prints null
    // when unset: then null and unset are the same thing on the wire.
    if (value === null && (!fm.rawJson || fm.nullIfUnset)) continue;
    const decoded = decodeField(ctx, fm, value, valueSpan, `${path}.${key}`);
    if (fm.oneof !== undefined) init[fm.oneof.localName] = { case: fm.field.localName, value: decoded };
    else init[fm.field.localName] = decoded;
  }
  return init;
}

/** Read LoRAX JSON text into a message of `schema` (the counterpart of lorax.codec.from_json). */
export function fromLoraxJson(schema, text) {
  const tree = parseJson(text);
  const init = decodeMessageInit({ source: text }, messageMap(schema), tree, [0, text.length], schema.name);
  // create() takes nested init objects for message fields, lists and maps.
  return create(schema, init);
}
