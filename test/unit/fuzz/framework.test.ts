// The fuzz framework itself: seeds replay, escaped errors and violations become failures with the
// seed of the case that caused them, guards catch writes outside guest RAM.
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { it } from "node:test";
import { GuardedMemory, Rng, runCases } from "../../fuzz/fuzz.ts";

it("the same seed gives the same sequence", () => {
  const a = new Rng(42);
  const b = new Rng(42);
  for (let i = 0; i < 100; i++) assert.equal(a.u32(), b.u32());
  assert.notEqual(new Rng(1).u32(), new Rng(2).u32());
});

it("an unhandled 'error' on the next tick is a failure of the case that emitted it, and replays", async () => {
  const body = ({ rng }: { rng: Rng }): void => {
    if (rng.int(10) === 3) {
      const e = new EventEmitter();
      process.nextTick(() => e.emit("error", new Error("boom")));
    }
  };
  const r = await runCases("t", { seed: 7, cases: 200 }, body);
  assert.ok(r.failures.length > 0);
  for (const f of r.failures) {
    assert.match(f.message, /uncaught: Error: boom/);
    const again = await runCases("t", { seed: f.seed, cases: 1 }, body);
    assert.equal(again.failures.length, 1, `seed ${f.seed} replays`);
  }
});

it("a bound exceeded is a failure; the maximum is reported", async () => {
  const r = await runCases("t", { seed: 1, cases: 10 }, ({ rec, seed }) => {
    rec.op("x");
    rec.bounded("queue", seed === 5 ? 17 : 3, 16);
  });
  assert.deepEqual(
    r.failures.map((f) => f.seed),
    [5],
  );
  assert.equal(r.maxima.queue, 17);
  assert.equal(r.bounds.queue, 16);
  assert.equal(r.ops.x, 10);
});

it("guards catch a write outside guest RAM", async () => {
  const g = new GuardedMemory(4096);
  const r = await runCases("t", { seed: 1, cases: 2 }, ({ rec, seed }) => {
    const ram = g.mem.slice(0, 16);
    if (seed === 2) Buffer.from(ram.buffer, ram.byteOffset + 4096, 1)[0] = 0;
    g.checkGuards(rec);
  });
  assert.deepEqual(
    r.failures.map((f) => f.seed),
    [2],
  );
});
