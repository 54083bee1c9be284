// The Task service's containerd semantics, over a real ttrpc connection, against a fake runtime.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import pino from "pino";
import type { EventType } from "../../../src/shim/events.ts";
import type { AnyValue, CreateSpec, ExecSpec, RuntimeEvents, TaskRuntime } from "../../../src/shim/runtime.ts";
import { TASK_SERVICE, TaskService } from "../../../src/shim/service.ts";
import { Code, connectUnix, type TtrpcClient, TtrpcError, TtrpcServer } from "../../../src/ttrpc/index.ts";

class FakeRuntime implements TaskRuntime {
  events!: RuntimeEvents;
  nextPid = 1000;
  calls: string[] = [];
  createError?: Error;
  /** When set, start() reports the process's exit before it returns (a process that dies at once). */
  exitDuringStart?: number;
  setEvents(e: RuntimeEvents) {
    this.events = e;
  }
  async create(spec: CreateSpec) {
    this.calls.push(`create ${spec.id}`);
    if (this.createError) throw this.createError;
    return { pid: this.nextPid++ };
  }
  async start(id: string, execId: string) {
    this.calls.push(`start ${id} ${execId}`);
    const pid = this.nextPid++;
    if (this.exitDuringStart !== undefined) this.exit(id, execId, this.exitDuringStart);
    return { pid };
  }
  async exec(id: string, execId: string, _spec: ExecSpec) {
    this.calls.push(`exec ${id} ${execId}`);
  }
  async kill(id: string, execId: string, signal: number) {
    this.calls.push(`kill ${id} ${execId} ${signal}`);
    setImmediate(() => this.exit(id, execId, 128 + signal));
  }
  exit(id: string, execId: string, status: number) {
    this.events.exit({ id, execId, status, at: new Date() });
  }
  async delete(id: string, execId: string) {
    this.calls.push(`delete ${id} ${execId}`);
  }
  async pids() {
    return [{ pid: 1000 }];
  }
  async pause() {}
  async resume() {}
  async resizePty() {}
  async closeIO() {}
  async update() {}
  async stats(): Promise<AnyValue> {
    return { type_url: "io.containerd.cgroups.v2.Metrics", value: new Uint8Array() };
  }
  async shutdown() {}
}

interface Fixture {
  c: TtrpcClient;
  rt: FakeRuntime;
  events: [EventType, Record<string, unknown>][];
  shutdowns: () => number;
  server: TtrpcServer;
  call: <T = Record<string, unknown>>(method: string, req: object, timeoutMs?: number) => Promise<T>;
  close: () => Promise<void>;
}

async function fixture(): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), "cove-svc-"));
  const rt = new FakeRuntime();
  const events: Fixture["events"] = [];
  let shutdowns = 0;
  const service = new TaskService({
    runtime: rt,
    events: { publish: (t, e) => events.push([t, e as unknown as Record<string, unknown>]) },
    logger: pino({ level: "silent" }),
    onShutdown: () => shutdowns++,
  });
  const server = new TtrpcServer();
  server.registerService(TASK_SERVICE, service.handlers());
  const ns = net.createServer();
  server.listen(ns);
  const path = join(dir, "s.sock");
  await new Promise<void>((r) => ns.listen(path, r));
  const c = await connectUnix(path, { timeoutMs: 2000 });
  return {
    c,
    rt,
    events,
    server,
    shutdowns: () => shutdowns,
    call: (method, req, timeoutMs = 5000) => c.call(TASK_SERVICE, method, req, { timeoutMs }),
    close: async () => {
      c.close();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function code(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof TtrpcError, `expected a TtrpcError, got ${e}`);
    return e.code;
  }
  assert.fail("call succeeded but an error was expected");
}

const create = (id: string) => ({
  id,
  bundle: `/b/${id}`,
  rootfs: [{ type: "overlay", source: "overlay", options: ["lowerdir=/l", "upperdir=/u", "workdir=/w"] }],
  stdin: "/fifo/in",
  stdout: "/fifo/out",
  stderr: "/fifo/err",
});

