// ttrpc round trips: the same client (ours) calls containerd.task.v2.Task/Connect on
//   - containerd-shim-runc-v2 (Go ttrpc, the reference),
//   - our TtrpcServer in its own Node process (what the cove shim daemon is),
//   - our TtrpcServer in the benchmark's own process (client and server share one event loop),
// over unix sockets, at 1 and 64 concurrent callers. Prints p50/p99 latency and calls/s with the
// ratio against the Go server, and writes bench-results/ttrpc.json. Targets are measured in
// alternating rounds so that background load hits all of them alike; the median round is kept.
// Env: TTRPC_BENCH_CALLS (per round at 1 caller, default 5000; 64 callers do 4x), TTRPC_BENCH_ROUNDS (3).
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { messageType } from "../../src/proto/root.ts";
import { connectUnix, type TtrpcClient, TtrpcServer } from "../../src/ttrpc/index.ts";
import { type RuncShim, runcShimUnavailable, startRuncShim } from "../harness/runc-shim.ts";

const TASK = "containerd.task.v2.Task";

function serveTask(server: TtrpcServer): void {
  server.registerService(TASK, {
    Connect: async (req: { id: string }) => ({ shim_pid: process.pid, task_pid: req.id.length, version: "cove" }),
  });
}

// --- child mode: `ttrpc.bench.ts --serve <socket>` ------------------------------------------
if (process.argv[2] === "--serve") {
  const path = process.argv[3]!;
  const server = new TtrpcServer();
  serveTask(server);
  const net = createServer();
  server.listen(net);
  net.listen(path, () => process.stdout.write("ready\n"));
  process.on("SIGTERM", () => {
    void server.close().then(() => process.exit(0));
  });
} else {
  await main();
}

interface Result {
  target: string;
  callers: number;
  calls: number;
  p50us: number;
  p99us: number;
  callsPerSec: number;
}

async function measure(
  client: TtrpcClient,
  payload: Uint8Array,
  callers: number,
  calls: number,
): Promise<Omit<Result, "target">> {
  const lat = new Float64Array(calls);
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: callers }, async () => {
      for (;;) {
        const i = next++;
        if (i >= calls) return;
        const s = performance.now();
        await client.callRaw(TASK, "Connect", payload);
        lat[i] = performance.now() - s;
      }
    }),
  );
  const elapsed = performance.now() - t0;
  lat.sort();
  const q = (p: number) => lat[Math.min(calls - 1, Math.floor(p * calls))]! * 1000;
  return { callers, calls, p50us: q(0.5), p99us: q(0.99), callsPerSec: (calls / elapsed) * 1000 };
}

interface Target {
  name: string;
  socket: string;
  stop(): Promise<void>;
}

async function ownProcessServer(dir: string): Promise<Target> {
  const socket = join(dir, "cove.sock");
  const self = fileURLToPath(import.meta.url);
  const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", self, "--serve", socket], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("cove ttrpc server child did not start in 20 s")), 20_000);
    child.stdout!.once("data", () => {
      clearTimeout(t);
      resolve();
    });
    child.once("exit", (code) => reject(new Error(`cove ttrpc server child exited (${code})`)));
  });
  return {
    name: "cove TtrpcServer (own process)",
    socket,
    stop: async () => {
      if (child.exitCode !== null) return;
      const gone = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 3000);
      await gone;
      clearTimeout(t);
    },
  };
}

async function inProcessServer(dir: string): Promise<Target> {
  const socket = join(dir, "inproc.sock");
  const server = new TtrpcServer();
  serveTask(server);
  const net = createServer();
  server.listen(net);
  await new Promise<void>((r) => net.listen(socket, r));
  return { name: "cove TtrpcServer (same process as client)", socket, stop: () => server.close() };
}

function median<T>(xs: T[], key: (x: T) => number): T {
  return [...xs].sort((a, b) => key(a) - key(b))[Math.floor(xs.length / 2)]!;
}

async function main(): Promise<void> {
  const calls1 = Number(process.env.TTRPC_BENCH_CALLS ?? 5000);
  const rounds = Number(process.env.TTRPC_BENCH_ROUNDS ?? 3);
  const dir = mkdtempSync(join(tmpdir(), "cove-ttrpc-bench-"));
  const targets: Target[] = [];
  let shim: RuncShim | undefined;
  try {
    const why = runcShimUnavailable();
    if (why) console.log(`!!! reference missing, measuring cove only: ${why}`);
    else {
      shim = await startRuncShim();
      targets.push({ name: "containerd-shim-runc-v2 (Go ttrpc)", socket: shim.socket, stop: () => shim!.stop() });
    }
    targets.push(await ownProcessServer(dir));
    targets.push(await inProcessServer(dir));

    const payload = messageType("containerd.task.v2.ConnectRequest").encode({ id: "bench" }).finish();
    const clients = await Promise.all(targets.map((t) => connectUnix(t.socket, { timeoutMs: 5000 })));
    // Warm-up: JIT, socket buffers, Go's goroutine pool.
    for (const c of clients) await measure(c, payload, 64, 5000);

    const perRound: Result[][] = targets.map(() => []);
    for (let r = 0; r < rounds; r++) {
      for (const callers of [1, 64]) {
        for (let i = 0; i < targets.length; i++) {
          const m = await measure(clients[i]!, payload, callers, callers === 1 ? calls1 : calls1 * 4);
          perRound[i]!.push({ target: targets[i]!.name, ...m });
        }
      }
    }
    for (const c of clients) c.close();

    const results: Result[] = [];
    for (let i = 0; i < targets.length; i++) {
      for (const callers of [1, 64]) {
        results.push(
          median(
            perRound[i]!.filter((x) => x.callers === callers),
            (x) => x.callsPerSec,
          ),
        );
      }
    }
    report(results, shim !== undefined);
  } finally {
    for (const t of targets) await t.stop().catch(() => {});
    if (shim && !targets.length) await shim.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function report(results: Result[], haveRef: boolean): void {
  const ref = (callers: number) =>
    haveRef ? results.find((r) => r.callers === callers && r.target.startsWith("containerd-shim-runc-v2")) : undefined;
  const rows = results.map((r) => {
    const b = ref(r.callers);
    return {
      ...r,
      latencyRatio: b ? r.p50us / b.p50us : undefined,
      throughputRatio: b ? r.callsPerSec / b.callsPerSec : undefined,
    };
  });
  const f = (n: number | undefined, d = 1) => (n === undefined ? "-" : n.toFixed(d));
  const header = ["target", "callers", "p50 µs", "p99 µs", "calls/s", "p50 ratio", "calls/s ratio"];
  const table = rows.map((r) => [
    r.target,
    String(r.callers),
    f(r.p50us),
    f(r.p99us),
    f(r.callsPerSec, 0),
    f(r.latencyRatio, 2),
    f(r.throughputRatio, 2),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  console.log(
    "\nttrpc round trips, Task/Connect, same client (ours) for every server; ratios vs containerd-shim-runc-v2",
  );
  console.log("(p50 ratio < 1 = we are faster; calls/s ratio > 1 = we are faster)\n");
  console.log(line(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const row of table) console.log(line(row));
  mkdirSync("bench-results", { recursive: true });
  writeFileSync(
    "bench-results/ttrpc.json",
    `${JSON.stringify({ bench: "ttrpc", date: new Date().toISOString(), node: process.version, cpus: cpus().length, results: rows }, null, 2)}\n`,
  );
  console.log("\nwrote bench-results/ttrpc.json");
}
