// `npm run bench`: runs every test/bench/*.bench.ts in turn (each prints its own side-by-side table
// and writes bench-results/<name>.json). `npm run bench -- ttrpc` runs only files whose name matches.
import { spawnSync } from "node:child_process";
import { mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";

const filter = process.argv.slice(2);
const dir = "test/bench";
const files = readdirSync(dir)
  .filter((f) => f.endsWith(".bench.ts"))
  .filter((f) => filter.length === 0 || filter.some((x) => f.includes(x)))
  .sort();
mkdirSync("bench-results", { recursive: true });
let failed = 0;
for (const f of files) {
  console.log(`\n=== ${f} ===`);
  const r = spawnSync(process.execPath, ["--import", "tsx", join(dir, f)], { stdio: "inherit" });
  if (r.status !== 0) {
    failed++;
    console.log(`!!! ${f} exited with ${r.status ?? r.signal}`);
  }
}
console.log(`\n${files.length - failed} benchmark files ran, ${failed} failed; JSON in bench-results/`);
process.exit(failed ? 1 : 0);
