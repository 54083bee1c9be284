// The shim's side of the guest's log stream (log-format.ts): every line the agent sends becomes a
// line of the shim log (which containerd collects), tagged with the pod id, the source (agent or
// kernel) and, when the guest names one, the container and exec ids.
//
// The guest is hostile, so the reader never trusts the stream:
//  - a line is at most MAX_LOG_LINE bytes; a longer one is cut and the rest of it skipped;
//  - buffering is one chunk of the stream plus one partial line; when the line budget is spent the
//    reader stops reading, so vsock's flow control holds the guest back (its agent then drops lines
//    in its own bounded buffer and says how many) — nothing piles up in the shim;
//  - lines pass at LOG_RATE tokens a second with bursts of LOG_BURST (a line costs 1 token plus one
//    per 256 bytes), at most LOG_LINES_PER_TURN per event-loop turn;
//  - the message and every other field are cut and have their control characters escaped; levels
//    are mapped (a guest cannot log above error); ids are checked.
import type { Duplex } from "node:stream";
import { errorMessage } from "../../common/errors.ts";
import { type LevelLogger, RateLimitedLog } from "../../common/rate-limited-log.ts";
import { printable } from "../../common/text.ts";
import { LEVELS, LOG_PORT, MAX_LOG_LINE } from "./log-format.ts";

export const LOG_RATE = 200;
export const LOG_BURST = 4000;
export const LOG_LINES_PER_TURN = 256;
/** Characters of a message kept; of the other fields together (as JSON). */
export const LOG_MSG_MAX = 2048;
export const LOG_DETAIL_MAX = 4096;
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,75}$/;
/** Fields the shim writes itself, or that say nothing in the shim log. */
const OWN_FIELDS = new Set(["level", "time", "msg", "src", "container", "exec", "pid", "hostname", "name", "v"]);

export type ShimLevel = "debug" | "info" | "warn" | "error";

export interface GuestLogRecord {
  source: "agent" | "kernel";
  level: ShimLevel;
  msg: string;
  container?: string;
  exec?: string;
  /** The record's other fields as escaped JSON, bounded. */
  detail?: string;
  /** Set when the line was not one JSON object (guest garbage) or was cut. */
  malformed?: true;
  cut?: true;
}

function shimLevel(n: unknown): ShimLevel {
  if (typeof n !== "number" || !Number.isFinite(n)) return "info";
  if (n >= LEVELS.error) return "error";
  if (n >= LEVELS.warn) return "warn";
  if (n >= LEVELS.info) return "info";
  return "debug";
}

/** One line of the stream (without its newline) as a record for the shim log; never throws. */
export function parseGuestLogLine(line: string, cut = false): GuestLogRecord {
  let v: unknown;
  try {
    v = cut ? undefined : JSON.parse(line);
  } catch {
    v = undefined;
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    return { source: "agent", level: "warn", msg: printable(line, LOG_MSG_MAX), malformed: true, ...(cut && { cut }) };
  }
  const o = v as Record<string, unknown>;
  const rec: GuestLogRecord = {
    source: o.src === "kernel" ? "kernel" : "agent",
    level: shimLevel(o.level),
    msg: printable(typeof o.msg === "string" ? o.msg : "", LOG_MSG_MAX),
  };
  if (typeof o.container === "string" && ID_RE.test(o.container)) rec.container = o.container;
  if (typeof o.exec === "string" && ID_RE.test(o.exec)) rec.exec = o.exec;
  // No prototype: a "__proto__" key from the guest is a key like any other.
  const rest: Record<string, unknown> = Object.create(null);
  let any = false;
  for (const [k, x] of Object.entries(o)) {
    if (OWN_FIELDS.has(k)) continue;
    rest[k] = x;
    any = true;
  }
  if (any) rec.detail = printable(JSON.stringify(rest), LOG_DETAIL_MAX);
  return rec;
}

/** What the reader writes to: a pino logger (child of the shim's, with the pod id). */
export type RecordLogger = Pick<LevelLogger, ShimLevel>;

