// Test setup: fetches (once; cached under $COVE_CACHE_DIR/containerd) every containerd version the
// end-to-end tests run against, and checks that each runs here. Exits non-zero, naming the version,
// when one cannot be fetched. Used by .ci/run before `npm test`.
//
//   node --import tsx test/harness/fetch-containerd.ts [1.7,2.1 | all]
import { spawnSync } from "node:child_process";
import { containerdVersionsFrom, ensureContainerd } from "./containerd-versions.ts";

let failed = false;
for (const v of containerdVersionsFrom(process.argv[2] ?? process.env.COVE_CONTAINERD_VERSIONS)) {
  try {
    const b = await ensureContainerd(v);
    const r = spawnSync(b.containerd, ["--version"], { encoding: "utf8", timeout: 30_000 });
    if (r.status !== 0) throw new Error(`${b.containerd} --version failed: ${r.stderr || r.error?.message}`);
    process.stdout.write(`containerd ${v.version}: ${r.stdout.trim()} (${b.binDir})\n`);
  } catch (e) {
    failed = true;
    process.stderr.write(`!!! containerd ${v.version}: ${(e as Error).message}\n`);
  }
}
process.exit(failed ? 1 : 0);
