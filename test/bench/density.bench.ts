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
// Then the embedded VMM with N = COVE_BENCH_EMBEDDED_N (default 5; "" skips it): directly where KVM
// is hardware-backed, else inside the nested test host (COVE_BENCH_NESTED_MIB of memory, default
// 6144), with a point-to-point CNI network (its kernel has no bridge); its rows come back as JSON.
// Heavy: run it under the machine-wide lock. Writes bench-results/density.json.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { chooseAccel } from "../../src/hypervisor/qemu/accel.ts";
import { CNI_BIN_DIR, removeBridge, writeBridgeConflist } from "../harness/cni.ts";
import { COVE_RUNTIME_TYPE, Containerd } from "../harness/containerd.ts";
import { writeCoveConfig } from "../harness/cove-config.ts";
import { CriClient, type PodSandboxConfig } from "../harness/cri.ts";
import { BUSYBOX_IMAGE_REF, buildImage, busyboxImage, importImage, pauseImage } from "../harness/image.ts";
import { nestedUnavailable, runNested } from "../harness/nested.ts";
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
/** The pod VMs' memory ([guest] memory_mib's default: the bench's pods ask for no resources). */
const GUEST_MIB = 256;
/** N for the embedded VMM (in the nested test host on a host without hardware virtualization); "" skips it. */
const EMBEDDED_N = (process.env.COVE_BENCH_EMBEDDED_N ?? "5").split(",").filter(Boolean).map(Number);
/** The nested test host's memory: N guests of 256 MiB, their shims, containerd and this bench. */
const NESTED_MIB = Number(process.env.COVE_BENCH_NESTED_MIB ?? 6144);
/** Set inside the nested test host: run, print the rows as one JSON line, write nothing. */
const INNER = process.env.COVE_BENCH_INNER === "1";
/** Pods through `ctr run` instead of CRI (the nested test host cannot wire CRI's pod network). */
const VIA_CTR = process.env.COVE_BENCH_VIA === "ctr";
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

/** How the bench starts idle pods, runs a script in one, and removes them all. */
interface PodDriver {
  /** Starts pod i with one idle container; resolves to the container's id. */
  start(i: number): Promise<string>;
  exec(container: string, script: string): Promise<string>;
  removeAll(): Promise<void>;
}

/** Pods through CRI; hostPID, so an exec sees the guest's agent (and the same for runc). */
function criPods(cri: CriClient, runtime: string, n: number): PodDriver {
  const ids: string[] = [];
  const hostPid = { security_context: { namespace_options: { pid: "NODE" } } };
  return {
    async start(i) {
      const pod: PodSandboxConfig = {
        metadata: { name: `d-${runtime}-${i}`, uid: `d-${runtime}-${n}-${i}-${Date.now()}`, namespace: "default" },
        linux: hostPid,
      };
      const id = await cri.runPodSandbox(pod, runtime === "runc" ? "" : "cove");
      ids.push(id);
      const config = { metadata: { name: "idle" }, image: { image: BUSYBOX_IMAGE_REF }, command: ["sleep", "1000000"] };
      const ctr = await cri.createContainer(id, { ...config, linux: hostPid }, pod);
      await cri.startContainer(ctr);
      return ctr;
    },
    async exec(ctr, script) {
      const r = await cri.execSync(ctr, ["sh", "-c", script]);
      if (r.exit_code !== 0) throw new Error(`exec: ${r.stderr.toString()}`);
      return r.stdout.toString();
    },
    async removeAll() {
      for (const id of ids.splice(0)) {
        await cri.stopPodSandbox(id).catch(() => {});
        await cri.removePodSandbox(id).catch(() => {});
      }
    },
  };
}

/**
 * Pods through `ctr run` (no network namespace: the guest has loopback only), where CRI's pod
 * network cannot be wired (the nested test host's kernel has no tc ingress).
 */
