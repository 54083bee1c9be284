// The nested test host: runs a shell command inside a QEMU TCG VM (`-cpu max`, emulated SVM) whose
// kernel has KVM built in and whose root is this machine's own root over virtio-9p, read-only —
// so the command sees the same Node, checkout and build, and a genuine /dev/kvm (this machine's
// own is PVM, which cannot run a stock Linux guest; see docs/hosts.md).
// Returns the command's output and exit code.
//
//   node --import tsx test/harness/nested.ts [--timeout S] [--mem MiB] [--smp N] [--cwd DIR] -- CMD...
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { silentProgress } from "../../src/guest/progress.ts";
import { buildNestedKernel, NESTED_INIT, nestedKernel } from "../../tools/nested/kernel.ts";

const here = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = resolve(here, "..", "..");
export const QEMU = "qemu-system-x86_64";

export interface NestedOptions {
  /** Working directory inside (default: the checkout). */
  cwd?: string;
  env?: Record<string, string>;
  /** Whole run, boot included (default 300 s): QEMU is killed after it. */
  timeoutMs?: number;
  memoryMiB?: number;
  cpus?: number;
  /** The nested host kernel (default: the cached build, built if missing). */
  kernel?: string;
  /** Each line of the nested host's console as it arrives. */
  onConsoleLine?: (line: string) => void;
}

export interface NestedResult {
  /** The command's exit code; -1 if it did not finish (see timedOut / console). */
  status: number;
  /** stdout and stderr of the command, interleaved. */
  output: string;
  /** The nested host's console (kernel messages, init's lines). */
  console: string;
  timedOut: boolean;
  wallMs: number;
}

/** Why the nested host cannot run here, or undefined if it can. */
export function nestedUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return "the nested test host needs root (QEMU 9p export of /)";
  const path = (process.env.PATH ?? "").split(":");
  if (!path.some((d) => existsSync(join(d, QEMU)))) return `${QEMU} is not installed`;
  if (!existsSync("/usr/src/linux-source-6.1.tar.xz")) return "linux-source-6.1 is not installed";
  return undefined;
}

/** The nested host's kernel, building it (minutes, once; cached) if needed. */
export async function ensureNestedKernel(): Promise<string> {
  return nestedKernel() ?? (await buildNestedKernel(undefined, silentProgress()));
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, "'\\''")}'`;
}

/** The host's TSC frequency in kHz (from /proc/cpuinfo), or undefined. */
export function hostTscKhz(cpuinfo = readFileSync("/proc/cpuinfo", "utf8")): number | undefined {
  const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(cpuinfo);
  return m?.[1] ? Math.round(Number(m[1]) * 1000) : undefined;
}

export function qemuArgs(kernel: string, share: string, opts: NestedOptions): string[] {
  const khz = hostTscKhz();
  const append = [
    "console=ttyS0",
    "reboot=t",
    "panic=-1",
    // TCG's vCPUs have unsynchronised TSCs; without this the L1 marks the TSC unstable and KVM in
    // it can spin on clock updates before the first guest entry (a guest then never starts).
    "tsc=reliable",
    // Without it the nested kernel's early TSC calibration (PIT, under TCG) fails now and then on a
    // loaded machine: tsc_khz = 0, and KVM in the nested host then never enters a guest (it retries
    // the clock update before every VMRUN — the "BSP has not entered the guest yet" stall).
    ...(khz ? [`tsc_early_khz=${khz}`] : []),
    "root=hostroot",
    "rootfstype=9p",
    "rootflags=trans=virtio,version=9p2000.L,cache=loose,msize=512000",
    "ro",
    `init=${NESTED_INIT}`,
  ].join(" ");
  return [
    "-accel",
    "tcg",
    "-cpu",
    "max",
    "-M",
    "microvm,acpi=off",
    "-m",
    String(opts.memoryMiB ?? 2048),
    "-smp",
    String(opts.cpus ?? 1),
    "-nodefaults",
    "-no-user-config",
    "-nographic",
    "-no-reboot",
    "-serial",
    "stdio",
    "-kernel",
    kernel,
    "-append",
    append,
    "-fsdev",
    "local,id=hostroot,path=/,readonly=on,security_model=none,multidevs=remap",
    "-device",
    "virtio-9p-device,fsdev=hostroot,mount_tag=hostroot",
    "-fsdev",
    `local,id=share,path=${share},security_model=none,multidevs=remap`,
    "-device",
    "virtio-9p-device,fsdev=share,mount_tag=coveshare",
    // The checkout again, on its own: the nested host mounts tmpfs over /tmp and /var/tmp, which
    // would hide a checkout living there (CI clones wherever it likes). init.sh mounts this share
    // at the checkout's own path (named in <share>/repo-path).
    "-fsdev",
    `local,id=repo,path=${REPO_ROOT},readonly=on,security_model=none,multidevs=remap`,
    "-device",
    "virtio-9p-device,fsdev=repo,mount_tag=coverepo",
    // Debugging aid: COVE_NESTED_QEMU_LOG=<file> has QEMU log every CPU reset (with the register
    // state: a triple fault inside the nested host) and guest errors there.
    ...(process.env.COVE_NESTED_QEMU_LOG
      ? ["-d", "cpu_reset,guest_errors", "-D", process.env.COVE_NESTED_QEMU_LOG]
      : []),
  ];
}

