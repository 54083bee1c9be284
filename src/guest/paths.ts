// Where cove keeps what it builds and caches: the cache dir (default /var/cache/cove, $COVE_CACHE_DIR or
// the config's cache_dir) and, in it, the stable names of the guest artifacts the rest of cove uses;
// the checkout's build inputs. The one home of these paths: src/config/config.ts takes its defaults here.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const DEFAULT_CACHE_DIR = "/var/cache/cove";

/** $COVE_CACHE_DIR, default /var/cache/cove. */
export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.COVE_CACHE_DIR || DEFAULT_CACHE_DIR);
}

/** The stable names: always point at the newest successful build (symlinks into the cache). */
export function guestArtifacts(cache = cacheDir()) {
  const dir = join(cache, "guest");
  return {
    dir,
    /** bzImage: what QEMU's -kernel and the Linux x86 boot protocol load. */
    kernel: join(dir, "kernel"),
    /** Uncompressed ELF vmlinux with a PVH entry note (for an ELF/PVH loader). */
    vmlinux: join(dir, "vmlinux"),
    /** The read-only guest root filesystem. */
    rootfs: join(dir, "rootfs.erofs"),
  };
}

const here: string = typeof __filename !== "undefined" ? dirname(__filename) : dirname(fileURLToPath(import.meta.url));

/** The checkout: the nearest directory above this file (or the dist/ bundle) whose package.json is cove's. */
export function repoRoot(start = here): string {
  let d = start;
  for (;;) {
    const pj = join(d, "package.json");
    if (existsSync(pj)) {
      try {
        if ((JSON.parse(readFileSync(pj, "utf8")) as { name?: string }).name === "cove") return d;
      } catch {
        // not ours; keep walking up
      }
    }
    const up = dirname(d);
    if (up === d) throw new Error(`cannot find the cove checkout above ${start}`);
    d = up;
  }
}

/** Where the in-repo guest build inputs are. */
export function guestInputs(root = repoRoot()) {
  return {
    kernelFragment: join(root, "deploy/guest/kernel/cove.config"),
    patchesDir: join(root, "deploy/guest/kernel/patches"),
    agentBundle: join(root, "dist/agent.cjs"),
    addon: join(root, "build/Release/cove_native.node"),
    /** The pinned Node the image takes (scripts/install-node.sh installs it). */
    nodePin: join(root, "deploy/nodejs.env"),
  };
}
