// `npm run fuzz [-- --seed N --cases N [name...]]`: runs every fuzzer in test/fuzz/ (or the named
// ones) for ≥ 10⁶ cases by default and prints, per fuzzer, cases per second, failures (with the
// seed that replays each), how often each op and state was reached, and the maximum of every
// bounded quantity. Exits 1 if any case failed. Not a test: CI runs a bounded number of cases
// through test/unit/fuzz/fuzzers.test.ts.
import { formatReport } from "../test/fuzz/fuzz.ts";
import { loadFuzzers } from "../test/fuzz/registry.ts";

const args = process.argv.slice(2);
let seed = Date.now() % 2 ** 31;
let cases = 1_000_000;
const names: string[] = [];
for (let i = 0; i < args.length; i++) {
  const a = args[i]!;
  if (a === "--seed") seed = Number(args[++i]);
  else if (a === "--cases") cases = Number(args[++i]);
  else names.push(a);
}
if (!Number.isSafeInteger(seed) || !Number.isSafeInteger(cases) || cases <= 0) {
  console.error("usage: npm run fuzz -- [--seed N] [--cases N] [fuzzer name...]");
  process.exit(2);
}
const fuzzers = (await loadFuzzers()).filter((f) => names.length === 0 || names.includes(f.name));
if (fuzzers.length === 0) {
  console.error(`no fuzzer matches ${names.join(", ")}`);
  process.exit(2);
}
console.log(`fuzz: seed=${seed} cases=${cases} per fuzzer (replay with --seed ${seed})`);
let failed = 0;
for (const f of fuzzers) {
  const r = await f.run({ seed, cases });
  failed += r.failures.length;
  console.log(formatReport(r));
}
process.exit(failed > 0 ? 1 : 0);