function ctrPods(cd: Containerd, configPath: string): PodDriver {
  const ids: string[] = [];
  return {
    async start(i) {
      const id = `d-ctr-${i}`;
      const rt = ["--runtime", COVE_RUNTIME_TYPE, "--runtime-config-path", configPath];
      await cd.ctrOk(["run", "-d", ...rt, BUSYBOX_IMAGE_REF, id, "sleep", "1000000"], { timeoutMs: 300_000 });
      ids.push(id);
      return id;
    },
    async exec(id, script) {
      const r = await cd.ctrOk(["task", "exec", "--exec-id", `m${Date.now()}`, id, "sh", "-c", script]);
      return r.stdout;
    },
    async removeAll() {
      for (const id of ids.splice(0)) {
        await cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
        await cd.ctr(["task", "rm", "-f", id], { timeoutMs: 60_000 });
        await cd.ctr(["container", "rm", id]);
      }
    },
  };
}

/** Starts N pods, measures them, and removes them whatever happened. */
async function measure(cd: Containerd, pods: PodDriver, runtime: string, n: number, hypervisor = "qemu"): Promise<Row> {
  try {
    return await startAndMeasure(cd, pods, runtime, n, hypervisor);
  } finally {
    await pods.removeAll();
    await waitFor("the pods' shims to go", () => processesWithArg(cd.address).length === 0, 120_000);
  }
}

