// What containerd writes to the stdin of `start`: nothing, a google.protobuf.Any of the runtime
// options (1.6–2.2; for cove normally runtimeoptions.v1.Options{config_path}), or containerd 2.3's
// BootstrapParams (options inside its extensions). Decoded with protobufjs' Reader alone so that
// `start` does not build the full proto root.
import protobuf from "protobufjs/minimal.js";
import { errorMessage } from "../common/errors.ts";

export interface StartOptions {
  /** cove.toml path from runtimeoptions.v1.Options.config_path. */
  configPath?: string;
  /** BootstrapParams.socket_dir (2.3+): where the shim socket goes instead of /run/containerd/s. */
  socketDir?: string;
  /** BootstrapParams.log_level (INFO = 0, DEBUG = -4, TRACE = -8, WARN = 4, ...). */
  logLevel?: number;
  /** Which form stdin had. */
  form: "empty" | "any" | "bootstrap" | "bootstrap-json";
  /** The type URL of the options Any, when there was one. */
  optionsType?: string;
}

export class OptionsError extends Error {}

const RUNTIME_OPTIONS = "runtimeoptions.v1.Options";

type Field = { no: number; wire: number; bytes?: Uint8Array; varint?: number };

/** Reads the top-level fields of a protobuf message; throws on malformed input. */
function fields(buf: Uint8Array): Field[] {
  const r = protobuf.Reader.create(buf);
  const out: Field[] = [];
  while (r.pos < r.len) {
    const tag = r.uint32();
    const no = tag >>> 3;
    const wire = tag & 7;
    if (no === 0) throw new OptionsError("field number 0");
    if (wire === 2) out.push({ no, wire, bytes: r.bytes() });
    else if (wire === 0) out.push({ no, wire, varint: r.int32() });
    else r.skipType(wire);
  }
  return out;
}

function text(f: Field | undefined): string | undefined {
  return f?.bytes ? Buffer.from(f.bytes).toString("utf8") : undefined;
}

/** The message name of a type URL ("types.googleapis.com/a.b.C" and "a.b.C" both give "a.b.C"). */
export function typeName(typeUrl: string): string {
  const slash = typeUrl.lastIndexOf("/");
  return slash >= 0 ? typeUrl.slice(slash + 1) : typeUrl;
}

/** Decodes a google.protobuf.Any's bytes into the cove-relevant options. */
function fromAny(buf: Uint8Array, out: StartOptions): void {
  const fs = fields(buf);
  const typeUrl = text(fs.find((f) => f.no === 1)) ?? "";
  const value = fs.find((f) => f.no === 2)?.bytes ?? new Uint8Array();
  out.optionsType = typeUrl;
  if (typeName(typeUrl) === RUNTIME_OPTIONS) {
    const path = text(fields(value).find((f) => f.no === 2));
    if (path) out.configPath = path;
  }
}

/**
 * Any has only fields 1 and 2; BootstrapParams has fields up to 9, and its field 1 is the instance
 * id, which is the shim's `-id`. So: any field above 2, or field 1 equal to the id, means bootstrap.
 */
function looksLikeBootstrap(fs: Field[], id: string): boolean {
  if (fs.some((f) => f.no > 2)) return true;
  return id !== "" && text(fs.find((f) => f.no === 1)) === id;
}

export function decodeStartOptions(stdin: Uint8Array, id: string): StartOptions {
  if (stdin.length === 0) return { form: "empty" };
  if (stdin[0] === 0x7b /* '{' */) return fromBootstrapJson(stdin);
  let fs: Field[];
  try {
    fs = fields(stdin);
  } catch (e) {
    throw new OptionsError(`runtime options on stdin are not valid protobuf: ${errorMessage(e)}`);
  }
  const out: StartOptions = { form: "any" };
  try {
    if (!looksLikeBootstrap(fs, id)) {
      fromAny(stdin, out);
      return out;
    }
    out.form = "bootstrap";
    for (const f of fs) {
      if (f.no === 3 && f.varint !== undefined) out.logLevel = f.varint;
      else if (f.no === 9 && f.bytes) out.socketDir = text(f);
      else if (f.no === 8 && f.bytes) {
        // Extension{Any value = 1}
        const any = fields(f.bytes).find((x) => x.no === 1)?.bytes;
        if (any) fromAny(any, out);
      }
    }
    return out;
  } catch (e) {
    if (e instanceof OptionsError) throw e;
    throw new OptionsError(`runtime options on stdin are not valid protobuf: ${errorMessage(e)}`);
  }
}

const LOG_LEVELS: ReadonlyMap<string, number> = new Map([
  ["LOG_LEVEL_TRACE", -8],
  ["LOG_LEVEL_DEBUG", -4],
  ["LOG_LEVEL_INFO", 0],
  ["LOG_LEVEL_WARN", 4],
  ["LOG_LEVEL_ERROR", 8],
]);

/** BootstrapParams in protojson form (camelCase or original names; Any as {"@type", ...fields}). */
function fromBootstrapJson(stdin: Uint8Array): StartOptions {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(Buffer.from(stdin).toString("utf8")) as Record<string, unknown>;
  } catch (e) {
    throw new OptionsError(`bootstrap parameters on stdin are not valid JSON: ${errorMessage(e)}`);
  }
  const out: StartOptions = { form: "bootstrap-json" };
  const pick = (a: string, b: string) => doc[a] ?? doc[b];
  const socketDir = pick("socketDir", "socket_dir");
  if (typeof socketDir === "string" && socketDir) out.socketDir = socketDir;
  const level = pick("logLevel", "log_level");
  if (typeof level === "number") out.logLevel = level;
  // A Map, not an object literal: `in` would also find "constructor", "toString" and the rest of
  // Object.prototype, and hand back a function as the level.
  const named = typeof level === "string" ? LOG_LEVELS.get(level) : undefined;
  if (named !== undefined) out.logLevel = named;
  const exts = doc.extensions;
  if (Array.isArray(exts)) {
    for (const e of exts) {
      const v = (e as { value?: Record<string, unknown> })?.value;
      if (!v || typeof v["@type"] !== "string") continue;
      out.optionsType = v["@type"];
      if (typeName(v["@type"]) === RUNTIME_OPTIONS) {
        const p = v.configPath ?? v.config_path;
        if (typeof p === "string" && p) out.configPath = p;
      }
    }
  }
  return out;
}

/** A BootstrapParams log level as a pino level name. */
export function logLevelName(level: number | undefined): "trace" | "debug" | "info" | "warn" | "error" | undefined {
  if (level === undefined) return undefined;
  if (level <= -8) return "trace";
  if (level <= -4) return "debug";
  if (level < 4) return "info";
  if (level < 8) return "warn";
  return "error";
}
