// The embedded VMM against QEMU microvm, both on KVM, same guest kernel and image, side by side in
// alternating rounds: boot to the agent's readiness line, host memory of the VMM process (PSS with
// guest RAM left out), and VM exits. On hosts whose KVM is not hardware-backed (PVM, like the
// project's build machines) the whole benchmark runs inside the nested test host
// (test/harness/nested.ts), where KVM is genuine but everything runs under TCG: absolute times are
// far above a real host's, the ratios are what to read.
//
// Embedded runs bundled (esbuild, as the shim ships), not under tsx. "create→ready" starts when the
// VM is created inside an already running process (what a pod start pays with an embedded VMM);
// "spawn→ready" includes starting Node. QEMU's number is spawn→ready.
//
// Exits per virtio-blk request during boot: the guest kernel carries cove's virtio-mmio MSI driver,
// so the embedded runs use MSI + doorbells (the guest's default); `npm run bench -- msi` compares
// that with the legacy interrupt side by side. The device-protocol exits per request are counted by
// the transport (ISR reads, ACK writes, notifies), all VM exits by KVM's binary stats.
// Env: VMM_BENCH_ROUNDS (default 3). Writes bench-results/vmm.json.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { build } from "esbuild";
import { parseReady } from "../../agent/src/ready.ts";
import { guestCmdline } from "../../src/guest/cmdline.ts";
import { cacheDir, guestArtifacts, repoRoot } from "../../src/guest/paths.ts";
import { chooseAccel } from "../../src/hypervisor/qemu/accel.ts";
import { pssReport, qemuGuestRam } from "../../src/vmm/accounting.ts";
import { nestedUnavailable, runNested } from "../harness/nested.ts";
import { bootGuest } from "../harness/qemu-boot.ts";

const ROUNDS = Number(process.env.VMM_BENCH_ROUNDS ?? 3);
const MEM_MIB = 512;
const GUEST_CMDLINE = guestCmdline({ quiet: true, extra: "printk.time=1" });
const root = repoRoot();
const bundleDir = join(cacheDir(), "nested", "bench");
const bundle = join(bundleDir, "vmm-run.cjs");

interface Sample {
  ok: boolean;
  spawnToReadyMs?: number;
  createToReadyMs?: number;
  guestUptimeMs?: number;
  vmmPssKiB?: number;
  guestRamPssKiB?: number;
  kvmExits?: number;
  blkRequests?: number;
  protocolExitsPerRequest?: number;
  error?: string;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[Math.floor((s.length - 1) / 2)] ?? Number.NaN) : Number.NaN;
};

function embeddedOnce(kernel: string): Promise<Sample> {
  const g = guestArtifacts();
  const t0 = performance.now();
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      [
        bundle,
        "--report",
        "--log-level",
        "warn",
        "--timeout",
        "90",
        "--disk",
        `${g.rootfs}:ro`,
        "--kernel",
        kernel,
        "--mem",
        String(MEM_MIB),
        "--cmdline",
        GUEST_CMDLINE,
        "--until",
        "cove-agent ready",
      ],
      {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, COVE_NATIVE: join(root, "build/Release/cove_native.node") },
      },
    );
    let out = "";
    let err = "";
    let spawnToReadyMs: number | undefined;
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      if (spawnToReadyMs === undefined && out.includes("cove-agent ready")) spawnToReadyMs = performance.now() - t0;
    });
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
    });
    child.on("close", (code) => {
      const line = err.split("\n").find((l) => l.startsWith('{"report":'));
      const ready = out.split("\n").map(parseReady).find(Boolean);
      if (code !== 0 || !line || !ready) {
        resolve({ ok: false, error: `exit ${code}; ${err.split("\n").slice(-4).join(" | ").slice(0, 400)}` });
        return;
      }
      const r = JSON.parse(line).report as {
        ms: number;
        pss: { vmmKiB: number; guestRamKiB: number };
        kvm: Record<string, number>;
        blk: { completed: number }[];
        transports: { registerReads: number; registerWrites: number; notifies: number }[];
      };
      const blk = r.blk[0]?.completed ?? 0;
      const t = r.transports[0];
      resolve({
        ok: true,
        spawnToReadyMs,
        createToReadyMs: r.ms,
        guestUptimeMs: ready.uptime_ms,
        vmmPssKiB: r.pss.vmmKiB,
        guestRamPssKiB: r.pss.guestRamKiB,
        kvmExits: r.kvm.exits,
        blkRequests: blk,
        protocolExitsPerRequest: t && blk ? (t.registerReads + t.registerWrites + t.notifies) / blk : undefined,
      });
    });
  });
}

