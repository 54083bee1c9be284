// Every fuzzer in test/fuzz/ for a bounded number of cases (seconds each): no case may fail — no
// uncaught error, no write outside guest RAM, every bounded quantity (queues, requests in flight,
// descriptors per synchronous turn) within its documented bound. The seed is fixed so CI is
// deterministic; COVE_FUZZ_SEED / COVE_FUZZ_CASES explore further.
import assert from "node:assert/strict";
import { basename } from "node:path";
import { describe, it } from "node:test";
import { formatReport } from "../../fuzz/fuzz.ts";
import { fuzzerFiles, loadFuzzers } from "../../fuzz/registry.ts";

const seed = Number(process.env.COVE_FUZZ_SEED ?? 1);
const cases = Number(process.env.COVE_FUZZ_CASES ?? 3000);

describe("fuzzers", async () => {
  const fuzzers = await loadFuzzers();
  it("every test/fuzz/*.fuzz.ts exports a named fuzzer", () => {
    assert.equal(fuzzers.length, fuzzerFiles().length);
    for (const [i, f] of fuzzers.entries()) assert.ok(f.name, `${basename(fuzzerFiles()[i]!)} has no name`);
  });
  for (const f of fuzzers) {
    it(`${f.name}: ${cases} cases from seed ${seed}`, async () => {
      const r = await f.run({ seed, cases });
      console.log(formatReport(r));
      assert.equal(r.cases, cases);
      assert.deepEqual(r.failures, [], `failing seeds replay with run({ seed, cases: 1 })`);
      for (const [k, bound] of Object.entries(r.bounds)) assert.ok(r.maxima[k]! <= bound, `${k} within ${bound}`);
      assert.ok(Object.keys(r.ops).length > 0, "the fuzzer exercised some op");
    });
  }
});