export interface GuestLogOptions {
  rate?: number;
  burst?: number;
  linesPerTurn?: number;
  now?: () => number;
  /** Runs fn later: on the next turn (ms 0) or after ms (tests and the fuzzer drive it by hand). */
  defer?: (fn: () => void, ms: number) => { cancel(): void };
}

function defaultDefer(fn: () => void, ms: number): { cancel(): void } {
  if (ms <= 0) {
    const i = setImmediate(fn);
    return { cancel: () => clearImmediate(i) };
  }
  const t = setTimeout(fn, ms).unref();
  return { cancel: () => clearTimeout(t) };
}

export class GuestLogReader {
  readonly rate: number;
  readonly burst: number;
  private readonly linesPerTurn: number;
  private readonly now: () => number;
  private tokens: number;
  private last: number;
  /** The chunk being split, and where in it. */
  private chunk: Buffer | undefined;
  private off = 0;
  /** The start of a line whose end has not come yet (copied: never a view that pins a chunk). */
  private partial: Buffer[] = [];
  private partialLen = 0;
  /** Skipping the rest of a line that was cut. */
  private skipping = false;
  private stream: Duplex | undefined;
  private readonly defer: NonNullable<GuestLogOptions["defer"]>;
  /** The drain that is due (next turn, or when the budget refilled). */
  private due: { cancel(): void } | undefined;
  private closed = false;
  /** Lines written, lines cut, not-JSON lines, times the budget stopped reading. */
  readonly counts = { lines: 0, cut: 0, malformed: 0, throttled: 0 };
  private readonly throttleNote: RateLimitedLog;

