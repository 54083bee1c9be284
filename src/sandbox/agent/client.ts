// The shim's typed client of the guest agent (cove.agent.v1.Agent over ttrpc, plus the stdio port).
// Transport-agnostic: a Dial function opens the RPC or a stdio connection (vsock ports 1024/1025
// through the VM's vsock device, or the agent's Unix sockets on a host).
import { connect as netConnect } from "node:net";
import type { Duplex } from "node:stream";
import { type CallOptions, TtrpcClient } from "../../ttrpc/index.ts";
import { handshake, type StdioStream } from "./stdio.ts";

export const AGENT_SERVICE = "cove.agent.v1.Agent";
export const AGENT_PORT = 1024;
export const STDIO_PORT = 1025;

export type Dial = (channel: "rpc" | "stdio") => Promise<Duplex>;

/** The agent's Unix sockets: `<path>` (ttrpc) and `<path>.stdio`. */
export function unixDialer(path: string): Dial {
  return (channel) =>
    new Promise((resolve, reject) => {
      const s = netConnect({ path: channel === "rpc" ? path : `${path}.stdio`, allowHalfOpen: true });
      s.once("connect", () => {
        s.off("error", reject);
        resolve(s);
      });
      s.once("error", reject);
    });
}

/** Through a VM's vsock (e.g. RunningVm.connectVsock). */
export function vsockDialer(
  connect: (port: number) => Promise<Duplex>,
  port = AGENT_PORT,
  stdioPort = STDIO_PORT,
): Dial {
  return (channel) => connect(channel === "rpc" ? port : stdioPort);
}

/** SyncFilesRequest: a directory tree for a storage (src/sandbox/volumes.ts builds the entries). */
export interface SyncFiles {
  storage_id: string;
  subdir?: string;
  entries: {
    path: string;
    kind: number;
    mode: number;
    uid: number;
    gid: number;
    data?: Uint8Array;
    target?: string;
  }[];
  in_place?: boolean;
}

export interface Storage {
  id: string;
  source: string;
  fstype: string;
  options?: string[];
  wait_ms?: number;
  /** Mounted until DestroySandbox, whoever still uses it (emptyDir, the pod's /dev/shm). */
  sandbox_lifetime?: boolean;
}

export interface Rootfs {
  lower?: string[];
  upper?: string;
  path?: string;
}

export interface Stdio {
  stdin?: boolean;
  stdout?: boolean;
  stderr?: boolean;
}

export interface ProcessExit {
  pid: number;
  exit_status: number;
  exited_at: { seconds: number; nanos: number } | null;
}

export interface ProcessState {
  exec_id: string;
  pid: number;
  status: "created" | "running" | "exited";
  exit_status: number;
  exited_at: { seconds: number; nanos: number } | null;
  terminal: boolean;
}

/** cove.agent.v1.ConfigureNetworkRequest (PodNetwork.guestConfig() has this shape). */
export interface NetworkConfigRequest {
  interfaces: { mac: string; name: string; mtu?: number; addresses?: string[] }[];
  routes?: {
    dst: string;
    gateway?: string;
    dev: string;
    src?: string;
    scope?: string;
    family?: "inet" | "inet6";
    metric?: number;
  }[];
  dns?: { nameservers?: string[]; searches?: string[]; options?: string[] };
}

export interface ConfiguredInterface {
  mac: string;
  name: string;
  index: number;
}

/** io.containerd.cgroups.v2.Metrics as a plain object (uint64s as numbers). */
export type Metrics = Record<string, Record<string, unknown> | unknown>;

const OUTPUT_END_WAIT_MS = 10_000;

export class AgentClient {
  /** Output streams this client opened, per process: WaitProcess also waits for their end here. */
  private readonly outputs = new Map<string, Set<Promise<void>>>();

  private constructor(
    readonly rpc: TtrpcClient,
    private readonly dial: Dial,
  ) {}

  static async connect(dial: Dial): Promise<AgentClient> {
    return new AgentClient(new TtrpcClient(await dial("rpc")), dial);
  }

  close(): void {
    this.rpc.close();
  }

  private call<T>(method: string, req: object, opts?: CallOptions): Promise<T> {
    return this.rpc.call<T>(AGENT_SERVICE, method, req, opts);
  }

  check(opts?: CallOptions) {
    return this.call<{ version: string; runtime: string; uptime_ms: number; sandbox: boolean; containers: number }>(
      "Check",
      {},
      opts,
    );
  }

  async createSandbox(req: {
    hostname?: string;
    dns?: string[];
    sysctls?: Record<string, string>;
    cgroup_root?: string;
    storages?: Storage[];
    hosts?: string[];
  }): Promise<void> {
    await this.call("CreateSandbox", req);
  }

  async destroySandbox(): Promise<void> {
    await this.call("DestroySandbox", {});
  }

  /** `spec` is the OCI config (object or JSON bytes). Returns the init pid. */
  async createContainer(req: {
    container_id: string;
    spec: object | Uint8Array;
    storages?: Storage[];
    rootfs: Rootfs;
    stdio?: Stdio;
    /** Copied volumes, written into their (tmpfs) storages before the runtime runs. */
    files?: SyncFiles[];
  }): Promise<number> {
    const r = await this.call<{ pid: number }>("CreateContainer", {
      container_id: req.container_id,
      oci_spec: toJsonBytes(req.spec),
      storages: req.storages ?? [],
      rootfs: req.rootfs,
      stdio: req.stdio ?? {},
      files: req.files ?? [],
    });
    return r.pid;
  }

