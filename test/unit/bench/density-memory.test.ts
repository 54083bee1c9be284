// The density bench's readings (test/bench/density-memory.ts): the guest's meminfo split and the
// agent found as PID 1; a process's PSS/USS with guest RAM apart, on this test's own process.
import assert from "node:assert/strict";
import { test } from "node:test";
import { descendants, parseGuestMem, procMem } from "../../bench/density-memory.ts";

test("guest meminfo: used = total − free, split into cache, anon and kernel; PID 1 is the agent", () => {
  const out = [
    "MemTotal:         243880 kB",
    "MemFree:          153768 kB",
    "MemAvailable:     190000 kB",
    "Buffers:            1024 kB",
    "Cached:            51712 kB",
    "AnonPages:         18432 kB",
    "proc 1 node 5632 30000",
    "proc 57 cove-holder 120 300",
    "proc 80 sleep 100 800",
    "proc 91 sh 200 900",
    "junk line",
  ].join("\n");
  const g = parseGuestMem(out, ["sleep", "sh"]);
  assert.equal(g.total, 243880 / 1024);
  assert.equal(g.used, (243880 - 153768) / 1024);
  assert.equal(g.cache, (51712 + 1024) / 1024);
  assert.equal(g.anon, 18);
  assert.equal(g.kernel, g.used - g.cache - g.anon);
  assert.equal(g.agentAnon, 5.5);
  assert.equal(g.otherSystemAnon, 120 / 1024, "the container's own processes are not the guest's");
  assert.ok(Number.isNaN(parseGuestMem("MemTotal: 1 kB", []).agentAnon), "no agent seen: NaN");
});

test("procMem: this process has PSS ≥ USS > 0 and no guest RAM; a gone process reads zeros", () => {
  const m = procMem(process.pid);
  assert.ok(m.uss > 0 && m.pss >= m.uss, JSON.stringify(m));
  assert.equal(m.guest, 0);
  assert.deepEqual(procMem(2 ** 22 + 1), { pss: 0, uss: 0, guest: 0 });
  assert.deepEqual(descendants(2 ** 22 + 1), []);
});
