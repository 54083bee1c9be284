// The shim's side of the guest's log stream: line framing with a bound, parsing (levels, ids,
// escaping), the line budget that stops reading instead of buffering, and the kernel command line.
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { test } from "node:test";
import {
  agentCmdlineParams,
  GuestLogReader,
  LOG_DETAIL_MAX,
  LOG_MSG_MAX,
  parseGuestLogLine,
  type RecordLogger,
} from "../../../src/sandbox/agent/guest-log.ts";
import { MAX_LOG_LINE } from "../../../src/sandbox/agent/log-format.ts";

type Line = { level: string; obj: Record<string, unknown>; msg: string };

function capture(): { out: RecordLogger; lines: Line[] } {
  const lines: Line[] = [];
  const at = (level: string) => (obj: object, msg: string) => {
    lines.push({ level, obj: obj as Record<string, unknown>, msg });
  };
  return { out: { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") }, lines };
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: looking for control characters
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e]/;

test("agent and kernel lines: level, message, container and exec ids, the rest as escaped detail", () => {
  const a = parseGuestLogLine(
    JSON.stringify({
      level: 30,
      time: 1,
      pid: 1,
      name: "cove-agent",
      msg: "container started",
      container: "c1",
      pid2: 5,
    }),
  );
  assert.deepEqual(a, {
    source: "agent",
    level: "info",
    msg: "container started",
    container: "c1",
    detail: '{"pid2":5}',
  });
  const k = parseGuestLogLine(JSON.stringify({ level: 40, src: "kernel", msg: "oom", kseq: 3, kusec: 9 }));
  assert.deepEqual(k, { source: "kernel", level: "warn", msg: "oom", detail: '{"kseq":3,"kusec":9}' });
  // A guest cannot log above error, nor below debug; odd levels are info.
  assert.equal(parseGuestLogLine('{"level":60,"msg":"x"}').level, "error");
  assert.equal(parseGuestLogLine('{"level":10,"msg":"x"}').level, "debug");
  assert.equal(parseGuestLogLine('{"level":"fatal","msg":"x"}').level, "info");
  // Ids that are not ids are dropped (they stay visible in nothing the shim trusts).
  const bad = parseGuestLogLine(JSON.stringify({ level: 30, msg: "m", container: "../x", exec: "a".repeat(200) }));
  assert.equal(bad.container, undefined);
  assert.equal(bad.exec, undefined);
});

test("control characters are escaped and every field is bounded", () => {
  const r = parseGuestLogLine(
    JSON.stringify({ level: 50, msg: `\u001b[31mred\u202e${"m".repeat(5000)}`, x: `\u0007${"d".repeat(9000)}` }),
  );
  assert.ok(!CONTROL.test(r.msg), r.msg.slice(0, 40));
  assert.ok(r.msg.startsWith("\\x1b[31mred\\u202e"));
  assert.ok(r.msg.length <= LOG_MSG_MAX);
  assert.ok(r.detail && r.detail.length <= LOG_DETAIL_MAX && !CONTROL.test(r.detail));
  const junk = parseGuestLogLine("\u0000not json\u001b]0;title\u0007");
  assert.equal(junk.malformed, true);
  assert.equal(junk.level, "warn");
  assert.ok(!CONTROL.test(junk.msg));
  assert.equal(parseGuestLogLine("[1,2]").malformed, true);
  assert.equal(parseGuestLogLine("null").malformed, true);
});

test("lines split across chunks, several in one chunk, an over-long line cut and its rest skipped", () => {
  const { out, lines } = capture();
  const r = new GuestLogReader(out);
  const l1 = JSON.stringify({ level: 30, msg: "one" });
  const l2 = JSON.stringify({ level: 40, msg: "two", container: "c" });
  const text = Buffer.from(`${l1}\n${l2}\n`);
  for (const b of text) assert.equal(r.accept(Buffer.from([b])), true);
  assert.deepEqual(
    lines.map((l) => [l.level, l.msg, l.obj.container]),
    [
      ["info", "one", undefined],
      ["warn", "two", "c"],
    ],
  );
  lines.length = 0;
  // A line that never ends: cut at MAX_LOG_LINE, everything up to the next newline skipped.
  for (let i = 0; i < 10; i++) r.accept(Buffer.alloc(4096, 0x41));
  assert.ok(r.held <= MAX_LOG_LINE, `held ${r.held}`);
  r.accept(Buffer.from(`AAAA\n${l1}\n`));
  assert.equal(lines.length, 2);
  assert.equal(lines[0]!.obj.cut, true);
  assert.equal(lines[0]!.msg.length, LOG_MSG_MAX);
  assert.equal(lines[1]!.msg, "one");
  assert.equal(r.counts.cut, 1);
  // Empty lines say nothing.
  lines.length = 0;
  r.accept(Buffer.from("\n\n\n"));
  assert.equal(lines.length, 0);
  r.close();
});

test("over the budget the reader stops reading (the stream is paused) and goes on when it refills", async () => {
  const { out, lines } = capture();
  let now = 0;
  const r = new GuestLogReader(out, { rate: 1000, burst: 100, now: () => now });
  const s = new PassThrough();
  r.attach(s);
  const line = `${JSON.stringify({ level: 30, msg: "flood" })}\n`;
  // 1000 lines in one write: the budget (100 tokens, each line 1, keeping room for a longest line) lets
  // about 67 through, then the stream is paused.
  s.write(line.repeat(1000));
  await new Promise((res) => setImmediate(res));
  const first = lines.filter((l) => l.msg === "flood").length;
  assert.ok(first > 50 && first < 100, `${first} lines before the pause`);
  assert.equal(s.isPaused(), true);
  assert.ok(r.counts.throttled >= 1);
  assert.ok(lines.some((l) => l.level === "warn" && /over its budget/.test(l.msg)));
  assert.ok(r.held <= line.length * 1000);
  // Time passes: the rest comes, at the budget's pace, and the stream resumes.
  for (let i = 0; i < 40 && lines.filter((l) => l.msg === "flood").length < 1000; i++) {
    now += 100;
    await new Promise((res) => setTimeout(res, 110));
  }
  assert.equal(lines.filter((l) => l.msg === "flood").length, 1000);
  assert.equal(s.isPaused(), false);
  r.close();
  assert.equal(s.destroyed, true);
});

test("at most linesPerTurn lines in one event-loop turn", async () => {
  const { out, lines } = capture();
  const r = new GuestLogReader(out, { linesPerTurn: 10, burst: 1e9, rate: 1e9 });
  assert.equal(r.accept(Buffer.from('{"msg":"x"}\n'.repeat(35))), false);
  assert.equal(lines.length, 10);
  await new Promise((res) => setImmediate(res));
  assert.equal(lines.length, 20);
  await new Promise((res) => setTimeout(res, 20));
  assert.equal(lines.length, 35);
  r.close();
});

test("the agent's kernel command line parameters", () => {
  assert.equal(agentCmdlineParams("debug", false), "cove.log_level=debug");
  assert.equal(agentCmdlineParams("warn", true), "cove.log_level=warn cove.debug_console=1");
  assert.equal(agentCmdlineParams("silent", false), "cove.log_level=info");
});
