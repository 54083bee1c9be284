// For `cove check`: does the containerd on this machine have the cove runtime configured, and under
// which CRI handler name(s)? Reads containerd's config the way containerd does: config version 2
// (1.6/1.7: `plugins."io.containerd.grpc.v1.cri".containerd.runtimes.<name>`) or version 3 (2.x:
// `plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.<name>`; 2.x also migrates a version
// 2 file on load), plus the files named by `imports`.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { parse } from "smol-toml";

export const COVE_RUNTIME_TYPE = "io.containerd.cove.v2";
export const DEFAULT_CONTAINERD_CONFIG = "/etc/containerd/config.toml";

type Table = Record<string, unknown>;
const isTable = (v: unknown): v is Table => typeof v === "object" && v !== null && !Array.isArray(v);
const at = (t: unknown, ...keys: string[]): unknown =>
  keys.reduce<unknown>((v, k) => (isTable(v) ? v[k] : undefined), t);

export interface ContainerdRuntimeConfig {
  /** The config version the file declares (1 when absent, as containerd reads it). */
  version: number;
  /** CRI handler names whose runtime_type is cove's (what a RuntimeClass `handler` must say). */
  handlers: string[];
  /** Files read: the config and its imports. */
  files: string[];
}

/** The CRI runtime tables of one parsed config, whatever its version. */
function runtimeTables(doc: Table): Table[] {
  return [
    at(doc, "plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes"),
    at(doc, "plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes"),
    at(doc, "plugins", "cri", "containerd", "runtimes"), // version 1
  ].filter(isTable);
}

/** An `imports` entry: a path, or a glob whose last component has `*` (as containerd allows). */
function expandImport(pattern: string, base: string): string[] {
  const p = resolve(base, pattern);
  if (!basename(p).includes("*")) return existsSync(p) ? [p] : [];
  const dir = dirname(p);
  const re = new RegExp(
    `^${basename(p)
      .replace(/[.+?^${}()|[\]\\]/g, "\\$&")
      .replace(/\*/g, ".*")}$`,
  );
  try {
    return readdirSync(dir)
      .filter((f) => re.test(f))
      .sort()
      .map((f) => join(dir, f));
  } catch {
    return [];
  }
}

/** Reads a containerd config (and its imports) and finds the handlers that run cove. */
export function coveRuntimeConfig(
  path: string,
  read = (p: string) => readFileSync(p, "utf8"),
): ContainerdRuntimeConfig {
  const doc = parse(read(path)) as Table;
  const version = typeof doc.version === "number" ? doc.version : 1;
  const files = [path];
  const docs = [doc];
  const imports = Array.isArray(doc.imports) ? doc.imports.filter((i): i is string => typeof i === "string") : [];
  for (const imp of imports) {
    for (const f of expandImport(imp, dirname(path))) {
      files.push(f);
      docs.push(parse(read(f)) as Table);
    }
  }
  const handlers = new Set<string>();
  for (const d of docs) {
    for (const table of runtimeTables(d)) {
      for (const [name, rt] of Object.entries(table)) {
        if (at(rt, "runtime_type") === COVE_RUNTIME_TYPE) handlers.add(name);
      }
    }
  }
  return { version, handlers: [...handlers].sort(), files };
}

/** "containerd github.com/containerd/containerd/v2 2.1.9 …" → "2.1.9" (undefined when it cannot tell). */
export function containerdVersion(binary: string): string | undefined {
  const r = spawnSync(binary, ["--version"], { encoding: "utf8", timeout: 10_000 });
  const m = /^containerd\s+\S+\s+v?(\d+\.\d+\.\d+)/.exec(r.stdout ?? "");
  return m?.[1];
}
