// Read-only layer images: one erofs image per layer, built with mkfs.erofs and cached under
// <cache_dir>/layers, shared by every container, pod and shim process that uses the layer.
//
// The cache key is the layer's content when containerd can name it: the committed snapshot's name
// (its chain ID, a hash of this layer's diff and of every layer below it) and the snapshotter, so
// a re-pulled image or a fresh containerd root finds the conversion already made
// (src/rootfs/snapshots.ts). Otherwise it is the directory's identity (path, device, inode, ctime),
// which is right for any directory that does not change but is shared only with itself.
//
// Conversion is once per key across processes: under a flock(2) lock in the cache (released by the
// kernel if its holder crashes), into a temporary file renamed into place, so a reader sees the whole
// image or none and a failed or interrupted conversion leaves nothing behind.
//
// The cache is bounded (cache-gc.ts): a pod lists the keys it uses (cache-users.ts) before it looks
// at an image, and takes an image from the cache under the same lock as a conversion, so the
// collector never removes an image between a pod finding it and attaching it.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, renameSync, rmSync, statSync, utimesSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import { errorMessage, InternalError, InvalidArgumentError, LimitError, NotFoundError } from "../common/errors.ts";
import { runAsync } from "../common/exec.ts";
import { acquireLock } from "../guest/lock.ts";
import { collectLayers, type GcOptions, scheduleCollect } from "./cache-gc.ts";
import { recordSource } from "./cache-source.ts";
import type { LayerUser } from "./cache-users.ts";
import type { ContainerdAddress } from "./containerd.ts";

export const MKFS_EROFS = "mkfs.erofs";
/**
 * mkfs.erofs arguments. Part of the cache key: images made with other arguments are not reused.
 * Ownership, modes, xattrs (overlay opaque markers, file capabilities), whiteouts (0/0 character
 * devices) and per-file mtimes are kept as they are.
 */
export const MKFS_EROFS_ARGS = ["--quiet", "--preserve-mtime"];

export interface LayerSource {
  /** The layer directory (an overlay lowerdir, or a snapshot's bind source). */
  dir: string;
  /** "<snapshotter>/<name>" of the committed snapshot the directory is, when containerd said so. */
  snapshot?: string;
}

export interface LayerImage {
  /** Short stable key (also the guest storage id suffix). */
  key: string;
  path: string;
  /** true when it was built now (cold), false when it came from the cache. */
  built: boolean;
  ms: number;
}

function hashKey(parts: string[]): string {
  return createHash("sha256").update(parts.join("\0")).digest("hex").slice(0, 24);
}

/** How a layer is named in errors and logs: its snapshot (chain ID) when known, and its directory. */
export function layerName(src: LayerSource): string {
  return src.snapshot ? `${src.snapshot} (${src.dir})` : src.dir;
}

export function layerKey(src: LayerSource): string {
  if (src.snapshot) return hashKey(["snapshot", src.snapshot, ...MKFS_EROFS_ARGS]);
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(src.dir);
  } catch (e) {
    throw new NotFoundError(`layer directory ${src.dir}: ${(e as NodeJS.ErrnoException).code ?? e}`);
  }
  if (!st.isDirectory()) throw new InvalidArgumentError(`layer ${src.dir} is not a directory`);
  return hashKey(["dir", src.dir, String(st.dev), String(st.ino), String(st.ctimeMs), ...MKFS_EROFS_ARGS]);
}

/** How a pod takes an image: who it is, where containerd named the snapshot, how the cache is bounded. */
export interface LayerUse {
  /** The pod's hold: the key is listed before the image is looked at, unlisted if this fails. */
  user?: LayerUser;
  /** containerd's socket and namespace that named `src.snapshot` (recorded beside the image). */
  containerd?: ContainerdAddress;
  /** Collect in the background after a conversion (and make room on ENOSPC) with these options. */
  collect?: GcOptions;
}

/** Builds in flight in this process: two containers of one pod wait for one conversion. */
const inFlight = new Map<string, Promise<LayerImage>>();

