// Seeds on which the fuzzers of the shim↔agent boundary once found a defect, replayed alone: each
// stays fixed.
import assert from "node:assert/strict";
import { test } from "node:test";
import { fuzzer as agentResponses } from "../../fuzz/agent-responses.fuzz.ts";
import { fuzzer as handshakes } from "../../fuzz/handshakes.fuzz.ts";
import { fuzzer as specRewrite } from "../../fuzz/spec-rewrite.fuzz.ts";
import { fuzzer as syncFiles } from "../../fuzz/sync-files.fuzz.ts";

const SEEDS: Array<[typeof agentResponses, number, string]> = [
  [agentResponses, 2, "an agent's error code 17 reached containerd as is"],
  [agentResponses, 4, "an agent's error message kept its control characters"],
  [agentResponses, 16, "StatsContainer without metrics gave null (a TypeError in Stats)"],
  [handshakes, 8, "a stdio answer line reached containerd with its control characters"],
  [handshakes, 32, "the agent attached stdio for an empty container id"],
  [syncFiles, 109, "a component over NAME_MAX bytes failed half-way through (ENAMETOOLONG)"],
  [syncFiles, 175, "chown after chmod cleared a file's set-user-ID bit"],
  [syncFiles, 219, "a symlink target of PATH_MAX bytes failed half-way through"],
  [specRewrite, 15, "an own toString that is no function made the rewrite throw a TypeError"],
];

for (const [f, seed, what] of SEEDS) {
  test(`${f.name} seed ${seed}: ${what}`, async () => {
    const r = await f.run({ seed, cases: 1 });
    assert.deepEqual(r.failures, []);
  });
}
