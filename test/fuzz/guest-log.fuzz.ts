// The shim's reader of the guest's log stream (src/sandbox/agent/guest-log.ts) as a hostile guest
// drives it: chunks split anywhere, agent-shaped and kernel-shaped JSON lines with hostile fields
// (control characters, bidi overrides, huge values, odd levels, bad ids, __proto__ keys, deep
// nesting), lines that never end, raw garbage, floods — with a fake clock and the reader's deferred
// work run by hand, so every case is deterministic.
// Invariants on every case: no uncaught error; held bytes within one chunk plus MAX_LOG_LINE; at
// most linesPerTurn lines per turn; lines written within the budget (burst + rate × time); every
// written message and detail bounded and free of control characters; ids are ids; levels mapped.
import { GuestLogReader, LOG_DETAIL_MAX, LOG_MSG_MAX, type RecordLogger } from "../../src/sandbox/agent/guest-log.ts";
import { MAX_LOG_LINE } from "../../src/sandbox/agent/log-format.ts";
import { type CaseContext, type Fuzzer, type Rng, runCases } from "./fuzz.ts";

// biome-ignore lint/suspicious/noControlCharactersInRegex: looking for control characters
const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;
const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,75}$/;
const MAX_CHUNK = 64 * 1024;
const RATE = 200;
const BURST = 400;
const PER_TURN = 32;

const NASTY = ["\u001b[2J", "\r", "\u0000", "\u202e", "\u2028", "\u0085", "\uffff", "\ud800", "é", '"', "\\", "\n"];

function nastyString(rng: Rng, max: number): string {
  let s = "";
  for (let n = rng.int(max); n > 0; n--) s += rng.chance(0.3) ? rng.pick(NASTY) : String.fromCharCode(32 + rng.int(95));
  return s;
}

function jsonLine(rng: Rng): string {
  const o: Record<string, unknown> = {};
  if (rng.chance(0.9)) o.level = rng.pick([10, 20, 30, 40, 50, 60, 70, -1, 1e308, "info", null]);
  if (rng.chance(0.9)) o.msg = rng.chance(0.05) ? "m".repeat(rng.int(MAX_LOG_LINE * 2)) : nastyString(rng, 80);
  if (rng.chance(0.3)) o.src = rng.pick(["kernel", "agent", "x"]);
  if (rng.chance(0.3)) o.container = rng.pick(["c1", "../etc", "a".repeat(100), nastyString(rng, 10), 5]);
  if (rng.chance(0.2)) o.exec = rng.pick(["e1", "", nastyString(rng, 10)]);
  if (rng.chance(0.2)) o.err = { message: nastyString(rng, 200), stack: nastyString(rng, 500) };
  if (rng.chance(0.05)) o.deep = JSON.parse("[".repeat(500) + "]".repeat(500));
  let text = JSON.stringify(o);
  if (rng.chance(0.05)) text = text.replace("{", '{"__proto__":{"polluted":1},"constructor":{"prototype":{"x":1}},');
  return text;
}

function piece(rng: Rng): Buffer {
  switch (rng.weighted({ json: 10, garbage: 2, endless: 1, empty: 1, flood: 1 })) {
    case "json":
      return Buffer.from(`${jsonLine(rng)}\n`);
    case "garbage":
      return rng.bytes(rng.int(600));
    case "endless": // a line that never ends (for a while)
      return Buffer.alloc(rng.range(MAX_LOG_LINE - 10, MAX_LOG_LINE * 3), 0x41);
    case "empty":
      return Buffer.from("\n".repeat(rng.int(50)));
    default: // many short lines at once
      return Buffer.from('{"level":30,"msg":"f"}\n'.repeat(rng.range(100, 2000)));
  }
}

function oneCase({ rng, rec }: CaseContext): void {
  let now = 0;
  let due: { fn: () => void; at: number } | undefined;
  let turnLines = 0;
  let written = 0;
  const check = (level: string) => (obj: object, msg: string) => {
    if (level !== "warn" || !("rate" in obj)) written++;
    turnLines++;
    const o = obj as Record<string, unknown>;
    rec.bounded("msgChars", msg.length, LOG_MSG_MAX);
    if (UNSAFE.test(msg)) rec.violate(`control character in msg ${JSON.stringify(msg.slice(0, 60))}`);
    if (typeof o.detail === "string") {
      rec.bounded("detailChars", o.detail.length, LOG_DETAIL_MAX);
      if (UNSAFE.test(o.detail)) rec.violate("control character in detail");
    }
    for (const k of ["container", "exec"])
      if (o[k] !== undefined && !(typeof o[k] === "string" && ID.test(o[k] as string))) rec.violate(`bad ${k} ${o[k]}`);
    rec.op(`write:${level}`);
  };
  const out: RecordLogger = { debug: check("debug"), info: check("info"), warn: check("warn"), error: check("error") };
  const reader = new GuestLogReader(out, {
    rate: RATE,
    burst: BURST,
    linesPerTurn: PER_TURN,
    now: () => now,
    defer: (fn, ms) => {
      if (due) rec.violate("two drains due at once");
      const d = { fn, at: now + ms };
      due = d;
      return {
        cancel: () => {
          if (due === d) due = undefined;
        },
      };
    },
  });
  let paused = false;
  let pending = Buffer.alloc(0);
  const turn = () => {
    rec.bounded("linesPerTurn", turnLines, PER_TURN + 1); // +1: the budget note
    turnLines = 0;
  };
  for (let n = rng.range(1, 40); n > 0; n--) {
    const op = rng.weighted({ data: 10, time: 3, run: 3 });
    rec.op(op);
    if (op === "data") {
      pending = Buffer.concat([pending, piece(rng)]);
      // The stream: paused means no chunk reaches the reader.
      while (!paused && pending.length > 0) {
        const size = Math.min(pending.length, rng.range(1, MAX_CHUNK));
        const chunk = pending.subarray(0, size);
        pending = pending.subarray(size);
        paused = !reader.accept(chunk);
        turn();
        rec.bounded("heldBytes", reader.held, MAX_CHUNK + MAX_LOG_LINE);
      }
    } else if (op === "time") {
      now += rng.pick([1, 10, 100, 1000, 10_000]);
    } else if (due && due.at <= now) {
      const d = due;
      due = undefined;
      d.fn();
      turn();
      // continue() resumes the stream when the chunk is used up.
      if (!due) paused = false;
      rec.bounded("heldBytes", reader.held, MAX_CHUNK + MAX_LOG_LINE);
    }
    rec.state(paused ? "paused" : "reading");
    // The budget: what was written never outruns burst + rate × elapsed (plus a longest line's room).
    rec.bounded("linesOverBudget", Math.max(0, written - (BURST + (now * RATE) / 1000)), 0);
  }
  reader.close();
  if (due) rec.violate("a drain still due after close");
}

export const fuzzer: Fuzzer = {
  name: "guest-log",
  run: (opts) => runCases("guest-log", opts, oneCase),
};
