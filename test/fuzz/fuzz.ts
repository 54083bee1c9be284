// The structure-aware fuzz framework. Each parser that faces the guest or a peer has a fuzzer in
// test/fuzz/<parser>.fuzz.ts exporting `fuzzer: Fuzzer`. A fuzzer builds inputs that know the
// structure they attack (rings, packets, messages) from a seeded PRNG, drives the real classes,
// and checks the invariants on every case:
//   - no uncaught error (thrown, emitted as an unhandled 'error', or an unhandled rejection);
//   - no access outside guest RAM (guard bytes around the RAM must stay untouched);
//   - every bounded quantity (queue length, requests in flight, descriptors handled in one
//     synchronous turn) stays within its documented bound — counts, never wall-clock times.
// Case i of a run with seed S uses seed S+i, so `run({ seed: failure.seed, cases: 1 })` replays a
// failure exactly; a failing seed becomes a unit test that way.
//
// `npm run fuzz` (scripts/fuzz.ts) runs ≥ 10⁶ cases per fuzzer; test/unit/fuzz/fuzzers.test.ts
// runs a bounded number in CI.
import { GuestMemory } from "../../src/virtio/memory.ts";
import { prng } from "../harness/prng.ts";

export interface FuzzOptions {
  /** Seed of case 0; case i uses seed + i. */
  seed: number;
  cases: number;
}

export interface FuzzFailure {
  /** Replays this failure alone: run({ seed, cases: 1 }). */
  seed: number;
  message: string;
}

export interface FuzzReport {
  name: string;
  cases: number;
  failures: FuzzFailure[];
  /** How often each operation (packet op, message type, register…) was exercised. */
  ops: Record<string, number>;
  /** How often each state of the parser/device was reached. */
  states: Record<string, number>;
  /** The maximum reached by each bounded quantity, over all cases. */
  maxima: Record<string, number>;
  /** The documented bound of each quantity in `maxima` that has one (exceeding it is a failure). */
  bounds: Record<string, number>;
  /** Wall time of the run, for cases per second (never asserted). */
  ms: number;
}

export interface Fuzzer {
  name: string;
  run(opts: FuzzOptions): Promise<FuzzReport>;
}

/** mulberry32: small, seedable, fast; good enough to explore an input space. */
export class Rng {
  /** A float in [0, 1). */
  readonly next: () => number;
  constructor(seed: number) {
    this.next = prng(seed);
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  u8(): number {
    return this.int(0x100);
  }
  u16(): number {
    return this.int(0x10000);
  }
  u32(): number {
    return (this.next() * 4294967296) >>> 0;
  }
  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  /** Picks a key with probability proportional to its weight. */
  weighted<K extends string>(w: Record<K, number>): K {
    const entries = Object.entries(w) as [K, number][];
    let total = 0;
    for (const [, v] of entries) total += v;
    let x = this.next() * total;
    for (const [k, v] of entries) {
      x -= v;
      if (x < 0) return k;
    }
    return entries[entries.length - 1]![0];
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.u8();
    return b;
  }
  /**
   * A "boundary-biased" 32-bit value: mostly small, sometimes an edge (0, 1, 2^k±1, max), sometimes
   * anything. Lengths, credits and counts come from here.
   */
  edgy(max = 0xffffffff): number {
    const k = this.next();
    if (k < 0.5) return Math.min(max, this.int(64));
    if (k < 0.8) {
      const b = this.int(33);
      const v = b === 32 ? 0xffffffff : 2 ** b + this.pick([-1, 0, 1]);
      return Math.max(0, Math.min(max, v >>> 0));
    }
    return Math.min(max, this.u32());
  }
}

/** Per-run bookkeeping a fuzzer fills while it drives its cases. */
export class Recorder {
  readonly ops: Record<string, number> = {};
  readonly states: Record<string, number> = {};
  readonly maxima: Record<string, number> = {};
  readonly bounds: Record<string, number> = {};
  readonly failures: FuzzFailure[] = [];
  /** Violations of the case being run (bounds, guards); turned into a failure at its end. */
  private violations: string[] = [];

