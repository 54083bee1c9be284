// The shim's typed client of the guest agent (cove.agent.v1.Agent over ttrpc, plus the stdio port).
// Transport-agnostic: a Dial function opens the RPC or a stdio connection (vsock ports 1024/1025
// through the VM's vsock device, or the agent's Unix sockets on a host).
//
// The agent is inside the guest, and the guest is not trusted: every request/response call has a
// deadline (a silent guest cannot hang Kill, Delete or anything else), and an error the agent sends
// reaches containerd with a known code and a bounded, escaped message.
import { connect as netConnect } from "node:net";
import type { Duplex } from "node:stream";
import { printable } from "../../common/text.ts";
import { shimMetrics } from "../../metrics/shim-metrics.ts";
import {
  AGENT_SERVICE,
  AGENT_VSOCK_PORT,
  STDIO_VSOCK_PORT,
  type StdioStream,
  type SyncFilesRequest,
} from "../../proto/agent.ts";
import type { cove, io, RequestInit, Response } from "../../proto/services.ts";
import { type CallOptions, Code, TtrpcClient, TtrpcError } from "../../ttrpc/index.ts";
import { handshake } from "./stdio.ts";

/** The agent's ports in the guest (src/proto/agent.ts). */
export { AGENT_SERVICE, AGENT_VSOCK_PORT as AGENT_PORT, STDIO_VSOCK_PORT as STDIO_PORT };

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
  port = AGENT_VSOCK_PORT,
  stdioPort = STDIO_VSOCK_PORT,
): Dial {
  return (channel) => connect(channel === "rpc" ? port : stdioPort);
}

type V1 = typeof AGENT_SERVICE;
type Sent<M extends AgentMethod> = RequestInit<V1, M>;
type Answer<M extends AgentMethod> = Response<V1, M>;

/** SyncFilesRequest: a directory tree for a storage (src/sandbox/volumes.ts builds the entries). */
export type SyncFiles = SyncFilesRequest;
/** A storage as the shim builds one: it always names the storage, its source and its fstype. */
export type Storage = cove.agent.v1.Storage.$Properties & { id: string; source: string; fstype: string };
export type Rootfs = cove.agent.v1.Rootfs.$Properties;
export type Stdio = cove.agent.v1.StdioConfig.$Properties;
export type ProcessExit = cove.agent.v1.WaitProcessResponse;
export type ProcessState = cove.agent.v1.ProcessState;
/** cove.agent.v1.ConfigureNetworkRequest (PodNetwork.guestConfig() has this shape). */
export type NetworkConfigRequest = Sent<"ConfigureNetwork">;
export type ConfiguredInterface = cove.agent.v1.ConfigureNetworkResponse.Configured;
/** io.containerd.cgroups.v2.Metrics as decoded (uint64s as numbers). */
export type Metrics = io.containerd.cgroups.v2.Metrics.$Properties;

const OUTPUT_END_WAIT_MS = 10_000;

/**
 * Deadlines of the agent's request/response calls, in ms, sized for a guest under TCG on a loaded
 * host, where guest code runs tens of times slower than under KVM: there, creating a container
 * (mounts, crun, a volume copy) takes seconds, so the deadlines are generous; under KVM none comes
 * near. A call past its deadline fails with DEADLINE_EXCEEDED, and the agent, which gets the
 * deadline in timeout_nano, cancels its side. The long polls (LONG_POLLS) have none: they are
 * cancelled when the client closes, at pod teardown.
 */
export const AGENT_DEADLINES_MS = {
  // Setting things up: mounts, file copies, the OCI runtime's create.
  CreateSandbox: 120_000,
  CreateContainer: 120_000,
  SyncFiles: 120_000,
  ConfigureNetwork: 60_000,
  // Changing a container or process.
  StartContainer: 60_000,
  ExecProcess: 60_000,
  RemoveContainer: 60_000,
  DestroySandbox: 60_000,
  DeleteProcess: 30_000,
  PauseContainer: 30_000,
  ResumeContainer: 30_000,
  UpdateContainer: 30_000,
  // Questions and signals: a syscall or a cgroup file read in the guest.
  Check: 30_000,
  SignalProcess: 30_000,
  StateContainer: 30_000,
  ListPids: 30_000,
  StatsContainer: 30_000,
  ResizeTty: 30_000,
  CloseStdin: 30_000,
} as const;

/** Calls that wait for something to happen in the guest, for as long as it takes. */
export const LONG_POLLS = ["WaitProcess", "GetOOMEvent"] as const;

export type DeadlineMethod = keyof typeof AGENT_DEADLINES_MS;
export type AgentMethod = DeadlineMethod | (typeof LONG_POLLS)[number];

/** The longest error message from the agent passed on (containerd stores and logs each one). */
export const MAX_AGENT_ERROR = 1024;

export interface AgentClientOptions {
  /** Per-method deadlines instead of AGENT_DEADLINES_MS (tests shorten them). */
  deadlines?: Partial<Record<DeadlineMethod, number>>;
}

/**
 * An error as the agent sent it, made safe to hand to containerd: a code outside gRPC's table
 * becomes UNKNOWN, the message is bounded and its control characters escaped.
 */
