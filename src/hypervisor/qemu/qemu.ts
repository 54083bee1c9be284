// The qemu backend: QEMU microvm with our own virtio devices attached over vhost-user
// (blk per disk, vsock, net per pod NIC), serial console captured, accelerator chosen from the host.
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { type Logger, pino } from "pino";
import { errorMessage } from "../../common/errors.ts";
import { BlkDevice } from "../../virtio/blk/device.ts";
import { NetDevice } from "../../virtio/net/device.ts";
import { VhostUserBackend } from "../../virtio/vhost-user/backend.ts";
import { VsockDevice } from "../../virtio/vsock/device.ts";
import { HybridVsock } from "../../virtio/vsock/hybrid.ts";
import { DeviceVm, type VmDevices } from "../device-vm.ts";
import type { Hypervisor, RunningVm, VmConfig, VmExit } from "../types.ts";
import { type AccelChoice, chooseAccel } from "./accel.ts";
import { qemuArgs } from "./args.ts";

/** The default binary; `[qemu] binary` in cove.toml (QemuOptions.binary) and $COVE_QEMU override it. */
export const QEMU_BINARY = "qemu-system-x86_64";
/** util-linux's setpriv sets PR_SET_PDEATHSIG in the child before exec'ing QEMU. */
export const SETPRIV = "/usr/bin/setpriv";
/** virtio-mmio transports of QEMU's microvm machine: every disk, NIC and the vsock takes one. */
export const MICROVM_TRANSPORTS = 8;

export interface QemuOptions {
  /** Appended to QEMU's argv (benchmarks: QEMU's own devices next to ours). */
  extraArgs?: string[];
  /** QEMU binary (a name is looked up on PATH); $COVE_QEMU wins over it (tests, debugging). */
  binary?: string;
  /** Under TCG: the translation cache's size in MiB (`[qemu] tcg_tb_size_mib`); 0: QEMU's default. */
  tcgTbSizeMib?: number;
}

/** QEMU's binary and the argv that ties its life to ours: QEMU gets SIGKILL when the process
 * that spawned it dies, even by SIGKILL (PR_SET_PDEATHSIG, via setpriv). The death signal follows
 * the forking *thread*; Node forks from its main thread, which lives as long as the shim. The
 * `delete`-time reaping (src/sandbox/cleanup.ts) stays as the safety net (e.g. no setpriv). */
export function qemuCommand(
  args: string[],
  opts: { binary?: string; env?: NodeJS.ProcessEnv; setpriv?: string | null } = {},
): { file: string; argv: string[] } {
  const binary = (opts.env ?? process.env).COVE_QEMU || opts.binary || QEMU_BINARY;
  const setpriv = opts.setpriv === undefined ? (existsSync(SETPRIV) ? SETPRIV : null) : opts.setpriv;
  if (!setpriv) return { file: binary, argv: args };
  return { file: setpriv, argv: ["--pdeathsig", "KILL", "--", binary, ...args] };
}

export class QemuHypervisor implements Hypervisor {
  readonly name = "qemu";
  readonly nets = true;
  /** QEMU's microvm machine has 8 virtio-mmio transports (VIRTIO_NUM_TRANSPORTS in hw/i386/microvm.c). */
  readonly maxDevices = MICROVM_TRANSPORTS;
  constructor(
    private readonly accel: AccelChoice = chooseAccel(),
    private readonly opts: QemuOptions = {},
  ) {}

