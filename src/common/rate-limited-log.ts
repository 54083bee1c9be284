// A log line a guest can provoke at will (a packet for a wrong CID, a device reset loop) must not
// become a flood: per source, the first `burst` lines of an interval are written as they come, the
// rest are counted and summed up in one line when the interval ends. Each source (one device's
// "wrong CID" warning, one transport's reset error) owns one RateLimitedLog.
export type LogLevel = "error" | "warn" | "info" | "debug";

/** The part of a pino logger this needs. */
export type LevelLogger = Record<LogLevel, (obj: object, msg: string) => void> & {
  isLevelEnabled?(level: string): boolean;
};

export interface RateLimitOptions {
  /** Lines written per interval before suppression starts. */
  burst?: number;
  intervalMs?: number;
  /** Clock (tests). */
  now?: () => number;
}

/** Defaults, documented in docs/security.md (per-pod limits). */
export const LOG_BURST = 5;
export const LOG_INTERVAL_MS = 10_000;

export class RateLimitedLog {
  private readonly burst: number;
  private readonly intervalMs: number;
  private readonly now: () => number;
  private windowStart = Number.NEGATIVE_INFINITY;
  private written = 0;
  private suppressed = 0;
  private lastMsg = "";
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly logger: LevelLogger,
    private readonly level: LogLevel,
    opts: RateLimitOptions = {},
  ) {
    this.burst = opts.burst ?? LOG_BURST;
    this.intervalMs = opts.intervalMs ?? LOG_INTERVAL_MS;
    this.now = opts.now ?? Date.now;
  }

  /** Writes the line, or counts it if this interval's burst is spent. Returns whether it was written. */
  log(obj: object, msg: string): boolean {
    // Nothing would be written: nothing to count, no timer.
    if (this.logger.isLevelEnabled?.(this.level) === false) return false;
    const t = this.now();
    if (t - this.windowStart >= this.intervalMs) {
      this.flush();
      this.windowStart = t;
      this.written = 0;
    }
    if (this.written < this.burst) {
      this.written++;
      this.logger[this.level](obj, msg);
      return true;
    }
    this.suppressed++;
    this.lastMsg = msg;
    // The summary must come even if the flood stops: a timer that never keeps the process alive.
    this.timer ??= setTimeout(() => this.flush(), Math.max(0, this.windowStart + this.intervalMs - t)).unref();
    return false;
  }

  /** Lines counted and not yet summed up. */
  get pending(): number {
    return this.suppressed;
  }

  /** Writes the summary of suppressed lines, if any (called at the interval's end and on close). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.suppressed === 0) return;
    const n = this.suppressed;
    this.suppressed = 0;
    this.logger[this.level]({ suppressed: n, intervalMs: this.intervalMs }, `${this.lastMsg} (${n} more suppressed)`);
  }

  /** Sums up what is pending and stops the timer (the source goes away). */
  close(): void {
    this.flush();
  }
}
