// The layer cache's size, read from outside src/rootfs: the erofs images under <cache_dir>/layers
// (one per converted layer) and the disk space they take. Async and bounded in entries, so that a
// huge or broken cache dir cannot stall the node endpoint.
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";

/** Entries looked at; a cache with more is reported as far as counted (truncated: true). */
export const MAX_CACHE_ENTRIES = 100_000;
const STAT_BATCH = 64;

export interface CacheSize {
  images: number;
  /** Disk space of the images (allocated blocks), bytes. */
  bytes: number;
  truncated: boolean;
}

export async function layerCacheSize(cacheDir: string, maxEntries = MAX_CACHE_ENTRIES): Promise<CacheSize> {
  const dir = join(cacheDir, "layers");
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith(".erofs"));
  } catch {
    return { images: 0, bytes: 0, truncated: false };
  }
  const truncated = names.length > maxEntries;
  names = names.slice(0, maxEntries);
  let images = 0;
  let bytes = 0;
  for (let i = 0; i < names.length; i += STAT_BATCH) {
    const sts = await Promise.all(names.slice(i, i + STAT_BATCH).map((n) => stat(join(dir, n)).catch(() => undefined)));
    for (const st of sts) {
      if (!st?.isFile()) continue; // removed meanwhile (cache GC), or not an image
      images++;
      bytes += st.blocks * 512;
    }
  }
  return { images, bytes, truncated };
}
