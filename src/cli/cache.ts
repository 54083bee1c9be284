// `cove cache ls | prune | gc`: the layer image cache (<cache_dir>/layers) as the shims keep it
// (src/rootfs/cache-gc.ts): each image's size, last use and the pods using it; removing what no
// running pod uses.

import { parseArgs } from "node:util";
import { errorMessage } from "../common/errors.ts";
import type { CoveConfig } from "../config/config.ts";
import { type CacheEntry, collectLayers, type GcReport, GIB, listCache } from "../rootfs/cache-gc.ts";
import { layersDir } from "../rootfs/layers.ts";
import { type Command, UsageError } from "./command.ts";
import { effectiveConfig } from "./effective-config.ts";
import { formatTable } from "./table.ts";

interface CacheArgs {
  json?: boolean;
  "dry-run"?: boolean;
  config?: string;
  "cache-dir"?: string;
}

function parse(args: string[], extra: Record<string, { type: "boolean" }>): CacheArgs {
  try {
    return parseArgs({
      args,
      options: { config: { type: "string" }, "cache-dir": { type: "string" }, ...extra },
      strict: true,
    }).values as CacheArgs;
  } catch (e) {
    throw new UsageError(errorMessage(e));
  }
}

function configOf(v: CacheArgs): { layers: string; config: CoveConfig } {
  const { config } = effectiveConfig(v.config ? { configPath: v.config } : {});
  return { layers: layersDir(v["cache-dir"] ?? config.cacheDir), config };
}

export function formatBytes(n: number): string {
  if (n >= GIB) return `${(n / GIB).toFixed(1)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  return `${Math.ceil(n / 1024)} KiB`;
}

export function formatAge(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s}s ago`;
  if (s < 7200) return `${Math.round(s / 60)}m ago`;
  if (s < 172800) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

export function formatEntries(entries: CacheEntry[], now = Date.now()): string {
  const head = ["IMAGE", "SIZE", "LAST USE", "USERS", "SOURCE"];
  const rows = entries.map((e) => [
    e.key,
    formatBytes(e.bytes),
    formatAge(now - e.lastUse),
    e.users.length ? e.users.map((p) => p.slice(0, 12)).join(",") : "-",
    e.source?.snapshot ?? e.source?.dir ?? "(no record)",
  ]);
  const total = entries.reduce((s, e) => s + e.bytes, 0);
  const inUse = entries.filter((e) => e.users.length).length;
  return `${formatTable(head, rows)}${entries.length} image(s), ${formatBytes(total)}, ${inUse} in use\n`;
}

function formatReport(r: GcReport, dryRun: boolean): string {
  const verb = dryRun ? "would remove" : "removed";
  const lines = r.removed.map((x) =>
    `${verb} ${x.key}  ${formatBytes(x.bytes)}  ${x.reason}  ${x.source ?? ""}`.trimEnd(),
  );
  const freed = r.removed.reduce((s, x) => s + x.bytes, 0);
  lines.push(
    `${verb} ${r.removed.length} image(s), ${formatBytes(freed)}; left ${r.images} image(s), ${formatBytes(r.bytes)}, ${r.inUse} in use` +
      (r.leftovers ? `; ${r.leftovers} leftover file(s) of crashed processes removed` : "") +
      (r.busy ? `; ${r.busy} skipped (being converted or taken)` : "") +
      (r.timedOut ? "; stopped at the time limit" : ""),
  );
  return `${lines.join("\n")}\n`;
}

const COMMON = `  --config FILE   the cove config to read cache_dir from (default: what the shim reads)
  --cache-dir DIR  this cache dir instead`;

export const cacheLsCommand: Command = {
  path: ["cache", "ls"],
  summary: "list the layer image cache: size, last use and the pods using each image",
  usage: `cove cache ls [--json] [--config FILE] [--cache-dir DIR]

Lists the erofs layer images in <cache_dir>/layers, least recently used first: key, size on disk,
when a pod last took it from the cache, the pods using it now, and the snapshot (chain ID) or
directory it was made from.

  --json          the entries as a JSON array
${COMMON}`,
  async run(args) {
    const v = parse(args, { json: { type: "boolean" } });
    const { entries } = listCache(configOf(v).layers);
    process.stdout.write(v.json ? `${JSON.stringify(entries, null, 2)}\n` : formatEntries(entries));
    return 0;
  },
};

export const cachePruneCommand: Command = {
  path: ["cache", "prune"],
  summary: "remove every layer image no running pod uses",
  usage: `cove cache prune [--dry-run] [--config FILE] [--cache-dir DIR]

Removes every layer image in <cache_dir>/layers that no running pod uses (images in use are never
removed), and what crashed processes left. Images are made again when a pod needs them.

  --dry-run       list what would be removed, remove nothing
${COMMON}`,
  async run(args) {
    const v = parse(args, { "dry-run": { type: "boolean" } });
    const { layers } = configOf(v);
    const r = await collectLayers(layers, {
      maxBytes: 0,
      allUnused: true,
      dryRun: !!v["dry-run"],
      deadlineMs: 600_000,
    });
    process.stdout.write(formatReport(r, !!v["dry-run"]));
    return 0;
  },
};

export const cacheGcCommand: Command = {
  path: ["cache", "gc"],
  summary: "collect the layer image cache as the shims do: gone content, then [cache] max_layers_gib",
  usage: `cove cache gc [--dry-run] [--config FILE] [--cache-dir DIR]

Runs the pass a shim runs after each conversion: removes unused images whose snapshot containerd no
longer has, then unused images least recently used first while the cache is over
[cache] max_layers_gib. Images in use are never removed.

  --dry-run       list what would be removed, remove nothing
${COMMON}`,
  async run(args) {
    const v = parse(args, { "dry-run": { type: "boolean" } });
    const { layers, config } = configOf(v);
    const r = await collectLayers(layers, {
      maxBytes: config.cache.maxLayersGib * GIB,
      dryRun: !!v["dry-run"],
      deadlineMs: 600_000,
    });
    process.stdout.write(formatReport(r, !!v["dry-run"]));
    return 0;
  },
};
