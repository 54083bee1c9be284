// Benchmark: our shim daemon vs containerd's Go runc shim (/usr/bin/containerd-shim-runc-v2) on the
// same ttrpc call (containerd.task.v2.Task/Connect) from the same client (src/ttrpc), side by side:
// p50/p99 latency and calls/s at 1 and 64 concurrent callers, and the time from invoking `start` to
// a served Connect (median of N). Each shim is started as containerd starts it (cwd = a bundle with
// config.json and a `log` FIFO, the 1.6 argv, TTRPC_ADDRESS) and stopped with Shutdown.
//
//   npm run bench -- shim                         # table + bench-results/shim.json
//   COVE_BENCH_PROFILE=1 npm run bench -- shim    # also CPU-profiles our daemon, prints the top frames
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import protobuf from "protobufjs/minimal.js";
import { connectUnix, type TtrpcClient } from "../../src/ttrpc/index.ts";
import { REPO_ROOT } from "../harness/containerd.ts";
import { run } from "../harness/exec.ts";
import { sleep, waitFor } from "../harness/processes.ts";

const SERVICE = "containerd.task.v2.Task";
const SHIMS = {
  cove: join(REPO_ROOT, "bin", "containerd-shim-cove-v2"),
  runc: "/usr/bin/containerd-shim-runc-v2",
} as const;
type ShimName = keyof typeof SHIMS;

const CALLS_C1 = Number(process.env.COVE_BENCH_CALLS_C1 ?? 5000);
const CALLS_C64 = Number(process.env.COVE_BENCH_CALLS_C64 ?? 20000);
const WARMUP = 1000;
/** Load is measured in this many alternating rounds; the table shows each metric's median round. */
const ROUNDS = Number(process.env.COVE_BENCH_ROUNDS ?? 5);
const START_RUNS = Number(process.env.COVE_BENCH_START_RUNS ?? 9);
const PROFILE = process.env.COVE_BENCH_PROFILE === "1";
/** e.g. "warn": run our daemon with that log level (via $COVE_CONFIG) to see what per-RPC logging costs. */
const LOG_LEVEL = process.env.COVE_BENCH_LOG_LEVEL;

const work = mkdtempSync(join(tmpdir(), "cove-bench-"));
const containerdAddress = join(work, "containerd.sock"); // never served: only hashed into the socket path
let seq = 0;

function connectRequest(id: string): Uint8Array {
  return protobuf.Writer.create().uint32(10).string(id).finish(); // ConnectRequest{id=1}
}

/** ConnectResponse.shim_pid (field 1, varint). */
function shimPid(resp: Uint8Array): number {
  const r = protobuf.Reader.create(resp);
  while (r.pos < r.len) {
    const tag = r.uint32();
    if (tag >>> 3 === 1 && (tag & 7) === 0) return r.uint32();
    r.skipType(tag & 7);
  }
  throw new Error("ConnectResponse without shim_pid");
}

interface RunningShim {
  name: ShimName;
  id: string;
  bundle: string;
  socket: string;
  pid: number;
  client: TtrpcClient;
  logDrain: ChildProcess;
  holdFd: number;
  /** ms from spawning `start` to the first Connect answered. */
  startToConnectMs: number;
  /** ms the `start` command itself took (spawn to exit, address printed). */
  startCmdMs: number;
}

/** A bundle like containerd's: minimal config.json and the `log` FIFO (drained, as containerd does). */
function makeBundle(name: ShimName, id: string): { bundle: string; logDrain: ChildProcess; holdFd: number } {
  const bundle = join(work, "bundles", name, id);
  mkdirSync(bundle, { recursive: true, mode: 0o700 });
  writeFileSync(join(bundle, "config.json"), JSON.stringify({ ociVersion: "1.0.2", annotations: {} }));
  const fifo = join(bundle, "log");
  const mk = spawnSyncOk("mkfifo", ["-m", "0600", fifo]);
  if (!mk) throw new Error(`mkfifo ${fifo} failed`);
  // As containerd: a reader in another thread of control (here a process) copies the FIFO away, so
  // the shim's log writes never wait on our event loop. Our O_RDWR fd keeps the FIFO open for
  // writers (no blocking open, no EPIPE) whether or not cat has opened it yet.
  const holdFd = openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK);
  const logDrain = spawn("cat", [fifo], { stdio: ["ignore", "ignore", "ignore"] });
  return { bundle, logDrain, holdFd };
}

