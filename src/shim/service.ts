// containerd.task.v2.Task: the 17 RPCs with containerd's semantics. This layer keeps the task table,
// the per-process state machines (process.ts), the error codes containerd expects and the event
// order (create → start → exit → delete; exec-added → exec-started → exit); the TaskRuntime does the
// actual work.
import type { Logger } from "pino";
import {
  AlreadyExistsError,
  errorMessage,
  InvalidArgumentError,
  NotFoundError,
  NotSupportedError,
  WrongStateError,
} from "../common/errors.ts";
import { withGrpcStatus } from "../common/grpc-status.ts";
import type { ServiceHandlers } from "../proto/services.ts";
import type { CallContext } from "../ttrpc/index.ts";
import type { EventSink } from "./events.ts";
import { type ExitInfo, STATUS_ENUM, TaskProcess } from "./process.ts";
import type { ExitEvent, MountSpec, TaskRuntime } from "./runtime.ts";
import { VERSION } from "./version.ts";

export const TASK_SERVICE = "containerd.task.v2.Task";
/** Task API v3 (containerd 2.x): the same RPCs and messages under another package. */
export const TASK_SERVICE_V3 = "containerd.task.v3.Task";

interface Timestamp {
  seconds: number;
  nanos: number;
}

function ts(d: Date | undefined): Timestamp | null {
  if (!d) return null;
  const ms = d.getTime();
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
}

/** A task (container) in the task service's table; see TaskProcess for the other layers' records. */
class TaskContainer {
  readonly execs = new Map<string, TaskProcess>();
  /** Exits that arrived while a Start was still in flight: applied after TaskStart is published. */
  readonly pendingExits = new Map<string, ExitEvent>();
  readonly starting = new Set<string>();
  constructor(
    readonly id: string,
    readonly bundle: string,
    readonly rootfs: MountSpec[],
    readonly init: TaskProcess,
  ) {}
}

/** The request and response messages of the task API (v3 uses v2's). */
type TaskHandlers = ServiceHandlers<typeof TASK_SERVICE>;
type Req<M extends keyof TaskHandlers> = Parameters<TaskHandlers[M]>[0];
type Res<M extends keyof TaskHandlers> = Awaited<ReturnType<TaskHandlers[M]>>;

interface IdReq {
  id: string;
  exec_id?: string;
}

export interface TaskServiceOptions {
  runtime: TaskRuntime;
  events: EventSink;
  logger: Logger;
  /** Called once, after Shutdown found no tasks left (the daemon then exits). */
  onShutdown: () => void;
}

/** RPCs that change a task: logged at info (one line each per task, rare). */
const LIFECYCLE_RPCS: ReadonlySet<string> = new Set([
  "Create",
  "Start",
  "Delete",
  "Exec",
  "Kill",
  "Pause",
  "Resume",
  "Update",
  "Checkpoint",
  "Shutdown",
]);

export class TaskService {
  private readonly containers = new Map<string, TaskContainer>();
  private shuttingDown = false;

  constructor(private readonly opts: TaskServiceOptions) {
    opts.runtime.setEvents({
      exit: (e) => this.onExit(e),
      oom: (id) => this.opts.events.publish("containerd.events.TaskOOM", { container_id: id }),
    });
  }

  /** Number of containers the shim still has (Shutdown is a no-op while this is > 0). */
  get size(): number {
    return this.containers.size;
  }

  private container(id: string): TaskContainer {
    const c = this.containers.get(id);
    if (!c) throw new NotFoundError(`container ${id}: container not created: not found`);
    return c;
  }

  private proc(id: string, execId = ""): { c: TaskContainer; p: TaskProcess } {
    const c = this.container(id);
    if (!execId) return { c, p: c.init };
    const p = c.execs.get(execId);
    if (!p) throw new NotFoundError(`process ${execId} does not exist in ${id}: not found`);
    return { c, p };
  }

