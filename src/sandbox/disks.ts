// The pod's disks for container root filesystems: the slot table fixed at boot (slots.ts), and per
// container the layer images and writable layer it holds. A container's disks are prepared before
// boot for the pod's first container (they are in the VM from the start) and inserted as media for
// later ones; released on delete (media nobody uses any more ejected, files removed).
import { rmSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import type { CoveConfig } from "../config/config.ts";
import { type ContainerdAddress, containerdLookup } from "../rootfs/containerd.ts";
import { layerImage } from "../rootfs/layers.ts";
import { planRootfs } from "../rootfs/plan.ts";
import { committedChain } from "../rootfs/snapshots.ts";
import { createWritableLayer } from "../rootfs/writable.ts";
import type { MountSpec } from "../shim/runtime.ts";
import type { Rootfs, Storage } from "./agent/index.ts";
import type { PodVm } from "./pod.ts";
import { SlotTable } from "./slots.ts";

/** What one container holds of the pod's disks. */
export interface ContainerDisks {
  /** Slot images (released on delete). */
  images: string[];
  /** Files made for it (the writable layer). */
  files: string[];
}

export function noDisks(): ContainerDisks {
  return { images: [], files: [] };
}

/** A container's rootfs as the agent's CreateContainer takes it, and the media to insert (after boot). */
export interface PreparedDisks {
  storages: Storage[];
  rootfs: Rootfs;
  inserts: { serial: string; path: string }[];
}

/** The host tools that make disk images (unit tests substitute fakes). */
export interface DiskMakers {
  layerImage: typeof layerImage;
  createWritableLayer: typeof createWritableLayer;
}

export const realDiskMakers: DiskMakers = { layerImage, createWritableLayer };

export class PodDisks {
  readonly slots: SlotTable;

  constructor(
    layerSlots: number,
    writableSlots: number,
    private readonly config: CoveConfig,
    private readonly makers: DiskMakers = realDiskMakers,
    /** Where to ask which snapshots the layers are (their images are keyed by it); none: by directory. */
    private readonly containerd?: ContainerdAddress,
  ) {
    this.slots = new SlotTable(layerSlots, writableSlots);
  }

  /** Layer images and the writable layer for a container; slots claimed (recorded in `held`). */
  async prepare(
    c: { id: string; bundle: string; disks: ContainerDisks },
    rootfs: MountSpec[],
    logger: Logger,
  ): Promise<PreparedDisks> {
    const log = logger.child({ id: c.id });
    const slots = this.slots;
    const plan = planRootfs(rootfs);
    const storages: Storage[] = [];
    const inserts: { serial: string; path: string }[] = [];
    const use = (image: string, storageId: string, readOnly: boolean, fstype: string, options: string[]) => {
      let s = slots.reuse(image);
      if (!s) {
        s = slots.claim(image, storageId, readOnly);
        inserts.push({ serial: s.serial, path: image });
      }
      c.disks.images.push(image);
      storages.push({ id: s.storageId!, source: `serial:${s.serial}`, fstype, options });
      return s.storageId!;
    };
    if (plan.kind === "block") {
      const id = use(plan.device, `dev-${c.id}`, false, plan.fstype, plan.options);
      return { storages, rootfs: { upper: id }, inserts };
    }
    const t0 = performance.now();
    const at = this.containerd;
    const chain =
      plan.committed && at
        ? await committedChain(() => containerdLookup(at), c.id, plan.lowers.length, log)
        : undefined;
    const images = await Promise.all(
      plan.lowers.map((dir, i) => this.makers.layerImage(this.config.cacheDir, { dir, snapshot: chain?.[i] }, log)),
    );
    const lower = images.map((img) => use(img.path, `layer-${img.key}`, true, "erofs", ["ro"]));
    const upperFile = join(c.bundle, "work", "cove-upper.ext4");
    await this.makers.createWritableLayer(upperFile, this.config.pod.writableLayerMib);
    c.disks.files.push(upperFile);
    const upper = use(upperFile, `upper-${c.id}`, false, "ext4", []);
    log.info(
      {
        layers: images.length,
        converted: images.filter((i) => i.built).length,
        cached: images.filter((i) => !i.built).length,
        ms: Math.round(performance.now() - t0),
      },
      "rootfs: block devices ready",
    );
    return { storages, rootfs: { lower, upper }, inserts };
  }
}

/**
 * Gives back a container's slots (ejecting media nobody uses when the VM still runs) and removes its
 * files. `disks` is undefined when the pod never booted. Idempotent: what is released is forgotten.
 */
export async function releaseDisks(
  id: string,
  held: ContainerDisks,
  disks: PodDisks | undefined,
  pod: PodVm | undefined,
  log: Logger,
): Promise<void> {
  for (const image of held.images.splice(0)) {
    const s = disks?.slots.release(image);
    if (s && pod && !pod.exited) {
      await pod.changeMedia(s.serial, undefined).catch((e: Error) => {
        log.warn({ id, slot: s.serial, err: e.message }, "ejecting a disk failed");
      });
    }
  }
  for (const f of held.files.splice(0)) rmSync(f, { force: true });
}
