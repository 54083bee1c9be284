// `cove guest build`: the kernel and the image, each rebuilt only when its inputs changed, then
// published under the stable names in <cache>/guest/.
import { copyFileSync, existsSync, mkdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type BusyboxBuild, ensureBusybox } from "./busybox.ts";
import { type CrunBuild, ensureCrun, RUNTIME_FEATURES_FILE } from "./crun.ts";
import { findImageInputs, imageKey, imagePlan } from "./image.ts";
import { buildKernel, type KernelBuild } from "./kernel.ts";
import { cacheDir, guestArtifacts, guestInputs, repoRoot } from "./paths.ts";
import type { Progress } from "./progress.ts";
import { publishLink } from "./publish.ts";
import { makeErofs, materialize, uuidFromKey } from "./rootfs.ts";

export interface ImageBuild {
  key: string;
  dir: string;
  rootfs: string;
  cached: boolean;
}

export interface GuestBuildOptions {
  cache?: string;
  root?: string;
  jobs?: number;
  /** Build only one of the two. */
  only?: "kernel" | "image";
  force?: boolean;
  compress?: "lz4" | "lz4hc";
}

/** The image's inputs, layout and cache key as the checkout stands now. */
export function imageRecipe(
  root: string,
  compress: "lz4" | "lz4hc" | undefined,
  crun: CrunBuild | undefined,
  busybox: BusyboxBuild,
) {
  const gi = guestInputs(root);
  const runtime = crun && { name: "crun" as const, path: crun.binary, version: `${crun.version} (built, ${crun.key})` };
  const inputs = findImageInputs(gi.agentBundle, gi.addon, gi.nodePin, runtime, busybox.binary);
  const plan = imagePlan(inputs);
  const key = imageKey(
    [...plan, { kind: "content", path: "/.cove-erofs", content: compress ?? "none", mode: 0o644 }],
    inputs,
  );
  return { inputs, plan, key };
}

export async function buildImage(
  cache: string,
  root: string,
  progress: Progress,
  opts: GuestBuildOptions = {},
): Promise<ImageBuild> {
  // The guest's crun understands OCI runtime spec 1.2 (containerd 2.x writes it); its features go
  // beside the image for the shim's -info.
  const crun = await ensureCrun(cache, progress, opts.jobs);
  const busybox = await ensureBusybox(cache, progress);
  const { inputs, plan, key } = imageRecipe(root, opts.compress, crun, busybox);
  const dir = join(cache, "image", key);
  const rootfs = join(dir, "rootfs.erofs");
  if (!opts.force && existsSync(join(dir, "manifest.json"))) {
    progress.stage(`image: up to date (${key})`);
    return { key, dir, rootfs, cached: true };
  }
  progress.stage(`image: assembling root (node, ${inputs.runtime.name}, busybox, agent) `);
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  const tree = join(tmp, "root");
  try {
    materialize(plan, tree);
    progress.stage(`image: mkfs.erofs${opts.compress ? ` -z${opts.compress}` : ""}`);
    makeErofs(tree, join(tmp, "rootfs.erofs"), { compress: opts.compress, uuid: uuidFromKey(key) });
    rmSync(tree, { recursive: true, force: true });
    copyFileSync(crun.features, join(tmp, RUNTIME_FEATURES_FILE));
    writeFileSync(
      join(tmp, "manifest.json"),
      JSON.stringify(
        {
          key,
          runtime: inputs.runtime,
          bytes: statSync(join(tmp, "rootfs.erofs")).size,
          compress: opts.compress ?? "none",
          entries: plan.length,
          builtAt: new Date().toISOString(),
        },
        null,
        2,
      ),
    );
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  progress.stage(`image: built (${(statSync(rootfs).size / 1048576).toFixed(1)} MiB)`);
  return { key, dir, rootfs, cached: false };
}

export interface GuestBuildResult {
  kernel?: KernelBuild;
  image?: ImageBuild;
  artifacts: ReturnType<typeof guestArtifacts>;
}

export async function buildGuest(progress: Progress, opts: GuestBuildOptions = {}): Promise<GuestBuildResult> {
  const cache = opts.cache ?? cacheDir();
  const root = opts.root ?? repoRoot();
  mkdirSync(cache, { recursive: true });
  const artifacts = guestArtifacts(cache);
  const out: GuestBuildResult = { artifacts };
  if (opts.only !== "image") {
    const gi = guestInputs(root);
    out.kernel = await buildKernel(cache, { fragment: gi.kernelFragment, patchesDir: gi.patchesDir }, progress, opts);
    publishLink(artifacts.kernel, out.kernel.bzImage);
    publishLink(artifacts.vmlinux, out.kernel.vmlinux);
  }
  if (opts.only !== "kernel") {
    out.image = await buildImage(cache, root, progress, opts);
    publishLink(artifacts.rootfs, out.image.rootfs);
  }
  return out;
}