function qemuPid(rootfs: string): number | undefined {
  for (const p of readdirSync("/proc")) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const argv = readFileSync(`/proc/${p}/cmdline`, "utf8").split("\0");
      if (argv[0]?.includes("qemu-system") && argv.some((a) => a.includes(rootfs))) return Number(p);
    } catch {
      // gone
    }
  }
  return undefined;
}

async function qemuOnce(): Promise<Sample> {
  const g = guestArtifacts();
  let pss: ReturnType<typeof pssReport> | undefined;
  const r = await bootGuest({
    kernel: g.kernel,
    rootfs: g.rootfs,
    accel: "kvm",
    memMiB: MEM_MIB,
    quiet: true,
    timeoutMs: 90_000,
    exitTimeoutMs: 1,
    onLine: (line) => {
      if (!pss && line.includes("cove-agent ready")) {
        const pid = qemuPid(g.rootfs);
        if (pid) pss = pssReport(pid, qemuGuestRam(MEM_MIB * 1024 * 1024));
      }
    },
  });
  if (!r.ready) return { ok: false, error: `no readiness line; ${r.serial.slice(-3).join(" | ").slice(0, 300)}` };
  return {
    ok: true,
    spawnToReadyMs: r.readyWallMs,
    guestUptimeMs: r.ready.uptime_ms,
    vmmPssKiB: pss?.vmmKiB,
    guestRamPssKiB: pss?.guestRamKiB,
  };
}

function summary(name: string, xs: Sample[]) {
  const ok = xs.filter((s) => s.ok);
  const m = (k: keyof Sample) => median(ok.map((s) => s[k]).filter((v): v is number => typeof v === "number"));
  return {
    name,
    runs: xs.length,
    failed: xs.length - ok.length,
    errors: xs.filter((s) => !s.ok).map((s) => s.error),
    spawnToReadyMs: m("spawnToReadyMs"),
    createToReadyMs: m("createToReadyMs"),
    guestUptimeMs: m("guestUptimeMs"),
    vmmPssKiB: m("vmmPssKiB"),
    guestRamPssKiB: m("guestRamPssKiB"),
    kvmExits: m("kvmExits"),
    blkRequests: m("blkRequests"),
    protocolExitsPerRequest: m("protocolExitsPerRequest"),
  };
}

async function inner(): Promise<void> {
  const g = guestArtifacts();
  const emb: Sample[] = [];
  const elf: Sample[] = [];
  const qemu: Sample[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    emb.push(await embeddedOnce(g.kernel));
    if (existsSync(g.vmlinux)) elf.push(await embeddedOnce(g.vmlinux));
    qemu.push(await qemuOnce());
  }
  const result = {
    rounds: ROUNDS,
    memMiB: MEM_MIB,
    embedded: summary("embedded", emb),
    embeddedVmlinux: summary("embedded-vmlinux", elf),
    qemu: summary("qemu", qemu),
  };
  process.stdout.write(`BENCH-JSON ${JSON.stringify(result)}\n`);
}

function fmt(v: number | undefined, digits = 0): string {
  return v === undefined || Number.isNaN(v) ? "n/a" : v.toFixed(digits);
}

