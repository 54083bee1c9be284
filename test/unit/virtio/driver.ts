// A minimal virtio driver in TypeScript for tests: lays out a split virtqueue in a GuestMemory,
// hands chains to the device and reads back the used ring. Hostile tests poke the raw fields.
import { GuestMemory } from "../../../src/virtio/memory.ts";
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../../../src/virtio/queue/chain.ts";
import { Queue } from "../../../src/virtio/queue/queue.ts";

export interface Used {
  head: number;
  len: number;
}

export class TestDriver {
  readonly mem: GuestMemory;
  readonly descTable: number;
  readonly availRing: number;
  readonly usedRing: number;
  private heap: number;
  private nextDesc = 0;
  private availIdx = 0;
  private usedSeen = 0;
  /** Buffers of in-flight heads so tests can read what the device wrote. */
  readonly writable = new Map<number, { addr: number; len: number }[]>();

  constructor(
    readonly size = 16,
    memSize = 1 << 20,
    mem?: GuestMemory,
    base = 0,
  ) {
    this.mem = mem ?? GuestMemory.alloc(memSize);
    this.descTable = base + 0x1000;
    this.availRing = this.descTable + 16 * size;
    this.usedRing = align(this.availRing + 6 + 2 * size, 4096);
    this.heap = align(this.usedRing + 6 + 8 * size, 4096);
  }

  queue(maxSize = this.size): Queue {
    return new Queue(
      this.mem,
      { size: this.size, descTable: this.descTable, availRing: this.availRing, usedRing: this.usedRing },
      maxSize,
    );
  }

  alloc(len: number): number {
    const a = this.heap;
    this.heap = align(this.heap + Math.max(len, 1), 16);
    return a;
  }

  writeDesc(table: number, i: number, addr: number | bigint, len: number, flags: number, next: number): void {
    const o = table + 16 * i;
    this.mem.writeU64(o, BigInt(addr));
    this.mem.writeU32(o + 8, len);
    this.mem.writeU16(o + 12, flags);
    this.mem.writeU16(o + 14, next);
  }

  /** Puts a chain of readable data buffers then writable buffers of the given lengths; returns its head. */
  add(readable: Uint8Array[], writableLens: number[], opts: { indirect?: boolean } = {}): number {
    const parts: { addr: number; len: number; write: boolean }[] = [];
    for (const r of readable) {
      const a = this.alloc(r.length);
      this.mem.write(a, r);
      parts.push({ addr: a, len: r.length, write: false });
    }
    const w: { addr: number; len: number }[] = [];
    for (const l of writableLens) {
      const a = this.alloc(l);
      this.mem.slice(a, l).fill(0xee);
      parts.push({ addr: a, len: l, write: true });
      w.push({ addr: a, len: l });
    }
    let head: number;
    if (opts.indirect) {
      const t = this.alloc(16 * parts.length);
      for (const [i, p] of parts.entries()) {
        const flags = (p.write ? VIRTQ_DESC_F_WRITE : 0) | (i < parts.length - 1 ? VIRTQ_DESC_F_NEXT : 0);
        this.writeDesc(t, i, p.addr, p.len, flags, i + 1);
      }
      head = this.takeDesc();
      this.writeDesc(this.descTable, head, t, 16 * parts.length, VIRTQ_DESC_F_INDIRECT, 0);
    } else {
      const idx = parts.map(() => this.takeDesc());
      head = idx[0]!;
      for (const [i, p] of parts.entries()) {
        const flags = (p.write ? VIRTQ_DESC_F_WRITE : 0) | (i < parts.length - 1 ? VIRTQ_DESC_F_NEXT : 0);
        this.writeDesc(this.descTable, idx[i]!, p.addr, p.len, flags, idx[i + 1] ?? 0);
      }
    }
    this.writable.set(head, w);
    this.publish(head);
    return head;
  }

  takeDesc(): number {
    const d = this.nextDesc;
    this.nextDesc = (this.nextDesc + 1) % this.size;
    return d;
  }

  /** Makes `head` available (raw: tests may publish bogus heads). */
  publish(head: number): void {
    this.mem.writeU16(this.availRing + 4 + 2 * (this.availIdx % this.size), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.mem.writeU16(this.availRing + 2, this.availIdx);
  }

  setAvailIdx(v: number): void {
    this.availIdx = v & 0xffff;
    this.mem.writeU16(this.availRing + 2, this.availIdx);
  }

  /** used_event (driver → device: interrupt me when used idx passes this). */
  setUsedEvent(v: number): void {
    this.mem.writeU16(this.availRing + 4 + 2 * this.size, v);
  }
  availEvent(): number {
    return this.mem.readU16(this.usedRing + 4 + 8 * this.size);
  }
  usedFlags(): number {
    return this.mem.readU16(this.usedRing);
  }
  setAvailFlags(v: number): void {
    this.mem.writeU16(this.availRing, v);
  }

  /** Used entries the device returned since the last call. */
  takeUsed(): Used[] {
    const out: Used[] = [];
    const idx = this.mem.readU16(this.usedRing + 2);
    while (this.usedSeen !== idx) {
      const slot = this.usedRing + 4 + 8 * (this.usedSeen % this.size);
      out.push({ head: this.mem.readU32(slot), len: this.mem.readU32(slot + 4) });
      this.usedSeen = (this.usedSeen + 1) & 0xffff;
    }
    return out;
  }

  /** The bytes the device wrote into the writable buffers of `head`, concatenated. */
  written(head: number): Buffer {
    return Buffer.concat((this.writable.get(head) ?? []).map((w) => this.mem.read(w.addr, w.len)));
  }
}

function align(v: number, a: number): number {
  return Math.ceil(v / a) * a;
}
