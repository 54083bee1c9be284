// Density: N idle busybox pods through CRI (what kubelet does), for runc and for cove on the same
// containerd and image, side by side. For each runtime and N (COVE_BENCH_DENSITY_N, default "1,20"):
// start N pods one after another (RunPodSandbox + CreateContainer + StartContainer of `sleep`), let
// them idle, then per pod:
//  * PSS and USS of its host processes, by process (the shim and the VMM for cove; the shim and the
//    pod's processes for runc): every process under the pod's shim;
//  * for cove, guest RAM the guest holds (MemTotal − MemFree, read through a CRI exec in the
//    container, which runs in the guest's root PID namespace and so sees the guest's meminfo and the
//    agent): page cache, anonymous, kernel, and the agent's own anonymous RSS (its heap);
//  * the host's MemAvailable drop;
//  * how long the first and the Nth pod took to start.
// Guest RAM (the memfd QEMU and the shim's vhost-user backends both map) is counted apart from both
// processes, once. COVE_BENCH_SHIM_FLAG_SETS="label=flags;label2=flags2" repeats the cove runs with
// each set of Node flags for the shim (bin/containerd-shim-cove-v2 takes COVE_SHIM_NODE_FLAGS; each
// set restarts containerd, whose environment the shims inherit); unset: the wrapper's own flags.
// Heavy: run it under the machine-wide lock. Writes bench-results/density.json.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { CNI_BIN_DIR, removeBridge, writeBridgeConflist } from "../harness/cni.ts";
import { COVE_RUNTIME_TYPE, Containerd } from "../harness/containerd.ts";
import { writeCoveConfig } from "../harness/cove-config.ts";
import { CriClient, type PodSandboxConfig } from "../harness/cri.ts";
import { BUSYBOX_IMAGE_REF, buildImage, busyboxImage, importImage, pauseImage } from "../harness/image.ts";
import { processesWithArg, sleep, waitFor } from "../harness/processes.ts";
import {
  descendants,
  exeOf,
  GUEST_MEM_SCRIPT,
  type GuestMem,
  memAvailableMib,
  type ProcMem,
  parseGuestMem,
  procMem,
} from "./density-memory.ts";

const NS = (process.env.COVE_BENCH_DENSITY_N ?? "1,20").split(",").map(Number);
const RUNTIMES = (process.env.COVE_BENCH_RUNTIMES ?? "runc,cove").split(",");
const IDLE_MS = Number(process.env.COVE_BENCH_IDLE_MS ?? 20_000);
/** Pods whose guest is read (every one costs an exec). */
const GUEST_SAMPLES = Number(process.env.COVE_BENCH_GUEST_SAMPLES ?? 3);
const BRIDGE = "cove-dens0";
/** label → flags; no flags: the wrapper's defaults. */
const FLAG_SETS: { label: string; flags?: string }[] = process.env.COVE_BENCH_SHIM_FLAG_SETS
  ? process.env.COVE_BENCH_SHIM_FLAG_SETS.split(";").map((x) => {
      const i = x.indexOf("=");
      return { label: x.slice(0, i), flags: x.slice(i + 1) };
    })
  : [{ label: "default" }];

