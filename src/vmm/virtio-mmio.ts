// The virtio-mmio transport, version 2 (virtio 1.2 §4.2.2), hosting one src/virtio device, with
// the Dragonball vendor extension (docs/decisions.md decision 3, docs/virtio-mmio-msi.md §2c): VendorID
// 0xdbfcdb00 | feature byte, an MSI CSR/command/address/data block at 0x0c0..0x0cf (vector 0 =
// config, queue i = vector i+1) and per-queue doorbells at +0x1000 + 4·i. A guest that does not
// enable MSI gets the legacy interrupt with InterruptStatus/ACK.
//
// Everything the guest writes is checked. A guest that breaks the protocol (queue setup while
// running, rings outside RAM, MSI enabled after DRIVER_OK, unknown commands) is logged and the
// device is marked failed (DEVICE_NEEDS_RESET + config interrupt); the VMM never throws. A guest
// can repeat that at will (violate, reset, violate…), so every such log line is rate-limited
// (RateLimitedLog: the first few per interval, then one count).
// KVM specifics (irqfd, ioeventfd, MSI routes) sit behind MmioInterrupts so this file is testable
// without KVM.
import type { Logger } from "pino";
import { RateLimitedLog } from "../common/rate-limited-log.ts";
import {
  checkFeatures,
  type InterruptSink,
  VIRTIO_STATUS_DEVICE_NEEDS_RESET,
  type VirtioDevice,
} from "../virtio/device.ts";
import type { GuestMemory } from "../virtio/memory.ts";
import { Queue } from "../virtio/queue/queue.ts";
import type { BusDevice } from "./bus.ts";

export const MMIO_MAGIC = 0x74726976; // "virt"
export const MMIO_VERSION = 2;
export const DRAGONBALL_VENDOR_ID = 0xdbfcdb00;
export const DB_FEATURE_INTR_USED = 0x1;
export const DB_FEATURE_MSI = 0x2;
export const DB_FEATURE_PER_QUEUE_NOTIFY = 0x4;
export const MSI_CSR_SUPPORTED = 0x8000;
export const MSI_CMD_UPDATE = 0x1;
export const MSI_CMD_MASK = 0x2;
export const MSI_CMD_UNMASK = 0x3;
export const DOORBELL_OFFSET = 0x1000;
export const DOORBELL_SCALE = 4;
export const CONFIG_OFFSET = 0x100;
export const WINDOW_SIZE = 0x2000;

export const REG = {
  MAGIC: 0x000,
  VERSION: 0x004,
  DEVICE_ID: 0x008,
  VENDOR_ID: 0x00c,
  DEVICE_FEATURES: 0x010,
  DEVICE_FEATURES_SEL: 0x014,
  DRIVER_FEATURES: 0x020,
  DRIVER_FEATURES_SEL: 0x024,
  QUEUE_SEL: 0x030,
  QUEUE_NUM_MAX: 0x034,
  QUEUE_NUM: 0x038,
  QUEUE_READY: 0x044,
  QUEUE_NOTIFY: 0x050,
  INTERRUPT_STATUS: 0x060,
  INTERRUPT_ACK: 0x064,
  STATUS: 0x070,
  QUEUE_DESC_LOW: 0x080,
  QUEUE_DESC_HIGH: 0x084,
  QUEUE_AVAIL_LOW: 0x090,
  QUEUE_AVAIL_HIGH: 0x094,
  QUEUE_USED_LOW: 0x0a0,
  QUEUE_USED_HIGH: 0x0a4,
  MSI_CSR: 0x0c0,
  MSI_COMMAND: 0x0c2,
  MSI_ADDRESS_LOW: 0x0c4,
  MSI_ADDRESS_HIGH: 0x0c8,
  MSI_DATA: 0x0cc,
  CONFIG_GENERATION: 0x0fc,
} as const;

export const STATUS_ACKNOWLEDGE = 1;
export const STATUS_DRIVER = 2;
export const STATUS_DRIVER_OK = 4;
export const STATUS_FEATURES_OK = 8;
export const STATUS_FAILED = 0x80;
export const INT_VRING = 1;
export const INT_CONFIG = 2;

/** How the transport reaches the guest's interrupt controller (KVM irqfd/MSI routes, or a test double). */
export interface MmioInterrupts {
  /** Raise the device's legacy (IOAPIC pin) interrupt. */
  legacy(): void;
  /** MSI is available for this device (the MSI feature bit is offered only then). */
  readonly msiCapable: boolean;
  /** Program vector `v` (route it); called on UPDATE. */
  msiUpdate?(v: number, addressLo: number, addressHi: number, data: number): void;
  /** Turn MSI delivery on (true) or off; vectors stay programmed. */
  msiEnable?(on: boolean): void;
  /** Deliver vector `v` (it is programmed and unmasked). */
  msiSignal?(v: number): void;
}

