// SET_MEM_TABLE: the front-end shares guest RAM as memfds, one per region; each is mapped here and
// translated by the region table (guest physical and front-end virtual addresses). The mappings are
// unmapped by us, once no operation holds the memory (never left to the garbage collector, which
// may keep them for long).
import { fstatSync } from "node:fs";
import { mapFd, unmap } from "../../native/kvm.ts";
import type { Logger } from "../log.ts";
import { GuestMemory, type MemoryRegion } from "../memory.ts";

/** Most regions one table has (the spec's VHOST_MEMORY_BASELINE_NREGIONS). */
const MAX_REGIONS = 8;
/** Each region: guest address, size, front-end address, mmap offset (u64 each). */
const REGION_SIZE = 32;

export interface MappedTable {
  mem: GuestMemory;
  maps: ArrayBuffer[];
}

/** Maps a SET_MEM_TABLE payload's regions from their fds; throws (with nothing left mapped) if bad. The caller closes the fds. */
export function mapMemoryTable(p: Buffer, fds: number[], log: Logger): MappedTable {
  const maps: ArrayBuffer[] = [];
  try {
    if (p.length < 8) throw new Error("SET_MEM_TABLE: short payload");
    const n = p.readUInt32LE(0);
    if (n < 1 || n > MAX_REGIONS || p.length < 8 + REGION_SIZE * n) throw new Error(`SET_MEM_TABLE: ${n} regions`);
    if (fds.length !== n) throw new Error(`SET_MEM_TABLE: ${n} regions but ${fds.length} fds`);
    const regions: MemoryRegion[] = [];
    for (let i = 0; i < n; i++) {
      const o = 8 + REGION_SIZE * i;
      const gpa = Number(p.readBigUInt64LE(o));
      const size = Number(p.readBigUInt64LE(o + 8));
      const uva = p.readBigUInt64LE(o + 16);
      const off = Number(p.readBigUInt64LE(o + 24));
      // Touching a mapping past the end of its file is SIGBUS, not an exception: check first.
      const fileSize = fstatSync(fds[i]!).size;
      if (!Number.isSafeInteger(size) || !Number.isSafeInteger(off) || size <= 0 || off + size > fileSize)
        throw new Error(`SET_MEM_TABLE: region ${i} (${size} bytes at offset ${off}) exceeds its ${fileSize}-byte fd`);
      const ab = mapFd(fds[i]!, size, off);
      maps.push(ab);
      regions.push({ guestAddr: gpa, bytes: Buffer.from(ab), userAddr: uva });
      log.debug({ gpa: gpa.toString(16), size, uva: uva.toString(16), off }, "guest memory region");
    }
    return { mem: new GuestMemory(regions), maps };
  } catch (e) {
    for (const m of maps) unmap(m);
    throw e;
  }
}

/** Unmaps a table's mappings once no operation holds its memory (blk I/O on the thread pool). */
export function releaseTable(mem: GuestMemory | undefined, maps: ArrayBuffer[]): void {
  if (maps.length === 0) return;
  const unmapAll = () => {
    for (const m of maps) unmap(m);
  };
  if (!mem) unmapAll();
  else void mem.unheld().then(unmapAll);
}
