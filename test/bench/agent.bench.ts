// The guest agent on the host-side setup (agent under unshare, Unix sockets, AgentClient), side by
// side with the same OCI runtime driven directly (no agent) in one run:
//  * container create+start latency: CreateContainer+StartContainer of `true` vs `crun create`+`crun start`
//  * exec latency: ExecProcess+WaitProcess of `true` vs `crun exec` (both until the exit is known)
//  * stdout throughput: a container writing N MiB of zeros (`dd bs=1M`), read by the client through
//    the agent's stdio connection, vs the same container's stdout piped straight into this process
//  * stdin throughput: the client writes N MiB into `cat > /dev/null` through the agent vs straight
//    into the container's stdin pipe
// Medians of alternating rounds. Writes bench-results/agent.json.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hostAgentSkip, ociSpec, readAll, startHostAgent, writeBusyboxRootfs } from "../integration/agent-harness.ts";

const skip = hostAgentSkip();
if (skip) {
  console.log(skip);
  process.exit(0);
}

const ROUNDS = Number(process.env.COVE_BENCH_ROUNDS ?? 7);
const MIB = Number(process.env.COVE_BENCH_MIB ?? 1024);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const now = () => performance.now();

const dir = mkdtempSync(join(tmpdir(), "cove-agent-bench-"));
const rootfs = join(dir, "rootfs");
writeBusyboxRootfs(rootfs);
const a = await startHostAgent({ logLevel: "warn" });
const c = a.client;
await c.createSandbox({ cgroup_root: `cove-bench-${process.pid}` });

// The reference: crun run directly, in its own mount namespace with the same cgroup setup the agent has.
const refRoot = join(dir, "crun-root");
function crun(args: string[], stdio: Array<"pipe" | "ignore"> = ["ignore", "ignore", "pipe"]): ChildProcess {
  return spawn(
    "unshare",
    [
      "--mount",
      "/bin/sh",
      "-c",
      'if [ -d /sys/fs/cgroup/memory ]; then umount -l /sys/fs/cgroup/unified 2>/dev/null; fi; exec crun --root "$0" "$@"',
      refRoot,
      ...args,
    ],
    { stdio },
  );
}
const exitOf = (p: ChildProcess) => new Promise<number>((resolve) => p.on("exit", (code) => resolve(code ?? 255)));
function bundle(id: string, args: string[]): string {
  const b = join(dir, "bundles", id);
  mkdirSync(b, { recursive: true });
  const spec = ociSpec(args) as Record<string, unknown> & { linux: Record<string, unknown> };
  spec.root = { path: rootfs, readonly: false };
  spec.linux.cgroupsPath = `/cove-bench-ref-${process.pid}/${id}`;
  writeFileSync(join(b, "config.json"), JSON.stringify(spec));
  return b;
}
async function must(p: ChildProcess, what: string): Promise<void> {
  let err = "";
  p.stderr?.on("data", (d: Buffer) => {
    err += d.toString();
  });
  const code = await exitOf(p);
  if (code !== 0) throw new Error(`${what}: exit ${code}: ${err}`);
}

let seq = 0;
const progress = (m: string) => process.stderr.write(`  ${m}\n`);
const rows: Array<{ what: string; agent: number; direct: number; unit: string }> = [];

// ---- create+start latency --------------------------------------------------------------------
{
  const viaAgent: number[] = [];
  const direct: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const id = `cs${seq++}`;
    let t = now();
    await c.createContainer({ container_id: id, spec: ociSpec(["/bin/true"]), rootfs: { path: rootfs } });
    await c.startContainer(id);
    viaAgent.push(now() - t);
    await c.waitProcess(id);
    await c.removeContainer(id);

    const rid = `ref${seq++}`;
    const b = bundle(rid, ["/bin/true"]);
    t = now();
    await must(crun(["create", "--bundle", b, rid]), "crun create");
    await must(crun(["start", rid]), "crun start");
    direct.push(now() - t);
    await must(crun(["delete", "--force", rid]), "crun delete");
  }
  rows.push({ what: "create+start latency", agent: median(viaAgent), direct: median(direct), unit: "ms" });
}

progress("create+start done");
// ---- exec latency ----------------------------------------------------------------------------
{
  await c.createContainer({ container_id: "ex", spec: ociSpec(["/bin/sleep", "1000"]), rootfs: { path: rootfs } });
  await c.startContainer("ex");
  const rid = `ref${seq++}`;
  const b = bundle(rid, ["/bin/sleep", "1000"]);
  await must(crun(["run", "--detach", "--bundle", b, rid]), "crun run -d");
  const procFile = join(dir, "exec.json");
  writeFileSync(procFile, JSON.stringify({ args: ["/bin/true"], cwd: "/", env: ["PATH=/bin"] }));
  const viaAgent: number[] = [];
  const direct: number[] = [];
  for (let i = 0; i < ROUNDS * 3; i++) {
    const eid = `e${i}`;
    let t = now();
    await c.execProcess({ container_id: "ex", exec_id: eid, process: { args: ["/bin/true"], cwd: "/" } });
    await c.waitProcess("ex", eid);
    viaAgent.push(now() - t);
    await c.deleteProcess("ex", eid);
    t = now();
    await must(crun(["exec", "--process", procFile, rid]), "crun exec");
    direct.push(now() - t);
  }
  await c.removeContainer("ex", true);
  await must(crun(["delete", "--force", rid]), "crun delete");
  rows.push({ what: "exec latency (start→exit known)", agent: median(viaAgent), direct: median(direct), unit: "ms" });
}

