// virtio-mmio register writes from a hostile driver, MSI included, against the real transport and
// its real KVM interrupt wiring (KvmMmioInterrupts + GsiRouter over a VM double that counts
// routing-table writes): the Linux handshake with steps skipped, repeated or reordered, status
// values with any bits, queue setup while running, writes of every width anywhere in the window,
// doorbells, MSI enable/disable, UPDATE storms, mask/unmask, and the device raising interrupts.
// Invariants on every case: no uncaught error; a device that reads as running (DRIVER_OK without
// DEVICE_NEEDS_RESET) was activated, and no kick reaches a device that is not; the KVM routing
// table is written at most once per MSI interrupt delivered (UPDATEs alone never write it); the
// guest gets at most LOG_BURST log lines per source and interval out of the transport.
import { pino } from "pino";
import { LOG_BURST } from "../../src/common/rate-limited-log.ts";
import { VIRTIO_STATUS_DEVICE_NEEDS_RESET } from "../../src/virtio/device.ts";
import { GsiRouter } from "../../src/vmm/irq.ts";
import type { Vm } from "../../src/vmm/kvm.ts";
import {
  CONFIG_OFFSET,
  DOORBELL_OFFSET,
  MSI_CMD_MASK,
  MSI_CMD_UNMASK,
  MSI_CMD_UPDATE,
  REG,
  STATUS_DRIVER_OK,
  WINDOW_SIZE,
} from "../../src/vmm/virtio-mmio.ts";
import { KvmMmioInterrupts } from "../../src/vmm/virtio-mmio-kvm.ts";
import { FakeDevice, rig } from "../unit/vmm/mmio-rig.ts";
import { type CaseContext, type Fuzzer, type Rng, runCases } from "./fuzz.ts";

/** Log sources of one transport (failures, refused negotiations, ignored accesses). */
const LOG_SOURCES = 3;
const REGS = Object.values(REG);
const STATUS_BITS = [1, 2, 4, 8, 0x40, 0x80];

/** A register offset: a known one mostly, anywhere in the window (config, doorbells) sometimes. */
function offset(rng: Rng): number {
  const k = rng.next();
  if (k < 0.7) return rng.pick(REGS);
  if (k < 0.8) return CONFIG_OFFSET + rng.int(64);
  if (k < 0.9) return DOORBELL_OFFSET + rng.int(64);
  return rng.int(WINDOW_SIZE);
}