  constructor(
    private readonly out: RecordLogger,
    opts: GuestLogOptions = {},
  ) {
    this.rate = opts.rate ?? LOG_RATE;
    this.burst = opts.burst ?? LOG_BURST;
    this.linesPerTurn = opts.linesPerTurn ?? LOG_LINES_PER_TURN;
    this.now = opts.now ?? Date.now;
    this.defer = opts.defer ?? defaultDefer;
    this.tokens = this.burst;
    this.last = this.now();
    this.throttleNote = new RateLimitedLog(out, "warn", { burst: 1, intervalMs: 60_000, now: this.now });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Bytes held: the chunk being split and a partial line (bounded by one chunk + MAX_LOG_LINE). */
  get held(): number {
    return (this.chunk ? this.chunk.length - this.off : 0) + this.partialLen;
  }

  /** Reads the stream until it ends or close() is called. */
  attach(stream: Duplex): void {
    this.stream = stream;
    stream.on("error", () => {});
    stream.on("data", (d: Buffer) => {
      if (!this.accept(d)) stream.pause();
    });
    stream.on("close", () => this.close());
  }

  /**
   * Takes a chunk and writes the lines it completes while the budget lasts. Returns false when it
   * must not be given another chunk yet (the reader pauses its stream and resumes it itself).
   */
  accept(chunk: Buffer): boolean {
    if (this.closed) return true;
    // A paused stream sends nothing more; should one more chunk come anyway, it joins the rest.
    this.chunk = this.chunk ? Buffer.concat([this.chunk.subarray(this.off), chunk]) : chunk;
    this.off = 0;
    if (this.due) return false; // a drain is already due
    return this.drain();
  }

  /** Splits and writes; true when the chunk is used up. */
  private drain(): boolean {
    this.due = undefined;
    for (let n = 0; !this.closed; n++) {
      if (n >= this.linesPerTurn) {
        this.due = this.defer(() => this.continue(), 0);
        return false;
      }
      if (!this.chunk) return true;
      const wait = this.take();
      if (wait > 0) {
        this.counts.throttled++;
        this.throttleNote.log(
          { rate: this.rate, burst: this.burst },
          "guest log over its budget: not reading until it refills (the guest drops what it cannot buffer)",
        );
        this.due = this.defer(() => this.continue(), wait);
        return false;
      }
      const line = this.nextLine();
      if (!line) {
        this.chunk = undefined;
        return true;
      }
      this.tokens -= 1 + (line.text.length >> 8);
      this.write(line.text.toString("utf8"), line.cut);
    }
    return true;
  }

  private continue(): void {
    if (this.closed) return;
    if (this.drain()) this.stream?.resume();
  }

  /** Refills the budget; 0 when a line may pass now, else the milliseconds to wait. */
  private take(): number {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) * this.rate) / 1000);
    this.last = t;
    // The next line may cost up to 1 + MAX_LOG_LINE/256 tokens: wait for the most it can cost.
    const need = 1 + (MAX_LOG_LINE >> 8);
    return this.tokens >= need ? 0 : Math.ceil(((need - this.tokens) * 1000) / this.rate);
  }

  /** The next complete (or cut) line of the current chunk, or undefined when the chunk is used up. */
  private nextLine(): { text: Buffer; cut: boolean } | undefined {
    const c = this.chunk;
    while (c && this.off < c.length) {
      const nl = c.indexOf(0x0a, this.off);
      const end = nl < 0 ? c.length : nl;
      const piece = c.subarray(this.off, end);
      this.off = nl < 0 ? c.length : nl + 1;
      if (this.skipping) {
        if (nl >= 0) this.skipping = false;
        continue;
      }
      const room = MAX_LOG_LINE - this.partialLen;
      if (piece.length > room) {
        const text = Buffer.concat([...this.partial, piece.subarray(0, room)]);
        this.partial = [];
        this.partialLen = 0;
        this.skipping = nl < 0;
        return { text, cut: true };
      }
      if (nl < 0) {
        if (piece.length > 0) {
          this.partial.push(Buffer.from(piece));
          this.partialLen += piece.length;
        }
        continue;
      }
      const text = this.partialLen ? Buffer.concat([...this.partial, piece]) : piece;
      this.partial = [];
      this.partialLen = 0;
      return { text, cut: false };
    }
    return undefined;
  }

  private write(text: string, cut: boolean): void {
    if (text.length === 0 && !cut) return;
    const r = parseGuestLogLine(text, cut);
    this.counts.lines++;
    if (r.cut) this.counts.cut++;
    else if (r.malformed) this.counts.malformed++;
    const obj: Record<string, unknown> = { guest: r.source };
    if (r.container) obj.container = r.container;
    if (r.exec) obj.exec = r.exec;
    if (r.detail) obj.detail = r.detail;
    if (r.cut) obj.cut = true;
    else if (r.malformed) obj.malformed = true;
    this.out[r.level](obj, r.msg);
  }

  /** Stops reading: timers cleared, the stream destroyed, held bytes dropped. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.due?.cancel();
    this.due = undefined;
    this.chunk = undefined;
    this.partial = [];
    this.partialLen = 0;
    this.throttleNote.close();
    this.stream?.destroy();
  }
}

/** The kernel command line parameters that tell the agent its log level and whether to serve the debug console. */
export function agentCmdlineParams(level: string, debugConsole: boolean): string {
  const lvl = Object.hasOwn(LEVELS, level) ? level : "info";
  return `cove.log_level=${lvl}${debugConsole ? " cove.debug_console=1" : ""}`;
}

/**
 * Connects to the agent's log port and writes what comes into `out` (the shim's logger, as a child
 * carrying the pod id) until close(). A failed connect is logged once: the pod runs on without its
 * guest's logs.
 */
export function followGuestLog(
  connect: (port: number, timeoutMs: number) => Promise<Duplex>,
  out: RecordLogger & { warn(obj: object, msg: string): void },
  opts: GuestLogOptions = {},
): GuestLogReader {
  const reader = new GuestLogReader(out, opts);
  connect(LOG_PORT, 10_000).then(
    (s) => {
      if (reader.isClosed) s.destroy();
      else reader.attach(s);
    },
    (e: unknown) => {
      if (!reader.isClosed)
        out.warn({ port: LOG_PORT, err: errorMessage(e) }, "the guest's log port did not answer: no guest log lines");
    },
  );
  return reader;
}
