// Boots the guest (kernel + erofs root on QEMU's own virtio-blk) in QEMU microvm and waits for the
// agent's readiness line. Used by the boot test and the benchmarks; the real QEMU backend lives in
// src/hypervisor and attaches our own device back-ends instead.
import { spawn } from "node:child_process";
import { parseReady, READY_PREFIX, type Readiness } from "../../agent/src/ready.ts";
import { guestCmdline, kernelCmdline } from "../../src/guest/cmdline.ts";

export interface BootOptions {
  kernel: string;
  rootfs: string;
  memMiB?: number;
  cpus?: number;
  /** "tcg" (default; works on PVM hosts) or "kvm". */
  accel?: "tcg" | "kvm";
  /** Extra kernel command line (appended before QEMU's own virtio_mmio.device= parameters). */
  cmdline?: string;
  /** `quiet` on the kernel command line (less serial output, which is slow under TCG). */
  quiet?: boolean;
  /** Give up (SIGKILL) after this long. */
  timeoutMs: number;
  /** After the readiness line, how long QEMU may take to exit by itself. */
  exitTimeoutMs?: number;
  /** Every serial line, as it arrives. */
  onLine?: (line: string) => void;
}

export interface BootResult {
  ready?: Readiness;
  /** Host wall time from spawning QEMU to the readiness line. */
  readyWallMs?: number;
  /** Host wall time from spawning QEMU to its exit. */
  totalWallMs: number;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  serial: string[];
}

export function qemuArgv(o: BootOptions): string[] {
  const cmdline = guestCmdline({ quiet: o.quiet, extra: kernelCmdline("printk.time=1", o.cmdline) });
  return [
    "qemu-system-x86_64",
    // acpi=off: our kernel has no ACPI, and only then does microvm put virtio_mmio.device= on the command line.
    "-M",
    "microvm,acpi=off,x-option-roms=off,rtc=off",
    "-accel",
    o.accel ?? "tcg",
    "-cpu",
    o.accel === "kvm" ? "host" : "max",
    "-m",
    String(o.memMiB ?? 512),
    "-smp",
    String(o.cpus ?? 1),
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-serial",
    "stdio",
    "-no-reboot",
    "-kernel",
    o.kernel,
    "-append",
    cmdline,
    "-drive",
    `id=root,file=${o.rootfs},format=raw,if=none,readonly=on`,
    "-device",
    "virtio-blk-device,drive=root",
  ];
}

export function bootGuest(o: BootOptions): Promise<BootResult> {
  const argv = qemuArgv(o);
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    const serial: string[] = [];
    const res: Omit<BootResult, "totalWallMs" | "exitCode" | "signal"> = { timedOut: false, serial };
    let buf = "";
    let exitTimer: NodeJS.Timeout | undefined;
    const kill = () => {
      res.timedOut = true;
      child.kill("SIGKILL");
    };
    const timer = setTimeout(kill, o.timeoutMs);
    const onData = (chunk: Buffer) => {
      buf += chunk.toString("utf8");
      let i = buf.indexOf("\n");
      while (i >= 0) {
        const line = buf.slice(0, i).replace(/\r$/, "");
        buf = buf.slice(i + 1);
        serial.push(line);
        o.onLine?.(line);
        if (!res.ready && line.includes(READY_PREFIX)) {
          const r = parseReady(line);
          if (r) {
            res.ready = r;
            res.readyWallMs = performance.now() - t0;
            exitTimer = setTimeout(kill, o.exitTimeoutMs ?? 30_000);
          }
        }
        i = buf.indexOf("\n");
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${argv[0]}: ${e.message}`));
    });
    child.on("close", (exitCode, signal) => {
      clearTimeout(timer);
      if (exitTimer) clearTimeout(exitTimer);
      if (buf) serial.push(buf);
      resolve({ ...res, exitCode, signal, totalWallMs: performance.now() - t0 });
    });
  });
}
