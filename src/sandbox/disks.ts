// The pod's disks for container root filesystems: two disks of extents (src/virtio/blk/extents.ts),
// one read-only holding every layer image the pod's containers use, one read-write holding their
// writable layers (and devmapper snapshots). Each file is an extent that the guest names as a
// partition; a file several containers use is one extent, reference-counted. The VM has these two
// disks whatever the number of containers and layers: nothing to size, nothing to tune.
//
// A container's disks are prepared (files made) before boot for the pod's first container and on
// create for later ones, then attached (extents added: the disk grows, the guest hears a capacity
// change) just before the agent's CreateContainer; released on delete (extents nobody uses any more
// removed, files deleted).
import { rmSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import { errorMessage, LimitError } from "../common/errors.ts";
import type { CoveConfig } from "../config/config.ts";
import type { DiskConfig, ExtentPlace } from "../hypervisor/types.ts";
import { shimMetrics } from "../metrics/shim-metrics.ts";
import { GIB } from "../rootfs/cache-gc.ts";
import { LayerUser, writeHoldHint } from "../rootfs/cache-users.ts";
import { type ContainerdAddress, containerdLookup } from "../rootfs/containerd.ts";
import { layerImage, layersDir } from "../rootfs/layers.ts";
import { planRootfs } from "../rootfs/plan.ts";
import { committedChain } from "../rootfs/snapshots.ts";
import { createWritableLayer } from "../rootfs/writable.ts";
import type { MountSpec } from "../shim/runtime.ts";
import type { Rootfs, Storage } from "./agent/index.ts";
import type { PodVm } from "./pod.ts";

/** The two disks, as the VM is booted with them (after the guest image). */
export const LAYER_DISK: DiskConfig = { id: "layers", serial: "cove-layers", readOnly: true, extents: true };
export const WRITABLE_DISK: DiskConfig = { id: "writable", serial: "cove-writable", extents: true };
type DiskId = "layers" | "writable";

/** What one container holds of the pod's disks. */
export interface ContainerDisks {
  /** Files attached as extents for it (released on delete). */
  images: { disk: DiskId; path: string }[];
  /** Files made for it (the writable layer), removed on delete. */
  files: string[];
  /** Keys of the layer images it holds in the cache (given back on delete). */
  layers: string[];
}

export function noDisks(): ContainerDisks {
  return { images: [], files: [], layers: [] };
}

/** A file a container's rootfs needs on a disk, and how the guest mounts it. */
interface Part {
  disk: DiskId;
  path: string;
  role: "lower" | "upper";
  fstype: string;
  options: string[];
}

/** A container's disks, made but not attached yet. */
export interface PreparedDisks {
  parts: Part[];
}

/** What the agent's CreateContainer takes. */
export interface AttachedDisks {
  storages: Storage[];
  rootfs: Rootfs;
}

/** The host tools that make disk images (unit tests substitute fakes). */
export interface DiskMakers {
  layerImage: typeof layerImage;
  createWritableLayer: typeof createWritableLayer;
}

export const realDiskMakers: DiskMakers = { layerImage, createWritableLayer };

/** An attached file: where it is, and how many containers use it. */
interface Held {
  place: Promise<ExtentPlace>;
  refs: number;
}

export class PodDisks {
  private readonly held: Record<DiskId, Map<string, Held>> = { layers: new Map(), writable: new Map() };
  /** The pod's hold on the layer images it uses (the cache never removes them meanwhile). */
  private user?: Promise<LayerUser>;

  constructor(
    private readonly config: CoveConfig,
    private readonly makers: DiskMakers = realDiskMakers,
    /** Where to ask which snapshots the layers are (their images are keyed by it); none: by directory. */
    private readonly containerd?: ContainerdAddress,
    /** The pod's id, as the layer cache shows its users. */
    private readonly podId = "",
  ) {}

  private cacheUser(bundle: string): Promise<LayerUser> {
    const layers = layersDir(this.config.cacheDir);
    this.user ??= LayerUser.open(layers, {
      pod: this.podId,
      ...(this.containerd ? { namespace: this.containerd.namespace } : {}),
    });
    writeHoldHint(bundle, layers);
    return this.user;
  }

  /** Gives back the images a deleted container held in the cache. */
  dropLayers(keys: string[]): void {
    if (!this.user || keys.length === 0) return;
    void this.user.then((u) => {
      for (const k of keys) u.drop(k);
    });
  }

  /** Ends the pod's hold on the layer cache (its shim's exit would end it too). */
  async close(): Promise<void> {
    const u = this.user;
    this.user = undefined;
    (await u?.catch(() => undefined))?.close();
  }

  /** The disks the VM boots with (after the guest image). */
  static vmDisks(): DiskConfig[] {
    return [LAYER_DISK, WRITABLE_DISK];
  }

  /** How many files are attached now (tests, logs). */
  get attached(): { layers: number; writable: number } {
    return { layers: this.held.layers.size, writable: this.held.writable.size };
  }

  /** Makes the container's layer images and writable layer (files recorded in c.disks as made). */
  async prepare(
    c: { id: string; bundle: string; disks: ContainerDisks },
    rootfs: MountSpec[],
    logger: Logger,
  ): Promise<PreparedDisks> {
    const log = logger.child({ id: c.id });
    const plan = planRootfs(rootfs);
    if (plan.kind === "block") {
      return {
        parts: [{ disk: "writable", path: plan.device, role: "upper", fstype: plan.fstype, options: plan.options }],
      };
    }
    const t0 = performance.now();
    const at = this.containerd;
    const chain =
      plan.committed && at
        ? await committedChain(() => containerdLookup(at), c.id, plan.lowers.length, log)
        : undefined;
    const use = {
      user: await this.cacheUser(c.bundle),
      ...(at ? { containerd: at } : {}),
      collect: { maxBytes: this.config.cache.maxLayersGib * GIB },
    };
    const images = await Promise.all(
      plan.lowers.map(async (dir, i) => {
        const img = await this.makers.layerImage(this.config.cacheDir, { dir, snapshot: chain?.[i] }, log, use);
        c.disks.layers.push(img.key);
        return img;
      }),
    );
    const upperFile = join(c.bundle, "work", "cove-upper.ext4");
    await this.makers.createWritableLayer(upperFile, this.config.pod.writableLayerMib);
    c.disks.files.push(upperFile);
    shimMetrics.recordLayerImages(images);
    log.info(
      {
        layers: images.length,
        converted: images.filter((i) => i.built).length,
        cached: images.filter((i) => !i.built).length,
        ms: Math.round(performance.now() - t0),
      },
      "rootfs: layer images ready",
    );
    return {
      parts: [
        ...images.map(
          (img): Part => ({ disk: "layers", path: img.path, role: "lower", fstype: "erofs", options: ["ro"] }),
        ),
        { disk: "writable", path: upperFile, role: "upper", fstype: "ext4", options: [] },
      ],
    };
  }

  /** Attaches the prepared files as extents (shared ones once) and names them for the agent. */
  async attach(pod: PodVm, c: { id: string; disks: ContainerDisks }, prepared: PreparedDisks): Promise<AttachedDisks> {
    const storages: Storage[] = [];
    const rootfs: Rootfs = {};
    const lower: string[] = [];
    const places = await Promise.all(
      prepared.parts.map(async (p) => {
        const place = await this.use(pod, p.disk, p.path);
        c.disks.images.push({ disk: p.disk, path: p.path });
        return place;
      }),
    );
    for (const [i, p] of prepared.parts.entries()) {
      const place = places[i]!;
      const disk = p.disk === "layers" ? LAYER_DISK : WRITABLE_DISK;
      // Short ids: the overlay's lowerdir list is one page (agent/src/storage/storage.ts).
      const id = `${p.disk === "layers" ? "l" : "w"}${place.index}`;
      const source = `extent:${disk.serial}:${place.index}:${place.start}:${place.sectors}`;
      if (!storages.some((s) => s.id === id)) storages.push({ id, source, fstype: p.fstype, options: p.options });
      if (p.role === "lower") lower.push(id);
      else rootfs.upper = id;
    }
    if (lower.length) rootfs.lower = lower;
    return { storages, rootfs };
  }

  private use(pod: PodVm, disk: DiskId, path: string): Promise<ExtentPlace> {
    const map = this.held[disk];
    let h = map.get(path);
    if (!h) {
      const place = pod.addExtent(disk, path).catch((e: Error) => {
        map.delete(path);
        throw new LimitError(`cannot attach ${path} to the pod's ${disk} disk: ${e.message}`);
      });
      h = { place, refs: 0 };
      map.set(path, h);
    }
    h.refs++;
    return h.place;
  }

  /** Drops one use of each file; extents nobody uses are removed (when the VM still runs). */
  async release(images: { disk: DiskId; path: string }[], pod: PodVm | undefined, log: Logger): Promise<void> {
    for (const { disk, path } of images) {
      const map = this.held[disk];
      const h = map.get(path);
      if (!h || --h.refs > 0) continue;
      map.delete(path);
      if (!pod || pod.exited) continue;
      try {
        await pod.removeExtent(disk, (await h.place).index);
      } catch (e) {
        log.warn({ disk, path, err: errorMessage(e) }, "removing a disk extent failed");
      }
    }
  }
}

/**
 * Gives back a container's extents (removing those nobody uses when the VM still runs) and removes
 * its files. `disks` is undefined when the pod never booted. Idempotent: what is released is forgotten.
 */
export async function releaseDisks(
  _id: string,
  held: ContainerDisks,
  disks: PodDisks | undefined,
  pod: PodVm | undefined,
  log: Logger,
): Promise<void> {
  await disks?.release(held.images.splice(0), pod, log);
  disks?.dropLayers(held.layers.splice(0));
  for (const f of held.files.splice(0)) rmSync(f, { force: true });
}
