// Guest physical memory as seen by a device: one or more regions, each a host mapping
// (a shared memfd from QEMU, a KVM memory slot later, or a plain Buffer in tests).
// Every access is bounds-checked: an address or length outside RAM, or a range that crosses
// a region boundary, is a GuestError — never an out-of-bounds read of a host buffer.
import { GuestError } from "./errors.ts";

export interface MemoryRegion {
  /** Guest physical address of the first byte. */
  readonly guestAddr: number;
  /** The host mapping; its length is the region size. */
  readonly bytes: Buffer;
  /** Where the owner (e.g. QEMU) has the region mapped, for vhost-user address translation. */
  readonly userAddr?: bigint;
}

// Guest addresses fit exactly in a double up to 2^53; anything beyond is out of range anyway.
const MAX_SAFE = Number.MAX_SAFE_INTEGER;

export class GuestMemory {
  readonly regions: readonly MemoryRegion[];
  /** Per region, a 16-bit view for Atomics (undefined when the mapping is not 2-byte aligned). */
  private readonly u16: (Uint16Array | undefined)[];

  constructor(regions: MemoryRegion[]) {
    const sorted = [...regions].sort((a, b) => a.guestAddr - b.guestAddr);
    for (let i = 0; i < sorted.length; i++) {
      const r = sorted[i]!;
      if (!Number.isSafeInteger(r.guestAddr) || r.guestAddr < 0) throw new Error(`bad region address ${r.guestAddr}`);
      const prev = sorted[i - 1];
      if (prev && prev.guestAddr + prev.bytes.length > r.guestAddr) {
        throw new Error(`memory regions overlap at 0x${r.guestAddr.toString(16)}`);
      }
    }
    this.regions = sorted;
    this.u16 = sorted.map((r) =>
      r.bytes.byteOffset % 2 === 0
        ? new Uint16Array(r.bytes.buffer, r.bytes.byteOffset, r.bytes.length >> 1)
        : undefined,
    );
  }

  /** Asynchronous operations (thread-pool I/O into guest buffers) holding the mapping. */
  private holds = 0;
  private unheldWaiters: (() => void)[] = [];

