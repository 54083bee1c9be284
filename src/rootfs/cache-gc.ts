// The layer cache's collector: which images <cache_dir>/layers holds, who uses them, and removing
// those nobody needs. The rules (docs/rootfs.md, "Removing images"):
//   - an image a live pod uses is never removed (cache-users.ts: a pod's flock says it lives);
//   - an unused image whose content is gone (containerd says it has no such snapshot any more, or
//     the directory it was keyed by is gone) is removed;
//   - while the cache is over [cache] max_layers_gib, unused images go, least recently used first;
//   - `cove cache prune` removes every unused image;
//   - what crashed processes left (a dead user, a stale lock, a conversion's temporary file, the
//     record of a removed image) is removed.
// Each removal takes the image's own lock without waiting (an image being converted or looked at is
// skipped) and reads the users again under it. A pass stops at its deadline.

import { readdirSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import { errorMessage } from "../common/errors.ts";
import { contentHeld, type LookupOpener, readSource, type SourceRecord, sourcePath } from "./cache-source.ts";
import { type LiveUser, liveUsers, tryAcquire, usersByKey } from "./cache-users.ts";
import { containerdLookup } from "./containerd.ts";

export const GIB = 1024 ** 3;

export interface CacheEntry {
  key: string;
  path: string;
  /** Bytes on disk (allocated blocks). */
  bytes: number;
  /** Last use (ms since the epoch): when a pod last took it from the cache, or it was made. */
  lastUse: number;
  /** Pods using it now. */
  users: string[];
  source?: SourceRecord;
}

export interface CacheListing {
  entries: CacheEntry[];
  users: LiveUser[];
}

const IMAGE = /^([0-9a-f]{24})\.erofs$/;

function entryOf(layers: string, key: string, users: Map<string, string[]>): CacheEntry | undefined {
  const path = join(layers, `${key}.erofs`);
  try {
    const st = statSync(path);
    return {
      key,
      path,
      bytes: st.blocks * 512,
      lastUse: st.mtimeMs,
      users: users.get(key) ?? [],
      source: readSource(path),
    };
  } catch {
    return undefined; // removed meanwhile
  }
}

/** The images in the cache, least recently used first, with their users (dead users are cleared). */
export function listCache(layers: string): CacheListing {
  const users = liveUsers(layers);
  const byKey = usersByKey(users);
  let names: string[] = [];
  try {
    names = readdirSync(layers);
  } catch {
    // no cache yet
  }
  const entries = names
    .map((n) => IMAGE.exec(n)?.[1])
    .filter((k): k is string => k !== undefined)
    .map((k) => entryOf(layers, k, byKey))
    .filter((e): e is CacheEntry => e !== undefined)
    .sort((a, b) => a.lastUse - b.lastUse);
  return { entries, users };
}

export interface GcOptions {
  /** [cache] max_layers_gib in bytes; 0: no size limit. */
  maxBytes: number;
  /** Remove every unused image (`cove cache prune`), not only those whose content is gone. */
  allUnused?: boolean;
  /** Stop after this long (ms); default 10 s. */
  deadlineMs?: number;
  /** Report, remove nothing. */
  dryRun?: boolean;
  /** How to ask containerd (tests). */
  open?: LookupOpener;
}

export type RemovalReason = "unused" | "content gone" | "over max_layers_gib";

export interface GcReport {
  removed: { key: string; bytes: number; reason: RemovalReason; source?: string }[];
  /** Files crashed processes left behind, removed. */
  leftovers: number;
  /** Images left, and their bytes. */
  images: number;
  bytes: number;
  inUse: number;
  /** Removals skipped: the image was locked (being converted or taken) or came into use meanwhile. */
  busy: number;
  timedOut: boolean;
}

/** Removes what crashed processes left: stale conversion locks, their temporary files, orphaned records. */
function removeLeftovers(layers: string, names: string[]): number {
  let n = 0;
  const has = (name: string) => {
    try {
      statSync(join(layers, name));
      return true;
    } catch {
      return false;
    }
  };
  for (const name of names) {
    const path = join(layers, name);
    if (name.endsWith(".erofs.lock")) {
      const stale = tryAcquire(path, false);
      if (!stale) continue;
      rmSync(path.replace(/\.lock$/, ".tmp"), { force: true });
      stale();
      n++;
    } else if (/\.erofs(\.tmp|\.json|\.json\.tmp)$/.test(name)) {
      const image = name.replace(/\.erofs.*$/, ".erofs");
      // A live conversion or use holds the lock file; a record is an orphan only without its image.
      if (has(`${image}.lock`) || (name.endsWith(".json") && has(image))) continue;
      rmSync(path, { force: true });
      n++;
    }
  }
  return n;
}

/** Removes one image if nobody holds its lock and no live user lists it (read under the lock). */
function removeIfUnused(layers: string, e: CacheEntry): boolean {
  const release = tryAcquire(`${e.path}.lock`);
  if (!release) return false;
  try {
    if (usersByKey(liveUsers(layers)).has(e.key)) return false;
    rmSync(e.path, { force: true });
    rmSync(sourcePath(e.path), { force: true });
    return true;
  } finally {
    release();
  }
}

/** One collection pass over `<cacheDir>/layers` (see the rules at the top). */
export async function collectLayers(layers: string, opts: GcOptions): Promise<GcReport> {
  const end = Date.now() + (opts.deadlineMs ?? 10_000);
  const open = opts.open ?? ((at) => containerdLookup(at, 2_000));
  const report: GcReport = { removed: [], leftovers: 0, images: 0, bytes: 0, inUse: 0, busy: 0, timedOut: false };
  let names: string[];
  try {
    names = readdirSync(layers);
  } catch {
    return report;
  }
  if (!opts.dryRun) report.leftovers = removeLeftovers(layers, names);
  const { entries } = listCache(layers);
  const left = new Set(entries);
  const remove = (e: CacheEntry, reason: RemovalReason) => {
    if (!opts.dryRun && !removeIfUnused(layers, e)) {
      report.busy++;
      return;
    }
    left.delete(e);
    report.removed.push({
      key: e.key,
      bytes: e.bytes,
      reason,
      ...(e.source?.snapshot ? { source: e.source.snapshot } : {}),
    });
  };
  for (const e of entries) {
    if (e.users.length) continue;
    if (Date.now() > end) {
      report.timedOut = true;
      break;
    }
    if (opts.allUnused) remove(e, "unused");
    else if ((await contentHeld(e.source, open)) === "gone") remove(e, "content gone");
  }
  // Least recently used first (entries are in that order).
  let total = [...left].reduce((s, e) => s + e.bytes, 0);
  for (const e of entries) {
    if (opts.maxBytes <= 0 || total <= opts.maxBytes) break;
    if (!left.has(e) || e.users.length) continue;
    remove(e, "over max_layers_gib");
    if (!left.has(e)) total -= e.bytes;
  }
  report.images = left.size;
  report.bytes = total;
  report.inUse = [...left].filter((e) => e.users.length).length;
  return report;
}

let running: Promise<void> | undefined;
let again = false;

/**
 * Runs a pass in the background, one at a time per process (a request during a pass runs one more
 * after it). What the shim does after each conversion; logged, never thrown.
 */
export function scheduleCollect(layers: string, opts: GcOptions, log: Logger): void {
  if (running) {
    again = true;
    return;
  }
  running = (async () => {
    do {
      again = false;
      try {
        const r = await collectLayers(layers, opts);
        if (r.removed.length || r.leftovers || r.timedOut || r.busy) {
          log.info(
            {
              removed: r.removed.length,
              freed: r.removed.reduce((s, x) => s + x.bytes, 0),
              leftovers: r.leftovers,
              images: r.images,
              bytes: r.bytes,
              in_use: r.inUse,
              busy: r.busy,
              timed_out: r.timedOut,
            },
            "layer cache: collected",
          );
        }
      } catch (e) {
        log.warn({ err: errorMessage(e) }, "layer cache: collection failed; nothing more removed");
      }
    } while (again);
  })().finally(() => {
    running = undefined;
  });
}

/** Resolves when no background pass runs (tests). */
export async function collectIdle(): Promise<void> {
  while (running) await running;
}
