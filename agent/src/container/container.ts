// A container's record in the agent: where its bundle and rootfs are, its cgroup, its processes
// and the host connections waiting for an exec that does not exist yet.
import type { Socket } from "node:net";
import type { AgentProcess, StreamName } from "./process.ts";

export type ContainerStatus = "created" | "running" | "paused" | "stopped";

/**
 * A container as the guest agent runs it (bundle, cgroup, processes). The host keeps its own records
 * of it: PodContainer in the sandbox runtime, TaskContainer in the shim's task service.
 */
export class AgentContainer {
  readonly execs = new Map<string, AgentProcess>();
  /** Host stdio connections for execs not created yet: key `<exec_id>/<stream>`. */
  readonly parked = new Map<string, { conn: Socket; timer: NodeJS.Timeout }>();
  paused = false;
  removing = false;
  oomSeen = 0;
  stopOomWatch: () => void = () => {};

  constructor(
    readonly id: string,
    readonly bundle: string,
    readonly cgroupPath: string,
    readonly init: AgentProcess,
    readonly storageIds: string[],
    readonly teardownRootfs: () => void,
  ) {}

  get status(): ContainerStatus {
    if (this.init.status === "exited") return "stopped";
    if (this.init.status === "created") return "created";
    return this.paused ? "paused" : "running";
  }

  proc(execId: string): AgentProcess | undefined {
    return execId === "" ? this.init : this.execs.get(execId);
  }

  /** Takes a parked connection for a new process's stream. */
  unpark(execId: string, stream: StreamName): Socket | undefined {
    const key = `${execId}/${stream}`;
    const p = this.parked.get(key);
    if (!p) return undefined;
    clearTimeout(p.timer);
    this.parked.delete(key);
    return p.conn;
  }

  dropParked(): void {
    for (const p of this.parked.values()) {
      clearTimeout(p.timer);
      p.conn.destroy();
    }
    this.parked.clear();
  }
}