progress("exec done");
// ---- stdout / stdin throughput ---------------------------------------------------------------
async function agentStdout(): Promise<number> {
  const id = `so${seq++}`;
  await c.createContainer({
    container_id: id,
    spec: ociSpec(["/bin/sh", "-c", `dd if=/dev/zero bs=1M count=${MIB} 2>/dev/null`]),
    rootfs: { path: rootfs },
    stdio: { stdout: true },
  });
  const s = await c.openStdio(id, "", "stdout");
  let n = 0;
  const done = new Promise<void>((r) => s.on("end", r));
  s.on("data", (d: Buffer) => {
    n += d.length;
  });
  const t = now();
  await c.startContainer(id);
  await c.waitProcess(id);
  await done;
  const ms = now() - t;
  if (n !== MIB * 1048576) throw new Error(`stdout: got ${n} bytes`);
  await c.removeContainer(id);
  return (MIB / ms) * 1000;
}
async function directStdout(): Promise<number> {
  const rid = `ref${seq++}`;
  const b = bundle(rid, ["/bin/sh", "-c", `dd if=/dev/zero bs=1M count=${MIB} 2>/dev/null`]);
  const t = now();
  const p = crun(["run", "--bundle", b, rid], ["ignore", "pipe", "pipe"]);
  const n = (await readAll(p.stdout!)).length;
  await exitOf(p);
  const ms = now() - t;
  if (n !== MIB * 1048576) throw new Error(`direct stdout: got ${n} bytes`);
  return (MIB / ms) * 1000;
}
async function agentStdin(): Promise<number> {
  const id = `si${seq++}`;
  await c.createContainer({
    container_id: id,
    spec: ociSpec(["/bin/sh", "-c", "cat > /dev/null"]),
    rootfs: { path: rootfs },
    stdio: { stdin: true },
  });
  const s = await c.openStdio(id, "", "stdin");
  await c.startContainer(id);
  const chunk = Buffer.alloc(1 << 20);
  const t = now();
  for (let i = 0; i < MIB; i++) if (!s.write(chunk)) await new Promise((r) => s.once("drain", r));
  s.end();
  await c.waitProcess(id);
  const ms = now() - t;
  await c.removeContainer(id);
  return (MIB / ms) * 1000;
}
async function directStdin(): Promise<number> {
  const rid = `ref${seq++}`;
  const b = bundle(rid, ["/bin/sh", "-c", "cat > /dev/null"]);
  const p = crun(["run", "--bundle", b, rid], ["pipe", "ignore", "pipe"]);
  const chunk = Buffer.alloc(1 << 20);
  const t = now();
  for (let i = 0; i < MIB; i++) if (!p.stdin!.write(chunk)) await new Promise((r) => p.stdin!.once("drain", r));
  p.stdin!.end();
  await exitOf(p);
  return (MIB / (now() - t)) * 1000;
}
{
  const r = { ao: [] as number[], do: [] as number[], ai: [] as number[], di: [] as number[] };
  for (let i = 0; i < Math.max(3, Math.floor(ROUNDS / 2)); i++) {
    r.ao.push(await agentStdout());
    r.do.push(await directStdout());
    r.ai.push(await agentStdin());
    r.di.push(await directStdin());
  }
  rows.push({ what: `stdout throughput (${MIB} MiB)`, agent: median(r.ao), direct: median(r.do), unit: "MB/s" });
  rows.push({ what: `stdin throughput (${MIB} MiB)`, agent: median(r.ai), direct: median(r.di), unit: "MB/s" });
}

await c.destroySandbox();
await a.stop();
rmSync(dir, { recursive: true, force: true });
// The reference containers' cgroup parents (crun removes only the containers' own directories).
spawnSync("find", [
  "/sys/fs/cgroup",
  "-depth",
  "-type",
  "d",
  "-name",
  `cove-bench-*${process.pid}`,
  "-exec",
  "rmdir",
  "{}",
  ";",
]);

const header = ["measure", "through agent", "crun direct", "agent/direct"];
const table = rows.map((r) => [
  r.what,
  `${r.agent.toFixed(r.unit === "ms" ? 1 : 0)} ${r.unit}`,
  `${r.direct.toFixed(r.unit === "ms" ? 1 : 0)} ${r.unit}`,
  (r.agent / r.direct).toFixed(2),
]);
const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
const line = (cells: string[]) => cells.map((x, i) => x.padEnd(widths[i]!)).join("  ");
console.log(line(header));
for (const row of table) console.log(line(row));
console.log(`(medians; ${ROUNDS} rounds for latency; MB/s = MiB per second; 2 shared cores)`);
mkdirSync("bench-results", { recursive: true });
writeFileSync("bench-results/agent.json", JSON.stringify({ rounds: ROUNDS, mib: MIB, rows }, null, 2));
console.log("wrote bench-results/agent.json");
