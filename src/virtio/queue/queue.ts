// The split virtqueue from the device side (virtio 1.2 §2.7): available ring in, used ring out,
// with VIRTIO_F_EVENT_IDX notification suppression in both directions.
// A guest that breaks the ring contract gets the queue marked broken (the device then reports
// DEVICE_NEEDS_RESET through its transport): methods never throw into the event loop.
import { GuestError } from "../errors.ts";
import { fullFence as fence, type GuestMemory } from "../memory.ts";
import { type DescriptorChain, readChain } from "./chain.ts";

const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
const VIRTQ_USED_F_NO_NOTIFY = 1;

// Memory ordering with the guest (the driver runs on other CPUs):
// - the avail idx is read with acquire semantics before the ring entry and descriptors it covers;
// - the used idx is published with release semantics after the used entry it covers
//   (GuestMemory.loadU16Acquire / storeU16Release: Atomics, correct on x86 and arm64 alike);
// - a full fence separates "write used idx / avail_event" from "read used_event / avail idx":
//   even x86 reorders a store with a later load, which would lose an interrupt or a kick.

export interface QueueConfig {
  /** Negotiated number of entries (power of two, ≤ maxSize). */
  size: number;
  descTable: number;
  availRing: number;
  usedRing: number;
  /** Where to resume (vhost-user SET_VRING_BASE); 0 after reset. */
  nextAvail?: number;
  nextUsed?: number;
}

export class Queue {
  readonly size: number;
  readonly descTable: number;
  readonly availRing: number;
  readonly usedRing: number;
  nextAvail: number;
  nextUsed: number;
  eventIdx = false;
  indirect = true;
  /** Why the queue stopped, once the guest broke it. */
  broken: string | undefined;
  /** Called once when the queue breaks (the device turns this into DEVICE_NEEDS_RESET). */
  onBroken: ((reason: string) => void) | undefined;
  private signalledUsed: number | undefined;

  constructor(
    readonly mem: GuestMemory,
    cfg: QueueConfig,
    readonly maxSize = 256,
  ) {
    this.size = cfg.size;
    this.descTable = cfg.descTable;
    this.availRing = cfg.availRing;
    this.usedRing = cfg.usedRing;
    this.nextAvail = (cfg.nextAvail ?? 0) & 0xffff;
    this.nextUsed = (cfg.nextUsed ?? cfg.nextAvail ?? 0) & 0xffff;
    const why = this.check();
    if (why) this.fail(why);
  }

  /** Validates size, alignment and placement of the three areas (§2.7, Table 2.2). */
  private check(): string | undefined {
    const n = this.size;
    if (!Number.isInteger(n) || n < 1 || n > this.maxSize || n > 32768 || (n & (n - 1)) !== 0) {
      return `invalid queue size ${n} (max ${this.maxSize}, power of two)`;
    }
    if (this.descTable % 16 || this.availRing % 2 || this.usedRing % 4) return "misaligned queue area";
    if (!this.mem.contains(this.descTable, 16 * n)) return "descriptor table outside guest memory";
    if (!this.mem.contains(this.availRing, 6 + 2 * n)) return "available ring outside guest memory";
    if (!this.mem.contains(this.usedRing, 6 + 8 * n)) return "used ring outside guest memory";
    return undefined;
  }

  private fail(reason: string): void {
    if (this.broken) return;
    this.broken = reason;
    this.onBroken?.(reason);
  }

  /** Marks the queue broken from a device (e.g. a request that violates the device's rules). */
  markBroken(reason: string): void {
    this.fail(reason);
  }

  private availIdx(): number {
    return this.mem.loadU16Acquire(this.availRing + 2);
  }

  /** Number of chains the driver has made available and the device has not taken yet. */
  pending(): number {
    if (this.broken) return 0;
    const n = (this.availIdx() - this.nextAvail) & 0xffff;
    if (n > this.size) {
      this.fail(`available index moved ${n} entries ahead (queue size ${this.size})`);
      return 0;
    }
    return n;
  }

  /** Takes the next available chain, or undefined if none (or the queue is broken). */
  pop(): DescriptorChain | undefined {
    if (this.pending() === 0) return undefined;
    try {
      const head = this.mem.readU16(this.availRing + 4 + 2 * (this.nextAvail % this.size));
      const chain = readChain(this.mem, this.descTable, this.size, head, this.indirect);
      this.nextAvail = (this.nextAvail + 1) & 0xffff;
      return chain;
    } catch (e) {
      if (!(e instanceof GuestError)) throw e;
      this.fail(e.message);
      return undefined;
    }
  }

  /** Returns a chain to the driver with `len` bytes written to its device-writable part. */
  addUsed(head: number, len: number): void {
    if (this.broken) return;
    const slot = this.usedRing + 4 + 8 * (this.nextUsed % this.size);
    this.mem.writeU32(slot, head);
    this.mem.writeU32(slot + 4, len);
    this.nextUsed = (this.nextUsed + 1) & 0xffff;
    // Release: the guest must see the entry before the index that covers it.
    this.mem.storeU16Release(this.usedRing + 2, this.nextUsed);
  }

  /** After addUsed: whether the driver wants an interrupt now (§2.7.7.2, vring_need_event). */
  needsNotification(): boolean {
    if (this.broken) return false;
    fence();
    const newIdx = this.nextUsed;
    if (this.eventIdx) {
      const usedEvent = this.mem.readU16(this.availRing + 4 + 2 * this.size);
      const old = this.signalledUsed;
      this.signalledUsed = newIdx;
      if (old === undefined) return true;
      return ((newIdx - usedEvent - 1) & 0xffff) < ((newIdx - old) & 0xffff);
    }
    return (this.mem.readU16(this.availRing) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /**
   * Asks the driver to kick again when it adds buffers; returns true if buffers arrived
   * meanwhile (the caller must then keep processing, or a kick could be lost).
   */
  enableNotification(): boolean {
    if (this.broken) return false;
    if (this.eventIdx) this.mem.writeU16(this.usedRing + 4 + 8 * this.size, this.nextAvail);
    else this.mem.writeU16(this.usedRing, this.mem.readU16(this.usedRing) & ~VIRTQ_USED_F_NO_NOTIFY);
    fence();
    return this.pending() > 0;
  }

  /** Tells the driver not to kick while the device is busy draining the ring anyway. */
  disableNotification(): void {
    if (this.broken || this.eventIdx) return; // with EVENT_IDX, a stale avail_event already suppresses
    this.mem.writeU16(this.usedRing, this.mem.readU16(this.usedRing) | VIRTQ_USED_F_NO_NOTIFY);
  }
}
