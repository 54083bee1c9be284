// The debug console's wire protocol (vsock port 1027), shared by the agent (agent/src/debug/) and
// `cove exec` (src/cli/exec.ts). Frames both ways: a type byte, a 32-bit big-endian length, the
// payload (at most MAX_FRAME bytes).
//   client → agent: OPEN (JSON OpenRequest, first and once), STDIN, STDIN_EOF, RESIZE (rows, cols u16)
//   agent → client: READY (empty) or REFUSED (UTF-8 reason, then the agent closes), then STDOUT,
//                   STDERR, and EXIT (JSON {code, signal}) last.
// With a terminal, the shell's output is all STDOUT (one pty) and STDIN_EOF sends ^D.

export const CONSOLE_PORT = 1027;
export const MAX_FRAME = 64 * 1024;
/** Header bytes of a frame. */
export const FRAME_HEADER = 5;

export const Frame = {
  OPEN: 1,
  STDIN: 2,
  STDIN_EOF: 3,
  RESIZE: 4,
  READY: 16,
  REFUSED: 17,
  STDOUT: 18,
  STDERR: 19,
  EXIT: 20,
} as const;
export type FrameType = (typeof Frame)[keyof typeof Frame];
const TYPES = new Set<number>(Object.values(Frame));

export interface OpenRequest {
  /** What to run; empty: an interactive shell. */
  argv: string[];
  /** Whether the caller has a terminal (the process then gets a pty). */
  tty: boolean;
  rows?: number;
  cols?: number;
  /** The caller's $TERM, for the pty. */
  term?: string;
}

export interface ExitStatus {
  /** The exit code, or null when a signal ended the process. */
  code: number | null;
  signal: string | null;
}

export function encodeFrame(type: FrameType, payload: Uint8Array | string = Buffer.alloc(0)): Buffer {
  const body = typeof payload === "string" ? Buffer.from(payload) : payload;
  if (body.length > MAX_FRAME) throw new Error(`console frame of ${body.length} bytes (most ${MAX_FRAME})`);
  const out = Buffer.alloc(FRAME_HEADER + body.length);
  out[0] = type;
  out.writeUInt32BE(body.length, 1);
  out.set(body, FRAME_HEADER);
  return out;
}

/** Data frames for any amount of bytes (split at MAX_FRAME). */
export function encodeData(type: FrameType, data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < data.length; i += MAX_FRAME) out.push(encodeFrame(type, data.subarray(i, i + MAX_FRAME)));
  return out;
}

export function encodeResize(rows: number, cols: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt16BE(Math.max(0, Math.min(0xffff, rows | 0)), 0);
  p.writeUInt16BE(Math.max(0, Math.min(0xffff, cols | 0)), 2);
  return encodeFrame(Frame.RESIZE, p);
}

export function decodeResize(p: Buffer): { rows: number; cols: number } {
  if (p.length !== 4) throw new Error("RESIZE frame must have 4 bytes");
  return { rows: p.readUInt16BE(0), cols: p.readUInt16BE(2) };
}

/** Splits a byte stream into frames; holds at most one frame. Throws on a malformed stream. */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);

  get held(): number {
    return this.buf.length;
  }

  push(chunk: Buffer): { type: FrameType; payload: Buffer }[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: { type: FrameType; payload: Buffer }[] = [];
    while (this.buf.length >= FRAME_HEADER) {
      const type = this.buf[0]!;
      const len = this.buf.readUInt32BE(1);
      if (!TYPES.has(type)) throw new Error(`unknown console frame type ${type}`);
      if (len > MAX_FRAME) throw new Error(`console frame of ${len} bytes (most ${MAX_FRAME})`);
      if (this.buf.length < FRAME_HEADER + len) break;
      out.push({ type: type as FrameType, payload: Buffer.from(this.buf.subarray(FRAME_HEADER, FRAME_HEADER + len)) });
      this.buf = this.buf.subarray(FRAME_HEADER + len);
    }
    if (this.buf.length === 0) this.buf = Buffer.alloc(0);
    return out;
  }
}

const TERM_RE = /^[A-Za-z0-9_.+-]{1,64}$/;
const MAX_ARGS = 256;

/** An OPEN payload, checked (the agent's side). */
export function parseOpen(p: Buffer): OpenRequest {
  let v: unknown;
  try {
    v = JSON.parse(p.toString("utf8"));
  } catch {
    throw new Error("OPEN is not JSON");
  }
  const o = v as Record<string, unknown>;
  if (typeof o !== "object" || o === null) throw new Error("OPEN is not an object");
  const argv = o.argv ?? [];
  if (!Array.isArray(argv) || argv.length > MAX_ARGS || !argv.every((a) => typeof a === "string" && !a.includes("\0")))
    throw new Error(`argv must be at most ${MAX_ARGS} strings without NUL`);
  if (typeof o.tty !== "boolean") throw new Error("tty must be true or false");
  const dim = (x: unknown) => (typeof x === "number" && Number.isInteger(x) && x >= 0 && x <= 0xffff ? x : undefined);
  const term = typeof o.term === "string" && TERM_RE.test(o.term) ? o.term : undefined;
  const rows = dim(o.rows);
  const cols = dim(o.cols);
  return {
    argv: argv as string[],
    tty: o.tty,
    ...(rows !== undefined && { rows }),
    ...(cols !== undefined && { cols }),
    ...(term && { term }),
  };
}

/** An EXIT payload, checked (the client's side: it comes from the guest). */
export function parseExit(p: Buffer): ExitStatus {
  try {
    const o = JSON.parse(p.toString("utf8")) as Record<string, unknown>;
    const code = typeof o.code === "number" && Number.isInteger(o.code) && o.code >= 0 && o.code <= 255 ? o.code : null;
    const signal = typeof o.signal === "string" && /^SIG[A-Z0-9+-]{1,12}$/.test(o.signal) ? o.signal : null;
    if (code === null && signal === null) throw new Error("neither");
    return { code, signal };
  } catch {
    throw new Error("EXIT frame is not {code, signal}");
  }
}
