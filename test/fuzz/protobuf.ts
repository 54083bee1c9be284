// Random protobuf messages that follow a message type from proto/ (protobufjs reflection): every
// field gets a value of its own type, with edges (0, max, negative int64s, empty and long strings,
// strings with control characters), so a fuzzer's input gets past a decoder and reaches the logic
// behind it. `mutate` then breaks the encoding itself (flipped, cut or appended bytes).
import type protobuf from "protobufjs";
import type { Rng } from "./fuzz.ts";

/** Strings that hurt: controls and escapes, bidi overrides, "..", NUL, Object.prototype names. */
const NASTY = ["", ".", "..", "/", "\0", "\x1b[2J", "\r\n", "\u202e", "constructor", "__proto__", "toString", "a/../b"];

export function randomString(rng: Rng, maxLen = 24): string {
  if (rng.chance(0.2)) return rng.pick(NASTY);
  const n = rng.chance(0.02) ? rng.range(256, 5000) : rng.int(maxLen + 1);
  let s = "";
  for (let i = 0; i < n; i++) {
    const k = rng.next();
    s += String.fromCharCode(
      k < 0.7
        ? 0x61 + rng.int(26)
        : k < 0.8
          ? rng.pick([0x2f, 0x2e, 0x2d, 0x20])
          : k < 0.9
            ? rng.int(0x20)
            : rng.int(0x3000),
    );
  }
  return s;
}

function scalar(rng: Rng, type: string): unknown {
  switch (type) {
    case "bool":
      return rng.chance(0.5);
    case "string":
      return randomString(rng);
    case "bytes":
      return rng.bytes(rng.chance(0.05) ? rng.range(100, 4000) : rng.int(16));
    case "double":
    case "float":
      return rng.pick([0, -1, 1.5, 1e308, Number.NaN, Number.POSITIVE_INFINITY]);
    case "int32":
    case "sint32":
    case "sfixed32":
      return rng.pick([0, 1, -1, 2 ** 31 - 1, -(2 ** 31), rng.edgy() | 0]);
    case "int64":
    case "sint64":
    case "sfixed64":
      return rng.pick([0, 1, -1, 2 ** 53 - 1, -(2 ** 53), rng.edgy()]);
    case "uint64":
    case "fixed64":
      return rng.pick([0, 1, 2 ** 53 - 1, rng.edgy()]);
    default: // uint32, fixed32
      return rng.edgy();
  }
}

function value(rng: Rng, f: protobuf.Field, depth: number): unknown {
  const rt = f.resolvedType;
  if (rt && "fields" in rt) return randomMessage(rng, rt as protobuf.Type, depth + 1);
  if (rt && "values" in rt) {
    const vals = Object.values((rt as protobuf.Enum).values);
    return rng.chance(0.9) ? rng.pick(vals) : rng.edgy(0x7fffffff);
  }
  return scalar(rng, f.type);
}

/** A plain object for `type` (keepCase names), each field present with probability 0.7. */
export function randomMessage(rng: Rng, type: protobuf.Type, depth = 0): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (depth > 4) return out;
  for (const f of type.fieldsArray) {
    f.resolve();
    if (!rng.chance(0.7)) continue;
    if (f.map) {
      const m: Record<string, unknown> = {};
      for (let i = rng.int(3); i > 0; i--) m[randomString(rng, 8)] = value(rng, f, depth);
      out[f.name] = m;
    } else if (f.repeated) {
      const n = rng.chance(0.05) ? rng.range(10, 200) : rng.int(4);
      out[f.name] = Array.from({ length: n }, () => value(rng, f, depth));
    } else out[f.name] = value(rng, f, depth);
  }
  return out;
}

/** The encoding of a random message of `type`. */
export function randomEncoded(rng: Rng, type: protobuf.Type): Uint8Array {
  return type.encode(type.fromObject(randomMessage(rng, type))).finish();
}

/** `b` with a few bytes flipped, cut short, or garbage appended. */
export function mutate(rng: Rng, b: Uint8Array): Uint8Array {
  const out = Buffer.from(b);
  switch (rng.int(3)) {
    case 0:
      for (let i = rng.range(1, 4); i > 0 && out.length > 0; i--) out[rng.int(out.length)] = rng.u8();
      return out;
    case 1:
      return out.subarray(0, rng.int(out.length + 1));
    default:
      return Buffer.concat([out, rng.bytes(rng.range(1, 12))]);
  }
}