async function startAndMeasure(
  cd: Containerd,
  driver: PodDriver,
  runtime: string,
  n: number,
  hypervisor: string,
): Promise<Row> {
  const before = memAvailableMib();
  const starts: number[] = [];
  const pods: string[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    pods.push(await driver.start(i));
    starts.push(performance.now() - t0);
    process.stderr.write(`  ${runtime} pod ${i + 1}/${n} started in ${starts.at(-1)!.toFixed(0)} ms\n`);
  }
  await sleep(IDLE_MS);

  const shims = processesWithArg(cd.address).filter(
    (p) => /node|shim/.test(p.argv.join(" ")) && !/qemu/.test(p.argv[0] ?? ""),
  );
  const shimMem: ProcMem[] = [];
  const restMem: ProcMem[] = [];
  for (const s of shims) {
    shimMem.push(procMem(s.pid, GUEST_MIB));
    restMem.push(sum(descendants(s.pid).map((pid) => procMem(pid))));
  }
  const guests: GuestMem[] = [];
  if (runtime === "cove") {
    for (const c of pods.slice(0, GUEST_SAMPLES))
      guests.push(parseGuestMem(await driver.exec(c, GUEST_MEM_SCRIPT), ["sleep", "sh", "cat", "sed"]));
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
  if (runtime === "cove" && hypervisor === "qemu") {
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

/** A CNI network for the nested test host, whose kernel has veth but no bridge: point-to-point links. */
function ptpConflist(dir: string): string {
  const conf = join(dir, "cni-conf");
  mkdirSync(conf, { recursive: true });
  const ipam = { type: "host-local", ranges: [[{ subnet: "10.231.10.0/24" }]], dataDir: join(dir, "ipam") };
  writeFileSync(
    join(conf, "10-cove-density.conflist"),
    JSON.stringify({ cniVersion: "1.0.0", name: "cove-density", plugins: [{ type: "ptp", ipMasq: false, ipam }] }),
  );
  return conf;
}

/** Every run of this bench on one containerd, with the pod VMs on `hypervisor`. */
async function runOn(hypervisor: string, ns: number[], runtimes: string[]): Promise<Row[]> {
  const dir = mkdtempSync("/tmp/cove-density-");
  const rows: Row[] = [];
  // `hypervisor` is a top-level key: it goes before the file's sections.
  const configPath = writeCoveConfig(dir);
  writeFileSync(configPath, `hypervisor = "${hypervisor}"\n${readFileSync(configPath, "utf8")}`);
  const cd = await Containerd.start({
    criRuntimes: { cove: { runtimeType: COVE_RUNTIME_TYPE, configPath } },
    cniConfDir: INNER
      ? ptpConflist(dir)
      : dirname(
          writeBridgeConflist(join(dir, "cni-conf"), dir, { name: "cove-density", bridge: BRIDGE, prefix: "10.231.9" }),
        ),
    cniBinDir: CNI_BIN_DIR,
  });
  const cri = new CriClient(cd.address);
  try {
    const images = join(cd.dir, "images");
    await importImage(cd, await buildImage(pauseImage(), images), "k8s.io");
    await importImage(cd, await buildImage(busyboxImage(), images), "k8s.io");
    if (VIA_CTR) await importImage(cd, await buildImage(busyboxImage(), images));
    for (const n of ns) {
      const done = (r: Row) => {
        rows.push(r);
        print([r]);
      };
      if (runtimes.includes("runc")) done(await measure(cd, criPods(cri, "runc", n), "runc", n));
      if (!runtimes.includes("cove")) continue;
      for (const set of FLAG_SETS) {
        if (set.flags !== undefined) {
          // containerd's environment is what its shims get.
          process.env.COVE_SHIM_NODE_FLAGS = set.flags;
          await cd.restart();
        }
        try {
          const pods = VIA_CTR ? ctrPods(cd, configPath) : criPods(cri, "cove", n);
          const r = await measure(cd, pods, "cove", n, hypervisor);
          done({ ...r, runtime: hypervisor === "qemu" ? "cove" : `cove ${hypervisor}`, flags: set.label });
        } catch (e) {
          // One flag set that breaks the shim must not lose the others' rows.
          console.log(`cove N=${n} with shim flags ${set.label} (${set.flags}) failed: ${(e as Error).message}`);
        }
      }
    }
  } finally {
    cri.close();
    await cd.stop();
    if (!INNER) removeBridge(BRIDGE);
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

/**
 * The embedded VMM's rows: here where KVM is hardware-backed, else inside the nested test host
 * (docs/hosts.md), which sees this checkout read-only and writes only under /tmp; there the pods
 * are `ctr run` pods with loopback only (its kernel has no tc ingress to wire a CRI pod network).
 */
async function embeddedRows(): Promise<Row[]> {
  if (chooseAccel().accel === "kvm") return runOn("embedded", EMBEDDED_N, ["cove"]);
  const why = nestedUnavailable();
  if (why) {
    console.log(`embedded VMM not measured: ${why}`);
    return [];
  }
  // libcni caches results under /var/lib/cni, read-only in there: a tmpfs over it (in that VM only).
  const r = await runNested("mount -t tmpfs tmpfs /var/lib/cni && node --import tsx test/bench/density.bench.ts 2>&1", {
    env: {
      COVE_BENCH_INNER: "1",
      COVE_BENCH_HYPERVISOR: "embedded",
      COVE_BENCH_DENSITY_N: EMBEDDED_N.join(","),
      COVE_BENCH_RUNTIMES: "cove",
      COVE_BENCH_VIA: "ctr",
      COVE_BENCH_IDLE_MS: String(IDLE_MS),
      ...(process.env.COVE_CACHE_DIR ? { COVE_CACHE_DIR: process.env.COVE_CACHE_DIR } : {}),
    },
    memoryMiB: NESTED_MIB,
    cpus: 2,
    timeoutMs: 2_400_000,
  });
  const line = /^DENSITY_ROWS (.*)$/m.exec(r.output);
  if (r.status !== 0 || !line || line[1] === "[]") {
    console.log(`embedded VMM run in the nested host failed (status ${r.status}):\n${r.output.slice(-6000)}`);
    return [];
  }
  return JSON.parse(line[1]!) as Row[];
}

async function main() {
  const rows = await runOn(INNER ? (process.env.COVE_BENCH_HYPERVISOR ?? "qemu") : "qemu", NS, RUNTIMES);
  if (INNER) {
    console.log(`DENSITY_ROWS ${JSON.stringify(rows)}`);
    return;
  }
  if (EMBEDDED_N.length && RUNTIMES.includes("cove")) rows.push(...(await embeddedRows()));
  console.log("\n=== all runs ===");
  print(rows);
  mkdirSync("bench-results", { recursive: true });
  writeFileSync(
    "bench-results/density.json",
    `${JSON.stringify({ idleMs: IDLE_MS, flagSets: FLAG_SETS, rows }, null, 2)}\n`,
  );
}

await main();
