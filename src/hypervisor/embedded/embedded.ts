// The embedded backend: the VM runs inside this process on KVM (src/vmm), with the same virtio
// devices the qemu backend serves over vhost-user, here served over virtio-mmio in
// process. Disks in order (the first is /dev/vda), then vsock.
import { createWriteStream, mkdirSync, type WriteStream } from "node:fs";
import { PassThrough } from "node:stream";
import { type Logger, pino } from "pino";
import { errorMessage } from "../../common/errors.ts";
import { BlkDevice } from "../../virtio/blk/device.ts";
import { NetDevice } from "../../virtio/net/device.ts";
import { VsockDevice } from "../../virtio/vsock/device.ts";
import { HybridVsock } from "../../virtio/vsock/hybrid.ts";
import { MiB } from "../../vmm/layout.ts";
import { Machine } from "../../vmm/machine.ts";
import type { StopReason } from "../../vmm/vcpu.ts";
import { DeviceVm, type VmDevices } from "../device-vm.ts";
import type { Hypervisor, RunningVm, VmConfig, VmExit } from "../types.ts";

/** What the guest's end means as a process-like exit: a reboot/poweroff is 0, a VMM error 1. */
export function exitOf(reason: StopReason): VmExit {
  return { code: reason.kind === "error" ? 1 : 0, signal: null };
}

/**
 * How long teardown waits for disk I/O still on the thread pool before it reports the VM gone.
 * Past it, guest RAM stays mapped (and the disk open) until that I/O returns: an unmapped range
 * could be mapped again for something else, and a late read would write guest disk bytes there.
 */
const IO_DRAIN_MS = 10_000;

/** Waits for `p` at most `ms`; true if it settled in time (its rejection is left to the caller). */
async function settledWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let t: NodeJS.Timeout | undefined;
  const late = new Promise<false>((r) => {
    t = setTimeout(() => r(false), ms);
  });
  try {
    return await Promise.race([p.then(() => true), late]);
  } finally {
    clearTimeout(t);
  }
}

export class EmbeddedHypervisor implements Hypervisor {
  readonly name = "embedded";
  /** VmConfig.nets are served in process over virtio-mmio, like the disks. */
  readonly nets = true;

  async start(cfg: VmConfig): Promise<RunningVm> {
    const log = (cfg.logger ?? pino({ level: "warn" }, pino.destination(2))).child({
      vm: cfg.id,
      hypervisor: "embedded",
    });
    mkdirSync(cfg.workDir, { recursive: true });
    const cleanups: (() => Promise<void> | void)[] = [];
    let machine: Machine | undefined;
    const cleanup = async () => {
      // vCPUs first: nothing may kick a device while it is being closed. Guest RAM is unmapped
      // only once no disk I/O holds it (Machine.released).
      machine?.close();
      for (const c of cleanups.splice(0).reverse()) {
        try {
          if (!(await settledWithin(Promise.resolve(c()), IO_DRAIN_MS))) log.warn("a device is still draining its I/O");
        } catch (e) {
          log.warn({ err: errorMessage(e) }, "cleanup step failed");
        }
      }
      if (machine && !(await settledWithin(machine.released, IO_DRAIN_MS))) {
        log.warn({ held: machine.mem.held }, "guest RAM stays mapped until the disk I/O still in flight returns");
      }
    };
    try {
      const consoleStream = new PassThrough();
      let consoleFile: WriteStream | undefined;
      if (cfg.consoleLog) {
        consoleFile = createWriteStream(cfg.consoleLog, { flags: "a" });
        const f = consoleFile;
        cleanups.push(() => new Promise<void>((r) => f.end(r)));
      }
      machine = Machine.create({
        kernel: cfg.kernel,
        cmdline: cfg.cmdline,
        memoryBytes: cfg.memoryMiB * MiB,
        vcpus: cfg.vcpus,
        log,
        onConsoleLine: (line) => {
          consoleStream.write(`${line}\n`);
          consoleFile?.write(`${line}\n`);
        },
      });
      const disks = new Map<string, BlkDevice>();
      for (const d of cfg.disks) {
        const dev = await BlkDevice.create({
          path: d.path,
          extents: d.extents,
          readOnly: d.readOnly,
          serial: d.serial ?? d.id,
          logger: log,
        });
        cleanups.push(() => dev.close());
        machine.addVirtioDevice(dev);
        disks.set(d.id, dev);
      }
      const nets = new Map<string, NetDevice>();
      for (const c of cfg.nets ?? []) {
        const dev = new NetDevice({ hostEnd: c.hostEnd, mac: c.mac, mtu: c.mtu, logger: log });
        // reset, not close: the tap belongs to the caller (PodNetwork.detach closes it).
        cleanups.push(() => dev.reset());
        machine.addVirtioDevice(dev);
        nets.set(c.id, dev);
      }
      const vsock = new VsockDevice({ guestCid: cfg.vsock.guestCid, logger: log });
      cleanups.push(() => vsock.reset());
      machine.addVirtioDevice(vsock);
      if (cfg.vsock.hybridSocket) {
        const h = new HybridVsock(vsock, cfg.vsock.hybridSocket, { logger: log });
        await h.listen();
        cleanups.push(() => h.close());
      }
      machine.boot();
      let finished: VmExit | undefined;
      let resolveExit!: (e: VmExit) => void;
      const exited = new Promise<VmExit>((r) => {
        resolveExit = r;
      });
      const finish = async (e: VmExit) => {
        if (finished) return;
        finished = e;
        await cleanup();
        consoleStream.end();
        resolveExit(e);
      };
      const m = machine;
      m.stopped.then((reason) => {
        log.info({ reason }, "guest stopped");
        void finish(exitOf(reason));
      });
      return new EmbeddedVm(m, consoleStream, { vsock, disks, nets }, exited, finish);
    } catch (e) {
      await cleanup();
      throw e;
    }
  }
}

export class EmbeddedVm extends DeviceVm {
  constructor(
    readonly machine: Machine,
    console: PassThrough,
    dev: VmDevices,
    exited: Promise<VmExit>,
    private readonly finish: (e: VmExit) => Promise<void>,
  ) {
    super(console, dev, exited);
  }

  /** The VM lives in this process. */
  get pid(): number {
    return process.pid;
  }

  async stop(timeoutMs = 5000): Promise<VmExit> {
    return (await this.exitWithin(timeoutMs)) ?? this.kill();
  }

  /** Stops the vCPUs and frees the VM at once (the guest gets no say). */
  async kill(): Promise<VmExit> {
    await this.finish({ code: null, signal: "SIGKILL" });
    return this.exited;
  }

  /** Device metrics and exit counters (tests, benchmarks). */
  override get devices() {
    return { ...this.dev, transports: this.machine.transports };
  }
}

export type { Logger };
