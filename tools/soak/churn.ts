// The soak run's engine, shared by `npm run soak` (tools/soak/soak.ts) and its short CI version
// (test/integration/churn.test.ts): a real containerd, pods through CRI on the `cove` handler with a
// CNI network, for N cycles on a fixed-seed schedule. Each cycle:
//   - now and then re-imports the images first: busybox as it was (same layers, new snapshots) and
//     the app image as a new generation (one new layer, so a conversion, and the old generation's
//     snapshots gone from containerd);
//   - runs a pod of 2 containers (busybox, app), execs in both, stops and removes them and the pod;
//   - now and then SIGKILLs the shim or the VM mid-cycle, or the VM while the shim is stopping it;
// then waits for the pod's shim and VM to go (how long they took is a series too). Before the first
// counted cycle one warm-up cycle converts the layers; the baseline is sampled after it, and every
// `sampleEvery` cycles after that, and once more after the last cycle once things settled.
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { listCache } from "../../src/rootfs/cache-gc.ts";
import { readPodStates, VM_RUN_DIR } from "../../src/sandbox/run-state.ts";
import { CNI_BIN_DIR, removeBridge, writeBridgeConflist } from "../../test/harness/cni.ts";
import { COVE_RUNTIME_TYPE, Containerd } from "../../test/harness/containerd.ts";
import { writeCoveConfig } from "../../test/harness/cove-config.ts";
import { CriClient, type PodSandboxConfig } from "../../test/harness/cri.ts";
import { BUSYBOX_IMAGE_REF, buildImage, busyboxImage, importImage, pauseImage } from "../../test/harness/image.ts";
import { prng } from "../../test/harness/prng.ts";
import { processesMatching, processesWithArg, sleep, waitFor } from "../../test/harness/processes.ts";
import { COUNTABLE, differences, type Sample, sample, type Where } from "./resources.ts";

export const APP_IMAGE_REF = "docker.io/cove-soak/app:latest";
const NS = "k8s.io";

export type Fault = "none" | "kill shim" | "kill VM" | "kill VM while stopping";

export interface SoakOptions {
  cycles: number;
  seed: number;
  /** Sample every this many cycles (and after the last). */
  sampleEvery: number;
  /** Progress lines. */
  log: (line: string) => void;
  /** Where the temp dirs go (short: socket paths). */
  parentDir?: string;
  /** Every cycle has this fault (to chase one). */
  only?: Fault;
  /** These steps instead of the seeded schedule (`cycles` is then their number). */
  steps?: Step[];
}

export interface CycleRecord {
  cycle: number;
  fault: Fault;
  reimport: boolean;
  ms: number;
  /** From RemovePodSandbox's return until the pod's shim and VM were gone. */
  goneMs: number;
}

export interface SoakReport {
  seed: number;
  cycles: CycleRecord[];
  /** [cycle, sample]: the baseline (cycle 0, after the warm-up), then every sampleEvery cycles. */
  samples: [number, Sample][];
  /** The last sample, after the pods were gone and things settled. */
  final: Sample;
  /** Countable series not back at their baseline: "name: baseline → final". */
  failures: string[];
}

/** What the shim is doing when "kill VM while stopping" strikes. */
export const STOP_PHASES = ["StopContainer", "StopPodSandbox", "RemovePodSandbox"] as const;

export interface Step {
  fault: Fault;
  reimport: boolean;
  /** For "kill VM while stopping": which call, and how long after it was sent. */
  phase: (typeof STOP_PHASES)[number];
  delayMs: number;
}

/** The schedule: which cycles re-import and which fault each has; the same for the same seed. */
export function schedule(seed: number, cycles: number, only?: Fault): Step[] {
  const r = prng(seed);
  return Array.from({ length: cycles }, () => {
    const reimport = r() < 0.15;
    const x = r();
    const fault: Fault = x < 0.1 ? "kill shim" : x < 0.2 ? "kill VM" : x < 0.3 ? "kill VM while stopping" : "none";
    const phase = STOP_PHASES[Math.floor(r() * STOP_PHASES.length)]!;
    return { fault: only ?? fault, reimport, phase, delayMs: Math.floor(r() * 400) };
  });
}