function spawnSyncOk(cmd: string, args: string[]): boolean {
  return spawnSync(cmd, args, { stdio: "ignore", timeout: 5000 }).status === 0;
}

async function startShim(name: ShimName): Promise<RunningShim> {
  const id = `bench-${name}-${++seq}`;
  const { bundle, logDrain, holdFd } = makeBundle(name, id);
  const env: NodeJS.ProcessEnv = { ...process.env, TTRPC_ADDRESS: `${containerdAddress}.ttrpc`, GOMAXPROCS: "2" };
  const args = [
    "-namespace",
    "bench",
    "-address",
    containerdAddress,
    "-publish-binary",
    "/usr/bin/containerd",
    "-id",
    id,
    "start",
  ];
  let cmd: string = SHIMS[name];
  if (LOG_LEVEL && name === "cove") {
    const cfg = join(work, "cove.toml");
    writeFileSync(cfg, `[log]\nlevel = "${LOG_LEVEL}"\n`);
    env.COVE_CONFIG = cfg;
  }
  if (PROFILE && name === "cove") {
    // --cpu-prof is refused in NODE_OPTIONS; on node's argv it lands in execArgv, which the shim's
    // start passes on to the daemon it spawns.
    mkdirSync(join(work, "prof"), { recursive: true });
    args.unshift(
      "--cpu-prof",
      `--cpu-prof-dir=${join(work, "prof")}`,
      join(REPO_ROOT, "dist", "containerd-shim-cove-v2.cjs"),
    );
    cmd = process.execPath;
  }
  const t0 = performance.now();
  const r = await run(cmd, args, { cwd: bundle, env, timeoutMs: 20_000 });
  const startCmdMs = performance.now() - t0;
  const out = (r.stdout + r.stderr).trim();
  if (r.code !== 0 || !out.startsWith("unix://")) throw new Error(`${name} start failed (${r.code}): ${out}`);
  const socket = out.slice("unix://".length);
  const client = await connectUnix(socket, { timeoutMs: 5000 });
  const resp = await client.callRaw(SERVICE, "Connect", connectRequest(id), { timeoutMs: 5000 });
  const startToConnectMs = performance.now() - t0;
  return { name, id, bundle, socket, pid: shimPid(resp), client, logDrain, holdFd, startToConnectMs, startCmdMs };
}

function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