async function oneCase({ rng, rec }: CaseContext): Promise<void> {
  let routingWrites = 0;
  const msiCapable = rng.chance(0.85);
  const vm = {
    checkExtension: () => (msiCapable ? 1 : 0),
    irqfd() {},
    setGsiRouting() {
      routingWrites++;
    },
  } as unknown as Vm;
  const interrupts = new KvmMmioInterrupts(vm, new GsiRouter(vm), 5);
  let lines = 0;
  // What reaches a production log (info and up; debug lines are off unless asked for).
  const log = pino({ level: "info" }, { write: () => void lines++ });
  const device = new FakeDevice();
  const { t, r32, w16, w32, negotiate, driverOk } = rig({ device, interrupts, log, doorbells: rng.chance(0.8) });
  const notify = device.notify.bind(device);
  device.notify = (i) => {
    if (!device.ctx) rec.violate(`kick of queue ${i} reached a device that was never activated`);
    notify(i);
  };
  const write = (off: number, v: number) => {
    const b = new Uint8Array(rng.pick([4, 4, 4, 2, 1, 8]));
    const dv = new DataView(b.buffer);
    if (b.length === 1) dv.setUint8(0, v & 0xff);
    else if (b.length === 2) dv.setUint16(0, v & 0xffff, true);
    else dv.setUint32(0, v >>> 0, true);
    t.write(off, b);
  };
  try {
    for (let n = rng.range(1, 60); n > 0; n--) {
      const op = rng.weighted({
        bringUp: 4,
        handshake: 4,
        driverOk: 2,
        status: 3,
        write: 8,
        read: 2,
        msiCsr: 2,
        msiUpdate: 4,
        msiStorm: 1,
        msiMask: 2,
        kick: 4,
        deviceIrq: 4,
        reset: 2,
      });
      rec.op(op);
      switch (op) {
        case "bringUp": // what a well-behaved driver does, MSI on where offered
          negotiate([0, 1]);
          if (msiCapable && rng.chance(0.8)) {
            w16(REG.MSI_CSR, 0x8000);
            for (let v = 0; v < 3; v++) {
              w32(REG.MSI_ADDRESS_LOW, 0xfee00000);
              w32(REG.MSI_DATA, 0x30 + v);
              w16(REG.MSI_COMMAND, (MSI_CMD_UPDATE << 12) | v);
            }
          }
          driverOk();
          break;
        case "handshake": // Linux's sequence, with features right or anything
          negotiate(rng.chance(0.5) ? [0] : [0, 1], rng.chance(0.8) ? device.features : rng.u64());
          break;
        case "driverOk":
          driverOk();
          break;
        case "status": {
          let v = 0;
          for (const b of STATUS_BITS) if (rng.chance(0.5)) v |= b;
          w32(REG.STATUS, rng.chance(0.9) ? v : rng.u32());
          break;
        }
        case "write":
          write(offset(rng), rng.edgy());
          break;
        case "read":
          t.read(offset(rng), new Uint8Array(rng.pick([1, 2, 4, 8])));
          break;
        case "msiCsr":
          w16(REG.MSI_CSR, rng.chance(0.8) ? 0x8000 : rng.u16());
          break;
        case "msiUpdate":
          w32(REG.MSI_ADDRESS_LOW, rng.chance(0.8) ? 0xfee00000 : rng.u32());
          w32(REG.MSI_ADDRESS_HIGH, rng.chance(0.9) ? 0 : rng.u32());
          w32(REG.MSI_DATA, rng.edgy());
          w16(REG.MSI_COMMAND, (MSI_CMD_UPDATE << 12) | rng.int(5));
          break;
        case "msiStorm": // the same or changing vectors, many times, no interrupt in between
          for (let k = rng.range(10, 500); k > 0; k--) {
            if (rng.chance(0.5)) w32(REG.MSI_DATA, rng.int(256));
            w16(REG.MSI_COMMAND, (MSI_CMD_UPDATE << 12) | rng.int(3));
          }
          break;
        case "msiMask":
          w16(REG.MSI_COMMAND, (rng.pick([MSI_CMD_MASK, MSI_CMD_UNMASK, 0, 7, 15]) << 12) | rng.int(5));
          break;
        case "kick":
          if (rng.chance(0.5)) w32(REG.QUEUE_NOTIFY, rng.int(4));
          else write(DOORBELL_OFFSET + 4 * rng.int(4), 0);
          break;
        case "deviceIrq": // the device's side: used buffers or a config change
          if (rng.chance(0.8)) device.ctx?.interrupt.queue(rng.int(2));
          else device.ctx?.interrupt.config();
          break;
        case "reset":
          w32(REG.STATUS, 0);
          break;
      }
      const status = r32(REG.STATUS);
      const running = (status & STATUS_DRIVER_OK) !== 0 && (status & VIRTIO_STATUS_DEVICE_NEEDS_RESET) === 0;
      if (running && !device.ctx) rec.violate(`STATUS 0x${status.toString(16)} reads as running, never activated`);
      rec.state(t.failed ? "failed" : running ? (t.msiActive ? "running-msi" : "running-legacy") : "setup");
      rec.bounded("gsiRoutingWritesBeyondMsiIrqs", Math.max(0, routingWrites - t.stats.msiIrqs), 0);
    }
    rec.bounded("mmioLogLinesPerInterval", lines, LOG_SOURCES * LOG_BURST);
  } finally {
    t.close();
    interrupts.close();
  }
}

export const fuzzer: Fuzzer = {
  name: "virtio-mmio",
  run: (opts) => runCases("virtio-mmio", opts, oneCase),
};
