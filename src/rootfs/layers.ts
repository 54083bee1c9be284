// Read-only layer images: one erofs image per snapshot directory, built with mkfs.erofs and cached
// under <cache_dir>/layers, shared by every container and pod that uses the snapshot. Committed
// snapshots never change, so the key is the directory's identity (path, device, inode, ctime).
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import { Code, TtrpcError } from "../ttrpc/index.ts";

export const MKFS_EROFS = "mkfs.erofs";

export interface LayerImage {
  /** Short stable key (also the guest storage id suffix). */
  key: string;
  path: string;
  /** true when it was built now (cold), false when it came from the cache. */
  built: boolean;
  ms: number;
}

export function layerKey(dir: string): string {
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(dir);
  } catch (e) {
    throw new TtrpcError(Code.NOT_FOUND, `layer directory ${dir}: ${(e as NodeJS.ErrnoException).code ?? e}`);
  }
  if (!st.isDirectory()) throw new TtrpcError(Code.INVALID_ARGUMENT, `layer ${dir} is not a directory`);
  return createHash("sha256").update(`${dir}\0${st.dev}\0${st.ino}\0${st.ctimeMs}`).digest("hex").slice(0, 24);
}

/** Builds in flight in this process, so two containers of one pod never convert the same layer twice. */
const inFlight = new Map<string, Promise<LayerImage>>();

export function layersDir(cacheDir: string): string {
  return join(cacheDir, "layers");
}

/** The erofs image of a layer directory: from the cache, or built now (progress and time logged). */
export function layerImage(cacheDir: string, dir: string, log: Logger): Promise<LayerImage> {
  const key = layerKey(dir);
  const path = join(layersDir(cacheDir), `${key}.erofs`);
  const t0 = performance.now();
  if (existsSync(path)) return Promise.resolve({ key, path, built: false, ms: performance.now() - t0 });
  let p = inFlight.get(key);
  if (!p) {
    p = build(dir, path, key, log).finally(() => inFlight.delete(key));
    inFlight.set(key, p);
  }
  return p;
}

async function build(dir: string, path: string, key: string, log: Logger): Promise<LayerImage> {
  const t0 = performance.now();
  mkdirSync(join(path, ".."), { recursive: true });
  // Built beside, renamed into place: a concurrent shim (another pod) sees the whole image or none.
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
  log.info({ layer: dir, image: path }, "layer image: converting (mkfs.erofs)");
  try {
    await new Promise<void>((resolve, reject) => {
      // Ownership, modes, xattrs (overlay opaque markers) and whiteouts are kept as they are.
      execFile(MKFS_EROFS, ["--quiet", "-T0", tmp, dir], { timeout: 600_000 }, (err, _out, stderr) => {
        if (err) reject(new Error(`${MKFS_EROFS} ${dir}: ${stderr.trim() || err.message}`));
        else resolve();
      });
    });
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new TtrpcError(Code.INTERNAL, `cannot convert layer ${dir} to an erofs image: ${(e as Error).message}`);
  }
  const ms = performance.now() - t0;
  log.info({ layer: dir, image: path, bytes: statSync(path).size, ms: Math.round(ms) }, "layer image: converted");
  return { key, path, built: true, ms };
}