async function stopShim(s: RunningShim): Promise<void> {
  try {
    await s.client.callRaw(SERVICE, "Shutdown", connectRequest(s.id), { timeoutMs: 3000 });
  } catch {
    // the shim may close the connection before answering; the kill below covers the rest
  }
  s.client.close();
  try {
    await waitFor(`${s.name} shim ${s.pid} to exit`, () => !pidAlive(s.pid), 5000, 20);
  } catch {
    try {
      process.kill(s.pid, "SIGKILL");
    } catch {}
    await waitFor(`${s.name} shim ${s.pid} to die`, () => !pidAlive(s.pid), 5000, 20);
  }
  s.logDrain.kill("SIGKILL");
  closeSync(s.holdFd);
  if (existsSync(s.socket)) unlinkSync(s.socket);
  rmSync(s.bundle, { recursive: true, force: true });
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

interface LoadResult {
  calls: number;
  concurrency: number;
  p50us: number;
  p99us: number;
  callsPerSec: number;
}

/** `total` Connect calls from `concurrency` callers sharing one connection. */
async function load(s: RunningShim, total: number, concurrency: number): Promise<LoadResult> {
  const req = connectRequest(s.id);
  const lat: number[] = new Array(total);
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= total) return;
      const a = performance.now();
      await s.client.callRaw(SERVICE, "Connect", req, { timeoutMs: 10_000 });
      lat[i] = (performance.now() - a) * 1000;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  lat.sort((x, y) => x - y);
  return {
    calls: total,
    concurrency,
    p50us: percentile(lat, 50),
    p99us: percentile(lat, 99),
    callsPerSec: total / elapsed,
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

type ProfNode = { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number };

/** Self samples per frame of one or more .cpuprofile files. */
function selfTimes(files: string[]): { total: number; idle: number; frames: Map<string, number> } {
  const frames = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const f of files) {
    const prof = JSON.parse(readFileSync(f, "utf8")) as { nodes: ProfNode[]; samples: number[] };
    total += prof.samples.length;
    for (const n of prof.nodes) {
      const hits = n.hitCount ?? 0;
      if (n.callFrame.functionName === "(idle)") {
        idle += hits;
        continue;
      }
      const url = n.callFrame.url.replace(/^file:\/\//, "");
      const where = url ? ` ${url.split("/").slice(-2).join("/")}:${n.callFrame.lineNumber + 1}` : "";
      const key = `${n.callFrame.functionName || "(anonymous)"}${where}`;
      frames.set(key, (frames.get(key) ?? 0) + hits);
    }
  }
  return { total, idle, frames };
}

/**
 * The daemon that served the load test (the profile with the most samples) and, aggregated, the
 * short-lived ones (start processes and the daemons of the start-latency runs): top self time as a
 * share of non-idle samples.
 */
function summarizeProfiles(dir: string): string[] {
  if (!existsSync(dir)) return ["(no profile written)"];
  const files = readdirSync(dir)
    .filter((f) => f.endsWith(".cpuprofile"))
    .map((f) => join(dir, f));
  if (files.length === 0) return ["(no profile written)"];
  const samples = (f: string) => (JSON.parse(readFileSync(f, "utf8")) as { samples: unknown[] }).samples.length;
  const sized = files.map((f) => ({ f, n: samples(f) })).sort((a, b) => b.n - a.n);
  const lines: string[] = [];
  const groups: [string, string[]][] = [
    ["load-test daemon", [sized[0]!.f]],
    [`start-up (${sized.length - 1} short-lived processes, aggregated)`, sized.slice(1).map((x) => x.f)],
  ];
  for (const [title, group] of groups) {
    if (group.length === 0) continue;
    const { total, idle, frames } = selfTimes(group);
    const busy = total - idle;
    lines.push(`${title}: ${total} samples, ${busy} busy`);
    for (const [k, v] of [...frames.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15)) {
      lines.push(`  ${((100 * v) / Math.max(1, busy)).toFixed(1).padStart(5)}%  ${k}`);
    }
  }
  return lines;
}

function fmt(n: number, digits = 0): string {
  return n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

async function main(): Promise<void> {
  if (!existsSync(join(REPO_ROOT, "dist", "containerd-shim-cove-v2.cjs")))
    throw new Error("dist/ missing: run npm run build");
  if (!existsSync(SHIMS.runc)) throw new Error(`${SHIMS.runc} missing: apt-get install containerd`);
  const results: Record<ShimName, { c1: LoadResult[]; c64: LoadResult[]; startMs: number[]; startCmdMs: number[] }> = {
    cove: { c1: [], c64: [], startMs: [], startCmdMs: [] },
    runc: { c1: [], c64: [], startMs: [], startCmdMs: [] },
  };

  // Start latency: alternate the two shims, N times each.
  for (let i = 0; i < START_RUNS; i++) {
    for (const name of (i % 2 ? ["cove", "runc"] : ["runc", "cove"]) as ShimName[]) {
      const s = await startShim(name);
      results[name].startMs.push(s.startToConnectMs);
      results[name].startCmdMs.push(s.startCmdMs);
      await stopShim(s);
    }
  }

  // Round trips: one long-lived shim each, warmed up, measured alternately.
  const running: Record<ShimName, RunningShim> = { runc: await startShim("runc"), cove: await startShim("cove") };
  try {
    for (const s of Object.values(running)) await load(s, WARMUP, 8);
    // Alternate who goes first, so load from elsewhere on the machine hits both alike.
    for (let round = 0; round < ROUNDS; round++) {
      const order = (round % 2 ? ["cove", "runc"] : ["runc", "cove"]) as ShimName[];
      for (const name of order) results[name].c1.push(await load(running[name], CALLS_C1, 1));
      for (const name of [...order].reverse()) results[name].c64.push(await load(running[name], CALLS_C64, 64));
    }
  } finally {
    for (const s of Object.values(running)) await stopShim(s);
  }
  await sleep(200); // let the profiled daemon finish writing

  const c = results.cove;
  const r = results.runc;
  const rows: [string, string, string, string][] = [];
  const row = (what: string, ours: number, theirs: number, digits = 0) =>
    rows.push([what, fmt(ours, digits), fmt(theirs, digits), (ours / theirs).toFixed(2)]);
  for (const k of ["c1", "c64"] as const) {
    const conc = k === "c1" ? 1 : 64;
    const m = (xs: LoadResult[], f: (x: LoadResult) => number) => median(xs.map(f));
    row(
      `Connect p50 latency, ${conc} caller(s) (µs)`,
      m(c[k], (x) => x.p50us),
      m(r[k], (x) => x.p50us),
    );
    row(
      `Connect p99 latency, ${conc} caller(s) (µs)`,
      m(c[k], (x) => x.p99us),
      m(r[k], (x) => x.p99us),
    );
    row(
      `Connect calls/s, ${conc} caller(s)`,
      m(c[k], (x) => x.callsPerSec),
      m(r[k], (x) => x.callsPerSec),
    );
  }
  row(`start → served Connect, median of ${START_RUNS} (ms)`, median(c.startMs), median(r.startMs), 1);
  row(`  of which the \`start\` command (ms)`, median(c.startCmdMs), median(r.startCmdMs), 1);

  const header: [string, string, string, string] = ["measure", "cove (node)", "runc-v2 (go)", "ratio cove/runc"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((x) => x[i]!.length)));
  const line = (cols: string[]) =>
    cols.map((x, i) => (i === 0 ? x.padEnd(widths[i]!) : x.padStart(widths[i]!))).join("  ");
  console.log(line(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const x of rows) console.log(line(x));
  console.log("(latency and start: lower is better, ratio ≤ 1.0 matches Go; calls/s: higher is better, ratio ≥ 1.0)");

  const json = {
    bench: "shim",
    date: new Date().toISOString(),
    node: process.version,
    call: `${SERVICE}/Connect`,
    coveLogLevel: LOG_LEVEL ?? "default (info)",
    calls: { c1: CALLS_C1, c64: CALLS_C64, warmup: WARMUP, rounds: ROUNDS },
    startRuns: START_RUNS,
    cove: { ...c, startMedianMs: median(c.startMs), startCmdMedianMs: median(c.startCmdMs) },
    runc: { ...r, startMedianMs: median(r.startMs), startCmdMedianMs: median(r.startCmdMs) },
    ratios: Object.fromEntries(rows.map((x) => [x[0], Number(x[3])])),
  };
  mkdirSync(join(REPO_ROOT, "bench-results"), { recursive: true });
  writeFileSync(join(REPO_ROOT, "bench-results", "shim.json"), `${JSON.stringify(json, null, 2)}\n`);
  console.log("wrote bench-results/shim.json");
  if (PROFILE) {
    console.log("\ncove CPU profiles, top self time (% of busy samples):");
    for (const l of summarizeProfiles(join(work, "prof"))) console.log(l);
  }
}

main()
  .catch((e: unknown) => {
    console.error(e instanceof Error ? e.stack : e);
    process.exitCode = 1;
  })
  .finally(() => {
    rmSync(work, { recursive: true, force: true });
  });