  async start(cfg: VmConfig): Promise<RunningVm> {
    const log = (cfg.logger ?? pino({ level: "warn" }, pino.destination(2))).child({ vm: cfg.id, hypervisor: "qemu" });
    log.info({ accel: this.accel.accel, reason: this.accel.reason }, "qemu accelerator");
    const devices = cfg.disks.length + (cfg.nets?.length ?? 0) + 1;
    if (devices > MICROVM_TRANSPORTS) {
      throw new Error(
        `${cfg.disks.length} disks, ${cfg.nets?.length ?? 0} NICs and vsock need ${devices} virtio-mmio transports; QEMU's microvm has ${MICROVM_TRANSPORTS}`,
      );
    }
    mkdirSync(cfg.workDir, { recursive: true });
    const cleanups: (() => Promise<void> | void)[] = [];
    const cleanup = async () => {
      for (const c of cleanups.splice(0).reverse()) {
        try {
          await c();
        } catch (e) {
          log.warn({ err: errorMessage(e) }, "cleanup step failed");
        }
      }
    };
    try {
      const disks = new Map<string, BlkDevice>();
      const backends = new Map<string, VhostUserBackend>();
      const blkSockets: string[] = [];
      for (const [n, d] of cfg.disks.entries()) {
        const dev = await BlkDevice.create({
          path: d.path,
          extents: d.extents,
          readOnly: d.readOnly,
          serial: d.serial ?? d.id,
          logger: log,
        });
        cleanups.push(() => dev.close());
        const sock = join(cfg.workDir, `blk${n}.sock`);
        const be = new VhostUserBackend(dev, sock, { logger: log });
        be.listen();
        cleanups.push(() => be.close());
        // A media change while the rings are stopped still reaches the guest through QEMU.
        dev.onConfigChange = () => be.configChanged();
        disks.set(d.id, dev);
        backends.set(d.id, be);
        blkSockets.push(sock);
      }
      const vsock = new VsockDevice({ guestCid: cfg.vsock.guestCid, logger: log });
      cleanups.push(() => vsock.reset());
      const vsockSocket = join(cfg.workDir, "vsock.sock");
      // QEMU's vhost-user-vsock keeps the event queue itself: the backend drives rx and tx.
      const vbe = new VhostUserBackend(vsock, vsockSocket, { queues: 2, logger: log });
      vbe.listen();
      backends.set("vsock", vbe);
      cleanups.push(() => vbe.close());
      const nets: { socket: string; mac: string; mtu: number }[] = [];
      const netDevices = new Map<string, NetDevice>();
      for (const [n, c] of (cfg.nets ?? []).entries()) {
        const dev = new NetDevice({ hostEnd: c.hostEnd, mac: c.mac, mtu: c.mtu, logger: log });
        // reset, not close: the tap belongs to the caller (PodNetwork.detach closes it).
        cleanups.push(() => dev.reset());
        const socket = join(cfg.workDir, `net${n}.sock`);
        const be = new VhostUserBackend(dev, socket, { queues: 2, logger: log });
        be.listen();
        cleanups.push(() => be.close());
        backends.set(c.id, be);
        netDevices.set(c.id, dev);
        nets.push({ socket, mac: c.mac, mtu: c.mtu });
      }
      if (cfg.vsock.hybridSocket) {
        const h = new HybridVsock(vsock, cfg.vsock.hybridSocket, { logger: log });
        await h.listen();
        cleanups.push(() => h.close());
      }

      const args = qemuArgs({
        kernel: cfg.kernel,
        cmdline: cfg.cmdline,
        memoryMiB: cfg.memoryMiB,
        vcpus: cfg.vcpus,
        accel: this.accel.accel,
        tcgTbSizeMib: this.opts.tcgTbSizeMib,
        blkSockets,
        vsockSocket,
        nets,
      });
      args.push(...(this.opts.extraArgs ?? []));
      const cmd = qemuCommand(args, { binary: this.opts.binary });
      log.debug({ argv: [cmd.file, ...cmd.argv].join(" ") }, "starting qemu");
      const child = spawn(cmd.file, cmd.argv, { stdio: ["pipe", "pipe", "pipe"] });
      const console = new PassThrough();
      child.stdout!.pipe(console);
      if (cfg.consoleLog) child.stdout!.pipe(createWriteStream(cfg.consoleLog, { flags: "a" }));
      let stderr = "";
      child.stderr!.on("data", (d: Buffer) => {
        stderr = (stderr + d.toString()).slice(-8192);
        log.warn({ qemu: d.toString().trim() }, "qemu stderr");
      });
      await new Promise<void>((resolve, reject) => {
        child.once("spawn", resolve);
        child.once("error", reject);
      });
      const exited = new Promise<VmExit>((resolve) => {
        child.once("exit", (code, signal) => {
          log.info({ code, signal }, "qemu exited");
          cleanup().then(() => resolve({ code, signal }));
        });
      });
      return new QemuVm(child, console, { vsock, disks, nets: netDevices }, exited, () => stderr, backends);
    } catch (e) {
      await cleanup();
      throw e;
    }
  }
}

export class QemuVm extends DeviceVm {
  constructor(
    private readonly child: ChildProcess,
    console: PassThrough,
    dev: VmDevices,
    exited: Promise<VmExit>,
    readonly stderr: () => string,
    /** The vhost-user servers by disk id, NIC id, and "vsock" (metrics for benchmarks). */
    readonly backends: ReadonlyMap<string, VhostUserBackend> = new Map(),
  ) {
    super(console, dev, exited);
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  async stop(timeoutMs = 5000): Promise<VmExit> {
    const done = await this.exitWithin(timeoutMs);
    if (done) return done;
    this.child.kill("SIGTERM");
    return (await this.exitWithin(2000)) ?? this.kill();
  }

  kill(): Promise<VmExit> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
    return this.exited;
  }
}

export type { Logger };