  private log(method: string, req: IdReq, extra: Record<string, unknown> = {}): void {
    // Queries (State, Wait, Connect, Stats, Pids…) come often; a line each at info cost more than
    // half of the daemon's CPU in test/bench/shim.bench.ts. They are debug; lifecycle RPCs stay info.
    const level = LIFECYCLE_RPCS.has(method) ? "info" : "debug";
    this.opts.logger[level]({ method, id: req.id, exec_id: req.exec_id || undefined, ...extra }, `task ${method}`);
  }

  private onExit(e: ExitEvent): void {
    const c = this.containers.get(e.id);
    if (!c) return;
    const p = e.execId ? c.execs.get(e.execId) : c.init;
    if (!p) return;
    const key = e.execId || "";
    if (c.starting.has(key)) {
      // TaskStart must precede TaskExit: hold the exit until Start has published.
      c.pendingExits.set(key, e);
      return;
    }
    if (!p.setExited(e.status, e.at)) return;
    this.opts.logger.info({ id: e.id, exec_id: e.execId || undefined, status: e.status }, "process exited");
    this.opts.events.publish("containerd.events.TaskExit", {
      container_id: e.id,
      id: p.name,
      pid: p.pid,
      exit_status: e.status,
      exited_at: ts(e.at),
    });
  }

  /**
   * The handlers, keyed by the proto method names, for TtrpcServer.registerService. This is the
   * shim's service edge: what they throw leaves with its gRPC code (src/common/grpc-status.ts).
   */
  handlers(): TaskHandlers {
    return withGrpcStatus<TaskHandlers>({
      State: (r) => this.state(r),
      Create: (r) => this.create(r),
      Start: (r) => this.start(r),
      Delete: (r) => this.delete(r),
      Pids: (r) => this.pids(r),
      Pause: (r) => this.pause(r),
      Resume: (r) => this.resume(r),
      Checkpoint: (r) => this.checkpoint(r),
      Kill: (r) => this.kill(r),
      Exec: (r) => this.exec(r),
      ResizePty: (r) => this.resizePty(r),
      CloseIO: (r) => this.closeIO(r),
      Update: (r) => this.update(r),
      Wait: (r, ctx) => this.wait(r, ctx),
      Stats: (r) => this.stats(r),
      Connect: (r) => this.connect(r),
      Shutdown: (r) => this.shutdown(r),
    });
  }

  async create(r: Req<"Create">): Promise<Res<"Create">> {
    this.log("Create", r, { bundle: r.bundle, terminal: r.terminal, rootfs: r.rootfs.length });
    if (!r.id) throw new InvalidArgumentError("create: id is required");
    if (this.containers.has(r.id)) throw new AlreadyExistsError(`container ${r.id}: already exists`);
    if (r.checkpoint) throw new NotSupportedError("restoring from a checkpoint is not supported by cove");
    const stdio = { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal };
    const rootfs = r.rootfs.map((m) => ({ type: m.type, source: m.source, target: m.target, options: [...m.options] }));
    const c = new TaskContainer(r.id, r.bundle, rootfs, new TaskProcess(r.id, "", stdio));
    // Reserved before the (slow) runtime call, so a concurrent duplicate Create gets AlreadyExists.
    this.containers.set(r.id, c);
    let pid: number;
    try {
      ({ pid } = await this.opts.runtime.create({
        id: r.id,
        bundle: r.bundle,
        rootfs,
        checkpoint: r.checkpoint,
        options: r.options?.type_url ? r.options : undefined,
        ...stdio,
      }));
    } catch (e) {
      this.containers.delete(r.id);
      this.opts.logger.error({ id: r.id, err: errorMessage(e) }, "create failed");
      throw e;
    }
    c.init.pid = pid;
    this.opts.events.publish("containerd.events.TaskCreate", {
      container_id: r.id,
      bundle: r.bundle,
      rootfs,
      io: stdio,
      checkpoint: r.checkpoint,
      pid,
    });
    return { pid };
  }

