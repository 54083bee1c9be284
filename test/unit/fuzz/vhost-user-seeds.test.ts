// Seeds on which the vhost-user fuzzer found defects, replayed one case each: 2915 (a memory
// table replaced while running, whose new table did not hold the rings: the rebuild threw before
// the old mappings were released, leaving them to the garbage collector).
import assert from "node:assert/strict";
import { it } from "node:test";
import { fuzzer } from "../../fuzz/vhost-user.fuzz.ts";

for (const seed of [2915]) {
  it(`vhost-user fuzz seed ${seed} passes`, async () => {
    const r = await fuzzer.run({ seed, cases: 1 });
    assert.deepEqual(r.failures, []);
  });
}