/** Doorbells and QueueNotify served in-kernel (ioeventfd); the transport only tells it which queues. */
export interface MmioNotifiers {
  /** KVM can serve doorbells with length-0 ("fast MMIO") ioeventfds: offer the doorbell feature. */
  readonly doorbells: boolean;
  /** Queue `index` is live: kicks for it should reach `kick` without a userspace exit. */
  attach(index: number, kick: () => void): void;
  /** Stop delivering kicks for every queue. */
  detachAll(): void;
}

interface QueueRegs {
  num: number;
  ready: boolean;
  desc: number;
  avail: number;
  used: number;
}

interface Vector {
  addressLo: number;
  addressHi: number;
  data: number;
  configured: boolean;
  masked: boolean;
  pending: boolean;
}

function freshQueue(): QueueRegs {
  return { num: 0, ready: false, desc: 0, avail: 0, used: 0 };
}

export interface MmioTransportOptions {
  device: VirtioDevice;
  mem: GuestMemory;
  interrupts: MmioInterrupts;
  notifiers?: MmioNotifiers;
  log: Logger;
}

export class MmioTransport implements BusDevice {
  readonly device: VirtioDevice;
  private readonly mem: GuestMemory;
  private readonly irq: MmioInterrupts;
  private readonly notifiers: MmioNotifiers | undefined;
  private readonly log: Logger;
  /** Guest-provoked log lines, one rate-limited source each: failures, refused negotiations, ignored accesses. */
  private readonly failedLog: RateLimitedLog;
  private readonly refusedLog: RateLimitedLog;
  private readonly ignoredLog: RateLimitedLog;
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  private driverFeatures = 0n;
  private queueSel = 0;
  private queues: QueueRegs[];
  private liveQueues: (Queue | undefined)[] = [];
  private status = 0;
  private interruptStatus = 0;
  private configGeneration = 0;
  private msiEnabled = false;
  private latch = { addressLo: 0, addressHi: 0, data: 0 };
  private vectors: Vector[];
  /** Why the device stopped, when the guest broke the protocol. */
  failed: string | undefined;
  /** Counters for tests and metrics: what reached userspace. */
  readonly stats = { registerReads: 0, registerWrites: 0, notifies: 0, legacyIrqs: 0, msiIrqs: 0, rejected: 0 };

  constructor(o: MmioTransportOptions) {
    this.device = o.device;
    this.mem = o.mem;
    this.irq = o.interrupts;
    this.notifiers = o.notifiers;
    this.log = o.log.child({ device: o.device.name });
    this.failedLog = new RateLimitedLog(this.log, "error");
    this.refusedLog = new RateLimitedLog(this.log, "warn");
    this.ignoredLog = new RateLimitedLog(this.log, "warn");
    this.queues = o.device.queueMaxSizes.map(freshQueue);
    this.vectors = Array.from({ length: this.queues.length + 1 }, () => ({
      addressLo: 0,
      addressHi: 0,
      data: 0,
      configured: false,
      masked: false,
      pending: false,
    }));
    o.device.onNeedsReset = (reason) => this.markNeedsReset(reason);
  }

  /** The VendorID feature byte this device offers. */
  get vendorFeatures(): number {
    let f = DB_FEATURE_INTR_USED;
    if (this.irq.msiCapable) f |= DB_FEATURE_MSI;
    if (this.notifiers?.doorbells) f |= DB_FEATURE_PER_QUEUE_NOTIFY;
    return f;
  }

  get msiActive(): boolean {
    return this.msiEnabled;
  }

  /** The interrupt sink handed to the device on activation. */
  private readonly sink: InterruptSink = {
    queue: (index) => this.interrupt(index + 1, INT_VRING),
    config: () => {
      // The configuration changed: a driver re-reads it until the generation is stable.
      this.configGeneration = (this.configGeneration + 1) >>> 0;
      this.interrupt(0, INT_CONFIG);
    },
  };

  private interrupt(vector: number, legacyBit: number): void {
    if (this.msiEnabled) {
      const v = this.vectors[vector];
      if (!v?.configured) return; // the driver did not set this vector up: nothing to deliver
      if (v.masked) {
        v.pending = true;
        return;
      }
      this.stats.msiIrqs++;
      this.irq.msiSignal?.(vector);
      return;
    }
    this.interruptStatus |= legacyBit;
    this.stats.legacyIrqs++;
    this.irq.legacy();
  }