async function outer(): Promise<void> {
  const g = guestArtifacts();
  if (!existsSync(g.kernel) || !existsSync(g.rootfs)) {
    console.error(`vmm bench: guest artifacts missing (${g.kernel}); run \`npm run guest\``);
    process.exit(1);
  }
  mkdirSync(bundleDir, { recursive: true });
  await build({
    entryPoints: [join(root, "tools/vmm-run.ts")],
    bundle: true,
    platform: "node",
    format: "cjs",
    outfile: bundle,
    logLevel: "error",
  });
  let text: string;
  let where: string;
  if (chooseAccel().accel === "kvm") {
    where = "this host (hardware KVM)";
    const r = spawnSync(process.execPath, ["--import", "tsx", "test/bench/vmm.bench.ts", "--inner"], {
      cwd: root,
      encoding: "utf8",
    });
    text = r.stdout;
  } else {
    const why = nestedUnavailable();
    if (why) {
      console.error(
        `vmm bench: this host's KVM is not hardware-backed and the nested test host is unavailable: ${why}`,
      );
      process.exit(1);
    }
    where = "the nested test host (KVM under QEMU TCG -cpu max)";
    const r = await runNested("node --import tsx test/bench/vmm.bench.ts --inner", {
      timeoutMs: 1_800_000,
      cpus: 2,
      memoryMiB: 3072,
    });
    text = r.output;
    if (r.status !== 0) console.error(r.output.slice(-3000));
  }
  const line = text.split("\n").find((l) => l.startsWith("BENCH-JSON "));
  if (!line) {
    console.error(`vmm bench: no result from ${where}:\n${text.slice(-3000)}`);
    process.exit(1);
  }
  const res = JSON.parse(line.slice("BENCH-JSON ".length));
  const e = res.embedded;
  const v = res.embeddedVmlinux;
  const q = res.qemu;
  console.log(`VMM benchmark in ${where}; ${res.rounds} alternating rounds, medians; guest ${res.memMiB} MiB, 1 vCPU`);
  console.log(
    "Same kernel build: QEMU and the first embedded column boot the bzImage (it decompresses itself); the second embedded column boots its vmlinux (ELF, entered at startup_64, as Firecracker does).",
  );
  console.log(
    "| metric | embedded, bzImage | embedded, vmlinux | QEMU microvm (KVM), bzImage | bzImage / QEMU | vmlinux / QEMU |",
  );
  console.log("|---|---|---|---|---|---|");
  const row = (name: string, a: number, b: number, c: number, d = 0) =>
    console.log(`| ${name} | ${fmt(a, d)} | ${fmt(b, d)} | ${fmt(c, d)} | ${fmt(a / c, 2)} | ${fmt(b / c, 2)} |`);
  row("boot to agent-ready, VM create → ready (ms)", e.createToReadyMs, v.createToReadyMs, q.spawnToReadyMs);
  row("boot to agent-ready, process spawn → ready (ms)", e.spawnToReadyMs, v.spawnToReadyMs, q.spawnToReadyMs);
  row("guest uptime at ready (ms)", e.guestUptimeMs, v.guestUptimeMs, q.guestUptimeMs);
  row("VMM process PSS without guest RAM (KiB)", e.vmmPssKiB, v.vmmPssKiB, q.vmmPssKiB);
  row("guest RAM PSS (KiB)", e.guestRamPssKiB, v.guestRamPssKiB, q.guestRamPssKiB);
  console.log(`| VM exits during boot (KVM stats) | ${fmt(e.kvmExits)} | ${fmt(v.kvmExits)} | n/a | | |`);
  console.log(`| virtio-blk requests during boot | ${fmt(e.blkRequests)} | ${fmt(v.blkRequests)} | n/a | | |`);
  console.log(
    `| device-protocol exits per blk request (MSI + doorbells; \`npm run bench -- msi\` compares legacy) | ${fmt(e.protocolExitsPerRequest, 2)} | ${fmt(v.protocolExitsPerRequest, 2)} | n/a | | |`,
  );
  console.log(`failed runs: embedded ${e.failed}/${e.runs}, vmlinux ${v.failed}/${v.runs}, qemu ${q.failed}/${q.runs}`);
  for (const err of [...e.errors, ...v.errors, ...q.errors]) console.log(`  ${err}`);
  mkdirSync(join(root, "bench-results"), { recursive: true });
  writeFileSync(join(root, "bench-results", "vmm.json"), JSON.stringify({ where, ...res }, null, 2));
}

if (process.argv.includes("--inner")) await inner();
else await outer();
