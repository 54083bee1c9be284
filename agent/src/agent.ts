// The agent's state and every operation of the cove.agent.v1.Agent API (proto/agent/v1/agent.proto
// says what each guarantees): the sandbox, its storages and cgroup root, and the containers run by
// the OCI runtime. Errors are domain errors of precise kinds (src/common/errors.ts; the service edge
// gives them their gRPC codes); nothing here may throw anything else out of a request (the edge
// turns stray errors into UNKNOWN, and the agent stays up).
import { mkdirSync, rmSync, watch, writeFileSync } from "node:fs";
import type { Socket } from "node:net";
import { join } from "node:path";
import { CancelledError, CoveError, errorMessage, InvalidArgumentError } from "../../src/common/errors.ts";
import { type ChildExit, sethostname } from "../../src/native/mount.ts";
import type { SyncFilesRequest } from "../../src/proto/agent.ts";
import type { cove } from "../../src/proto/services.ts";
import {
  alreadyExists,
  checkId,
  ID_RE,
  internal,
  invalid,
  notFound,
  parseJsonObject,
  precondition,
} from "./api/errors.ts";
import { Cgroups } from "./cgroups/cgroups.ts";
import { AgentContainer } from "./container/container.ts";
import { AgentProcess, type StdioWanted, type StreamName } from "./container/process.ts";
import type { Logger } from "./log.ts";
import { parseNetworkConfig } from "./network/config.ts";
import { type ConfiguredInterface, configureNetwork, loopbackUp } from "./network/configure.ts";
import type { Reaper } from "./pid1/reaper.ts";
import { OciRuntime, RuntimeError, readPidFile } from "./runtime/oci.ts";
import { isIpcSysctl, type PodNamespaces, startPodNamespaces } from "./sandbox/pod-namespaces.ts";
import { homeInBundle, homeInRootfs } from "./spec/home.ts";
import { checkProcess, rewriteSpec } from "./spec/rewrite.ts";
import { listenConsole } from "./stdio/console.ts";
import { buildRootfs, Storages } from "./storage/storage.ts";
import { syncFiles } from "./storage/sync-files.ts";

export const AGENT_VERSION = "0.1.0";

export interface AgentOptions {
  /** Everything the agent writes: bundles, runtime state, storage mount points, sandbox files. */
  stateDir: string;
  /** OCI runtime binary (crun or runc). */
  runtime: string;
  /** In the guest: sets the hostname and sysctls. On a host (tests) those are skipped. */
  guest: boolean;
  cgroupMount?: string;
  log: Logger;
  reaper: Reaper;
}

interface Sandbox {
  cgroupRoot: string;
  storageIds: string[];
  etc: Record<string, string>;
  /** The pod's shared pid/ipc/uts namespaces (undefined if the holder could not be made). */
  podNs: PodNamespaces | undefined;
}

export interface ProcessExit {
  pid: number;
  exit_status: number;
  exited_at: { seconds: number; nanos: number };
}

const PARK_TIMEOUT_MS = 60_000;
const FORCE_KILL_WAIT_MS = 10_000;

function timestamp(d: Date | undefined): { seconds: number; nanos: number } {
  const ms = d?.getTime() ?? 0;
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
}

function exitStatusOf(e: ChildExit): number {
  return e.exitCode ?? 128 + (e.signal ?? 0);
}

function wanted(s: Partial<StdioWanted> | undefined): StdioWanted {
  return { stdin: !!s?.stdin, stdout: !!s?.stdout, stderr: !!s?.stderr };
}

/** A runtime failure as the API reports it: the spec/process was refused by the runtime. */
function runtimeRefused(e: unknown, what: string): CoveError {
  if (e instanceof CoveError) return e;
  if (e instanceof RuntimeError) return new InvalidArgumentError(`${what}: ${e.message}`);
  return internal(`${what}: ${errorMessage(e)}`);
}

