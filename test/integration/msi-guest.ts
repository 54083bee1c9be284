// Shared by the MSI test and benchmark: the guest root (busybox + socat, test/integration/
// virtio-guest-root.ts) with a scenario script in /init, the data disks, the command line that
// runs test/integration/msi-vm.ts once per scenario inside the nested test host, and the parser
// of its output.
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { buildSync } from "esbuild";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { REPO_ROOT } from "../harness/nested.ts";
import { buildTestRoot } from "./virtio-guest-root.ts";

/**
 * Host files the nested test host must see: not under /tmp or /var/tmp, which are tmpfs in there
 * (tools/nested/init.sh); the host's root is shared read-only, so this directory is visible.
 */
export const HOST_SCRATCH = "/var/lib/cove-test";

export function hostScratchDir(prefix: string): string {
  mkdirSync(HOST_SCRATCH, { recursive: true });
  return mkdtempSync(join(HOST_SCRATCH, prefix));
}

/** The guest kernel under test: COVE_MSI_KERNEL (a scratch build) or the project's cached one. */
export function msiKernel(): string {
  return process.env.COVE_MSI_KERNEL ?? guestArtifacts().kernel;
}

/** One VM run inside the nested host: the runner's flags and a label for its output. */
export interface Scenario {
  name: string;
  flags: string[];
  /** Shell run inside the nested host before / after the VM (e.g. make or check a scratch disk). */
  pre?: string;
  post?: string;
}

export interface RunOutput {
  name: string;
  console: string[];
  marks: Record<string, Snapshot>;
  vsock?: {
    rr?: { n: number; ms: number; perSec: number; before: Snapshot; after: Snapshot };
    echo?: { bytes: number; sha256: string; ok: boolean };
    error?: string;
  };
  result?: Snapshot & { result: string };
  exitCode?: number;
}

export interface TransportSnapshot {
  device: string;
  msi: boolean;
  registerReads: number;
  registerWrites: number;
  notifies: number;
  legacyIrqs: number;
  msiIrqs: number;
  isrReads: number;
  ackWrites: number;
  queueNotifyWrites: number;
  doorbellWrites: number;
  csrWrites: number;
  msiUpdates: number;
  msiMasks: number;
  msiUnmasks: number;
}

export interface Snapshot {
  value?: string;
  ms: number;
  exits: Record<string, number>;
  kvm: Record<string, number>;
  transports: TransportSnapshot[];
}

/**
 * The shell line that runs every scenario in turn, each between delimiter lines. `runner` is the
 * command that starts msi-vm.ts: from source by default, or a bundle (bundleRunner) — tsx compiling
 * the VMM's sources under TCG costs a minute per VM.
 */
export function nestedScript(
  scenarios: Scenario[],
  common: string[],
  runner = "node --import tsx test/integration/msi-vm.ts",
): string {
  const q = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;
  return scenarios
    .map(
      (s) =>
        `echo ${q(`=== RUN ${s.name}`)}; ${s.pre ? `${s.pre}; ` : ""}${runner} ${[...common, ...s.flags].map(q).join(" ")} 2>&1; echo "=== EXIT $?"${s.post ? `; ${s.post}` : ""}`,
    )
    .join("; ");
}

/**
 * msi-vm.ts bundled into one CJS file where the nested host sees it (esbuild, as scripts/build.mjs
 * does), with the native addon named by COVE_NATIVE. Returns the command line and a cleanup.
 */
