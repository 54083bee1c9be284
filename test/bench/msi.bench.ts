// virtio-mmio: legacy interrupt + QueueNotify vs MSI + per-queue doorbells, side
// by side in one run: the same guest kernel (with the MSI patch) and image on the embedded VMM in
// the nested test host (genuine KVM inside QEMU TCG), legacy forced with `virtio_mmio.msi=0
// virtio_mmio.doorbells=0`. Three rounds, modes alternating inside each round, one VM per run:
// - request/response round trips per second over vsock (32 bytes each way, host ↔ guest socat
//   echo), timed on the host;
// - virtio-blk 4 KiB random O_DIRECT reads at queue depth 1 (test/integration/virtio-blkbench.ts),
//   timed in the guest;
// - VM exits per request for both, counted by KVM (binary stats: every exit, including the ones
//   KVM handles itself — ioeventfd, irqfd, EOI), and the exits that reached the VMM's userspace.
// Writes bench-results/msi.json.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { nestedUnavailable, runNested } from "../harness/nested.ts";
import {
  bundleRunner,
  guestKernelPresent,
  kvmDelta,
  makeDisks,
  msiGuestRoot,
  msiKernel,
  nestedScript,
  parseRuns,
  type RunOutput,
  type Scenario,
  type Snapshot,
  userspaceExitDelta,
} from "../integration/msi-guest.ts";
import { buildBlkBench, parseBlkBench } from "../integration/virtio-blkbench.ts";

const ROUNDS = Number(process.env.MSI_BENCH_ROUNDS ?? 3);
const RR = Number(process.env.MSI_BENCH_RR ?? 2000);
const BLK_SECONDS = Number(process.env.MSI_BENCH_BLK_SECONDS ?? 4);
const MODES = {
  legacy: ["--cmdline", "virtio_mmio.msi=0 virtio_mmio.doorbells=0"],
  msi: [] as string[],
} as const;
type Mode = keyof typeof MODES;

interface Sample {
  mode: Mode;
  round: number;
  rrPerSec: number;
  rrExits: number;
  rrUserExits: number;
  blkIops: number;
  blkExits: number;
  blkUserExits: number;
  blkIsrReads: number;
  msiActive: boolean;
  /** Every KVM exit counter per blk read and per round trip (which exits remain). */
  blkKvm: Record<string, number>;
  rrKvm: Record<string, number>;
}

function perRequest(a: Snapshot, b: Snapshot, n: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of Object.keys(b.kvm)) out[k] = kvmDelta(a, b, k) / n;
  return out;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] ?? Number.NaN) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
};

function sample(run: RunOutput, mode: Mode, round: number): Sample {
  const rr = run.vsock?.rr;
  if (!rr)
    throw new Error(
      `${run.name}: no round-trip result (${JSON.stringify(run.vsock)}); console tail:\n${run.console.slice(-40).join("\n")}`,
    );
  const a = run.marks["rand-start"];
  const b = run.marks["rand-end"];
  const blk = parseBlkBench(run.console.join("\n")).find((x) => x.test === "randread");
  if (!a || !b || !blk)
    throw new Error(`${run.name}: blk benchmark missing; console tail:\n${run.console.slice(-40).join("\n")}`);
  const isr = (s: Snapshot) => s.transports.reduce((n, t) => n + t.isrReads, 0);
  return {
    mode,
    round,
    rrPerSec: rr.perSec,
    rrExits: kvmDelta(rr.before, rr.after, "exits") / rr.n,
    rrUserExits: userspaceExitDelta(rr.before, rr.after) / rr.n,
    blkIops: blk.ops / (blk.ns / 1e9),
    blkExits: kvmDelta(a, b, "exits") / blk.ops,
    blkUserExits: userspaceExitDelta(a, b) / blk.ops,
    blkIsrReads: (isr(b) - isr(a)) / blk.ops,
    msiActive: b.transports.every((t) => t.msi),
    blkKvm: perRequest(a, b, blk.ops),
    rrKvm: perRequest(rr.before, rr.after, rr.n),
  };
}

function table(header: string[], rows: string[][]): void {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(w[i] ?? 0) : c.padStart(w[i] ?? 0))).join("  ");
  console.log(line(header));
  console.log(w.map((n) => "-".repeat(n)).join("  "));
  for (const r of rows) console.log(line(r));
}