/** The pod's shim and VMM pids, from the run state its shim wrote (src/sandbox/run-state.ts). */
function podPids(podId: string): { shim: number; vmm: number } | undefined {
  const s = readPodStates(VM_RUN_DIR).find((e) => e.state?.id === podId)?.state;
  return s ? { shim: s.shimPid, vmm: s.vmmPid } : undefined;
}

function kill9(pid: number | undefined): void {
  if (!pid) return;
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // gone already
  }
}

/** A CRI call that may fail after a fault: its error is noted, not thrown. */
async function tolerant(what: string, p: Promise<unknown>, faulted: boolean): Promise<void> {
  try {
    await p;
  } catch (e) {
    if (!faulted) throw new Error(`${what}: ${(e as Error).message}`);
  }
}

/**
 * A teardown call that must succeed in the end: after a fault containerd's CRI may take a moment to
 * process the exits (seen on a loaded machine: RemovePodSandbox "container is still running").
 */
async function eventually(what: string, f: () => Promise<unknown>): Promise<void> {
  let last: unknown;
  for (let i = 0; i < 30; i++) {
    try {
      await f();
      return;
    } catch (e) {
      last = e;
      await sleep(1000);
    }
  }
  throw new Error(`${what}: ${(last as Error).message}`);
}

/** Stops and removes every pod containerd's CRI knows (after a failed cycle). */
async function removeEveryPod(client: CriClient, log: (l: string) => void): Promise<void> {
  const { items } = await client.call<{ items: { id: string }[] }>("runtime", "ListPodSandbox", {});
  for (const { id } of items) {
    for (const f of [() => client.stopPodSandbox(id), () => client.removePodSandbox(id)]) {
      try {
        await eventually(`clean up pod ${id}`, f);
      } catch (e) {
        log(`cleanup: ${(e as Error).message}`);
      }
    }
  }
}