  // ---- register access ----

  read(offset: number, data: Uint8Array): void {
    this.stats.registerReads++;
    data.fill(0);
    const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
    if (offset >= CONFIG_OFFSET && offset < DOORBELL_OFFSET) {
      data.set(this.device.readConfig(offset - CONFIG_OFFSET, data.length));
      return;
    }
    if (offset >= DOORBELL_OFFSET) return; // doorbells are write-only
    if (offset === REG.MSI_CSR && data.length === 2) {
      dv.setUint16(0, this.irq.msiCapable ? MSI_CSR_SUPPORTED | (this.queues.length & 0x7ff) : 0, true);
      return;
    }
    if (data.length !== 4 || offset % 4) {
      this.hostile(`${data.length}-byte read of register 0x${offset.toString(16)}`, false);
      return;
    }
    dv.setUint32(0, this.readReg(offset) >>> 0, true);
  }

  private readReg(offset: number): number {
    const q = this.queues[this.queueSel];
    switch (offset) {
      case REG.MAGIC:
        return MMIO_MAGIC;
      case REG.VERSION:
        return MMIO_VERSION;
      case REG.DEVICE_ID:
        return this.device.deviceType;
      case REG.VENDOR_ID:
        return (DRAGONBALL_VENDOR_ID | this.vendorFeatures) >>> 0;
      case REG.DEVICE_FEATURES:
        if (this.deviceFeaturesSel > 1) return 0;
        return Number((this.device.features >> BigInt(32 * this.deviceFeaturesSel)) & 0xffffffffn);
      case REG.QUEUE_NUM_MAX:
        return this.device.queueMaxSizes[this.queueSel] ?? 0;
      case REG.QUEUE_READY:
        return q?.ready ? 1 : 0;
      case REG.QUEUE_NOTIFY:
        // Dragonball: with doorbells, reading QueueNotify tells the driver where they are.
        return this.notifiers?.doorbells ? DOORBELL_OFFSET | (DOORBELL_SCALE << 16) : 0;
      case REG.INTERRUPT_STATUS:
        // INTR_USED: always report VRING so a kick delivered straight to the irqfd is never lost.
        return this.msiEnabled ? 0 : this.interruptStatus | INT_VRING;
      case REG.STATUS:
        return this.status;
      case REG.CONFIG_GENERATION:
        return this.configGeneration;
      default:
        return 0;
    }
  }

  write(offset: number, data: Uint8Array): void {
    this.stats.registerWrites++;
    const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
    if (offset >= DOORBELL_OFFSET) {
      const rel = offset - DOORBELL_OFFSET;
      if (rel % DOORBELL_SCALE === 0) this.notify(rel / DOORBELL_SCALE);
      else this.hostile(`misaligned doorbell write at 0x${offset.toString(16)}`, false);
      return;
    }
    if (offset >= CONFIG_OFFSET) {
      this.device.writeConfig(offset - CONFIG_OFFSET, Buffer.from(data));
      return;
    }
    if ((offset === REG.MSI_CSR || offset === REG.MSI_COMMAND) && data.length === 2) {
      this.msiWrite16(offset, dv.getUint16(0, true));
      return;
    }
    if (data.length !== 4 || offset % 4) {
      this.hostile(`${data.length}-byte write to register 0x${offset.toString(16)}`, false);
      return;
    }
    this.writeReg(offset, dv.getUint32(0, true));
  }

  private writeReg(offset: number, v: number): void {
    switch (offset) {
      case REG.DEVICE_FEATURES_SEL:
        this.deviceFeaturesSel = v;
        return;
      case REG.DRIVER_FEATURES:
        if (this.status & STATUS_FEATURES_OK) {
          this.hostile("driver features written after FEATURES_OK", true);
          return;
        }
        if (this.driverFeaturesSel <= 1) {
          const shift = BigInt(32 * this.driverFeaturesSel);
          this.driverFeatures = (this.driverFeatures & ~(0xffffffffn << shift)) | (BigInt(v) << shift);
        }
        return;
      case REG.DRIVER_FEATURES_SEL:
        this.driverFeaturesSel = v;
        return;
      case REG.QUEUE_SEL:
        this.queueSel = v;
        return;
      case REG.QUEUE_NUM:
      case REG.QUEUE_DESC_LOW:
      case REG.QUEUE_DESC_HIGH:
      case REG.QUEUE_AVAIL_LOW:
      case REG.QUEUE_AVAIL_HIGH:
      case REG.QUEUE_USED_LOW:
      case REG.QUEUE_USED_HIGH:
        this.queueSetup(offset, v);
        return;
      case REG.QUEUE_READY:
        this.queueReady(v);
        return;
      case REG.QUEUE_NOTIFY:
        this.notify(v & 0xffff);
        return;
      case REG.INTERRUPT_ACK:
        this.interruptStatus &= ~v;
        return;
      case REG.STATUS:
        this.setStatus(v);
        return;
      case REG.MSI_ADDRESS_LOW:
        this.latch.addressLo = v;
        return;
      case REG.MSI_ADDRESS_HIGH:
        this.latch.addressHi = v;
        return;
      case REG.MSI_DATA:
        this.latch.data = v;
        return;
      default:
        this.hostile(`write of 0x${v.toString(16)} to unknown register 0x${offset.toString(16)}`, false);
    }
  }