async function main(): Promise<number> {
  const why = nestedUnavailable() ?? guestKernelPresent();
  if (why) {
    console.log(`msi bench skipped: ${why}`);
    return 0;
  }
  const tools = mkdtempSync(join(tmpdir(), "cove-msi-bench-"));
  const disks = makeDisks(64, 1);
  const root = msiGuestRoot(
    ["echo MSI-MARK rand-start", `/usr/bin/blkbench /dev/vdb randread ${BLK_SECONDS} 64`, "echo MSI-MARK rand-end"],
    { "/usr/bin/blkbench": buildBlkBench(tools) },
  );
  const runner = bundleRunner();
  try {
    const scenarios: Scenario[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      // Alternate which mode goes first, so drift on the shared host does not favour one.
      const order: Mode[] = round % 2 ? ["legacy", "msi"] : ["msi", "legacy"];
      for (const mode of order) scenarios.push({ name: `${mode}#${round}`, flags: [...MODES[mode]] });
    }
    const common = [
      "--kernel",
      msiKernel(),
      "--root",
      root.image,
      "--disk",
      `${disks.readDisk}:ro`,
      "--vsock",
      "--timeout",
      "300",
      "--rr",
      String(RR),
    ];
    console.log(
      `nested test host: ${scenarios.length} VM runs (${ROUNDS} rounds × legacy/msi), ${RR} round trips + ${BLK_SECONDS} s of 4k random reads each`,
    );
    const t0 = Date.now();
    const r = await runNested(nestedScript(scenarios, common, runner.runner), { timeoutMs: 3_000_000, cpus: 1 });
    if (r.status !== 0) {
      console.log(`nested command failed (${r.status}):\n${r.output.slice(-4000)}\n${r.console.slice(-2000)}`);
      return 1;
    }
    const samples: Sample[] = [];
    for (const run of parseRuns(r.output)) {
      const [mode, round] = run.name.split("#") as [Mode, string];
      samples.push(sample(run, mode, Number(round)));
    }
    for (const s of samples) {
      if (s.msiActive !== (s.mode === "msi")) throw new Error(`${s.mode}#${s.round}: MSI active = ${s.msiActive}`);
    }
    const by = (m: Mode, k: keyof Sample) => samples.filter((s) => s.mode === m).map((s) => Number(s[k]));
    const fmt = (x: number, d = 0) => x.toFixed(d);
    const rows: [string, keyof Sample, number][] = [
      ["vsock round trips/s (32 B each way)", "rrPerSec", 0],
      ["  VM exits per round trip (KVM)", "rrExits", 2],
      ["  exits to the VMM's userspace per round trip", "rrUserExits", 2],
      ["blk 4k random read QD1, IOPS", "blkIops", 0],
      ["  VM exits per read (KVM)", "blkExits", 2],
      ["  exits to the VMM's userspace per read", "blkUserExits", 2],
      ["  InterruptStatus reads per read", "blkIsrReads", 2],
    ];
    console.log(
      `\nmedian of ${ROUNDS} runs; per-run values in brackets (wall ${((Date.now() - t0) / 1000).toFixed(0)} s)`,
    );
    table(
      ["metric", "legacy MMIO", "MSI + doorbells", "msi/legacy"],
      rows.map(([label, k, d]) => {
        const l = median(by("legacy", k));
        const m = median(by("msi", k));
        return [
          label,
          `${fmt(l, d)} [${by("legacy", k)
            .map((x) => fmt(x, d))
            .join(" ")}]`,
          `${fmt(m, d)} [${by("msi", k)
            .map((x) => fmt(x, d))
            .join(" ")}]`,
          l ? `${(m / l).toFixed(2)}×` : "-",
        ];
      }),
    );
    // Which exits remain: KVM's counters per request, medians, where either mode has ≥ 0.05.
    const kinds = (k: "blkKvm" | "rrKvm") => [...new Set(samples.flatMap((x) => Object.keys(x[k])))].sort();
    for (const [k, what] of [
      ["rrKvm", "per vsock round trip"],
      ["blkKvm", "per blk read"],
    ] as const) {
      const rowsK = kinds(k)
        .filter((name) => name !== "exits")
        .map((name) => {
          const l = median(samples.filter((x) => x.mode === "legacy").map((x) => x[k][name] ?? 0));
          const m = median(samples.filter((x) => x.mode === "msi").map((x) => x[k][name] ?? 0));
          return [name, l, m] as const;
        })
        .filter(([, l, m]) => l >= 0.05 || m >= 0.05);
      console.log(`\nKVM counters ${what} (median)`);
      table(
        ["counter", "legacy", "msi"],
        rowsK.map(([n, l, m]) => [n, l.toFixed(2), m.toFixed(2)]),
      );
    }
    console.log(
      "\nEmulation: the VMs run on KVM inside a QEMU TCG guest (nested test host): every VM exit is a\n" +
        "TCG-emulated SVM world switch, far costlier than on hardware, so the exit counts are the\n" +
        "portable result and the rates are only comparable with each other.",
    );
    mkdirSync("bench-results", { recursive: true });
    writeFileSync(
      "bench-results/msi.json",
      JSON.stringify(
        {
          emulation: "embedded VMM on KVM inside QEMU TCG (-cpu max), 1 vCPU nested host",
          rounds: ROUNDS,
          roundTrips: RR,
          blkSeconds: BLK_SECONDS,
          median: Object.fromEntries(
            rows.map(([, k]) => [k, { legacy: median(by("legacy", k)), msi: median(by("msi", k)) }]),
          ),
          samples,
        },
        null,
        2,
      ),
    );
    console.log("\nwrote bench-results/msi.json");
    return 0;
  } finally {
    runner.cleanup();
    root.cleanup();
    disks.cleanup();
    rmSync(tools, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(err.stack ?? err.message);
    process.exit(1);
  },
);