export function bundleRunner(): { runner: string; cleanup: () => void } {
  const dir = hostScratchDir("msi-runner-");
  const out = join(dir, "msi-vm.cjs");
  try {
    buildSync({
      entryPoints: [join(REPO_ROOT, "test/integration/msi-vm.ts")],
      outfile: out,
      bundle: true,
      platform: "node",
      target: "node20",
      format: "cjs",
      logLevel: "warning",
      logOverride: { "empty-import-meta": "silent" },
    });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const addon = join(REPO_ROOT, "build/Release/cove_native.node");
  return {
    runner: `COVE_NATIVE='${addon}' node '${out}'`,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Splits the nested command's output into runs and parses each run's JSON lines. */
export function parseRuns(output: string): RunOutput[] {
  const runs: RunOutput[] = [];
  let cur: RunOutput | undefined;
  for (const line of output.split("\n")) {
    const start = /^=== RUN (.+)$/.exec(line);
    if (start?.[1]) {
      cur = { name: start[1], console: [], marks: {} };
      runs.push(cur);
      continue;
    }
    if (!cur) continue;
    const end = /^=== EXIT (\d+)$/.exec(line);
    if (end) {
      cur.exitCode = Number(end[1]);
      continue;
    }
    if (line.startsWith("{")) {
      try {
        const o = JSON.parse(line);
        if (typeof o.mark === "string") cur.marks[o.mark] = o;
        else if (o.vsock) cur.vsock = o.vsock;
        else if (typeof o.result === "string") cur.result = o;
        else cur.console.push(line); // e.g. {"stop":…}: where the vCPU was when the guest stopped
        continue;
      } catch {
        // a console line that happens to start with "{" (pino logs): keep it as console
      }
    }
    cur.console.push(line);
  }
  return runs;
}

/** Sums a counter over the named device's transports between two snapshots. */
export function delta(a: Snapshot, b: Snapshot, device: string, key: keyof TransportSnapshot): number {
  const sum = (s: Snapshot) =>
    s.transports.filter((t) => t.device.startsWith(device)).reduce((n, t) => n + Number(t[key] ?? 0), 0);
  return sum(b) - sum(a);
}

export function kvmDelta(a: Snapshot, b: Snapshot, key: string): number {
  return (b.kvm[key] ?? 0) - (a.kvm[key] ?? 0);
}

export function userspaceExitDelta(a: Snapshot, b: Snapshot): number {
  const sum = (s: Snapshot) => Object.values(s.exits).reduce((n, v) => n + v, 0);
  return sum(b) - sum(a);
}

/** The data disks: a random read-only one (its sha256 known) and a zeroed writable one. */
export interface Disks {
  dir: string;
  readDisk: string;
  readSha256: string;
  writeDisk: string;
  cleanup: () => void;
}

export function makeDisks(readMiB = 8, writeMiB = 4): Disks {
  const dir = hostScratchDir("msi-disks-");
  const readDisk = join(dir, "read.img");
  const data = randomBytes(readMiB * 1024 * 1024);
  writeFileSync(readDisk, data);
  const writeDisk = join(dir, "write.img");
  writeFileSync(writeDisk, Buffer.alloc(writeMiB * 1024 * 1024));
  return {
    dir,
    readDisk,
    readSha256: createHash("sha256").update(data).digest("hex"),
    writeDisk,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export function fileSha256(path: string, bytes?: number): string {
  const b = readFileSync(path);
  return createHash("sha256")
    .update(bytes === undefined ? b : b.subarray(0, bytes))
    .digest("hex");
}

/**
 * The guest side of the functional test, run by /init before the ready line:
 * - /proc/interrupts at boot (per-queue vectors);
 * - 4 concurrent O_DIRECT readers of /dev/vdb (bracketed by MSI-MARK io-start/io-end), each
 *   printing the sha256 of the whole disk;
 * - a write of 1 MiB of random data to /dev/vdc (O_DIRECT, fsync), read back and hashed;
 * - with 2 vCPUs: every virtio vector moved to CPU 1 (the move happens at the next interrupt:
 *   mask, UPDATE, unmask), more I/O, then CPU 1 taken offline (vectors migrate back: mask,
 *   UPDATE, unmask again), more I/O;
 * - /proc/interrupts again.
 */
export const FUNCTIONAL_INIT = [
  "echo MSI-MARK boot",
  "echo '--- interrupts at boot'; cat /proc/interrupts; echo '--- end'",
  "echo MSI-MARK io-start",
  // Wait for these readers only: /init's socat listeners are background jobs too.
  'pids=""; for i in 0 1 2 3; do (dd if=/dev/vdb bs=16k iflag=direct 2>/dev/null | sha256sum | sed "s/^/READ-SHA$i /") & pids="$pids $!"; done; wait $pids',
  "echo MSI-MARK io-end",
  "dd if=/dev/urandom of=/tmp/w bs=64k count=16 2>/dev/null",
  'echo "WRITE-SHA $(sha256sum < /tmp/w)"',
  "dd if=/tmp/w of=/dev/vdc bs=64k oflag=direct conv=fsync 2>/dev/null",
  'echo "READBACK-SHA $(dd if=/dev/vdc bs=64k count=16 iflag=direct 2>/dev/null | sha256sum)"',
  "if [ -d /sys/devices/system/cpu/cpu1 ]; then",
  "  for d in /proc/irq/*; do ls $d 2>/dev/null | grep -q virtio || continue; echo 2 > $d/smp_affinity 2>/dev/null; done",
  "  echo MSI-MARK moved-start",
  "  dd if=/dev/vdb bs=16k iflag=direct 2>/dev/null | sha256sum | sed 's/^/MOVED-SHA /'",
  "  echo MSI-MARK moved-end",
  "  echo '--- interrupts after move'; cat /proc/interrupts; echo '--- end'",
  "  echo 0 > /sys/devices/system/cpu/cpu1/online && echo CPU1-OFFLINE",
  "  dd if=/dev/vdb bs=16k iflag=direct 2>/dev/null | sha256sum | sed 's/^/OFFLINE-SHA /'",
  "  echo MSI-MARK offline-end",
  "fi",
  "echo '--- interrupts at end'; cat /proc/interrupts; echo '--- end'",
  "echo MSI-MARK end",
];

/** Builds the guest root with the given /init lines, where the nested host sees it; the caller cleans up. */
export function msiGuestRoot(initLines: string[], files?: Record<string, string>) {
  const built = buildTestRoot({ initLines, files });
  const dir = hostScratchDir("msi-root-");
  const image = join(dir, "root.erofs");
  try {
    renameSync(built.image, image);
  } catch {
    writeFileSync(image, readFileSync(built.image));
  }
  built.cleanup();
  return { image, cleanup: () => rmSync(dirname(image), { recursive: true, force: true }) };
}

export function guestKernelPresent(): string | undefined {
  const k = msiKernel();
  return existsSync(k) ? undefined : `guest kernel ${k} missing: run \`npm run guest\` first`;
}

/** The lines of a /proc/interrupts dump between `--- <title>` and `--- end`. */
export function interruptsDump(console: string[], title: string): string[] {
  const i = console.findIndex((l) => l.includes(`--- ${title}`));
  if (i < 0) return [];
  const j = console.findIndex((l, k) => k > i && l.includes("--- end"));
  return console.slice(i + 1, j < 0 ? undefined : j);
}