  op(name: string): void {
    this.ops[name] = (this.ops[name] ?? 0) + 1;
  }
  state(name: string): void {
    this.states[name] = (this.states[name] ?? 0) + 1;
  }
  /** Records a quantity without a bound (reported only, e.g. heap growth). */
  max(name: string, value: number): void {
    if (!(value <= (this.maxima[name] ?? Number.NEGATIVE_INFINITY))) this.maxima[name] = value;
  }
  /** Records a bounded quantity; above `bound` it is a violation of the current case. */
  bounded(name: string, value: number, bound: number): void {
    this.max(name, value);
    this.bounds[name] = bound;
    if (value > bound) this.violate(`${name} = ${value} exceeds its bound ${bound}`);
  }
  /** An invariant broken in the current case (the case goes on; it is reported as a failure). */
  violate(message: string): void {
    if (this.violations.length < 8) this.violations.push(message);
  }
  /** Takes the current case's violations. */
  takeViolations(): string[] {
    const v = this.violations;
    this.violations = [];
    return v;
  }
}

export interface CaseContext {
  rng: Rng;
  rec: Recorder;
  seed: number;
}

/**
 * Runs `cases` cases of `body` and returns the report. Errors thrown by a case, errors that escape
 * to the process (uncaughtException / unhandledRejection) while it runs or just after it, and
 * violations recorded by the case are failures of that case, recorded with its seed.
 * After each case the event loop turns once (setImmediate) so next-tick 'error' emissions land in
 * the case that caused them; a case that wants more (timers, I/O) awaits them itself.
 */
export async function runCases(
  name: string,
  opts: FuzzOptions,
  body: (ctx: CaseContext) => void | Promise<void>,
): Promise<FuzzReport> {
  const rec = new Recorder();
  const escaped: unknown[] = [];
  const onEscape = (e: unknown): void => {
    escaped.push(e);
  };
  // The run owns escaped errors: others' listeners (a test runner's) are set aside meanwhile, so
  // an error a case provokes is that case's failure and not a crash of the run.
  const saved = {
    uncaughtException: process.listeners("uncaughtException"),
    unhandledRejection: process.listeners("unhandledRejection"),
  };
  for (const ev of ["uncaughtException", "unhandledRejection"] as const) {
    process.removeAllListeners(ev);
    process.on(ev, onEscape);
  }
  const heap0 = process.memoryUsage().heapUsed;
  const t0 = performance.now();
  try {
    for (let i = 0; i < opts.cases; i++) {
      const seed = (opts.seed + i) >>> 0;
      const problems: string[] = [];
      try {
        await body({ rng: new Rng(seed), rec, seed });
      } catch (e) {
        problems.push(`threw: ${describe(e)}`);
      }
      await new Promise<void>((r) => setImmediate(r));
      for (const e of escaped.splice(0)) problems.push(`uncaught: ${describe(e)}`);
      problems.push(...rec.takeViolations());
      if (problems.length > 0 && rec.failures.length < 100) rec.failures.push({ seed, message: problems.join("; ") });
      if ((i & 0x3ff) === 0x3ff) rec.max("heapGrowthBytes", process.memoryUsage().heapUsed - heap0);
    }
  } finally {
    for (const ev of ["uncaughtException", "unhandledRejection"] as const) {
      process.off(ev, onEscape);
      for (const l of saved[ev]) process.on(ev, l as (...a: unknown[]) => void);
    }
  }
  rec.max("heapGrowthBytes", process.memoryUsage().heapUsed - heap0);
  return {
    name,
    cases: opts.cases,
    failures: rec.failures,
    ops: rec.ops,
    states: rec.states,
    maxima: rec.maxima,
    bounds: rec.bounds,
    ms: performance.now() - t0,
  };
}

function describe(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return String(e);
}

const GUARD = 4096;
const GUARD_BYTE = 0xa5;

/**
 * Guest RAM with guard bytes on both sides inside the same host buffer: a device that reads or
 * writes outside RAM through a raw view (not through GuestMemory's checks) lands in a guard, and
 * `checkGuards` reports it. Reads cannot be seen this way; the guards catch writes.
 */
export class GuardedMemory {
  readonly mem: GuestMemory;
  private readonly backing: Buffer;
  constructor(
    readonly size: number,
    readonly base = 0,
  ) {
    this.backing = Buffer.alloc(size + 2 * GUARD, GUARD_BYTE);
    const ram = this.backing.subarray(GUARD, GUARD + size);
    ram.fill(0);
    this.mem = new GuestMemory([{ guestAddr: base, bytes: ram }]);
  }
  /** Reports a write outside guest RAM (a changed guard byte) as a violation, then re-arms. */
  checkGuards(rec: Recorder): void {
    for (const [from, to] of [
      [0, GUARD],
      [GUARD + this.size, 2 * GUARD + this.size],
    ] as const) {
      for (let i = from; i < to; i++) {
        if (this.backing[i] !== GUARD_BYTE) {
          rec.violate(`write outside guest RAM at host offset ${i - GUARD} of RAM`);
          this.backing.fill(GUARD_BYTE, from, to);
          break;
        }
      }
    }
  }
}

/** One line per quantity: a report as `npm run fuzz` prints it. */
export function formatReport(r: FuzzReport): string {
  const rate = r.ms > 0 ? Math.round((r.cases / r.ms) * 1000) : 0;
  const lines = [`${r.name}: ${r.cases} cases, ${rate} cases/s, ${r.failures.length} failures`];
  const fmt = (o: Record<string, number>): string =>
    Object.entries(o)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}=${v}`)
      .join(" ");
  lines.push(`  ops:    ${fmt(r.ops)}`);
  lines.push(`  states: ${fmt(r.states)}`);
  lines.push(
    `  maxima: ${Object.entries(r.maxima)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => (r.bounds[k] !== undefined ? `${k}=${v} (bound ${r.bounds[k]})` : `${k}=${v}`))
      .join(" ")}`,
  );
  for (const f of r.failures.slice(0, 10)) lines.push(`  FAIL seed=${f.seed}: ${f.message}`);
  return lines.join("\n");
}
