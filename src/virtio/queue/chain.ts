// Descriptor-chain parsing for the split virtqueue (virtio 1.2 §2.7.5, §2.7.5.3 indirect).
// Pure and strict: everything here comes from the guest. A chain is rejected (GuestError) when
// an index is out of the table, it is longer than the queue (which also catches loops), an
// indirect table is nested, misaligned in length, empty or outside RAM, a descriptor has both
// NEXT and INDIRECT, a device-readable buffer follows a device-writable one, or any buffer
// lies outside guest memory.
import { GuestError } from "../errors.ts";
import { type GuestMemory, guestAddr } from "../memory.ts";

export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
export const DESC_SIZE = 16;

export interface DescriptorChain {
  /** Index of the head descriptor: what goes back in the used ring. */
  readonly head: number;
  /** Device-readable buffers (driver → device), as views into guest memory. */
  readonly readable: Buffer[];
  /** Device-writable buffers (device → driver), as views into guest memory. */
  readonly writable: Buffer[];
  readableLen: number;
  writableLen: number;
}

/**
 * Walks the chain starting at `head` in the descriptor table at guest address `table`
 * (`size` entries). `indirectAllowed` is false when VIRTIO_F_INDIRECT_DESC was not negotiated.
 */
export function readChain(
  mem: GuestMemory,
  table: number,
  size: number,
  head: number,
  indirectAllowed = true,
): DescriptorChain {
  const chain: DescriptorChain = { head, readable: [], writable: [], readableLen: 0, writableLen: 0 };
  if (head >= size) throw new GuestError(`descriptor head ${head} out of range (queue size ${size})`);
  let descs = mem.slice(table, size * DESC_SIZE);
  let tableLen = size;
  let idx = head;
  let inIndirect = false;
  let total = 0;
  let seenWritable = false;
  for (;;) {
    if (idx >= tableLen) {
      throw new GuestError(`descriptor index ${idx} out of range (table of ${tableLen})`);
    }
    // Every visited descriptor counts against the queue size: this bounds the walk and so also
    // rejects loops, in the ring and inside an indirect table.
    if (++total > size) throw new GuestError(`descriptor chain longer than the queue size ${size} (loop?)`);
    const o = idx * DESC_SIZE;
    const addr = descs.readBigUInt64LE(o);
    const len = descs.readUInt32LE(o + 8);
    const flags = descs.readUInt16LE(o + 12);
    const next = descs.readUInt16LE(o + 14);

    if (flags & VIRTQ_DESC_F_INDIRECT) {
      if (!indirectAllowed) throw new GuestError("indirect descriptor without VIRTIO_F_INDIRECT_DESC");
      if (inIndirect) throw new GuestError("nested indirect descriptor table");
      if (flags & VIRTQ_DESC_F_NEXT) throw new GuestError("descriptor has both NEXT and INDIRECT");
      if (len === 0 || len % DESC_SIZE !== 0)
        throw new GuestError(`indirect table length ${len} is not a multiple of 16`);
      const entries = len / DESC_SIZE;
      if (entries > size) throw new GuestError(`indirect table of ${entries} entries exceeds the queue size ${size}`);
      descs = mem.slice(guestAddr(addr), len);
      tableLen = entries;
      inIndirect = true;
      // The indirect descriptor itself is not a buffer; its entries count instead.
      total--;
      idx = 0;
      continue;
    }

    const buf = mem.slice(guestAddr(addr), len);
    if (flags & VIRTQ_DESC_F_WRITE) {
      seenWritable = true;
      chain.writable.push(buf);
      chain.writableLen += len;
    } else {
      if (seenWritable) throw new GuestError("device-readable descriptor after a device-writable one");
      chain.readable.push(buf);
      chain.readableLen += len;
    }
    if (!(flags & VIRTQ_DESC_F_NEXT)) return chain;
    idx = next;
  }
}

/** Copies up to `out.length` bytes from the start of a list of buffers (gather). Returns bytes copied. */
export function gather(bufs: readonly Buffer[], out: Buffer, skip = 0): number {
  let copied = 0;
  for (const b of bufs) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    const n = b.copy(out, copied, skip, Math.min(b.length, skip + out.length - copied));
    skip = 0;
    copied += n;
    if (copied === out.length) break;
  }
  return copied;
}

/** Copies `data` into a list of buffers starting `skip` bytes in (scatter). Returns bytes copied. */
export function scatter(bufs: readonly Buffer[], data: Uint8Array, skip = 0): number {
  let copied = 0;
  for (const b of bufs) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    const n = Math.min(b.length - skip, data.length - copied);
    b.set(data.subarray(copied, copied + n), skip);
    skip = 0;
    copied += n;
    if (copied === data.length) break;
  }
  return copied;
}

/** Views of bytes [from, from+len) across a list of buffers, without copying. */
export function sliceBufs(bufs: readonly Buffer[], from: number, len: number): Buffer[] {
  const out: Buffer[] = [];
  for (const b of bufs) {
    if (len <= 0) break;
    if (from >= b.length) {
      from -= b.length;
      continue;
    }
    const n = Math.min(b.length - from, len);
    out.push(b.subarray(from, from + n));
    from = 0;
    len -= n;
  }
  return out;
}