  /** Mirrors a copied volume's tree into its storage again (after a change on the host). */
  async syncFiles(req: SyncFiles): Promise<void> {
    await this.call("SyncFiles", req);
  }

  async startContainer(containerId: string): Promise<number> {
    return (await this.call<{ pid: number }>("StartContainer", { container_id: containerId })).pid;
  }

  async execProcess(req: { container_id: string; exec_id: string; process: object | Uint8Array; stdio?: Stdio }) {
    const r = await this.call<{ pid: number }>("ExecProcess", {
      container_id: req.container_id,
      exec_id: req.exec_id,
      process: toJsonBytes(req.process),
      stdio: req.stdio ?? {},
    });
    return r.pid;
  }

  async signalProcess(containerId: string, execId: string, signal: number, all = false): Promise<void> {
    await this.call("SignalProcess", { container_id: containerId, exec_id: execId, signal, all });
  }

  /**
   * Long poll until the process exited and its output is complete: the agent ended every attached
   * output stream, and this side saw the end of the ones it opened (so read them).
   */
  async waitProcess(containerId: string, execId = "", opts?: CallOptions): Promise<ProcessExit> {
    const r = await this.call<ProcessExit>("WaitProcess", { container_id: containerId, exec_id: execId }, opts);
    const outs = this.outputs.get(key(containerId, execId));
    if (outs?.size) {
      let t: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all(outs), new Promise((res) => (t = setTimeout(res, OUTPUT_END_WAIT_MS)))]);
      clearTimeout(t);
    }
    return r;
  }

  async deleteProcess(containerId: string, execId: string): Promise<ProcessExit> {
    this.outputs.delete(key(containerId, execId));
    return this.call<ProcessExit>("DeleteProcess", { container_id: containerId, exec_id: execId });
  }

  async removeContainer(containerId: string, force = false): Promise<void> {
    await this.call("RemoveContainer", { container_id: containerId, force });
    for (const k of [...this.outputs.keys()]) if (k.startsWith(`${containerId}/`)) this.outputs.delete(k);
  }

  async pauseContainer(containerId: string): Promise<void> {
    await this.call("PauseContainer", { container_id: containerId });
  }

  async resumeContainer(containerId: string): Promise<void> {
    await this.call("ResumeContainer", { container_id: containerId });
  }

  /** `resources`: OCI LinuxResources. */
  async updateContainer(containerId: string, resources: object): Promise<void> {
    await this.call("UpdateContainer", { container_id: containerId, resources: toJsonBytes(resources) });
  }

  stateContainer(containerId: string) {
    return this.call<{ container_id: string; status: string; processes: ProcessState[] }>("StateContainer", {
      container_id: containerId,
    });
  }

  async listPids(containerId: string): Promise<Array<{ pid: number; exec_id: string; known: boolean }>> {
    return (
      await this.call<{ pids: Array<{ pid: number; exec_id: string; known: boolean }> }>("ListPids", {
        container_id: containerId,
      })
    ).pids;
  }

  async statsContainer(containerId: string): Promise<Metrics> {
    return (await this.call<{ metrics: Metrics }>("StatsContainer", { container_id: containerId })).metrics;
  }

  async resizeTty(containerId: string, execId: string, rows: number, cols: number): Promise<void> {
    await this.call("ResizeTty", { container_id: containerId, exec_id: execId, rows, cols });
  }

  async closeStdin(containerId: string, execId = ""): Promise<void> {
    await this.call("CloseStdin", { container_id: containerId, exec_id: execId });
  }

  /** Long poll for the next OOM kill; returns the container id. */
  async getOomEvent(opts?: CallOptions): Promise<string> {
    return (await this.call<{ container_id: string }>("GetOOMEvent", {}, opts)).container_id;
  }

  /**
   * ConfigureNetwork: the guest's NICs (found by MAC), routes in order, DNS for containers. Takes
   * PodNetwork.guestConfig() as it is; call it after createSandbox (its DNS then wins).
   */
  async configureNetwork(req: NetworkConfigRequest, opts?: CallOptions): Promise<ConfiguredInterface[]> {
    const res = await this.call<{ interfaces?: ConfiguredInterface[] }>("ConfigureNetwork", req, opts);
    return res.interfaces ?? [];
  }

  /**
   * Opens one stdio stream of a process (before StartContainer / ExecProcess, so nothing is missed).
   * stdout/stderr: read it to the end. stdin: write, then end() for EOF.
   */
  async openStdio(containerId: string, execId: string, stream: StdioStream): Promise<Duplex> {
    const conn = await handshake(await this.dial("stdio"), containerId, execId, stream);
    if (stream !== "stdin") {
      const k = key(containerId, execId);
      let set = this.outputs.get(k);
      if (!set) {
        set = new Set();
        this.outputs.set(k, set);
      }
      set.add(
        new Promise<void>((resolve) => {
          conn.once("end", resolve);
          conn.once("close", resolve);
        }),
      );
    }
    return conn;
  }
}

function key(containerId: string, execId: string): string {
  return `${containerId}/${execId}`;
}

function toJsonBytes(v: object | Uint8Array): Uint8Array {
  return v instanceof Uint8Array ? v : Buffer.from(JSON.stringify(v));
}