  private queueSetup(offset: number, v: number): void {
    const q = this.queues[this.queueSel];
    if (!q) {
      this.hostile(`queue setup of nonexistent queue ${this.queueSel}`, false);
      return;
    }
    if (q.ready || this.status & STATUS_DRIVER_OK) {
      this.hostile(`queue ${this.queueSel} reconfigured while running`, true);
      return;
    }
    const lo = (cur: number) => Math.floor(cur / 2 ** 32) * 2 ** 32 + v;
    const hi = (cur: number) => v * 2 ** 32 + (cur % 2 ** 32);
    switch (offset) {
      case REG.QUEUE_NUM:
        q.num = v;
        return;
      case REG.QUEUE_DESC_LOW:
        q.desc = lo(q.desc);
        return;
      case REG.QUEUE_DESC_HIGH:
        q.desc = hi(q.desc);
        return;
      case REG.QUEUE_AVAIL_LOW:
        q.avail = lo(q.avail);
        return;
      case REG.QUEUE_AVAIL_HIGH:
        q.avail = hi(q.avail);
        return;
      case REG.QUEUE_USED_LOW:
        q.used = lo(q.used);
        return;
      case REG.QUEUE_USED_HIGH:
        q.used = hi(q.used);
        return;
    }
  }

  private queueReady(v: number): void {
    const q = this.queues[this.queueSel];
    if (!q) {
      this.hostile(`QueueReady for nonexistent queue ${this.queueSel}`, false);
      return;
    }
    if (v === 0) {
      if (this.status & STATUS_DRIVER_OK) this.hostile(`queue ${this.queueSel} disabled while running`, true);
      q.ready = false;
      return;
    }
    const max = this.device.queueMaxSizes[this.queueSel] ?? 0;
    // Validate now, so the error names the queue; Queue re-checks at activation.
    const n = q.num;
    if (n < 1 || n > max || n & (n - 1)) {
      this.hostile(`queue ${this.queueSel}: size ${n} invalid (max ${max}, power of two)`, true);
      return;
    }
    if (
      !this.mem.contains(q.desc, 16 * n) ||
      !this.mem.contains(q.avail, 6 + 2 * n) ||
      !this.mem.contains(q.used, 6 + 8 * n)
    ) {
      this.hostile(`queue ${this.queueSel}: ring outside guest memory`, true);
      return;
    }
    q.ready = true;
  }

  private notify(index: number): void {
    if (!(this.status & STATUS_DRIVER_OK) || this.failed) return;
    if (index >= this.queues.length) {
      this.hostile(`notify of nonexistent queue ${index}`, false);
      return;
    }
    this.stats.notifies++;
    this.device.notify(index);
  }

  private setStatus(v: number): void {
    if (v === 0) {
      this.reset();
      return;
    }
    if (this.failed) return; // only a reset brings a failed device back
    const added = v & ~this.status;
    if (this.status & ~v & ~VIRTIO_STATUS_DEVICE_NEEDS_RESET) {
      this.hostile(`status bits cleared without reset (0x${this.status.toString(16)} → 0x${v.toString(16)})`, true);
      return;
    }
    if (added & STATUS_FEATURES_OK) {
      const bad = checkFeatures(this.device.features, this.driverFeatures);
      if (bad) {
        this.refusedLog.log({ reason: bad }, "feature negotiation refused");
        // The driver must see FEATURES_OK clear before it goes on (§3.1.1); DRIVER_OK in the
        // same write would leave a device that reads as running but was never activated.
        if (added & STATUS_DRIVER_OK) {
          this.hostile("DRIVER_OK with the feature negotiation refused", true);
          return;
        }
        this.status = v & ~STATUS_FEATURES_OK;
        return;
      }
    }
    if (added & STATUS_DRIVER_OK) {
      if (!(v & STATUS_FEATURES_OK)) {
        this.hostile("DRIVER_OK without FEATURES_OK", true);
        return;
      }
      this.status = v;
      this.activate();
      return;
    }
    this.status = v;
  }

