// A virtio-mmio transport with test doubles around it (no KVM): a device that records what it
// is told, interrupts and notifiers that count, and register accessors plus the Linux driver's
// handshake. The transport tests and the virtio-mmio fuzzer drive it the same way.
import { type Logger, pino } from "pino";
import {
  type ActivateContext,
  bit,
  readConfigWindow,
  VIRTIO_F_VERSION_1,
  type VirtioDevice,
} from "../../../src/virtio/device.ts";
import { GuestMemory } from "../../../src/virtio/memory.ts";
import {
  type MmioInterrupts,
  type MmioNotifiers,
  MmioTransport,
  REG,
  STATUS_ACKNOWLEDGE,
  STATUS_DRIVER,
  STATUS_DRIVER_OK,
  STATUS_FEATURES_OK,
} from "../../../src/vmm/virtio-mmio.ts";

const silent = pino({ level: "silent" });

export class FakeDevice implements VirtioDevice {
  readonly deviceType = 42;
  readonly name = "fake";
  readonly queueMaxSizes = [16, 16];
  readonly features = bit(VIRTIO_F_VERSION_1) | 0x5n;
  needsReset: string | undefined;
  onNeedsReset?: (reason: string) => void;
  ctx: ActivateContext | undefined;
  notified: number[] = [];
  resets = 0;
  config = Buffer.from([1, 2, 3, 4, 5, 6, 7, 8]);
  readConfig(offset: number, length: number): Buffer {
    return readConfigWindow(this.config, offset, length);
  }
  writeConfig(offset: number, data: Buffer): void {
    if (offset < this.config.length) data.copy(this.config, offset);
  }
  activate(ctx: ActivateContext): void {
    this.ctx = ctx;
  }
  notify(index: number): void {
    this.notified.push(index);
  }
  reset(): void {
    this.resets++;
    this.ctx = undefined;
  }
}

export class FakeIrq implements MmioInterrupts {
  legacyCount = 0;
  signals: number[] = [];
  routes = new Map<number, [number, number, number]>();
  enabled: boolean[] = [];
  constructor(readonly msiCapable = true) {}
  legacy(): void {
    this.legacyCount++;
  }
  msiUpdate(v: number, lo: number, hi: number, data: number): void {
    this.routes.set(v, [lo, hi, data]);
  }
  msiEnable(on: boolean): void {
    this.enabled.push(on);
  }
  msiSignal(v: number): void {
    this.signals.push(v);
  }
}

export class FakeNotifiers implements MmioNotifiers {
  attached: number[] = [];
  detached = 0;
  constructor(readonly doorbells = true) {}
  attach(index: number): void {
    this.attached.push(index);
  }
  detachAll(): void {
    this.detached++;
    this.attached = [];
  }
}

export function rig<I extends MmioInterrupts = FakeIrq>(
  opts: { msi?: boolean; doorbells?: boolean; device?: VirtioDevice; log?: Logger; interrupts?: I } = {},
) {
  const mem = GuestMemory.alloc(1 << 20);
  const device = opts.device ?? new FakeDevice();
  const irq = (opts.interrupts ?? new FakeIrq(opts.msi ?? true)) as I;
  const notifiers = new FakeNotifiers(opts.doorbells ?? true);
  const t = new MmioTransport({ device, mem, interrupts: irq, notifiers, log: opts.log ?? silent });
  const { r32, w32, r16, w16 } = registers(t);
  /** The Linux driver's sequence up to (not including) DRIVER_OK, with queue i at 0x10000·(i+1). */
  const negotiate = (queues = [0], features = device.features) => {
    w32(REG.STATUS, 0);
    w32(REG.STATUS, STATUS_ACKNOWLEDGE);
    w32(REG.STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    w32(REG.DRIVER_FEATURES_SEL, 0);
    w32(REG.DRIVER_FEATURES, Number(features & 0xffffffffn));
    w32(REG.DRIVER_FEATURES_SEL, 1);
    w32(REG.DRIVER_FEATURES, Number(features >> 32n));
    w32(REG.STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    for (const q of queues) {
      const base = 0x10000 * (q + 1);
      w32(REG.QUEUE_SEL, q);
      w32(REG.QUEUE_NUM, 16);
      w32(REG.QUEUE_DESC_LOW, base);
      w32(REG.QUEUE_DESC_HIGH, 0);
      w32(REG.QUEUE_AVAIL_LOW, base + 0x1000);
      w32(REG.QUEUE_AVAIL_HIGH, 0);
      w32(REG.QUEUE_USED_LOW, base + 0x2000);
      w32(REG.QUEUE_USED_HIGH, 0);
      w32(REG.QUEUE_READY, 1);
    }
  };
  const driverOk = () => w32(REG.STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
  return { t, mem, device, irq, notifiers, r32, w32, r16, w16, negotiate, driverOk };
}

/** Register reads and writes of 2 or 4 bytes, little-endian, as a vCPU's MMIO exits deliver them. */
export function registers(t: MmioTransport) {
  const read = (off: number, n: 2 | 4) => {
    const b = new Uint8Array(n);
    t.read(off, b);
    const dv = new DataView(b.buffer);
    return n === 4 ? dv.getUint32(0, true) : dv.getUint16(0, true);
  };
  const write = (off: number, v: number, n: 2 | 4) => {
    const b = new Uint8Array(n);
    const dv = new DataView(b.buffer);
    if (n === 4) dv.setUint32(0, v >>> 0, true);
    else dv.setUint16(0, v & 0xffff, true);
    t.write(off, b);
  };
  return {
    r32: (off: number) => read(off, 4),
    r16: (off: number) => read(off, 2),
    w32: (off: number, v: number) => write(off, v, 4),
    w16: (off: number, v: number) => write(off, v, 2),
  };
}