test("unknown ids: NotFound everywhere, Connect still answers with shim_pid", async () => {
  const f = await fixture();
  try {
    for (const m of ["State", "Start", "Delete", "Pids", "Kill", "Wait", "Pause", "Resume", "Stats", "CloseIO"]) {
      assert.equal(await code(f.call(m, { id: "nope" })), Code.NOT_FOUND, m);
    }
    const r = await f.call<{ shim_pid: number; task_pid: number }>("Connect", { id: "nope" });
    assert.equal(r.shim_pid, process.pid);
    assert.equal(r.task_pid, 0);
  } finally {
    await f.close();
  }
});

test("lifecycle: create, start, kill, wait, delete with runc's errors and the event order", async () => {
  const f = await fixture();
  try {
    const { pid } = await f.call<{ pid: number }>("Create", create("c1"));
    assert.ok(pid > 0);
    assert.equal(await code(f.call("Create", create("c1"))), Code.ALREADY_EXISTS);
    let st = await f.call<{ status: number; bundle: string; stdout: string }>("State", { id: "c1" });
    assert.deepEqual([st.status, st.bundle, st.stdout], [1, "/b/c1", "/fifo/out"]);
    assert.equal((await f.call<{ task_pid: number }>("Connect", { id: "c1" })).task_pid, pid);

    const started = await f.call<{ pid: number }>("Start", { id: "c1" });
    assert.equal(await code(f.call("Start", { id: "c1" })), Code.FAILED_PRECONDITION);
    assert.equal(await code(f.call("Delete", { id: "c1" })), Code.FAILED_PRECONDITION);
    st = await f.call("State", { id: "c1" });
    assert.equal(st.status, 2);

    const waiting = f.call<{ exit_status: number; exited_at: { seconds: number } }>("Wait", { id: "c1" });
    await f.call("Kill", { id: "c1", signal: 15 });
    const w = await waiting;
    assert.equal(w.exit_status, 143);
    assert.ok(w.exited_at.seconds > 0);
    assert.equal(await code(f.call("Kill", { id: "c1", signal: 9, all: true })), Code.NOT_FOUND);
    st = await f.call("State", { id: "c1" });
    assert.equal(st.status, 3);

    const d = await f.call<{ pid: number; exit_status: number }>("Delete", { id: "c1" });
    assert.deepEqual([d.pid, d.exit_status], [started.pid, 143]);
    assert.equal(await code(f.call("State", { id: "c1" })), Code.NOT_FOUND);
    assert.deepEqual(
      f.events.map(([t]) => t),
      [
        "containerd.events.TaskCreate",
        "containerd.events.TaskStart",
        "containerd.events.TaskExit",
        "containerd.events.TaskDelete",
      ],
    );
    const exit = f.events[2]![1];
    assert.deepEqual([exit.container_id, exit.id, exit.exit_status], ["c1", "c1", 143]);
    const created = f.events[0]![1] as { rootfs: unknown[]; io: { stdout: string } };
    assert.equal(created.rootfs.length, 1);
    assert.equal(created.io.stdout, "/fifo/out");
  } finally {
    await f.close();
  }
});

test("Shutdown is a no-op while tasks remain, and ends the shim once none do", async () => {
  const f = await fixture();
  try {
    await f.call("Create", create("sandbox"));
    await f.call("Create", create("c1"));
    await f.call("Delete", { id: "c1" });
    await f.call("Shutdown", { id: "c1" });
    await new Promise((r) => setImmediate(r));
    assert.equal(f.shutdowns(), 0, "shim must stay up for the sandbox");
    await f.call("Delete", { id: "sandbox" });
    await f.call("Shutdown", { id: "sandbox" });
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(f.shutdowns(), 1);
  } finally {
    await f.close();
  }
});