export function layersDir(cacheDir: string): string {
  return join(cacheDir, "layers");
}

/** The erofs image of a layer: from the cache, or built now (progress and time logged). */
export async function layerImage(
  cacheDir: string,
  src: LayerSource,
  log: Logger,
  use: LayerUse = {},
): Promise<LayerImage> {
  const key = layerKey(src);
  const path = join(layersDir(cacheDir), `${key}.erofs`);
  use.user?.add(key); // throws, holding nothing, when the list cannot be written
  try {
    let p = inFlight.get(key);
    if (!p) {
      p = takeOrConvert(src, path, key, log, use).finally(() => inFlight.delete(key));
      inFlight.set(key, p);
    }
    const img = await p;
    if (img.built && use.collect) scheduleCollect(layersDir(cacheDir), use.collect, log);
    return img;
  } catch (e) {
    use.user?.drop(key);
    throw e;
  }
}

/**
 * Under the cache's lock for this key: the image if it is there (its last use noted), else converted
 * now. The lock also keeps the collector away while the image is taken.
 */
async function takeOrConvert(
  src: LayerSource,
  path: string,
  key: string,
  log: Logger,
  use: LayerUse,
): Promise<LayerImage> {
  const t0 = performance.now();
  mkdirSync(join(path, ".."), { recursive: true });
  const release = await acquireLock(
    `${path}.lock`,
    (pid) => log.info({ layer: layerName(src), pid }, "layer image: waiting for another process converting it"),
    { pollMs: 100, timeoutMs: 30 * 60_000 },
  );
  let built = false;
  try {
    if (existsSync(path)) {
      const now = new Date();
      utimesSync(path, now, now); // its last use, for the size limit's least-recently-used order
    } else {
      await convertMakingRoom(src, path, log, use.collect);
      built = true;
    }
    recordSource(path, src, use.containerd);
  } finally {
    release();
  }
  const ms = performance.now() - t0;
  if (built) {
    log.info(
      { layer: layerName(src), image: path, bytes: statSync(path).size, ms: Math.round(ms) },
      "layer image: converted",
    );
  }
  return { key, path, built, ms };
}

/** A conversion's "the cache disk is full". */
function isDiskFull(e: unknown): boolean {
  return e instanceof LimitError;
}

/**
 * A conversion that fails for a full disk is tried once more after every unused image is removed
 * (images in use are never touched; this key's own image does not exist yet).
 */
async function convertMakingRoom(src: LayerSource, path: string, log: Logger, collect?: GcOptions): Promise<void> {
  try {
    await convert(src, path, log);
  } catch (e) {
    if (!collect || !isDiskFull(e)) throw e;
    const r = await collectLayers(join(path, ".."), { ...collect, allUnused: true });
    const freed = r.removed.reduce((s, x) => s + x.bytes, 0);
    log.warn(
      { layer: layerName(src), removed: r.removed.length, freed, in_use: r.inUse },
      "layer image: the cache disk is full; removed every unused image",
    );
    if (r.removed.length === 0) throw e;
    await convert(src, path, log);
  }
}

/** mkfs.erofs into <path>.tmp (ours while we hold the lock), then renamed into place. */
async function convert(src: LayerSource, path: string, log: Logger): Promise<void> {
  const tmp = `${path}.tmp`;
  rmSync(tmp, { force: true }); // left by a holder that crashed
  log.info({ layer: layerName(src), image: path }, "layer image: converting (mkfs.erofs)");
  try {
    if (!statSync(src.dir).isDirectory()) throw new Error("not a directory");
    await runAsync([MKFS_EROFS, ...MKFS_EROFS_ARGS, tmp, src.dir], { timeoutMs: 600_000 });
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    const msg = errorMessage(e);
    const full = /No space left|ENOSPC/i.test(msg);
    throw new (full ? LimitError : InternalError)(
      `cannot convert layer ${layerName(src)} to an erofs image${full ? ` (the layer cache ${join(path, "..")} is full)` : ""}: ${msg}`,
    );
  }
}