interface Row {
  runtime: string;
  /** The shim's Node flag set (cove). */
  flags?: string;
  n: number;
  /** Per pod, MiB. */
  pss: number;
  uss: number;
  shim: ProcMem;
  /** cove: the VMM (QEMU); runc: the pod's own processes (pause, sleep). */
  rest: ProcMem;
  /** Guest RAM resident on the host (PSS of its memfd mappings), per pod. */
  guestRam: number;
  guest?: GuestMem;
  memAvailDrop: number;
  firstStartMs: number;
  lastStartMs: number;
  medianStartMs: number;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
const sum = (ms: ProcMem[]): ProcMem => ({
  pss: ms.reduce((a, m) => a + m.pss, 0),
  uss: ms.reduce((a, m) => a + m.uss, 0),
  guest: ms.reduce((a, m) => a + m.guest, 0),
});

/** Starts N pods, measures them, and removes them whatever happened. */
async function measure(cd: Containerd, cri: CriClient, runtime: string, n: number): Promise<Row> {
  const pods: string[] = [];
  try {
    return await startAndMeasure(cd, cri, runtime, n, pods);
  } finally {
    for (const id of pods) {
      await cri.stopPodSandbox(id).catch(() => {});
      await cri.removePodSandbox(id).catch(() => {});
    }
    await waitFor("the pods' shims to go", () => processesWithArg(cd.address).length === 0, 120_000);
  }
}

async function startAndMeasure(
  cd: Containerd,
  cri: CriClient,
  runtime: string,
  n: number,
  podIds: string[],
): Promise<Row> {
  const handler = runtime === "runc" ? "" : "cove";
  const before = memAvailableMib();
  const starts: number[] = [];
  const pods: { pod: PodSandboxConfig; id: string; ctr: string }[] = [];
  for (let i = 0; i < n; i++) {
    // The guest's root PID namespace (hostPID), so the exec below sees the agent; the same for runc.
    const pod: PodSandboxConfig = {
      metadata: { name: `d-${runtime}-${i}`, uid: `d-${runtime}-${n}-${i}-${Date.now()}`, namespace: "default" },
      linux: { security_context: { namespace_options: { pid: "NODE" } } },
    };
    const t0 = performance.now();
    const id = await cri.runPodSandbox(pod, handler);
    podIds.push(id);
    const ctr = await cri.createContainer(
      id,
      {
        metadata: { name: "idle" },
        image: { image: BUSYBOX_IMAGE_REF },
        command: ["sleep", "1000000"],
        linux: { security_context: { namespace_options: { pid: "NODE" } } },
      },
      pod,
    );
    await cri.startContainer(ctr);
    starts.push(performance.now() - t0);
    pods.push({ pod, id, ctr });
    process.stderr.write(`  ${runtime} pod ${i + 1}/${n} started in ${starts.at(-1)!.toFixed(0)} ms\n`);
  }
  await sleep(IDLE_MS);

  const shims = processesWithArg(cd.address).filter(
    (p) => /node|shim/.test(p.argv.join(" ")) && !/qemu/.test(p.argv[0] ?? ""),
  );
  const shimMem: ProcMem[] = [];
  const restMem: ProcMem[] = [];
  for (const s of shims) {
    shimMem.push(procMem(s.pid));
    restMem.push(sum(descendants(s.pid).map(procMem)));
  }
  const guests: GuestMem[] = [];
  if (runtime === "cove") {
    for (const p of pods.slice(0, GUEST_SAMPLES)) {
      const r = await cri.execSync(p.ctr, ["sh", "-c", GUEST_MEM_SCRIPT]);
      if (r.exit_code !== 0) throw new Error(`guest meminfo: ${r.stderr.toString()}`);
      guests.push(parseGuestMem(r.stdout.toString(), ["sleep", "sh", "cat", "sed"]));
    }
  }
  const after = memAvailableMib();
  const shim = sum(shimMem);
  const rest = sum(restMem);
  const guestRam = (shim.guest + rest.guest) / n;
  const row: Row = {
    runtime,
    n,
    pss: (shim.pss + rest.pss) / n + guestRam,
    uss: (shim.uss + rest.uss) / n,
    shim: { pss: shim.pss / n, uss: shim.uss / n, guest: 0 },
    rest: { pss: rest.pss / n, uss: rest.uss / n, guest: 0 },
    guestRam,
    memAvailDrop: (before - after) / n,
    firstStartMs: starts[0]!,
    lastStartMs: starts.at(-1)!,
    medianStartMs: [...starts].sort((a, b) => a - b)[Math.floor(n / 2)]!,
  };
  if (guests.length) {
    const g = (f: (x: GuestMem) => number) => mean(guests.map(f));
    row.guest = {
      used: g((x) => x.used),
      cache: g((x) => x.cache),
      anon: g((x) => x.anon),
      kernel: g((x) => x.kernel),
      agentAnon: g((x) => x.agentAnon),
      otherSystemAnon: g((x) => x.otherSystemAnon),
      total: g((x) => x.total),
    };
  }
  if (shims.length !== n) process.stderr.write(`  warning: ${shims.length} shims for ${n} pods\n`);
  if (runtime === "cove") {
    const vmms = shims.flatMap((s) => descendants(s.pid)).filter((pid) => /qemu/.test(exeOf(pid)));
    if (vmms.length !== n) process.stderr.write(`  warning: ${vmms.length} VMMs for ${n} pods\n`);
  }
  return row;
}

const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : "–");

