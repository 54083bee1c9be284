// The MSI tests' VM runner (run inside the nested test host, or on a host with hardware KVM): boots
// a guest kernel on the embedded VMM with virtio-blk disks and optionally virtio-vsock, each on a
// transport that counts what reaches userspace — InterruptStatus reads, InterruptAck writes, MSI
// commands — and can pretend to offer fewer MSI vectors or no MSI at all. The guest's console goes
// to stdout; a console line `MSI-MARK <name> [value]` makes the runner print a JSON snapshot of the
// counters and KVM's exit statistics, so a guest script can bracket the section it measures.
//   node --import tsx test/integration/msi-vm.ts --root IMG [--disk F[:ro]]... [--vsock]
//        [--no-msi] [--vector-queues N] [--vcpus N] [--cmdline "…"] [--until RE] [--timeout S]
//        [--rr N] [--echo-bytes N]
// --rr / --echo-bytes: once the guest prints COVE-TEST-GUEST-READY, request/response round trips
// (32 bytes each way) and a bulk echo over vsock to the guest's echo port, checked byte for byte.
// Output lines: console lines, then {"mark":…}, {"vsock":…} and finally {"result":…} JSON lines.
import { createHash, randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { GUEST_ROOT_PARAMS, kernelCmdline } from "../../src/guest/cmdline.ts";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { BlkDevice } from "../../src/virtio/blk/device.ts";
import type { VirtioDevice } from "../../src/virtio/device.ts";
import type { VsockStream } from "../../src/virtio/vsock/connection.ts";
import { VsockDevice } from "../../src/virtio/vsock/device.ts";
import { FIRST_DEVICE_IRQ, MiB, VIRTIO_MMIO_BASE } from "../../src/vmm/layout.ts";
import { Machine } from "../../src/vmm/machine.ts";
import {
  type MmioInterrupts,
  MmioTransport,
  type MmioTransportOptions,
  MSI_CMD_MASK,
  MSI_CMD_UNMASK,
  MSI_CMD_UPDATE,
  REG,
  WINDOW_SIZE,
} from "../../src/vmm/virtio-mmio.ts";
import { KvmMmioInterrupts, KvmMmioNotifiers } from "../../src/vmm/virtio-mmio-kvm.ts";

export const ECHO_PORT = 1234;
export const READY_LINE = "COVE-TEST-GUEST-READY";

/** What reached the VMM's userspace through one transport, beyond the transport's own stats. */
export interface TransportCounts {
  isrReads: number;
  ackWrites: number;
  queueNotifyWrites: number;
  doorbellWrites: number;
  csrWrites: number;
  msiUpdates: number;
  msiMasks: number;
  msiUnmasks: number;
}

/**
 * A transport that counts the registers the MSI work is about and can report fewer queues with
 * vectors in the MSI CSR (bits 0-10) than the device has — a device with more queues than vectors.
 */
export class CountingTransport extends MmioTransport {
  readonly counts: TransportCounts = {
    isrReads: 0,
    ackWrites: 0,
    queueNotifyWrites: 0,
    doorbellWrites: 0,
    csrWrites: 0,
    msiUpdates: 0,
    msiMasks: 0,
    msiUnmasks: 0,
  };

  constructor(
    o: MmioTransportOptions,
    private readonly vectorQueues?: number,
  ) {
    super(o);
  }

  override read(offset: number, data: Uint8Array): void {
    if (offset === REG.INTERRUPT_STATUS) this.counts.isrReads++;
    super.read(offset, data);
    if (offset === REG.MSI_CSR && data.length === 2 && this.vectorQueues !== undefined) {
      const dv = new DataView(data.buffer, data.byteOffset, 2);
      const v = dv.getUint16(0, true);
      if (v & 0x8000) dv.setUint16(0, (v & ~0x7ff) | (this.vectorQueues & 0x7ff), true);
    }
  }

  override write(offset: number, data: Uint8Array): void {
    const c = this.counts;
    if (offset === REG.INTERRUPT_ACK) c.ackWrites++;
    else if (offset === REG.QUEUE_NOTIFY) c.queueNotifyWrites++;
    else if (offset >= 0x1000) c.doorbellWrites++;
    else if (offset === REG.MSI_CSR) c.csrWrites++;
    else if (offset === REG.MSI_COMMAND && data.length === 2) {
      const op = (data[1] ?? 0) >> 4;
      if (op === MSI_CMD_UPDATE) c.msiUpdates++;
      else if (op === MSI_CMD_MASK) c.msiMasks++;
      else if (op === MSI_CMD_UNMASK) c.msiUnmasks++;
    }
    super.write(offset, data);
  }
}

/** Sum of per-vCPU KVM binary statistics (exits counted by the kernel, in-kernel ones included). */
function kvmExitStats(machine: Machine): Record<string, number> {
  const out: Record<string, number> = {};
  // The stats fds the machine opened at vCPU creation: KVM_GET_STATS_FD is a vCPU ioctl, which
  // would wait for a vCPU that sits in KVM_RUN (a halted AP) while this thread serves the BSP.
  for (const reader of machine.vcpuStats) {
    if (!reader) continue;
    try {
      for (const [k, v] of reader.read()) {
        if (/exits|irq_injections|halt_wakeup|mmio|io_exits|insn_emulation$/.test(k))
          out[k] = (out[k] ?? 0) + Number(v);
      }
    } catch {
      // KVM without binary stats (< 5.14): empty
    }
  }
  return out;
}

function userspaceExits(machine: Machine): Record<string, number> {
  const out: Record<string, number> = {};
  for (const l of machine.loops) for (const [k, n] of l.exits) out[k] = (out[k] ?? 0) + n;
  return out;
}

async function roundTrips(s: VsockStream, n: number, size: number): Promise<{ n: number; ms: number }> {
  const msg = Buffer.alloc(size, 0x61);
  let pending: Buffer[] = [];
  let have = 0;
  let wake: (() => void) | undefined;
  const onData = (d: Buffer) => {
    pending.push(d);
    have += d.length;
    wake?.();
  };
  s.on("data", onData);
  const t0 = performance.now();
  try {
    for (let i = 0; i < n; i++) {
      s.write(msg);
      while (have < size) await new Promise<void>((r) => (wake = r));
      const got = Buffer.concat(pending);
      if (!got.subarray(0, size).equals(msg)) throw new Error(`round trip ${i}: echo differs`);
      pending = got.length > size ? [got.subarray(size)] : [];
      have -= size;
    }
  } finally {
    s.off("data", onData);
  }
  return { n, ms: performance.now() - t0 };
}

async function bulkEcho(s: VsockStream, bytes: number): Promise<{ bytes: number; sha256: string; ok: boolean }> {
  const data = randomBytes(bytes);
  const want = createHash("sha256").update(data).digest("hex");
  const h = createHash("sha256");
  let got = 0;
  const done = new Promise<void>((res, rej) => {
    s.on("data", (d: Buffer) => {
      h.update(d);
      got += d.length;
      if (got >= bytes) res();
    });
    s.on("error", rej);
  });
  for (let off = 0; off < bytes; off += 64 * 1024) s.write(data.subarray(off, off + 64 * 1024));
  await done;
  const sha = h.digest("hex");
  return { bytes: got, sha256: sha, ok: sha === want && got === bytes };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      kernel: { type: "string" },
      root: { type: "string" },
      disk: { type: "string", multiple: true },
      vsock: { type: "boolean", default: false },
      "no-msi": { type: "boolean", default: false },
      "vector-queues": { type: "string" },
      "blk-queues": { type: "string" },
      mem: { type: "string", default: "256" },
      vcpus: { type: "string", default: "1" },
      cmdline: { type: "string", default: "" },
      until: { type: "string" },
      timeout: { type: "string", default: "120" },
      rr: { type: "string" },
      "rr-size": { type: "string", default: "32" },
      "echo-bytes": { type: "string" },
      "log-level": { type: "string", default: "warn" },
    },
  });
  const log = pino({ level: values["log-level"] }, pino.destination(2));
  const out = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);
  const until = values.until ? new RegExp(values.until) : undefined;
  const t0 = performance.now();
  let finish: (why: string, code: number) => void = () => {};
  let onReady: () => void = () => {};
  const machine = Machine.create({
    kernel: values.kernel ?? guestArtifacts().kernel,
    cmdline: kernelCmdline("printk.time=1", values.root && GUEST_ROOT_PARAMS, values.cmdline),
    memoryBytes: Number(values.mem) * MiB,
    vcpus: Number(values.vcpus),
    log,
    onConsoleLine: (line) => {
      process.stdout.write(`${line}\n`);
      const m = /MSI-MARK (\S+)(?: (\S+))?/.exec(line);
      if (m) out({ mark: m[1], value: m[2], ...snapshot() });
      if (line.includes(READY_LINE)) onReady();
      if (until?.test(line)) finish("until", 0);
    },
  });
  const transports: CountingTransport[] = [];
  const wiring: { interrupts: KvmMmioInterrupts; notifiers: KvmMmioNotifiers }[] = [];
  const vectorQueues = values["vector-queues"] !== undefined ? Number(values["vector-queues"]) : undefined;
  const attach = (device: VirtioDevice) => {
    // Machine.addVirtioDevice's wiring, with a CountingTransport and optionally MSI not offered.
    const n = machine.transports.length;
    const pin = FIRST_DEVICE_IRQ + n;
    const base = VIRTIO_MMIO_BASE + n * WINDOW_SIZE;
    const interrupts = new KvmMmioInterrupts(machine.vm, machine.router, pin);
    const notifiers = new KvmMmioNotifiers(machine.vm, base);
    wiring.push({ interrupts, notifiers });
    const irq: MmioInterrupts = values["no-msi"]
      ? { msiCapable: false, legacy: () => interrupts.legacy() }
      : interrupts;
    const t = new CountingTransport({ device, mem: machine.mem, interrupts: irq, notifiers, log }, vectorQueues);
    machine.mmio.register(base, WINDOW_SIZE, t, device.name);
    machine.transports.push(t);
    transports.push(t);
    machine.addCmdline(`virtio_mmio.device=${WINDOW_SIZE / 1024}K@0x${base.toString(16)}:${pin}`);
  };
  const snapshot = () => ({
    ms: performance.now() - t0,
    exits: userspaceExits(machine),
    kvm: kvmExitStats(machine),
    transports: transports.map((t) => ({ device: t.device.name, msi: t.msiActive, ...t.stats, ...t.counts })),
  });

  let vsock: VsockDevice | undefined;
  const devices: VirtioDevice[] = [];
  try {
    const specs = [...(values.root ? [`${values.root}:ro`] : []), ...(values.disk ?? [])];
    for (const spec of specs) {
      const i = spec.lastIndexOf(":");
      const ro = i > 0 && spec.slice(i + 1) === "ro";
      const path = ro ? spec.slice(0, i) : spec;
      const blk = await BlkDevice.create({
        path,
        readOnly: ro,
        logger: log,
        numQueues: values["blk-queues"] ? Number(values["blk-queues"]) : undefined,
      });
      devices.push(blk);
      attach(blk);
    }
    if (values.vsock) {
      vsock = new VsockDevice({ guestCid: 3, logger: log });
      devices.push(vsock);
      attach(vsock);
    }
    machine.boot();
  } catch (err) {
    log.error({ err }, "boot failed");
    for (const w of wiring) w.notifiers.detachAll();
    machine.close();
    return 1;
  }

  let over = false;
  const code = await new Promise<number>((res) => {
    finish = (why, c) => {
      if (over) return;
      over = true;
      out({ result: why, ...snapshot() });
      res(c);
    };
    onReady = () => {
      if (!vsock || (!values.rr && !values["echo-bytes"])) return;
      const v = vsock;
      void (async () => {
        try {
          const r: Record<string, unknown> = {};
          if (values.rr) {
            const s = await v.connect(ECHO_PORT);
            const before = snapshot();
            const rt = await roundTrips(s, Number(values.rr), Number(values["rr-size"]));
            r.rr = { ...rt, perSec: (rt.n * 1000) / rt.ms, before, after: snapshot() };
            s.destroy();
          }
          if (values["echo-bytes"]) {
            const s = await v.connect(ECHO_PORT);
            r.echo = await bulkEcho(s, Number(values["echo-bytes"]));
            s.destroy();
          }
          out({ vsock: r });
          finish("vsock-done", 0);
        } catch (err) {
          out({ vsock: { error: (err as Error).message } });
          finish("vsock-error", 1);
        }
      })();
    };
    setTimeout(() => finish("timeout", 2), Number(values.timeout) * 1000).unref();
    machine.stopped.then((r) => {
      if (r.kind === "shutdown" && r.cpu) out({ stop: r.cpu });
      finish(r.kind === "error" ? `error: ${r.message}` : r.kind, r.kind === "error" ? 1 : 0);
    });
  });
  for (const l of machine.loops) l.stop();
  for (const d of devices) d.reset();
  for (const w of wiring) {
    try {
      w.notifiers.detachAll();
      w.interrupts.close();
    } catch {
      // the VM goes away with the process anyway
    }
  }
  machine.close();
  return code;
}

// Run as a script, from source (tsx) or bundled to CJS (msi-guest.ts bundleRunner: fast start under TCG).
const self = typeof __filename !== "undefined" ? __filename : fileURLToPath(import.meta.url);
if (process.argv[1] && self === process.argv[1]) {
  main().then(
    (code) => process.exit(code),
    (err: Error) => {
      console.error(err.stack ?? err.message);
      process.exit(1);
    },
  );
}
