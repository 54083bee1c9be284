// The rate-limited log: the first lines of an interval pass, the rest become one count line.
import assert from "node:assert/strict";
import { it } from "node:test";
import { type LevelLogger, RateLimitedLog } from "../../../src/common/rate-limited-log.ts";

function capture(): { logger: LevelLogger; lines: { level: string; obj: object; msg: string }[] } {
  const lines: { level: string; obj: object; msg: string }[] = [];
  const at =
    (level: string) =>
    (obj: object, msg: string): void => {
      lines.push({ level, obj, msg });
    };
  return { logger: { error: at("error"), warn: at("warn"), info: at("info"), debug: at("debug") }, lines };
}

it("20,000 provoked lines become the burst plus one count per interval", () => {
  const { logger, lines } = capture();
  let now = 0;
  const log = new RateLimitedLog(logger, "warn", { burst: 5, intervalMs: 10_000, now: () => now });
  for (let i = 0; i < 20_000; i++) {
    log.log({ cid: i }, "wrong cid");
    now += 1; // 20 s in all: two intervals
  }
  log.close();
  // Interval 1: 5 lines; interval 2 starts with the summary of interval 1, then 5 lines; close sums up.
  assert.equal(lines.length, 5 + 1 + 5 + 1);
  assert.ok(lines.every((l) => l.level === "warn"));
  assert.deepEqual(lines[5]!.obj, { suppressed: 9_995, intervalMs: 10_000 });
  assert.match(lines[5]!.msg, /wrong cid \(9995 more suppressed\)/);
  assert.deepEqual(lines[11]!.obj, { suppressed: 9_995, intervalMs: 10_000 });
  assert.equal(log.pending, 0);
});

it("the count comes at the interval's end even when the flood stops", async () => {
  const { logger, lines } = capture();
  const log = new RateLimitedLog(logger, "error", { burst: 1, intervalMs: 20 });
  for (let i = 0; i < 3; i++) log.log({}, "reset loop");
  assert.equal(lines.length, 1);
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(lines.length, 2);
  assert.deepEqual(lines[1]!.obj, { suppressed: 2, intervalMs: 20 });
});