export class Agent {
  readonly runtime: OciRuntime;
  readonly cgroups: Cgroups;
  readonly storages: Storages;
  private sandbox: Sandbox | undefined;
  private readonly containers = new Map<string, AgentContainer>();
  /** Ids being created (reserved so that a concurrent duplicate is ALREADY_EXISTS). */
  private readonly creating = new Set<string>();
  private readonly byPid = new Map<number, AgentProcess>();
  /** Exits of pids not registered yet (a process can die before its pid file is read). */
  private readonly unclaimed = new Map<number, { status: number; at: Date }>();
  private readonly oomQueue: string[] = [];
  private readonly oomWaiters: Array<(id: string) => void> = [];
  private readonly started = Date.now();
  private runtimeVersion = "";

  constructor(private readonly o: AgentOptions) {
    this.cgroups = new Cgroups(o.cgroupMount);
    for (const d of ["containers", "storage", "sandbox", "runtime", "logs"])
      mkdirSync(join(o.stateDir, d), { recursive: true });
    this.runtime = new OciRuntime({
      binary: o.runtime,
      root: join(o.stateDir, "runtime"),
      logDir: join(o.stateDir, "logs"),
      reaper: o.reaper,
      log: o.log,
    });
    this.storages = new Storages(join(o.stateDir, "storage"), o.log);
    o.reaper.on("exit", (e) => this.onExit(e));
  }

  private get log(): Logger {
    return this.o.log;
  }

  // ---- exits and OOM -------------------------------------------------------------------------

  private onExit(e: ChildExit): void {
    const status = exitStatusOf(e);
    const proc = this.byPid.get(e.pid);
    if (!proc) {
      this.unclaimed.set(e.pid, { status, at: new Date() });
      if (this.unclaimed.size > 1024) this.unclaimed.delete(this.unclaimed.keys().next().value!);
      return;
    }
    this.byPid.delete(e.pid);
    this.exited(proc, status, new Date());
  }

  private exited(proc: AgentProcess, status: number, at: Date): void {
    proc.setExited(status, at);
    this.log.info(
      { container: proc.containerId, exec: proc.execId || undefined, pid: proc.pid, status },
      "process exited",
    );
    const c = this.containers.get(proc.containerId);
    if (c) this.checkOom(c);
  }

  private register(proc: AgentProcess, pid: number): void {
    proc.pid = pid;
    const early = this.unclaimed.get(pid);
    if (early) {
      this.unclaimed.delete(pid);
      this.exited(proc, early.status, early.at);
      return;
    }
    this.byPid.set(pid, proc);
  }

  private checkOom(c: AgentContainer): void {
    const n = this.cgroups.oomKills(c.cgroupPath);
    if (n <= c.oomSeen) return;
    c.oomSeen = n;
    this.log.warn({ container: c.id, oom_kills: n }, "OOM kill in container");
    const w = this.oomWaiters.shift();
    if (w) w(c.id);
    else {
      this.oomQueue.push(c.id);
      if (this.oomQueue.length > 4096) this.oomQueue.shift();
    }
  }

  private watchOom(c: AgentContainer): void {
    const check = () => {
      if (!c.removing) this.checkOom(c);
    };
    if (this.cgroups.version === 2) {
      try {
        const w = watch(this.cgroups.oomFile(c.cgroupPath), check);
        w.on("error", () => {});
        c.stopOomWatch = () => w.close();
        return;
      } catch {
        // fall through to polling
      }
    }
    const t = setInterval(check, 250);
    c.stopOomWatch = () => clearInterval(t);
  }