  private activate(): void {
    this.liveQueues = this.queues.map((r, i) =>
      r.ready
        ? new Queue(
            this.mem,
            { size: r.num, descTable: r.desc, availRing: r.avail, usedRing: r.used },
            this.device.queueMaxSizes[i],
          )
        : undefined,
    );
    this.liveQueues.forEach((q, i) => {
      if (q) this.notifiers?.attach(i, () => this.notify(i));
    });
    this.log.debug({ features: `0x${this.driverFeatures.toString(16)}`, msi: this.msiEnabled }, "device activated");
    this.device.activate({
      mem: this.mem,
      queues: this.liveQueues,
      interrupt: this.sink,
      features: this.driverFeatures,
    });
  }

  private reset(): void {
    this.notifiers?.detachAll();
    this.device.reset();
    if (this.msiEnabled) this.irq.msiEnable?.(false);
    this.status = 0;
    this.failed = undefined;
    this.interruptStatus = 0;
    this.driverFeatures = 0n;
    this.deviceFeaturesSel = 0;
    this.driverFeaturesSel = 0;
    this.queueSel = 0;
    this.queues = this.device.queueMaxSizes.map(freshQueue);
    this.liveQueues = [];
    this.msiEnabled = false;
    for (const v of this.vectors) Object.assign(v, { configured: false, masked: false, pending: false });
  }

  // ---- MSI (Dragonball) ----

  private msiWrite16(offset: number, v: number): void {
    if (!this.irq.msiCapable) {
      this.hostile(`MSI register 0x${offset.toString(16)} written, but MSI is not offered`, false);
      return;
    }
    if (offset === REG.MSI_CSR) {
      const on = (v & MSI_CSR_SUPPORTED) !== 0;
      if (on === this.msiEnabled) return;
      if (this.status & STATUS_DRIVER_OK) {
        this.hostile(`MSI ${on ? "enabled" : "disabled"} after DRIVER_OK`, true);
        return;
      }
      this.msiEnabled = on;
      this.irq.msiEnable?.(on);
      return;
    }
    const cmd = v >> 12;
    const arg = v & 0x0fff;
    const vec = this.vectors[arg];
    switch (cmd) {
      case MSI_CMD_UPDATE:
        if (!vec) {
          this.hostile(`MSI UPDATE of vector ${arg}, beyond the queues`, false);
          return;
        }
        vec.addressLo = this.latch.addressLo;
        vec.addressHi = this.latch.addressHi;
        vec.data = this.latch.data;
        vec.configured = true;
        this.irq.msiUpdate?.(arg, vec.addressLo, vec.addressHi, vec.data);
        return;
      case MSI_CMD_MASK:
        if (vec) vec.masked = true;
        return;
      case MSI_CMD_UNMASK:
        if (!vec) return;
        vec.masked = false;
        if (vec.pending && this.msiEnabled && vec.configured) {
          vec.pending = false;
          this.stats.msiIrqs++;
          this.irq.msiSignal?.(arg);
        }
        return;
      default:
        this.hostile(`unknown MSI command 0x${v.toString(16)}`, true);
    }
  }

  // ---- failure ----

  /** A protocol violation: logged (rate-limited), fatal ones fail the device. */
  private hostile(what: string, fatal: boolean): void {
    this.stats.rejected++;
    if (fatal) this.markNeedsReset(what);
    else this.ignoredLog.log({ count: this.stats.rejected }, `guest: ${what} (ignored)`);
  }

  private markNeedsReset(reason: string): void {
    if (this.failed) return;
    this.failed = reason;
    this.failedLog.log({ reason }, "guest broke the virtio-mmio contract; device failed until reset");
    this.notifiers?.detachAll();
    this.device.reset();
    this.status |= VIRTIO_STATUS_DEVICE_NEEDS_RESET;
    this.configGeneration = (this.configGeneration + 1) >>> 0;
    if (this.status & STATUS_DRIVER_OK) this.interrupt(0, INT_CONFIG);
  }

  /** Writes what the rate-limited logs still hold back (the VM goes away). */
  close(): void {
    for (const l of [this.failedLog, this.refusedLog, this.ignoredLog]) l.close();
  }
}