test("exec: AlreadyExists for a duplicate, exec events, exit carries the exec id, no delete event", async () => {
  const f = await fixture();
  try {
    await f.call("Create", create("c1"));
    await f.call("Start", { id: "c1" });
    const spec = {
      type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process",
      value: Buffer.from('{"args":["sh"]}'),
    };
    await f.call("Exec", { id: "c1", exec_id: "e1", spec, stdout: "/fifo/e1" });
    assert.equal(await code(f.call("Exec", { id: "c1", exec_id: "e1", spec })), Code.ALREADY_EXISTS);
    assert.equal(
      await code(
        f.call("Exec", { id: "c1", exec_id: "e2", spec: { type_url: spec.type_url, value: Buffer.from("{") } }),
      ),
      Code.INVALID_ARGUMENT,
    );
    const st = await f.call<{ id: string; exec_id: string; status: number }>("State", { id: "c1", exec_id: "e1" });
    assert.deepEqual([st.id, st.exec_id, st.status], ["e1", "e1", 1]);
    await f.call("Start", { id: "c1", exec_id: "e1" });
    const waiting = f.call<{ exit_status: number }>("Wait", { id: "c1", exec_id: "e1" });
    f.rt.exit("c1", "e1", 3);
    assert.equal((await waiting).exit_status, 3);
    await f.call("Delete", { id: "c1", exec_id: "e1" });
    assert.equal(await code(f.call("State", { id: "c1", exec_id: "e1" })), Code.NOT_FOUND);
    const types = f.events.map(([t]) => t);
    assert.deepEqual(types.slice(2), [
      "containerd.events.TaskExecAdded",
      "containerd.events.TaskExecStarted",
      "containerd.events.TaskExit",
    ]);
    assert.equal(f.events[4]![1].id, "e1");
  } finally {
    await f.close();
  }
});

test("a process that exits during Start: TaskStart is still published before TaskExit", async () => {
  const f = await fixture();
  try {
    await f.call("Create", create("c1"));
    f.rt.exitDuringStart = 7;
    await f.call("Start", { id: "c1" });
    const w = await f.call<{ exit_status: number }>("Wait", { id: "c1" });
    assert.equal(w.exit_status, 7);
    assert.deepEqual(f.events.map(([t]) => t).slice(1), ["containerd.events.TaskStart", "containerd.events.TaskExit"]);
  } finally {
    await f.close();
  }
});

test("pause/resume states, Checkpoint unimplemented, a failed Create leaves nothing", async () => {
  const f = await fixture();
  try {
    await f.call("Create", create("c1"));
    assert.equal(await code(f.call("Pause", { id: "c1" })), Code.FAILED_PRECONDITION);
    await f.call("Start", { id: "c1" });
    await f.call("Pause", { id: "c1" });
    assert.equal((await f.call<{ status: number }>("State", { id: "c1" })).status, 4);
    assert.equal(await code(f.call("Pause", { id: "c1" })), Code.FAILED_PRECONDITION);
    await f.call("Resume", { id: "c1" });
    assert.equal(await code(f.call("Checkpoint", { id: "c1", path: "/x" })), Code.UNIMPLEMENTED);
    const stats = await f.call<{ stats: { type_url: string } }>("Stats", { id: "c1" });
    assert.equal(stats.stats.type_url, "io.containerd.cgroups.v2.Metrics");

    f.rt.createError = new TtrpcError(Code.FAILED_PRECONDITION, "no kernel");
    assert.equal(await code(f.call("Create", create("c2"))), Code.FAILED_PRECONDITION);
    assert.equal(await code(f.call("State", { id: "c2" })), Code.NOT_FOUND);
    assert.equal(await code(f.call("Delete", { id: "c2" })), Code.NOT_FOUND);
  } finally {
    await f.close();
  }
});

test("Wait is a long poll: many in flight at once, cancelled ones do not leak", async () => {
  const f = await fixture();
  try {
    await f.call("Create", create("c1"));
    await f.call("Start", { id: "c1" });
    assert.equal(await code(f.call("Wait", { id: "c1" }, 50)), Code.DEADLINE_EXCEEDED);
    const waits = Array.from({ length: 20 }, () => f.call<{ exit_status: number }>("Wait", { id: "c1" }));
    const st = await f.call<{ status: number }>("State", { id: "c1" }); // answered while the waits block
    assert.equal(st.status, 2);
    f.rt.exit("c1", "", 0);
    for (const w of await Promise.all(waits)) assert.equal(w.exit_status, 0);
    const deadline = Date.now() + 2000;
    while (f.server.stats().inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(f.server.stats().inFlight, 0);
  } finally {
    await f.close();
  }
});
