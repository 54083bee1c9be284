// Loads the native addon (build/Release/cove_native.node) once. Each area of the addon has a
// typed wrapper module next to this file; nothing else should call load() directly.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

// Works from source (ESM under tsx) and from the esbuild CJS bundles in dist/.
const here: string = typeof __filename !== "undefined" ? dirname(__filename) : dirname(fileURLToPath(import.meta.url));

export const ADDON_FILE = "cove_native.node";

/** Where the addon may be: $COVE_NATIVE, beside a bundle (the guest image), or the node-gyp output. */
export function addonCandidates(): string[] {
  const c: string[] = [];
  if (process.env.COVE_NATIVE) c.push(process.env.COVE_NATIVE);
  c.push(join(here, ADDON_FILE));
  c.push(join(here, "..", "build", "Release", ADDON_FILE));
  c.push(join(here, "..", "..", "build", "Release", ADDON_FILE));
  return c;
}

let cached: Record<string, unknown> | undefined;

export function load(): Record<string, unknown> {
  if (cached) return cached;
  const candidates = addonCandidates();
  const path = candidates.find((p) => existsSync(p));
  if (!path) {
    throw new Error(
      `cove native addon not found (looked in ${candidates.join(", ")}); run \`npm ci\` or \`npx node-gyp rebuild\``,
    );
  }
  const req = createRequire(join(here, "index.js"));
  cached = req(path) as Record<string, unknown>;
  return cached;
}

/** A typed accessor for one exported function; throws a clear error if the addon lacks it. */
export function fn<T extends (...args: never[]) => unknown>(name: string): T {
  const f = load()[name];
  if (typeof f !== "function") throw new Error(`cove native addon has no function ${name}; rebuild it`);
  return f as T;
}