export function agentError(err: unknown, method: string, deadlineMs: number | undefined): unknown {
  if (!(err instanceof TtrpcError)) return err;
  if (err.code === Code.DEADLINE_EXCEEDED && deadlineMs !== undefined && err.message.startsWith("ttrpc:")) {
    return new TtrpcError(Code.DEADLINE_EXCEEDED, `the guest agent did not answer ${method} within ${deadlineMs} ms`);
  }
  const known = Number.isInteger(err.code) && err.code >= Code.CANCELLED && err.code <= Code.UNAUTHENTICATED;
  return new TtrpcError(known ? err.code : Code.UNKNOWN, printable(err.message, MAX_AGENT_ERROR));
}

export class AgentClient {
  /** Output streams this client opened, per process: WaitProcess also waits for their end here. */
  private readonly outputs = new Map<string, Set<Promise<void>>>();
  /** Open stdio connections: ended at close() with the long polls. */
  private readonly streams = new Set<Duplex>();
  private readonly deadlines: Record<DeadlineMethod, number>;
  private closed = false;

  private constructor(
    readonly rpc: TtrpcClient,
    private readonly dial: Dial,
    opts: AgentClientOptions,
  ) {
    this.deadlines = { ...AGENT_DEADLINES_MS, ...opts.deadlines };
  }

  static async connect(dial: Dial, opts: AgentClientOptions = {}): Promise<AgentClient> {
    return new AgentClient(new TtrpcClient(await dial("rpc")), dial, opts);
  }

  /** Teardown: every pending call (the long polls included) fails, every stdio connection ends. */
  close(): void {
    this.closed = true;
    this.rpc.close();
    for (const s of this.streams) s.destroy();
    this.streams.clear();
  }

  /** The deadline a call gets unless its caller gives one; undefined for a long poll. */
  deadlineOf(method: AgentMethod): number | undefined {
    return Object.hasOwn(this.deadlines, method) ? this.deadlines[method as DeadlineMethod] : undefined;
  }

  private async call<M extends AgentMethod>(method: M, req: Sent<M>, opts?: CallOptions): Promise<Answer<M>> {
    const timeoutMs = opts?.timeoutMs ?? this.deadlineOf(method);
    const t0 = performance.now();
    let ok = false;
    try {
      const res = await this.rpc.call<Answer<M>>(AGENT_SERVICE, method, req as object, { ...opts, timeoutMs });
      ok = true;
      return res;
    } catch (e) {
      throw agentError(e, method, timeoutMs);
    } finally {
      // Round trips of requests, not of the long polls (they wait for the guest's events).
      if (this.deadlineOf(method) !== undefined)
        shimMetrics.observeAgentCall(method, (performance.now() - t0) / 1000, ok);
    }
  }

  check(opts?: CallOptions) {
    return this.call("Check", {}, opts);
  }

  async createSandbox(req: Sent<"CreateSandbox">): Promise<void> {
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
    const r = await this.call("CreateContainer", {
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
    return (await this.call("StartContainer", { container_id: containerId })).pid;
  }

  async execProcess(req: { container_id: string; exec_id: string; process: object | Uint8Array; stdio?: Stdio }) {
    const r = await this.call("ExecProcess", {
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
    const r = await this.call("WaitProcess", { container_id: containerId, exec_id: execId }, opts);
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
    return this.call("DeleteProcess", { container_id: containerId, exec_id: execId });
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
    return this.call("StateContainer", {
      container_id: containerId,
    });
  }

  async listPids(containerId: string): Promise<Array<{ pid: number; exec_id: string; known: boolean }>> {
    return (
      await this.call("ListPids", {
        container_id: containerId,
      })
    ).pids;
  }

  async statsContainer(containerId: string): Promise<Metrics> {
    // An agent that leaves the field out (protobuf: null) gets empty metrics, not a TypeError later.
    return (await this.call("StatsContainer", { container_id: containerId })).metrics ?? {};
  }

  /** A terminal's window size in character cells (named, so that rows and columns cannot swap). */
  async resizeTty(r: { containerId: string; execId: string; rows: number; cols: number }): Promise<void> {
    await this.call("ResizeTty", { container_id: r.containerId, exec_id: r.execId, rows: r.rows, cols: r.cols });
  }

  async closeStdin(containerId: string, execId = ""): Promise<void> {
    await this.call("CloseStdin", { container_id: containerId, exec_id: execId });
  }

  /** Long poll for the next OOM kill; returns the container id. */
  async getOomEvent(opts?: CallOptions): Promise<string> {
    return (await this.call("GetOOMEvent", {}, opts)).container_id;
  }

  /**
   * ConfigureNetwork: the guest's NICs (found by MAC), routes in order, DNS for containers. Takes
   * PodNetwork.guestConfig() as it is; call it after createSandbox (its DNS then wins).
   */
  async configureNetwork(req: NetworkConfigRequest, opts?: CallOptions): Promise<ConfiguredInterface[]> {
    const res = await this.call("ConfigureNetwork", req, opts);
    return res.interfaces ?? [];
  }

  /**
   * Opens one stdio stream of a process (before StartContainer / ExecProcess, so nothing is missed).
   * stdout/stderr: read it to the end. stdin: write, then end() for EOF.
   */
  async openStdio(containerId: string, execId: string, stream: StdioStream): Promise<Duplex> {
    const conn = await handshake(await this.dial("stdio"), containerId, execId, stream).catch((e: unknown) => {
      throw agentError(e, "stdio", undefined);
    });
    if (this.closed) {
      conn.destroy();
      throw new TtrpcError(Code.UNAVAILABLE, "the agent connection is closed");
    }
    this.streams.add(conn);
    conn.once("close", () => this.streams.delete(conn));
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
