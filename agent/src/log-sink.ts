// Where the agent's log lines (and the kernel's, log-kmsg.ts) go: to the shim over the log port
// (vsock 1026) when the shim reads it, else to the console as before. On the embedded VMM every
// console byte is a VM exit, so once the shim reads the port nothing goes to the console any more
// but fatal lines (the VM ends right after them: the console write is synchronous, a socket's not).
//
// Lines also go into a bounded buffer while nobody reads the port or the reader is slow: boot-time
// lines reach the shim log when it connects, and a shim that stops reading (its rate limit) costs
// the guest at most MAX_BUFFERED bytes; beyond that the oldest lines are dropped and counted, and
// the next line that goes out says how many.
import { MAX_LOG_LINE } from "../../src/sandbox/agent/log-format.ts";

export const MAX_BUFFERED = 256 * 1024;

/** The part of a socket the sink writes to. */
export interface LogReader {
  write(line: string): boolean;
  once(event: "drain", fn: () => void): unknown;
  destroyed?: boolean;
}

export interface LineOptions {
  /** Also to the console while nobody reads the port (false for kernel records: the kernel prints its own). */
  console: boolean;
  /** Always to the console too (fatal lines). */
  always?: boolean;
}

export class LogSink {
  private readonly queue: string[] = [];
  private head = 0;
  private queued = 0;
  private reader: LogReader | undefined;
  private waitingDrain = false;
  /** Lines dropped (buffer full) since the last note about it. */
  dropped = 0;
  /** Lines dropped in all. */
  droppedTotal = 0;

  constructor(
    private readonly consoleWrite: (line: string) => void,
    private readonly maxBuffered = MAX_BUFFERED,
  ) {}

  get buffered(): number {
    return this.queued;
  }

  get attached(): boolean {
    return this.reader !== undefined;
  }

  /** One line, ending in "\n" (pino's). Never throws, never blocks on the port. */
  write(line: string, opts: LineOptions = { console: true }): void {
    const l = cutLine(line);
    if (opts.always || (opts.console && !this.reader)) {
      try {
        this.consoleWrite(l);
      } catch {
        // a console that cannot be written to must not take the agent down
      }
    }
    this.push(l);
    this.flush();
  }

  /** Starts sending to a reader; false if another one is attached (one reader at a time). */
  attach(r: LogReader): boolean {
    if (this.reader) return false;
    this.reader = r;
    this.waitingDrain = false;
    this.flush();
    return true;
  }

  /** The reader went away: lines go to the console (and the buffer) again. */
  detach(r: LogReader): void {
    if (this.reader !== r) return;
    this.reader = undefined;
    this.waitingDrain = false;
  }

  private push(l: string): void {
    this.queue.push(l);
    this.queued += Buffer.byteLength(l);
    while (this.queued > this.maxBuffered && this.head < this.queue.length) {
      const old = this.queue[this.head]!;
      this.queue[this.head++] = "";
      this.queued -= Buffer.byteLength(old);
      this.dropped++;
      this.droppedTotal++;
    }
    this.compact();
  }

  private compact(): void {
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
  }

  private flush(): void {
    const r = this.reader;
    if (!r || this.waitingDrain) return;
    if (r.destroyed) {
      this.detach(r);
      return;
    }
    while (this.head < this.queue.length) {
      const queued = this.queue[this.head]!;
      this.queue[this.head++] = "";
      this.queued -= Buffer.byteLength(queued);
      let line = queued;
      if (this.dropped > 0) {
        line = `${JSON.stringify({ level: 40, time: Date.now(), msg: `${this.dropped} log lines dropped (the log port was not read fast enough)`, dropped: this.dropped })}\n${line}`;
        this.dropped = 0;
      }
      if (!r.write(line)) {
        this.waitingDrain = true;
        r.once("drain", () => {
          this.waitingDrain = false;
          if (this.reader === r) this.flush();
        });
        break;
      }
    }
    if (this.head >= this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
      this.queued = 0;
    } else this.compact();
  }
}

/**
 * A line of at most MAX_LOG_LINE bytes, ending in "\n" (the shim would cut a longer one and lose
 * its level). A longer one (a huge error) becomes a record of its own: level, message and ids kept,
 * the head of the original in `head`, its length in `cut_from`. 512 characters of each are at most
 * 6 KiB of JSON even if every one needs a \u escape.
 */
export function cutLine(line: string): string {
  const body = line.endsWith("\n") ? line.slice(0, -1) : line;
  if (body.length < MAX_LOG_LINE / 6 || Buffer.byteLength(body) < MAX_LOG_LINE) return `${body}\n`;
  let o: Record<string, unknown> = {};
  try {
    const v = JSON.parse(body) as unknown;
    if (typeof v === "object" && v !== null && !Array.isArray(v)) o = v as Record<string, unknown>;
  } catch {
    // not JSON: the head says what it was
  }
  const short = (v: unknown) => (typeof v === "string" ? v.slice(0, 64) : undefined);
  return `${JSON.stringify({
    level: typeof o.level === "number" ? o.level : 30,
    time: typeof o.time === "number" ? o.time : Date.now(),
    src: short(o.src),
    container: short(o.container),
    exec: short(o.exec),
    msg: typeof o.msg === "string" ? o.msg.slice(0, 512) : "",
    cut_from: Buffer.byteLength(body),
    head: body.slice(0, 512),
  })}\n`;
}