  async start(r: Req<"Start">): Promise<Res<"Start">> {
    this.log("Start", r);
    const { c, p } = this.proc(r.id, r.exec_id);
    p.checkStart();
    const key = p.execId;
    c.starting.add(key);
    let pid: number;
    try {
      ({ pid } = await this.opts.runtime.start(r.id, p.execId));
      p.started(pid);
      if (p.isInit) this.opts.events.publish("containerd.events.TaskStart", { container_id: r.id, pid });
      else
        this.opts.events.publish("containerd.events.TaskExecStarted", {
          container_id: r.id,
          exec_id: p.execId,
          pid,
        });
    } finally {
      c.starting.delete(key);
      const pending = c.pendingExits.get(key);
      if (pending) {
        c.pendingExits.delete(key);
        this.onExit(pending);
      }
    }
    return { pid };
  }

  async delete(r: Req<"Delete">): Promise<Res<"Delete">> {
    this.log("Delete", r);
    const { c, p } = this.proc(r.id, r.exec_id);
    p.checkDelete();
    await this.opts.runtime.delete(r.id, p.execId);
    p.deleted();
    const exit: ExitInfo = p.exit ?? { status: 0, at: new Date() };
    if (p.isInit) {
      this.containers.delete(r.id);
      this.opts.events.publish("containerd.events.TaskDelete", {
        container_id: r.id,
        pid: p.pid,
        exit_status: exit.status,
        exited_at: ts(exit.at),
        id: r.id,
      });
    } else {
      // As runc: no /tasks/delete for an exec.
      c.execs.delete(p.execId);
    }
    return { pid: p.pid, exit_status: exit.status, exited_at: ts(exit.at) };
  }

  async state(r: Req<"State">): Promise<Res<"State">> {
    this.log("State", r);
    const { c, p } = this.proc(r.id, r.exec_id);
    return {
      id: p.name,
      bundle: c.bundle,
      pid: p.pid,
      status: STATUS_ENUM[p.status],
      stdin: p.stdio.stdin,
      stdout: p.stdio.stdout,
      stderr: p.stdio.stderr,
      terminal: p.stdio.terminal,
      exit_status: p.exit?.status ?? 0,
      exited_at: ts(p.exit?.at),
      exec_id: p.execId,
    };
  }

  async pids(r: Req<"Pids">): Promise<Res<"Pids">> {
    this.log("Pids", r);
    this.container(r.id);
    return { processes: await this.opts.runtime.pids(r.id) };
  }

  async pause(r: Req<"Pause">): Promise<Res<"Pause">> {
    this.log("Pause", r);
    const c = this.container(r.id);
    c.init.checkPause();
    await this.opts.runtime.pause(r.id);
    c.init.status = "paused";
    this.opts.events.publish("containerd.events.TaskPaused", { container_id: r.id });
    return {};
  }

  async resume(r: Req<"Resume">): Promise<Res<"Resume">> {
    this.log("Resume", r);
    const c = this.container(r.id);
    c.init.checkResume();
    await this.opts.runtime.resume(r.id);
    c.init.status = "running";
    this.opts.events.publish("containerd.events.TaskResumed", { container_id: r.id });
    return {};
  }

  async checkpoint(r: Req<"Checkpoint">): Promise<Res<"Checkpoint">> {
    this.log("Checkpoint", r);
    this.container(r.id);
    throw new NotSupportedError("checkpoint is not supported by cove");
  }

  async kill(r: Req<"Kill">): Promise<Res<"Kill">> {
    this.log("Kill", r, { signal: r.signal, all: r.all });
    const { p } = this.proc(r.id, r.exec_id);
    p.checkKill();
    await this.opts.runtime.kill(r.id, p.execId, r.signal, r.all);
    return {};
  }

