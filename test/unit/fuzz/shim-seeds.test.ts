// Seeds on which the shim-side fuzzers once found a defect, replayed alone: each stays fixed.
import assert from "node:assert/strict";
import { test } from "node:test";
import { fuzzer as agentResponses } from "../../fuzz/agent-responses.fuzz.ts";
import { fuzzer as handshakes } from "../../fuzz/handshakes.fuzz.ts";

const SEEDS: Array<[typeof agentResponses, number, string]> = [
  [agentResponses, 2, "an agent's error code 17 reached containerd as is"],
  [agentResponses, 4, "an agent's error message kept its control characters"],
  [agentResponses, 16, "StatsContainer without metrics gave null (a TypeError in Stats)"],
  [handshakes, 8, "a stdio answer line reached containerd with its control characters"],
  [handshakes, 32, "the agent attached stdio for an empty container id"],
];

for (const [f, seed, what] of SEEDS) {
  test(`${f.name} seed ${seed}: ${what}`, async () => {
    const r = await f.run({ seed, cases: 1 });
    assert.deepEqual(r.failures, []);
  });
}
