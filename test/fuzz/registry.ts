// Finds every fuzzer: each test/fuzz/<parser>.fuzz.ts exports `fuzzer: Fuzzer`.
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Fuzzer } from "./fuzz.ts";

export const FUZZ_DIR = dirname(fileURLToPath(import.meta.url));

export function fuzzerFiles(): string[] {
  return readdirSync(FUZZ_DIR)
    .filter((n) => n.endsWith(".fuzz.ts"))
    .sort()
    .map((n) => join(FUZZ_DIR, n));
}

export async function loadFuzzers(): Promise<Fuzzer[]> {
  const out: Fuzzer[] = [];
  for (const file of fuzzerFiles()) {
    const m = (await import(pathToFileURL(file).href)) as { fuzzer?: Fuzzer };
    if (!m.fuzzer) throw new Error(`${file} does not export fuzzer`);
    out.push(m.fuzzer);
  }
  return out;
}