export async function runSoak(opts: SoakOptions): Promise<SoakReport> {
  const parent = opts.parentDir ?? "/tmp";
  const cniState = join(parent, `cove-soak-cni-${process.pid}`);
  const bridge = `cvsoak${process.pid % 10000}`;
  const conf = join(cniState, "conf");
  writeBridgeConflist(conf, cniState, { name: "cove-soak", bridge, prefix: "10.231.77" });
  let cd: Containerd | undefined;
  let cri: CriClient | undefined;
  try {
    const coveDir = join(cniState, "cove");
    mkdirSync(coveDir, { recursive: true });
    const configPath = writeCoveConfig(coveDir);
    cd = await Containerd.start({
      criRuntimes: { cove: { runtimeType: COVE_RUNTIME_TYPE, configPath } },
      cniConfDir: conf,
      cniBinDir: CNI_BIN_DIR,
      parentDir: parent,
    });
    const images = join(cd.dir, "images");
    await importImage(cd, await buildImage(pauseImage(), images), NS);
    const busybox = await buildImage(busyboxImage(), images);
    await importImage(cd, busybox, NS);
    let generation = 0;
    const app = (g: number) =>
      buildImage(
        busyboxImage({
          ref: APP_IMAGE_REF,
          layers: [{ entries: [{ name: "generation", type: "file", mode: 0o644, content: `${g}\n` }] }],
        }),
        images,
      );
    await importImage(cd, await app(generation), NS);
    const c = cd;
    const client = new CriClient(cd.address);
    cri = client;
    const where: Where = {
      containerdPid: cd.pid ?? 0,
      address: cd.address,
      dir: cd.dir,
      state: cd.state,
      cacheDir: join(coveDir, "cache"),
      runDir: "/run/cove",
    };
    const podProcs = () => [
      ...processesWithArg(c.address).filter((p) => p.pid !== where.containerdPid),
      ...processesMatching((p) => /qemu-system/.test(p.argv[0] ?? "") && (p.cwd ?? "").startsWith(c.dir)),
    ];

    const reimport = async () => {
      // busybox as it was: the same chain IDs, new snapshots; the app as a new generation.
      // As kubelet's image GC does: CRI's RemoveImage drops every reference (the name, and the
      // sha256:<id> reference CRI keeps), then containerd's GC drops the snapshots.
      for (const image of [BUSYBOX_IMAGE_REF, APP_IMAGE_REF])
        await client.call("image", "RemoveImage", { image: { image } });
      await importImage(c, busybox, NS);
      generation++;
      await importImage(c, await app(generation), NS);
    };

    /** `call`, with the pod's VM SIGKILLed step.delayMs after it was sent when the step says so. */
    const maybeKillDuring = async (
      step: Step,
      phase: Step["phase"],
      vmm: number | undefined,
      call: () => Promise<unknown>,
    ) => {
      if (step.fault !== "kill VM while stopping" || step.phase !== phase) return call();
      const p = call();
      await sleep(step.delayMs);
      kill9(vmm);
      await tolerant(phase, p, true);
    };

    const cycle = async (i: number, step: Step) => {
      const t0 = Date.now();
      if (step.reimport) await reimport();
      const pod: PodSandboxConfig = {
        metadata: { name: `soak-${i}`, uid: `soak-${process.pid}-${i}`, namespace: "default", attempt: 0 },
        hostname: `soak-${i}`,
        linux: { security_context: { namespace_options: { pid: 1 } } },
      };
      const podId = await client.runPodSandbox(pod, "cove");
      const ctr = (name: string, image: string) =>
        client.createContainer(
          podId,
          { metadata: { name }, image: { image }, command: ["/bin/sh", "-c", "exec sleep 100000"] },
          pod,
        );
      const ids = [await ctr("busybox", BUSYBOX_IMAGE_REF), await ctr("app", APP_IMAGE_REF)];
      for (const id of ids) await client.startContainer(id);
      const pids = podPids(podId);
      const faulted = step.fault !== "none";
      if (step.fault === "kill shim") kill9(pids?.shim);
      if (step.fault === "kill VM") kill9(pids?.vmm);
      for (const id of ids) {
        const ex = client.execSync(id, ["sh", "-c", "cat /generation 2>/dev/null; echo ok"], 20);
        await tolerant(
          `exec in ${id}`,
          ex.then((r) => {
            if (!r.stdout.toString().endsWith("ok\n")) throw new Error(`exec said ${r.stdout}${r.stderr}`);
          }),
          faulted,
        );
      }
      // The first container with a grace period (sleep as PID 1 ignores SIGTERM): the shim is
      // stopping it for 2 s.
      await maybeKillDuring(step, "StopContainer", pids?.vmm, () =>
        tolerant(`stop ${ids[0]}`, client.stopContainer(ids[0]!, 2), faulted),
      );
      for (const id of ids) await tolerant(`stop ${id}`, client.stopContainer(id, 0), faulted);
      for (const id of ids) await tolerant(`remove ${id}`, client.removeContainer(id), faulted);
      await maybeKillDuring(step, "StopPodSandbox", pids?.vmm, () => client.stopPodSandbox(podId));
      await eventually(`stop pod ${podId}`, () => client.stopPodSandbox(podId));
      await maybeKillDuring(step, "RemovePodSandbox", pids?.vmm, () => client.removePodSandbox(podId));
      await eventually(`remove pod ${podId}`, () => client.removePodSandbox(podId));
      const removed = Date.now();
      await waitFor(`the shim and VM of pod ${podId} to go`, () => podProcs().length === 0, 120_000);
      const rec: CycleRecord = {
        cycle: i,
        fault: step.fault,
        reimport: step.reimport,
        ms: Date.now() - t0,
        goneMs: Date.now() - removed,
      };
      opts.log(
        `cycle ${i}: ${rec.fault}${rec.fault === "kill VM while stopping" ? ` (${step.phase} +${step.delayMs} ms)` : ""}${rec.reimport ? ", re-imported" : ""}; ${rec.ms} ms, shim and VM gone ${rec.goneMs} ms after RemovePodSandbox`,
      );
      return rec;
    };

    // Warm-up: the layers are converted, containerd's CRI plugin has what it keeps.
    await cycle(0, { fault: "none", reimport: false, phase: "StopContainer", delayMs: 0 });
    const samples: [number, Sample][] = [[0, sample(where)]];
    const baseline = samples[0]![1];
    const cycles: CycleRecord[] = [];
    const plan = opts.steps ?? schedule(opts.seed, opts.cycles, opts.only);
    const errors: string[] = [];
    for (const [k, step] of plan.entries()) {
      try {
        cycles.push(await cycle(k + 1, step));
      } catch (e) {
        // A failed cycle is a finding, not the end of the run: its pods are removed the hard way.
        errors.push(`cycle ${k + 1} (${step.fault}): ${(e as Error).message}`);
        opts.log(`cycle ${k + 1}: FAILED: ${(e as Error).message}`);
        await removeEveryPod(client, opts.log);
      }
      if ((k + 1) % opts.sampleEvery === 0) samples.push([k + 1, sample(where)]);
    }
    // Settled: what is left once background work (a shim's exit, a collection pass) is done.
    let final = sample(where);
    const until = Date.now() + 30_000;
    while (differences(baseline, final).length && Date.now() < until) {
      await sleep(500);
      final = sample(where);
    }
    const failures = [...errors, ...differences(baseline, final)];
    if (failures.length) {
      // What is in the layer cache, to tell which image stayed and why (its snapshot still there?).
      for (const e of listCache(join(where.cacheDir, "layers")).entries) {
        const snap = e.source?.snapshot;
        const held = snap
          ? (await c.ctr(["snapshots", "info", snap.slice(snap.indexOf("/") + 1)], { namespace: NS })).code === 0
          : undefined;
        opts.log(
          `cache: ${e.key} users [${e.users.join(",")}] ${snap ?? e.source?.dir ?? "(no record)"} snapshot ${held === undefined ? "-" : held ? "present" : "absent"}`,
        );
      }
      for (const l of c
        .log()
        .split("\n")
        .filter((l) => /layer cache|layer image/.test(l)))
        opts.log(`containerd log: ${l}`);
    }
    return { seed: opts.seed, cycles, samples, final, failures };
  } finally {
    cri?.close();
    await cd?.stop();
    removeBridge(bridge);
    rmSync(cniState, { recursive: true, force: true });
  }
}

