// A disk made of many files: a sparse address space in which each file (a layer image, a writable
// layer, a block device) is an extent at a 1 MiB-aligned offset. Requests are split at extent
// edges; a read of a gap gives zeros, a write to a gap fails. Extents are added (at the end, growing
// the disk) and removed while the guest runs; the guest names each one as a
// partition (BLKPG), so one virtio device serves every layer of every container of a pod.
import { BlkBacking } from "./backing.ts";

/** Extent starts (bytes) are multiples of this: partition-friendly, and a gap separates neighbours. */
export const EXTENT_ALIGN = 1 << 20;
/** How many extents one disk holds at once: the guest's partitions per disk (DISK_MAX_PARTS - 1). */
export const MAX_EXTENTS = 255;

export interface Extent {
  /** Offset on the disk, bytes (a multiple of EXTENT_ALIGN). */
  start: number;
  /** Bytes the guest may address (the file's size rounded up to a sector). */
  length: number;
  backing: BlkBacking;
  /** The partition number the guest gives it (1..MAX_EXTENTS), stable while the extent lives. */
  index: number;
}

const SECTOR = 512;

/** [pos, pos+len) cut at extent edges: each piece with its extent (undefined: a gap). */
function pieces(extents: Extent[], pos: number, len: number): { at: number; len: number; ext?: Extent }[] {
  const out: { at: number; len: number; ext?: Extent }[] = [];
  let i = firstEndingAfter(extents, pos);
  while (len > 0) {
    const e = extents[i];
    if (e && pos >= e.start) {
      const n = Math.min(len, e.start + e.length - pos);
      out.push({ at: pos, len: n, ext: e });
      pos += n;
      len -= n;
      i++;
    } else {
      const n = e ? Math.min(len, e.start - pos) : len;
      out.push({ at: pos, len: n });
      pos += n;
      len -= n;
    }
  }
  return out;
}

/** Binary search: the first extent whose end is past pos. */
function firstEndingAfter(extents: Extent[], pos: number): number {
  let lo = 0;
  let hi = extents.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const e = extents[mid]!;
    if (e.start + e.length <= pos) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Splits buffers into consecutive groups of the given byte lengths (views, no copies). */
function splitBufs(bufs: Buffer[], lens: number[]): Buffer[][] {
  const out: Buffer[][] = [];
  let bi = 0;
  let off = 0;
  for (const len of lens) {
    const group: Buffer[] = [];
    let left = len;
    while (left > 0) {
      const b = bufs[bi]!;
      const n = Math.min(left, b.length - off);
      group.push(b.subarray(off, off + n));
      left -= n;
      off += n;
      if (off === b.length) {
        bi++;
        off = 0;
      }
    }
    out.push(group);
  }
  return out;
}

/**
 * Waits for every piece of a request, then fails with the first error if any failed. Not
 * Promise.all: a piece still on the thread pool holds views into guest RAM, and the device lets
 * guest RAM be unmapped once the request settles (GuestMemory.hold).
 */
async function allPieces(pieces: Promise<void>[]): Promise<void> {
  const settled = await Promise.allSettled(pieces);
  for (const r of settled) if (r.status === "rejected") throw r.reason;
}

export class ExtentMap {
  /** Sorted by start. */
  private readonly extents: Extent[] = [];
  /** Disk size in bytes: the end of the last extent ever placed (the disk never shrinks). */
  size = 0;

  constructor(readonly readOnly: boolean) {}

  get count(): number {
    return this.extents.length;
  }

  list(): readonly Extent[] {
    return this.extents;
  }

  /** Inline vs thread-pool requests of the files attached now. */
  get nowait(): { hits: number; misses: number } {
    let hits = 0;
    let misses = 0;
    for (const e of this.extents) {
      hits += e.backing.nowait.hits;
      misses += e.backing.nowait.misses;
    }
    return { hits, misses };
  }

  /**
   * Opens `path` and places it at the end (the disk grows). Throws when MAX_EXTENTS are in use.
   */
  async add(path: string): Promise<Extent> {
    if (this.extents.length >= MAX_EXTENTS) {
      throw new Error(`the disk already holds ${MAX_EXTENTS} extents (the guest's partition limit)`);
    }
    const backing = await BlkBacking.open(path, this.readOnly);
    const length = Math.ceil(backing.size / SECTOR) * SECTOR;
    if (length === 0) {
      await backing.close();
      throw new Error(`${path} is empty`);
    }
    const used = new Set(this.extents.map((e) => e.index));
    let index = 1;
    while (used.has(index)) index++;
    // Always past everything placed before, never in a freed range: a range once given to a file
    // never shows the guest another file's bytes (the address space is 2^63 bytes; only files cost).
    const start = Math.ceil(this.size / EXTENT_ALIGN) * EXTENT_ALIGN;
    const ext: Extent = { start, length, backing, index };
    this.extents.push(ext);
    this.size = start + length;
    return ext;
  }

  /** Takes the extent out (its range becomes a gap) and closes its file. */
  async remove(ext: Extent): Promise<void> {
    const i = this.extents.indexOf(ext);
    if (i < 0) return;
    this.extents.splice(i, 1);
    await ext.backing.close();
  }

  async readInto(bufs: Buffer[], pos: number, alone = false): Promise<void> {
    const len = bufs.reduce((s, b) => s + b.length, 0);
    const ps = pieces(this.extents, pos, len);
    const groups = splitBufs(
      bufs,
      ps.map((p) => p.len),
    );
    await allPieces(
      ps.map(async (p, i) => {
        const g = groups[i]!;
        if (!p.ext) {
          for (const b of g) b.fill(0);
          return;
        }
        await p.ext.backing.readInto(g, p.at - p.ext.start, alone && ps.length === 1);
      }),
    );
  }

  async writeFrom(bufs: Buffer[], pos: number, alone = false): Promise<void> {
    const len = bufs.reduce((s, b) => s + b.length, 0);
    const ps = pieces(this.extents, pos, len);
    if (ps.some((p) => !p.ext)) throw new Error(`write to [${pos}, ${pos + len}) touches no file`);
    const groups = splitBufs(
      bufs,
      ps.map((p) => p.len),
    );
    await allPieces(
      ps.map((p, i) => p.ext!.backing.writeFrom(groups[i]!, p.at - p.ext!.start, alone && ps.length === 1)),
    );
  }

  async flush(): Promise<void> {
    if (this.readOnly) return;
    await Promise.all(this.extents.map((e) => e.backing.flush()));
  }

  async discard(offset: number, len: number): Promise<void> {
    for (const p of pieces(this.extents, offset, len))
      if (p.ext) await p.ext.backing.discard(p.at - p.ext.start, p.len);
  }

  async writeZeroes(offset: number, len: number, unmap: boolean): Promise<void> {
    const ps = pieces(this.extents, offset, len);
    if (ps.some((p) => !p.ext)) throw new Error(`write-zeroes to [${offset}, ${offset + len}) touches no file`);
    for (const p of ps) await p.ext!.backing.writeZeroes(p.at - p.ext!.start, p.len, unmap);
  }

  async close(): Promise<void> {
    for (const e of this.extents.splice(0)) await e.backing.close();
  }
}
