// The guest agent run on this host (own mount/pid/UTS namespaces, Unix sockets), driven through the
// shim's AgentClient: real crun containers from a busybox erofs image mounted from a loop device
// (the storage path the guest uses with virtio-blk), full lifecycle, exec with and without a tty,
// signals, exit codes, large ordered output, stdin, errors, pause/resume, stats, update and OOM.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { AgentClient } from "../../src/sandbox/agent/index.ts";
import { Code, TtrpcError } from "../../src/ttrpc/index.ts";
import { withTimeout } from "../harness/timeout.ts";
import { busyboxErofs, type HostAgent, hostAgentSkip, ociSpec, readAll, startHostAgent } from "./agent-harness.ts";

const skip = hostAgentSkip();
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

async function rejectsWith(p: Promise<unknown>, code: number, re?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof TtrpcError, `expected a TtrpcError, got ${String(e)}`);
    assert.equal(e.code, code, `code ${e.code} (${e.message})`);
    if (re) assert.match(e.message, re);
    return true;
  });
}

describe("agent on the host: containers through crun", { skip, timeout: 300_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), "cove-agent-test-"));
  const image = join(dir, "bb.erofs");
  const cgroupRoot = `cove-test-${process.pid}`;
  let loop = "";
  let a: HostAgent;
  let c: AgentClient;
  const rootfs = { lower: ["bb"] };

  /** Creates a container with the given streams open before Start; returns their readers. */
  async function run(
    id: string,
    args: string[],
    opts: { stdin?: boolean; terminal?: boolean; memoryLimit?: number; start?: boolean } = {},
  ) {
    await c.createContainer({
      container_id: id,
      spec: ociSpec(args, { terminal: opts.terminal, memoryLimit: opts.memoryLimit }),
      rootfs,
      stdio: { stdout: true, stderr: !opts.terminal, stdin: !!opts.stdin },
    });
    const out = readAll(await c.openStdio(id, "", "stdout"));
    const err = opts.terminal ? Promise.resolve(Buffer.alloc(0)) : readAll(await c.openStdio(id, "", "stderr"));
    const stdin = opts.stdin || opts.terminal ? await c.openStdio(id, "", "stdin") : undefined;
    if (opts.start !== false) await c.startContainer(id);
    return { out, err, stdin };
  }

  before(async () => {
    busyboxErofs(image);
    loop = execFileSync("losetup", ["--find", "--show", "--read-only", image], { encoding: "utf8" }).trim();
    a = await startHostAgent();
    c = a.client;
  });

  after(async () => {
    try {
      await c?.destroySandbox();
    } catch {}
    await a?.stop();
    if (loop) execFileSync("losetup", ["-d", loop]);
    rmSync(dir, { recursive: true, force: true });
    // The agent's cgroups are on the host's cgroupfs: none may be left behind.
    for (const ctrl of ["memory", "pids", "cpu", ""])
      assert.equal(existsSync(join("/sys/fs/cgroup", ctrl, cgroupRoot)), false, `cgroup ${ctrl}/${cgroupRoot} left`);
  });

  it("answers Check, and refuses containers before CreateSandbox", async () => {
    const r = await c.check();
    assert.equal(r.sandbox, false);
    assert.match(r.runtime, /crun|runc/);
    await rejectsWith(
      c.createContainer({ container_id: "x", spec: ociSpec(["true"]), rootfs }),
      Code.FAILED_PRECONDITION,
    );
  });

  it("creates the sandbox with a storage from a block device", async () => {
    await c.createSandbox({
      hostname: "pod1",
      dns: ["nameserver 192.0.2.53"],
      cgroup_root: cgroupRoot,
      storages: [{ id: "bb", source: loop, fstype: "erofs", options: ["ro"] }],
    });
    await rejectsWith(c.createSandbox({ cgroup_root: cgroupRoot }), Code.ALREADY_EXISTS);
    assert.equal((await c.check()).sandbox, true);
  });

  it("runs a container: stdout, stderr, exit code, state, remove", async () => {
    const { out, err } = await run("life", ["/bin/sh", "-c", "echo hello; echo oops >&2; exit 3"]);
    const w = await withTimeout(c.waitProcess("life"), 30_000, "wait");
    assert.equal(w.exit_status, 3);
    assert.ok(w.exited_at && w.exited_at.seconds > 0);
    assert.equal((await out).toString(), "hello\n");
    assert.equal((await err).toString(), "oops\n");
    const st = await c.stateContainer("life");
    assert.equal(st.status, "stopped");
    assert.equal(st.processes[0]!.status, "exited");
    await rejectsWith(c.startContainer("life"), Code.FAILED_PRECONDITION);
    await c.removeContainer("life");
    await rejectsWith(c.stateContainer("life"), Code.NOT_FOUND);
  });

  it("maps errors: unknown, duplicate, bad id, bad spec, host bind mount, missing binary", async () => {
    await rejectsWith(c.startContainer("nope"), Code.NOT_FOUND);
    await rejectsWith(c.waitProcess("nope"), Code.NOT_FOUND);
    await rejectsWith(c.startContainer("../etc"), Code.INVALID_ARGUMENT);
    await rejectsWith(
      c.createContainer({ container_id: "bad", spec: new TextEncoder().encode("{not json"), rootfs }),
      Code.INVALID_ARGUMENT,
      /JSON/,
    );
    const bind = ociSpec(["true"]) as unknown as { mounts: unknown[] };
    bind.mounts.push({ destination: "/data", type: "bind", source: "/var/lib/x", options: ["rbind"] });
    await rejectsWith(c.createContainer({ container_id: "bad", spec: bind, rootfs }), Code.INVALID_ARGUMENT, /host/);
    await rejectsWith(
      c.createContainer({ container_id: "bad", spec: ociSpec(["true"]), rootfs: { lower: ["missing"] } }),
      Code.INVALID_ARGUMENT,
      /storage missing/,
    );
    await c.createContainer({ container_id: "dup", spec: ociSpec(["/bin/sleep", "100"]), rootfs });
    await rejectsWith(c.createContainer({ container_id: "dup", spec: ociSpec(["true"]), rootfs }), Code.ALREADY_EXISTS);
    await c.removeContainer("dup"); // created, never started: removable without force
    // A program that does not exist: the runtime refuses it (at create or start).
    try {
      await c.createContainer({ container_id: "nobin", spec: ociSpec(["/bin/does-not-exist"]), rootfs });
      await rejectsWith(c.startContainer("nobin"), Code.INVALID_ARGUMENT, /does-not-exist|No such file/);
      await c.removeContainer("nobin", true);
    } catch (e) {
      assert.ok(e instanceof TtrpcError && e.code === Code.INVALID_ARGUMENT, String(e));
    }
    assert.equal((await c.check()).containers, 0, "failed creates left nothing behind");
  });

  it("delivers 64 MiB of output completely and in order before Wait returns", async () => {
    const script = "head -c 67108864 /dev/urandom > /tmp/blob; sha256sum /tmp/blob >&2; cat /tmp/blob; rm /tmp/blob";
    const { out, err } = await run("big", ["/bin/sh", "-c", script]);
    const w = await withTimeout(c.waitProcess("big"), 120_000, "wait big");
    assert.equal(w.exit_status, 0);
    const data = await out;
    assert.equal(data.length, 64 << 20);
    assert.equal(sha(data), (await err).toString().split(/\s/)[0]);
    await c.removeContainer("big");

    const lines = await run("order", ["/bin/sh", "-c", "seq 1 50000"]);
    await withTimeout(c.waitProcess("order"), 60_000, "wait order");
    const got = (await lines.out).toString().trimEnd().split("\n");
    assert.equal(got.length, 50000);
    assert.ok(
      got.every((l, i) => l === String(i + 1)),
      "lines in order",
    );
    await c.removeContainer("order");
  });

  it("streams stdin into the init process; CloseStdin is EOF", async () => {
    const { out, stdin } = await run("cat", ["/bin/sh", "-c", "sha256sum; echo done"], { stdin: true });
    const input = randomBytes(8 << 20);
    stdin!.write(input);
    stdin!.end();
    await withTimeout(c.waitProcess("cat"), 60_000, "wait cat");
    assert.equal((await out).toString(), `${sha(input)}  -\ndone\n`);
    await c.removeContainer("cat");
  });

  it("execs with and without a terminal; signals; exit codes", async () => {
    await run("box", ["/bin/sh", "-c", "trap 'exit 42' TERM; while true; do sleep 0.1; done"]);
    // plain exec with stdin/stdout/stderr
    const eo = await c.openStdio("box", "e1", "stdout");
    const ee = await c.openStdio("box", "e1", "stderr");
    const ei = await c.openStdio("box", "e1", "stdin");
    const eout = readAll(eo);
    const eerr = readAll(ee);
    await c.execProcess({
      container_id: "box",
      exec_id: "e1",
      process: { args: ["/bin/sh", "-c", "read x; echo got:$x; echo warn >&2; exit 5"], cwd: "/", env: ["PATH=/bin"] },
      stdio: { stdin: true, stdout: true, stderr: true },
    });
    ei.end("line1\n");
    const w1 = await withTimeout(c.waitProcess("box", "e1"), 30_000, "wait e1");
    assert.equal(w1.exit_status, 5);
    assert.equal((await eout).toString(), "got:line1\n");
    assert.equal((await eerr).toString(), "warn\n");
    await rejectsWith(
      c.execProcess({ container_id: "box", exec_id: "e1", process: { args: ["true"], cwd: "/" } }),
      Code.ALREADY_EXISTS,
    );
    assert.equal((await c.deleteProcess("box", "e1")).exit_status, 5);

    // terminal exec: resize, then ask the shell for the size
    const to = readAll(await c.openStdio("box", "t1", "stdout"));
    const ti = await c.openStdio("box", "t1", "stdin");
    await c.execProcess({
      container_id: "box",
      exec_id: "t1",
      process: { args: ["/bin/sh"], cwd: "/", env: ["PATH=/bin", "TERM=xterm"], terminal: true },
      stdio: { stdin: true, stdout: true },
    });
    await c.resizeTty({ containerId: "box", execId: "t1", rows: 40, cols: 123 });
    ti.write("stty size; tty; exit 7\n");
    const w2 = await withTimeout(c.waitProcess("box", "t1"), 30_000, "wait t1");
    assert.equal(w2.exit_status, 7);
    const tout = (await to).toString();
    assert.match(tout, /40 123/);
    assert.match(tout, /\/dev\/pts\/\d+/);
    await rejectsWith(c.resizeTty({ containerId: "box", execId: "t1", rows: 1, cols: 1 }), Code.NOT_FOUND);

    // a long exec killed by a signal reports 128 + signal
    await c.execProcess({ container_id: "box", exec_id: "s1", process: { args: ["/bin/sleep", "1000"], cwd: "/" } });
    await c.signalProcess("box", "s1", 9);
    assert.equal((await withTimeout(c.waitProcess("box", "s1"), 30_000, "wait s1")).exit_status, 137);
    await rejectsWith(c.signalProcess("box", "s1", 9), Code.NOT_FOUND);

    const pids = await c.listPids("box");
    assert.ok(
      pids.some((p) => p.known && p.exec_id === ""),
      JSON.stringify(pids),
    );
    await rejectsWith(c.removeContainer("box"), Code.FAILED_PRECONDITION);
    await c.signalProcess("box", "", 15); // the init's trap exits 42
    assert.equal((await withTimeout(c.waitProcess("box"), 30_000, "wait box")).exit_status, 42);
    await c.removeContainer("box");
  });

  it("pauses and resumes; stats; update; kill all", async () => {
    await run("pz", ["/bin/sh", "-c", "while true; do sleep 0.05; done"]);
    await c.pauseContainer("pz");
    assert.equal((await c.stateContainer("pz")).status, "paused");
    await rejectsWith(c.pauseContainer("pz"), Code.FAILED_PRECONDITION);
    await rejectsWith(
      c.execProcess({ container_id: "pz", exec_id: "x", process: { args: ["true"], cwd: "/" } }),
      Code.FAILED_PRECONDITION,
    );
    await c.resumeContainer("pz");
    assert.equal((await c.stateContainer("pz")).status, "running");
    const m = (await c.statsContainer("pz")) as {
      memory: { usage: number };
      pids: { current: number };
      cpu: { usage_usec: number };
    };
    assert.ok(m.memory.usage > 0, `memory usage ${m.memory.usage}`);
    assert.ok(m.pids.current >= 1, `pids ${m.pids.current}`);
    await c.updateContainer("pz", { pids: { limit: 77 } });
    const pidsMax = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
      .map((b) => join(b, cgroupRoot, "pz", "pids.max"))
      .find((f) => existsSync(f));
    assert.ok(pidsMax, "pids.max of the container's cgroup");
    assert.equal(readFileSync(pidsMax, "utf8").trim(), "77");
    await c.signalProcess("pz", "", 9, true);
    assert.equal((await withTimeout(c.waitProcess("pz"), 30_000, "wait pz")).exit_status, 137);
    await c.removeContainer("pz");
  });

  it("reports an OOM kill of a memory-limited container, and survives it", async () => {
    const oom = c.getOomEvent({ timeoutMs: 60_000 });
    await run("oom", ["/bin/sh", "-c", "head -c 268435456 /dev/zero | tail > /dev/null"], { memoryLimit: 32 << 20 });
    assert.equal(await withTimeout(oom, 60_000, "OOM event"), "oom");
    await withTimeout(c.waitProcess("oom"), 60_000, "wait oom");
    const m = (await c.statsContainer("oom")) as { memory_events: { oom_kill: number } };
    assert.ok(m.memory_events.oom_kill >= 1);
    await c.removeContainer("oom", true);
    assert.equal((await c.check()).containers, 0);
  });

  it("a crashing container does not take the agent down; force remove; DestroySandbox unmounts", async () => {
    // (signals from inside to the container's PID 1 are ignored, so a child crashes and init reports it)
    await run("crash", ["/bin/sh", "-c", 'sh -c "kill -SEGV \\$\\$"; exit $?']);
    assert.equal((await withTimeout(c.waitProcess("crash"), 30_000, "wait crash")).exit_status, 139);
    await run("keep", ["/bin/sleep", "1000"]);
    await c.removeContainer("keep", true);
    await run("left", ["/bin/sleep", "1000"]);
    await c.destroySandbox();
    const r = await c.check();
    assert.equal(r.sandbox, false);
    assert.equal(r.containers, 0);
    // Nothing of the agent's state is mounted any more in its mount namespace.
    const agentPid = readdirSync(`/proc/${a.child.pid}/task`)
      .flatMap((t) => readFileSync(`/proc/${a.child.pid}/task/${t}/children`, "utf8").trim().split(/\s+/))
      .filter(Boolean)[0];
    assert.ok(agentPid);
    const mounts = readFileSync(`/proc/${agentPid}/mountinfo`, "utf8");
    assert.equal(
      mounts.includes(a.dir),
      false,
      mounts
        .split("\n")
        .filter((l) => l.includes(a.dir))
        .join("\n"),
    );
  });
});