/**
 * The nested host itself died: QEMU ended before the command finished, before our timeout, and the
 * nested kernel printed no panic. QEMU's TCG emulation of SVM does this now and then (seen here
 * about once in 15–20 nested boots, silently: the last console line is an ordinary one).
 */
export function nestedHostDied(r: NestedResult): boolean {
  return r.status === -1 && !r.timedOut && !/Kernel panic|BUG:|Oops/.test(r.console);
}

/**
 * Runs `command` (a shell command line) inside the nested test host. A run in which the nested host
 * itself died (nestedHostDied) is retried once, loudly; anything else is returned as it is.
 */
export async function runNested(command: string, opts: NestedOptions = {}): Promise<NestedResult> {
  const r = await runNestedOnce(command, opts);
  if (!nestedHostDied(r)) return r;
  process.stderr.write(
    `!!! the nested test host died after ${(r.wallMs / 1000).toFixed(1)} s without a status or a panic (an emulation fault of QEMU TCG's SVM); retrying once. Console tail:\n${r.console.slice(-1500)}\n`,
  );
  return runNestedOnce(command, opts);
}

async function runNestedOnce(command: string, opts: NestedOptions): Promise<NestedResult> {
  const kernel = opts.kernel ?? (await ensureNestedKernel());
  const share = mkdtempSync(join(tmpdir(), "cove-nested-"));
  const t0 = Date.now();
  try {
    const env = Object.entries(opts.env ?? {})
      .map(([k, v]) => `export ${k}=${shellQuote(v)}\n`)
      .join("");
    writeFileSync(join(share, "repo-path"), `${REPO_ROOT}\n`);
    writeFileSync(join(share, "cmd.sh"), `${env}cd ${shellQuote(opts.cwd ?? REPO_ROOT)} || exit 125\n${command}\n`);
    const child = spawn(QEMU, qemuArgs(kernel, share, opts), { stdio: ["ignore", "pipe", "pipe"] });
    let consoleText = "";
    let partial = "";
    const onData = (chunk: Buffer) => {
      const s = chunk.toString("utf8");
      consoleText += s;
      if (opts.onConsoleLine) {
        partial += s;
        const lines = partial.split("\n");
        partial = lines.pop() ?? "";
        for (const l of lines) opts.onConsoleLine(l.replace(/\r$/, ""));
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, opts.timeoutMs ?? 300_000);
    await new Promise<void>((res) => {
      child.on("close", () => res());
      child.on("error", (e) => {
        consoleText += `\n[cannot run ${QEMU}: ${e.message}]\n`;
        res();
      });
    });
    clearTimeout(timer);
    const statusFile = join(share, "status");
    const outputFile = join(share, "output");
    const status = existsSync(statusFile) ? Number(readFileSync(statusFile, "utf8").trim()) : -1;
    return {
      status: Number.isFinite(status) ? status : -1,
      output: existsSync(outputFile) ? readFileSync(outputFile, "utf8") : "",
      console: consoleText,
      timedOut,
      wallMs: Date.now() - t0,
    };
  } finally {
    rmSync(share, { recursive: true, force: true });
  }
}

async function main(argv: string[]): Promise<number> {
  const sep = argv.indexOf("--");
  const flags = sep >= 0 ? argv.slice(0, sep) : [];
  const cmd = sep >= 0 ? argv.slice(sep + 1) : argv;
  if (cmd.length === 0) {
    console.error("usage: nested.ts [--timeout S] [--mem MiB] [--smp N] [--cwd DIR] [--console] -- CMD...");
    return 2;
  }
  const flag = (name: string) => {
    const i = flags.indexOf(name);
    return i >= 0 ? flags[i + 1] : undefined;
  };
  const why = nestedUnavailable();
  if (why) {
    console.error(`nested test host unavailable: ${why}`);
    return 2;
  }
  const r = await runNested(cmd.length === 1 ? cmd[0]! : cmd.map(shellQuote).join(" "), {
    timeoutMs: flag("--timeout") ? Number(flag("--timeout")) * 1000 : undefined,
    memoryMiB: flag("--mem") ? Number(flag("--mem")) : undefined,
    cpus: flag("--smp") ? Number(flag("--smp")) : undefined,
    cwd: flag("--cwd"),
    onConsoleLine: flags.includes("--console") ? (l) => process.stderr.write(`[nested] ${l}\n`) : undefined,
  });
  process.stdout.write(r.output);
  if (r.status < 0) {
    process.stderr.write(
      `nested test host: the command did not finish${r.timedOut ? " (timed out)" : ""}; console tail:\n${r.console.slice(-3000)}\n`,
    );
    return 1;
  }
  process.stderr.write(`nested test host: exit ${r.status} after ${(r.wallMs / 1000).toFixed(1)} s\n`);
  return r.status;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