  async exec(r: Req<"Exec">): Promise<Res<"Exec">> {
    this.log("Exec", r, { terminal: r.terminal });
    const c = this.container(r.id);
    if (!r.exec_id) throw new InvalidArgumentError("exec: exec_id is required");
    if (c.execs.has(r.exec_id)) throw new AlreadyExistsError(`id ${r.exec_id}: already exists`);
    if (c.init.status !== "running" && c.init.status !== "paused" && c.init.status !== "created") {
      throw new WrongStateError(`container ${r.id} is not running`);
    }
    let process: unknown;
    try {
      process = r.spec?.value?.length ? JSON.parse(Buffer.from(r.spec.value).toString("utf8")) : undefined;
    } catch (e) {
      throw new InvalidArgumentError(`exec ${r.exec_id}: spec is not valid JSON: ${errorMessage(e)}`);
    }
    if (!process || typeof process !== "object") {
      throw new InvalidArgumentError(`exec ${r.exec_id}: a process spec is required`);
    }
    const stdio = { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal };
    const p = new TaskProcess(r.id, r.exec_id, stdio);
    c.execs.set(r.exec_id, p);
    try {
      await this.opts.runtime.exec(r.id, r.exec_id, { ...stdio, process });
    } catch (e) {
      c.execs.delete(r.exec_id);
      throw e;
    }
    this.opts.events.publish("containerd.events.TaskExecAdded", { container_id: r.id, exec_id: r.exec_id });
    return {};
  }

  async resizePty(r: Req<"ResizePty">): Promise<Res<"ResizePty">> {
    this.log("ResizePty", r, { width: r.width, height: r.height });
    const { p } = this.proc(r.id, r.exec_id);
    if (!p.stdio.terminal) throw new WrongStateError(`process ${p.name} has no terminal`);
    await this.opts.runtime.resizePty({ id: r.id, execId: p.execId, width: r.width, height: r.height });
    return {};
  }

  async closeIO(r: Req<"CloseIO">): Promise<Res<"CloseIO">> {
    this.log("CloseIO", r, { stdin: r.stdin });
    const { p } = this.proc(r.id, r.exec_id);
    await this.opts.runtime.closeIO(r.id, p.execId, r.stdin);
    return {};
  }

  async update(r: Req<"Update">): Promise<Res<"Update">> {
    this.log("Update", r);
    this.container(r.id);
    let resources: unknown;
    try {
      resources = r.resources?.value?.length ? JSON.parse(Buffer.from(r.resources.value).toString("utf8")) : {};
    } catch (e) {
      throw new InvalidArgumentError(`update ${r.id}: resources are not valid JSON: ${errorMessage(e)}`);
    }
    await this.opts.runtime.update(r.id, resources, r.annotations ?? {});
    return {};
  }

  async wait(r: Req<"Wait">, ctx: CallContext): Promise<Res<"Wait">> {
    this.log("Wait", r);
    const { p } = this.proc(r.id, r.exec_id);
    const e = await p.wait(ctx.signal);
    return { exit_status: e.status, exited_at: ts(e.at) };
  }

  async stats(r: Req<"Stats">): Promise<Res<"Stats">> {
    this.log("Stats", r);
    this.container(r.id);
    return { stats: await this.opts.runtime.stats(r.id) };
  }

  async connect(r: Req<"Connect">): Promise<Res<"Connect">> {
    this.log("Connect", r);
    // As runc: an unknown id is not an error, the task pid is just 0.
    const c = this.containers.get(r.id);
    return { shim_pid: process.pid, task_pid: c?.init.pid ?? 0, version: VERSION };
  }

  async shutdown(r: Req<"Shutdown">): Promise<Res<"Shutdown">> {
    this.log("Shutdown", r, { now: r.now, remaining: this.containers.size });
    // containerd 1.x (and 2.x for a shim that answered version 2) sends Shutdown after every task's
    // Delete; 2.x skips it for a v3 pod's containers and sends it after the sandbox's. Either way the
    // pod's other tasks keep the shim alive.
    if (this.containers.size > 0) return {};
    if (!this.shuttingDown) {
      this.shuttingDown = true;
      // After this reply is on the wire.
      setImmediate(() => this.opts.onShutdown());
    }
    return {};
  }
}