  /**
   * Marks guest memory as in use by an operation that runs off the event loop (a read or write on
   * libuv's thread pool holds raw pointers into these buffers). Whoever unmaps the regions waits
   * for unheld() first, so the pool never writes into memory that was unmapped and perhaps mapped
   * again for something else. Returns the release function (idempotent).
   */
  hold(): () => void {
    this.holds++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      if (--this.holds === 0) for (const f of this.unheldWaiters.splice(0)) f();
    };
  }

  /** Operations that hold the memory now. */
  get held(): number {
    return this.holds;
  }

  /** Resolves once no operation holds the memory (at once when none does). */
  unheld(): Promise<void> {
    if (this.holds === 0) return Promise.resolve();
    return new Promise((r) => this.unheldWaiters.push(r));
  }

  /** A single region of `size` bytes at guest address `base` backed by a fresh buffer (tests, tools). */
  static alloc(size: number, base = 0): GuestMemory {
    return new GuestMemory([{ guestAddr: base, bytes: Buffer.alloc(size) }]);
  }

  /** Total bytes of RAM. */
  get size(): number {
    let n = 0;
    for (const r of this.regions) n += r.bytes.length;
    return n;
  }

  private find(addr: number): MemoryRegion | undefined {
    // Few regions (≤ 8 with vhost-user): a linear scan beats anything clever.
    for (const r of this.regions) {
      if (addr >= r.guestAddr && addr < r.guestAddr + r.bytes.length) return r;
    }
    return undefined;
  }

  /** True if [addr, addr+len) lies inside one region. */
  contains(addr: number, len: number): boolean {
    if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(len) || addr < 0 || len < 0 || addr > MAX_SAFE - len) {
      return false;
    }
    const r = this.find(addr);
    return r !== undefined && addr + len <= r.guestAddr + r.bytes.length;
  }

  /**
   * A view (no copy) of [addr, addr+len) in guest memory. Writes to it are writes to the guest.
   * Zero-length slices are allowed at any address inside RAM (and at the very end of a region).
   */
  slice(addr: number, len: number): Buffer {
    if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(len) || addr < 0 || len < 0 || addr > MAX_SAFE - len) {
      throw new GuestError(`guest range 0x${addr.toString(16)}+${len} is not a valid address range`);
    }
    const r = len === 0 ? (this.find(addr) ?? this.find(addr - 1)) : this.find(addr);
    if (!r || addr + len > r.guestAddr + r.bytes.length) {
      throw new GuestError(`guest range 0x${addr.toString(16)}+${len} is outside guest memory`);
    }
    const off = addr - r.guestAddr;
    return r.bytes.subarray(off, off + len);
  }

  readU16(addr: number): number {
    return this.slice(addr, 2).readUInt16LE(0);
  }
  /**
   * Publishes a 16-bit index (the used ring's idx): every store before it becomes visible to the
   * guest before the new value (store-release). Atomics.store is seq-cst: on x86 V8 emits xchg
   * (a full fence; plain x86 stores are ordered anyway, so what matters there is that the JIT
   * cannot sink earlier stores past it), on arm64 stlr, which orders all earlier accesses.
   * Atomics work on non-shared ArrayBuffers too (only wait/notify need a SharedArrayBuffer).
   */
  storeU16Release(addr: number, v: number): void {
    const view = this.atomicView(addr);
    if (view) Atomics.store(view.a, view.i, v & 0xffff);
    else {
      fullFence();
      this.writeU16(addr, v);
    }
  }

  /** Reads a 16-bit index (the avail ring's idx) so that later reads see what the guest wrote before it. */
  loadU16Acquire(addr: number): number {
    const view = this.atomicView(addr);
    if (view) return Atomics.load(view.a, view.i);
    const v = this.readU16(addr);
    fullFence();
    return v;
  }

  private atomicView(addr: number): { a: Uint16Array; i: number } | undefined {
    this.slice(addr, 2); // bounds check (throws GuestError)
    for (let k = 0; k < this.regions.length; k++) {
      const r = this.regions[k]!;
      const off = addr - r.guestAddr;
      if (off < 0 || off >= r.bytes.length) continue;
      const a = this.u16[k];
      return a && off % 2 === 0 ? { a, i: off >> 1 } : undefined;
    }
    return undefined;
  }

  readU32(addr: number): number {
    return this.slice(addr, 4).readUInt32LE(0);
  }
  /** 64-bit values stay bigint: guest-supplied addresses may exceed 2^53 and must be range-checked. */
  readU64(addr: number): bigint {
    return this.slice(addr, 8).readBigUInt64LE(0);
  }
  writeU16(addr: number, v: number): void {
    this.slice(addr, 2).writeUInt16LE(v & 0xffff, 0);
  }
  writeU32(addr: number, v: number): void {
    this.slice(addr, 4).writeUInt32LE(v >>> 0, 0);
  }
  writeU64(addr: number, v: bigint): void {
    this.slice(addr, 8).writeBigUInt64LE(v, 0);
  }
  read(addr: number, len: number): Buffer {
    return Buffer.from(this.slice(addr, len));
  }
  write(addr: number, data: Uint8Array): void {
    this.slice(addr, data.length).set(data);
  }

  /** vhost-user: the owner's virtual address → guest physical address (undefined if unmapped). */
  userToGuest(uva: bigint): number | undefined {
    for (const r of this.regions) {
      if (r.userAddr === undefined) continue;
      if (uva >= r.userAddr && uva < r.userAddr + BigInt(r.bytes.length)) {
        return r.guestAddr + Number(uva - r.userAddr);
      }
    }
    return undefined;
  }
}

// A full memory barrier for the unaligned fallback: a seq-cst read-modify-write on shared memory
// (a locked instruction on x86, a barrier-bracketed exclusive pair on arm64) that V8 never moves
// plain accesses across.
const fenceCell = new Int32Array(new SharedArrayBuffer(4));
export function fullFence(): void {
  Atomics.add(fenceCell, 0, 0);
}

/** Converts a guest-supplied 64-bit address to a number, or throws if it cannot be in RAM. */
export function guestAddr(v: bigint): number {
  if (v > BigInt(MAX_SAFE)) throw new GuestError(`guest address 0x${v.toString(16)} is out of range`);
  return Number(v);
}
