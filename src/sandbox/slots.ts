// The pod VM's virtio-blk slots: fixed at boot (no hotplug), read-only ones for layer images and
// read-write ones for writable layers. A slot holds one image at a time; a layer image used by
// several containers of the pod occupies one slot, reference-counted.
import { Code, TtrpcError } from "../ttrpc/index.ts";

export interface Slot {
  /** Disk id and serial the guest sees (/sys/block/vdX/serial). */
  serial: string;
  readOnly: boolean;
  /** Image currently inserted (undefined: empty). */
  image?: string;
  /** Guest storage id of that image. */
  storageId?: string;
  refs: number;
}

/**
 * Disk slots that fit in `free` device places (the backend's limit minus root, vsock and NICs):
 * layer slots give way first (down to one), then writable ones. undefined = no limit.
 * A container needs one layer and one writable slot (of those asked for): when even that does not
 * fit, the pod is refused here (RESOURCE_EXHAUSTED) rather than booted with no usable slot.
 */
export function fitSlots(
  layerSlots: number,
  writableSlots: number,
  free: number | undefined,
): { layerSlots: number; writableSlots: number } {
  let l = layerSlots;
  let w = writableSlots;
  if (free === undefined) return { layerSlots: l, writableSlots: w };
  const min = Math.min(1, l) + Math.min(1, w);
  if (free < min) {
    throw new TtrpcError(
      Code.RESOURCE_EXHAUSTED,
      `the pod VM has ${Math.max(0, free)} virtio device place(s) left for disk slots after root, vsock and NICs; it needs at least ${min} (one layer and one writable slot)`,
    );
  }
  while (l + w > free) {
    if (l > 1) l--;
    else w--;
  }
  return { layerSlots: l, writableSlots: w };
}

export class SlotTable {
  readonly slots: Slot[] = [];

  constructor(layerSlots: number, writableSlots: number) {
    for (let i = 0; i < layerSlots; i++) this.slots.push({ serial: `cove-ro${i}`, readOnly: true, refs: 0 });
    for (let i = 0; i < writableSlots; i++) this.slots.push({ serial: `cove-rw${i}`, readOnly: false, refs: 0 });
  }

  /** The slot already holding this image (a shared layer), with one more reference. */
  reuse(image: string): Slot | undefined {
    const s = this.slots.find((x) => x.image === image);
    if (s) s.refs++;
    return s;
  }

  /** An empty slot of the right kind, claimed for `image`; RESOURCE_EXHAUSTED when none is left. */
  claim(image: string, storageId: string, readOnly: boolean): Slot {
    const s = this.slots.find((x) => x.readOnly === readOnly && x.image === undefined);
    if (!s) {
      const n = this.slots.filter((x) => x.readOnly === readOnly).length;
      throw new TtrpcError(
        Code.RESOURCE_EXHAUSTED,
        `the pod VM has no free ${readOnly ? "layer" : "writable"} disk slot (all ${n} in use); raise pod.${readOnly ? "layer_slots" : "writable_slots"} in the cove config`,
      );
    }
    s.image = image;
    s.storageId = storageId;
    s.refs = 1;
    return s;
  }

  /** Drops one reference; returns the slot when it became empty (its media should be ejected). */
  release(image: string): Slot | undefined {
    const s = this.slots.find((x) => x.image === image);
    if (!s) return undefined;
    if (--s.refs > 0) return undefined;
    s.image = undefined;
    s.storageId = undefined;
    s.refs = 0;
    return s;
  }
}