function print(rows: Row[]): void {
  console.log(`idle busybox pods through CRI (MiB per pod, after ${IDLE_MS / 1000} s idle)`);
  const header = [
    "runtime",
    "N",
    "PSS",
    "shim PSS/USS",
    "VMM|pod PSS/USS",
    "guest RAM on host",
    "guest used: cache/anon/kernel",
    "agent anon",
    "MemAvail drop",
    "start 1st/Nth ms",
    "Nth/1st",
  ];
  const table = rows.map((r) => [
    r.flags && r.flags !== "default" ? `${r.runtime} (${r.flags})` : r.runtime,
    String(r.n),
    f1(r.pss),
    `${f1(r.shim.pss)}/${f1(r.shim.uss)}`,
    `${f1(r.rest.pss)}/${f1(r.rest.uss)}`,
    r.runtime === "runc" ? "–" : f1(r.guestRam),
    r.guest ? `${f1(r.guest.used)}: ${f1(r.guest.cache)}/${f1(r.guest.anon)}/${f1(r.guest.kernel)}` : "–",
    f1(r.guest?.agentAnon ?? Number.NaN),
    f1(r.memAvailDrop),
    `${r.firstStartMs.toFixed(0)}/${r.lastStartMs.toFixed(0)}`,
    (r.lastStartMs / r.firstStartMs).toFixed(2),
  ]);
  console.log(`| ${header.join(" | ")} |`);
  console.log(`|${header.map(() => "---").join("|")}|`);
  for (const row of table) console.log(`| ${row.join(" | ")} |`);
  for (const r of rows) {
    if (r.runtime !== "runc") continue;
    for (const cove of rows.filter((x) => x.runtime === "cove" && x.n === r.n))
      console.log(
        `N=${r.n}${cove.flags ? ` ${cove.flags}` : ""}: cove/runc PSS per pod ${(cove.pss / r.pss).toFixed(1)}x`,
      );
  }
  console.log(
    "PSS: every host process of the pod plus the guest RAM resident on the host. VMM|pod: cove's VMM (QEMU), " +
      "runc's pod processes (pause, sleep), guest RAM apart. guest used: MemTotal − MemFree in the guest; " +
      "agent anon: the agent's anonymous RSS (its heap). MemAvail drop: the host's, per pod (machine-wide: noisy " +
      "when other work runs).",
  );
}

async function main() {
  const dir = mkdtempSync("/tmp/cove-density-");
  const rows: Row[] = [];
  // `hypervisor` is a top-level key: it goes before the file's sections.
  const configPath = writeCoveConfig(dir);
  writeFileSync(configPath, `hypervisor = "qemu"\n${readFileSync(configPath, "utf8")}`);
  const cd = await Containerd.start({
    criRuntimes: { cove: { runtimeType: COVE_RUNTIME_TYPE, configPath } },
    cniConfDir: dirname(
      writeBridgeConflist(join(dir, "cni-conf"), dir, { name: "cove-density", bridge: BRIDGE, prefix: "10.231.9" }),
    ),
    cniBinDir: CNI_BIN_DIR,
  });
  const cri = new CriClient(cd.address);
  try {
    const images = join(cd.dir, "images");
    await importImage(cd, await buildImage(pauseImage(), images), "k8s.io");
    await importImage(cd, await buildImage(busyboxImage(), images), "k8s.io");
    for (const n of NS) {
      const done = (r: Row) => {
        rows.push(r);
        print([r]);
      };
      if (RUNTIMES.includes("runc")) done(await measure(cd, cri, "runc", n));
      if (!RUNTIMES.includes("cove")) continue;
      for (const set of FLAG_SETS) {
        if (set.flags !== undefined) {
          // containerd's environment is what its shims get.
          process.env.COVE_SHIM_NODE_FLAGS = set.flags;
          await cd.restart();
        }
        try {
          done({ ...(await measure(cd, cri, "cove", n)), flags: set.label });
        } catch (e) {
          // One flag set that breaks the shim must not lose the others' rows.
          console.log(`cove N=${n} with shim flags ${set.label} (${set.flags}) failed: ${(e as Error).message}`);
        }
      }
    }
  } finally {
    cri.close();
    await cd.stop();
    removeBridge(BRIDGE);
    rmSync(dir, { recursive: true, force: true });
  }
  console.log("\n=== all runs ===");
  print(rows);
  mkdirSync("bench-results", { recursive: true });
  writeFileSync(
    "bench-results/density.json",
    `${JSON.stringify({ idleMs: IDLE_MS, flagSets: FLAG_SETS, rows }, null, 2)}\n`,
  );
}

await main();