  async getOomEvent(signal: AbortSignal): Promise<string> {
    const queued = this.oomQueue.shift();
    if (queued !== undefined) return queued;
    return new Promise((resolve, reject) => {
      const waiter = (id: string) => {
        signal.removeEventListener("abort", onAbort);
        resolve(id);
      };
      const onAbort = () => {
        const i = this.oomWaiters.indexOf(waiter);
        if (i >= 0) this.oomWaiters.splice(i, 1);
        reject(new CancelledError("GetOOMEvent cancelled"));
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      this.oomWaiters.push(waiter);
    });
  }

  // ---- sandbox ---------------------------------------------------------------------------------

  async check(): Promise<Record<string, unknown>> {
    if (!this.runtimeVersion) this.runtimeVersion = await this.runtime.version();
    return {
      version: AGENT_VERSION,
      runtime: this.runtimeVersion,
      uptime_ms: Date.now() - this.started,
      sandbox: !!this.sandbox,
      containers: this.containers.size,
    };
  }

  async createSandbox(req: cove.agent.v1.CreateSandboxRequest): Promise<void> {
    if (this.sandbox) throw alreadyExists("sandbox");
    const cgroupRoot = req.cgroup_root || "cove";
    if (!ID_RE.test(cgroupRoot))
      throw invalid(`cgroup_root "${cgroupRoot}" must be one directory name (${ID_RE.source})`);
    if (req.hostname && !/^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$/.test(req.hostname))
      throw invalid(`hostname "${req.hostname}" is not a valid hostname`);
    for (const k of Object.keys(req.sysctls ?? {}))
      if (!/^[a-z0-9_]+(\.[a-z0-9_-]+)+$/.test(k)) throw invalid(`sysctl "${k}" is not a valid name`);
    for (const line of [...(req.dns ?? []), ...(req.hosts ?? [])])
      if (/[\n\r\0]/.test(line)) throw invalid("dns and hosts lines must be single lines");

    const dir = join(this.o.stateDir, "sandbox");
    const hostname = req.hostname || "localhost";
    const etc = {
      "/etc/hosts": join(dir, "hosts"),
      "/etc/resolv.conf": join(dir, "resolv.conf"),
      "/etc/hostname": join(dir, "hostname"),
    };
    const hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", `127.0.1.1\t${hostname}`];
    writeFileSync(etc["/etc/hosts"], `${[...hosts, ...(req.hosts ?? [])].join("\n")}\n`);
    writeFileSync(etc["/etc/resolv.conf"], req.dns?.length ? `${req.dns.join("\n")}\n` : "");
    writeFileSync(etc["/etc/hostname"], `${hostname}\n`);

    const ipcSysctls: Record<string, string> = {};
    if (this.o.guest) {
      loopbackUp(); // the kernel leaves lo down; pods without a network still need 127.0.0.1
      if (req.hostname) sethostname(req.hostname);
      for (const [k, v] of Object.entries(req.sysctls ?? {})) {
        if (isIpcSysctl(k)) {
          ipcSysctls[k] = v; // the pod's IPC namespace is the holder's: written there
          continue;
        }
        try {
          writeFileSync(`/proc/sys/${k.replace(/\./g, "/")}`, v);
        } catch (e) {
          throw invalid(`sysctl ${k}=${v}: ${errorMessage(e)}`);
        }
      }
    } else if (req.hostname || Object.keys(req.sysctls ?? {}).length) {
      this.log.warn("not in a guest: hostname and sysctls are not applied");
    }

    const podNs = startPodNamespaces(this.log, ipcSysctls);
    try {
      this.cgroups.setupRoot(cgroupRoot);
    } catch (e) {
      podNs?.stop();
      throw internal(`cgroup root ${cgroupRoot}: ${errorMessage(e)}`);
    }
    const acquired: string[] = [];
    try {
      for (const s of req.storages ?? []) {
        await this.storages.acquire(s);
        acquired.push(s.id);
      }
    } catch (e) {
      for (const id of acquired) this.storages.release(id);
      this.cgroups.removeRoot(cgroupRoot);
      podNs?.stop();
      throw e;
    }
    this.sandbox = { cgroupRoot, storageIds: acquired, etc, podNs };
    this.log.info(
      { hostname, cgroupRoot, storages: acquired, cgroup: this.cgroups.version, podNs: this.sandbox.podNs?.pid },
      "sandbox created",
    );
  }

  async destroySandbox(): Promise<void> {
    for (const c of [...this.containers.values()]) {
      try {
        await this.removeContainer(c.id, true);
      } catch (e) {
        this.log.error({ container: c.id, err: e }, "remove during DestroySandbox failed");
      }
    }
    this.storages.releaseAll();
    this.sandbox?.podNs?.stop();
    if (this.sandbox) {
      const left = this.cgroups.removeRoot(this.sandbox.cgroupRoot);
      if (left.length) this.log.warn({ left }, "cgroup directories not removed");
      this.log.info("sandbox destroyed");
    }
    this.sandbox = undefined;
  }

  /** ConfigureNetwork (agent/src/network/configure.ts). On a host only with COVE_AGENT_NETWORK=1. */
  configureNetwork(req: unknown): ConfiguredInterface[] {
    if (!this.o.guest && process.env.COVE_AGENT_NETWORK !== "1")
      throw precondition("ConfigureNetwork: not the guest's agent (set COVE_AGENT_NETWORK=1 in a private netns)");
    const cfg = parseNetworkConfig(req);
    return configureNetwork(cfg, { resolvConf: join(this.o.stateDir, "sandbox", "resolv.conf"), log: this.log });
  }

  /** SyncFiles: a copied volume's tree into a mounted storage (agent/src/storage/sync-files.ts). */
  syncFiles(req: SyncFilesRequest): void {
    if (!this.sandbox) throw precondition("CreateSandbox first");
    try {
      syncFiles(req, (sid) => this.storages.path(sid));
    } catch (e) {
      if (e instanceof CoveError) throw e;
      throw internal(`SyncFiles into storage ${req.storage_id}: ${errorMessage(e)}`);
    }
  }

  // ---- containers ------------------------------------------------------------------------------

  private container(id: unknown): AgentContainer {
    const cid = checkId(id, "container_id");
    const c = this.containers.get(cid);
    if (!c) throw notFound(`container ${cid}`);
    return c;
  }

  private proc(c: AgentContainer, execId: unknown): AgentProcess {
    const eid = checkId(execId ?? "", "exec_id", true);
    const p = c.proc(eid);
    if (!p) throw notFound(`process ${c.id}/${eid}`);
    return p;
  }

  async createContainer(req: cove.agent.v1.CreateContainerRequest): Promise<number> {
    const id = checkId(req.container_id, "container_id");
    if (!this.sandbox) throw precondition("CreateSandbox first");
    if (this.containers.has(id) || this.creating.has(id)) throw alreadyExists(`container ${id}`);
    const input = parseJsonObject(req.oci_spec, "oci_spec");
    if (!req.rootfs) throw invalid("rootfs missing");
    this.creating.add(id);
    const undo: Array<() => void> = [];
    const bundle = join(this.o.stateDir, "containers", id);
    try {
      rmSync(bundle, { recursive: true, force: true });
      mkdirSync(bundle, { recursive: true });
      undo.push(() => rmSync(bundle, { recursive: true, force: true }));
      const storageIds: string[] = [];
      for (const s of req.storages ?? []) {
        await this.storages.acquire(s);
        storageIds.push(s.id);
        undo.push(() => this.storages.release(s.id));
      }
      for (const f of req.files ?? []) this.syncFiles(f);
      const rootfs = buildRootfs(this.storages, req.rootfs, bundle, this.log);
      undo.push(rootfs.teardown);
      const cgroupPath = `/${this.sandbox.cgroupRoot}/${id}`;
      const { spec, notes } = rewriteSpec(input, {
        containerId: id,
        rootfs: rootfs.path,
        cgroupsPath: cgroupPath,
        etcFiles: this.sandbox.etc,
        podNamespace: this.sandbox.podNs?.path,
        storagePath: (sid) => this.storages.path(sid),
        homeOf: (uid) => homeInRootfs(rootfs.path, uid),
        scratchFile: (dest) => {
          const f = join(bundle, `file-${dest.replace(/[^A-Za-z0-9]/g, "_")}`);
          writeFileSync(f, "");
          return f;
        },
      });
      if (notes.length) this.log.info({ container: id, notes }, "spec rewritten for the guest");
      writeFileSync(join(bundle, "config.json"), JSON.stringify(spec));

      const terminal = (spec.process as { terminal?: boolean }).terminal === true;
      const init = new AgentProcess(id, "", terminal, wanted(req.stdio ?? undefined));
      const pidFile = join(bundle, "init.pid");
      const args = ["create", "--bundle", bundle, "--pid-file", pidFile];
      const cons = terminal ? listenConsole(join(bundle, "console.sock")) : undefined;
      if (cons) args.push("--console-socket", cons.path);
      args.push(id);
      const stdio = init.runtimeStdio();
      undo.push(() => init.dispose());
      try {
        await this.runtime.must(args, { stdio, cwd: bundle });
      } catch (e) {
        cons?.close();
        throw runtimeRefused(e, `create ${id}`);
      } finally {
        init.closeChildFds();
      }
      undo.push(() => void this.runtime.run(["delete", "--force", id]));
      if (cons) init.setPty(await cons.master);
      const c = new AgentContainer(id, bundle, cgroupPath, init, storageIds, rootfs.teardown);
      this.register(init, readPidFile(pidFile));
      this.containers.set(id, c);
      this.watchOom(c);
      this.log.info({ container: id, pid: init.pid, terminal }, "container created");
      return init.pid;
    } catch (e) {
      for (const u of undo.reverse()) {
        try {
          u();
        } catch (err) {
          this.log.warn({ container: id, err }, "undo after failed create");
        }
      }
      if (e instanceof CoveError) throw e;
      throw internal(`create ${id}: ${errorMessage(e)}`);
    } finally {
      this.creating.delete(id);
    }
  }

  async startContainer(containerId: string): Promise<number> {
    const c = this.container(containerId);
    if (c.status !== "created") throw precondition(`container ${c.id} is ${c.status}, not created`);
    try {
      await this.runtime.must(["start", c.id]);
    } catch (e) {
      throw runtimeRefused(e, `start ${c.id}`);
    }
    c.init.setRunning(c.init.pid);
    this.log.info({ container: c.id, pid: c.init.pid }, "container started");
    return c.init.pid;
  }

  async execProcess(req: cove.agent.v1.ExecProcessRequest): Promise<number> {
    const c = this.container(req.container_id);
    const execId = checkId(req.exec_id, "exec_id");
    if (c.execs.has(execId)) throw alreadyExists(`exec ${c.id}/${execId}`);
    if (c.status !== "running") throw precondition(`container ${c.id} is ${c.status}, not running`);
    const process = checkProcess(parseJsonObject(req.process, "process"), (uid) => homeInBundle(c.bundle, uid));
    const terminal = process.terminal === true;
    const proc = new AgentProcess(c.id, execId, terminal, wanted(req.stdio ?? undefined));
    c.execs.set(execId, proc);
    for (const s of ["stdin", "stdout", "stderr"] as const) {
      const conn = c.unpark(execId, s);
      if (conn) this.attachParked(proc, s, conn);
    }
    const procFile = join(c.bundle, `exec-${execId}.json`);
    const pidFile = join(c.bundle, `exec-${execId}.pid`);
    writeFileSync(procFile, JSON.stringify(process));
    const args = ["exec", "--process", procFile, "--detach", "--pid-file", pidFile];
    const cons = terminal ? listenConsole(join(c.bundle, `exec-${execId}.console`)) : undefined;
    if (cons) args.push("--console-socket", cons.path);
    args.push(c.id);
    const stdio = proc.runtimeStdio();
    try {
      await this.runtime.must(args, { stdio, cwd: c.bundle });
      if (cons) proc.setPty(await cons.master);
      this.register(proc, readPidFile(pidFile));
    } catch (e) {
      cons?.close();
      proc.dispose();
      c.execs.delete(execId);
      throw runtimeRefused(e, `exec ${c.id}/${execId}`);
    } finally {
      proc.closeChildFds();
      rmSync(procFile, { force: true });
    }
    proc.setRunning(proc.pid);
    this.log.info({ container: c.id, exec: execId, pid: proc.pid, terminal }, "exec started");
    return proc.pid;
  }

  private attachParked(proc: AgentProcess, stream: StreamName, conn: Socket): void {
    if (!proc.attach(stream, conn)) {
      conn.destroy();
      this.log.warn(
        { process: proc.describe(), stream },
        "parked stdio connection for a stream the process does not have",
      );
    }
  }

  /** A host stdio connection (header already read): attach it, or park it for an exec to come. */
  attachStdio(containerId: string, execId: string, stream: StreamName, conn: Socket): void {
    const c = this.container(containerId);
    checkId(execId, "exec_id", true);
    const p = c.proc(execId);
    if (p) {
      if (p.status === "exited") throw precondition(`process ${p.describe()} has exited`);
      if (!p.attach(stream, conn)) throw precondition(`process ${p.describe()} has no free ${stream} stream`);
      return;
    }
    if (execId === "") throw notFound(`process ${c.id}`);
    const key = `${execId}/${stream}`;
    if (c.parked.has(key)) throw alreadyExists(`${stream} connection for ${c.id}/${execId}`);
    const timer = setTimeout(() => {
      if (c.parked.get(key)?.conn === conn) c.parked.delete(key);
      conn.destroy();
    }, PARK_TIMEOUT_MS);
    c.parked.set(key, { conn, timer });
  }

  async signalProcess(req: cove.agent.v1.SignalProcessRequest): Promise<void> {
    const c = this.container(req.container_id);
    const sig = req.signal;
    if (!Number.isInteger(sig) || sig < 0 || sig > 64) throw invalid(`signal ${sig} is out of range`);
    if (req.all) {
      if (c.status === "stopped" && this.cgroups.pids(c.cgroupPath).length === 0)
        throw notFound(`container ${c.id}: process already finished`);
      try {
        await this.runtime.must(["kill", "--all", c.id, String(sig)]);
      } catch (e) {
        throw runtimeRefused(e, `kill --all ${c.id}`);
      }
      return;
    }
    const p = this.proc(c, req.exec_id);
    if (p.status === "exited" || p.pid <= 0) throw notFound(`process ${p.describe()}: process already finished`);
    try {
      process.kill(p.pid, sig);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ESRCH")
        throw notFound(`process ${p.describe()}: process already finished`);
      throw internal(`kill ${p.pid}: ${errorMessage(e)}`);
    }
  }

  async waitProcess(req: cove.agent.v1.ProcessRequest, signal: AbortSignal): Promise<ProcessExit> {
    const c = this.container(req.container_id);
    const p = this.proc(c, req.exec_id);
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => reject(new CancelledError(`wait ${p.describe()} cancelled`));
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      p.waitComplete().then(() => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      }, reject);
    });
    return { pid: p.pid, exit_status: p.exitStatus, exited_at: timestamp(p.exitedAt) };
  }

  deleteProcess(req: cove.agent.v1.ProcessRequest): ProcessExit {
    const c = this.container(req.container_id);
    if (!req.exec_id) throw precondition("the init process goes with RemoveContainer");
    const p = this.proc(c, req.exec_id);
    if (p.status !== "exited") throw precondition(`process ${p.describe()} is still running`);
    p.dispose();
    c.execs.delete(p.execId);
    return { pid: p.pid, exit_status: p.exitStatus, exited_at: timestamp(p.exitedAt) };
  }

  async removeContainer(containerId: string, force: boolean): Promise<void> {
    const c = this.container(containerId);
    if (c.removing) throw precondition(`container ${c.id} is being removed`);
    const running = c.status !== "stopped" && c.status !== "created";
    if (running && !force) throw precondition(`container ${c.id} is ${c.status}; stop it or remove with force`);
    c.removing = true;
    try {
      if (c.status !== "stopped" || this.cgroups.pids(c.cgroupPath).length > 0) {
        await this.runtime.run(["kill", "--all", c.id, "KILL"]);
        if (c.paused) await this.runtime.run(["resume", c.id]);
        if (c.init.status !== "created" || c.init.pid > 0) {
          const t = new Promise((r) => setTimeout(r, FORCE_KILL_WAIT_MS));
          await Promise.race([c.init.exited, t]);
        }
      }
      this.checkOom(c);
      c.stopOomWatch();
      const del = await this.runtime.run(["delete", "--force", c.id]);
      if (del.code !== 0) this.log.warn({ container: c.id, error: del.error }, "runtime delete failed");
      c.dropParked();
      for (const p of [c.init, ...c.execs.values()]) {
        p.dispose();
        this.byPid.delete(p.pid);
      }
      c.teardownRootfs();
      for (const sid of c.storageIds) this.storages.release(sid);
      rmSync(c.bundle, { recursive: true, force: true });
      this.containers.delete(c.id);
      this.log.info({ container: c.id }, "container removed");
    } catch (e) {
      c.removing = false;
      throw e instanceof CoveError ? e : internal(`remove ${c.id}: ${errorMessage(e)}`);
    }
  }

  async pause(containerId: string, pause: boolean): Promise<void> {
    const c = this.container(containerId);
    const want = pause ? "running" : "paused";
    if (c.status !== want) throw precondition(`container ${c.id} is ${c.status}, not ${want}`);
    try {
      await this.runtime.must([pause ? "pause" : "resume", c.id]);
    } catch (e) {
      throw runtimeRefused(e, `${pause ? "pause" : "resume"} ${c.id}`);
    }
    c.paused = pause;
  }

  async update(req: cove.agent.v1.UpdateContainerRequest): Promise<void> {
    const c = this.container(req.container_id);
    if (c.status === "stopped") throw precondition(`container ${c.id} is stopped`);
    const res = parseJsonObject(req.resources, "resources");
    const f = join(c.bundle, "resources.json");
    writeFileSync(f, JSON.stringify(res));
    try {
      await this.runtime.must(["update", "--resources", f, c.id]);
    } catch (e) {
      throw runtimeRefused(e, `update ${c.id}`);
    } finally {
      rmSync(f, { force: true });
    }
  }

  state(containerId: string): Record<string, unknown> {
    const c = this.container(containerId);
    return {
      container_id: c.id,
      status: c.status,
      processes: [c.init, ...c.execs.values()].map((p) => ({
        exec_id: p.execId,
        pid: p.pid,
        status: p.status,
        exit_status: p.exitStatus,
        exited_at: p.exitedAt ? timestamp(p.exitedAt) : null,
        terminal: p.terminal,
      })),
    };
  }

  listPids(containerId: string): Array<{ pid: number; exec_id: string; known: boolean }> {
    const c = this.container(containerId);
    const mine = new Map<number, string>();
    for (const p of [c.init, ...c.execs.values()]) if (p.status !== "exited") mine.set(p.pid, p.execId);
    return this.cgroups.pids(c.cgroupPath).map((pid) => ({
      pid,
      exec_id: mine.get(pid) ?? "",
      known: mine.has(pid),
    }));
  }

  stats(containerId: string): Record<string, unknown> {
    const c = this.container(containerId);
    return this.cgroups.stats(c.cgroupPath);
  }

  resizeTty(req: cove.agent.v1.ResizeTtyRequest): void {
    const c = this.container(req.container_id);
    const p = this.proc(c, req.exec_id);
    if (p.status === "exited") throw notFound(`process ${p.describe()}: process already finished`);
    p.resize(req.rows, req.cols);
  }

  closeStdin(req: cove.agent.v1.ProcessRequest): void {
    const c = this.container(req.container_id);
    this.proc(c, req.exec_id).closeStdin();
  }

  get containerCount(): number {
    return this.containers.size;
  }
}
