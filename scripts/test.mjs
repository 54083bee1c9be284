// Runs every test file under test/ with node:test through tsx: unit tests first, then integration
// tests, one file at a time (integration tests share containerd, QEMU and /run/containerd/s).
// `npm test -- <file|dir>...` runs only those. Before integration tests it runs
// scripts/test-setup.sh (test tools, nested host kernel, containerd versions; cached, quick when
// done); COVE_SKIP_TEST_SETUP=1 skips that.
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join, sep } from "node:path";

function collect(dir) {
  let out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out = out.concat(collect(p));
    else if (name.endsWith(".test.ts")) out.push(p);
  }
  return out;
}

const args = process.argv.slice(2);
const roots = args.length ? args : ["test/unit", "test/integration"];
const files = roots.flatMap((r) => (statSync(r).isDirectory() ? collect(r) : [r]));
if (files.length === 0) {
  console.error("no test files found under", roots.join(", "));
  process.exit(1);
}
if (files.some((f) => f.split(sep).includes("integration")) && process.env.COVE_SKIP_TEST_SETUP !== "1") {
  const setup = spawnSync("bash", ["scripts/test-setup.sh"], { stdio: "inherit" });
  if (setup.status !== 0) {
    console.error(`scripts/test-setup.sh failed (${setup.status ?? setup.signal}): the tests need what it installs`);
    process.exit(1);
  }
}
const r = spawnSync(
  process.execPath,
  ["--import", "tsx", "--test", "--test-concurrency=1", "--test-reporter=spec", ...files],
  { stdio: "inherit" },
);
process.exit(r.status ?? 1);