/** The series as a table: one row per sample, one column per series; then the per-cycle times. */
export function formatReport(r: SoakReport): string {
  const cols = [...COUNTABLE, "containerd PSS KiB"] as const;
  const rows = [...r.samples.map(([c, s]) => [String(c), s] as const), ["final", r.final] as const];
  const head = ["cycle", ...cols];
  const table = rows.map(([c, s]) => [c, ...cols.map((k) => String(s[k]))]);
  const w = head.map((h, i) => Math.max(h.length, ...table.map((t) => t[i]!.length)));
  const line = (cells: string[]) => cells.map((x, i) => x.padStart(w[i]!)).join("  ");
  const pss = r.samples.map(([, s]) => s["containerd PSS KiB"]);
  const first = pss[0] ?? 0;
  const gone = r.cycles.map((c) => c.goneMs);
  const byFault = new Map<Fault, number[]>();
  for (const c of r.cycles) byFault.set(c.fault, [...(byFault.get(c.fault) ?? []), c.goneMs]);
  return [
    `seed ${r.seed}, ${r.cycles.length} cycles (+1 warm-up), ${r.cycles.filter((c) => c.reimport).length} re-imports`,
    line(head),
    ...table.map(line),
    `containerd PSS trend: ${first} → ${r.final["containerd PSS KiB"]} KiB (${r.final["containerd PSS KiB"] - first >= 0 ? "+" : ""}${r.final["containerd PSS KiB"] - first} KiB over ${r.cycles.length} cycles)`,
    `cycle time: mean ${Math.round(r.cycles.reduce((s, c) => s + c.ms, 0) / Math.max(1, r.cycles.length))} ms`,
    `shim and VM gone after RemovePodSandbox: max ${Math.max(0, ...gone)} ms; ${[...byFault]
      .map(([f, v]) => `${f} ×${v.length} max ${Math.max(...v)} ms`)
      .join(", ")}`,
    r.failures.length
      ? `NOT BACK AT BASELINE: ${r.failures.join("; ")}`
      : "every countable series is back at its baseline",
  ].join("\n");
}
