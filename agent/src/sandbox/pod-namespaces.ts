// The pod's shared namespaces in the guest. Under CRI a pod's containers share its IPC and UTS
// namespaces (and its PID namespace with shareProcessNamespace): their specs name the pause
// process's namespaces on the host. Those mean nothing in the guest, so the agent keeps a holder
// process of its own in new PID, IPC and UTS namespaces (PID 1 there, reaping orphans, like pause)
// and containers whose spec joins a pid/ipc/uts namespace join the holder's instead.
// The holder is made after the hostname and the other sysctls are set (its UTS namespace starts as
// a copy); the pod's IPC sysctls are written by the holder itself, inside its new IPC namespace.
import { errorMessage } from "../../../src/common/errors.ts";
import {
  CLONE_NEWIPC,
  CLONE_NEWPID,
  CLONE_NEWUTS,
  errnoName,
  spawnNamespaceHolder,
} from "../../../src/native/process.ts";
import { invalid } from "../api/errors.ts";
import type { Logger } from "../log.ts";

export type SharedNamespace = "pid" | "ipc" | "uts";

export interface PodNamespaces {
  pid: number;
  /** The guest path of the pod's namespace of that type. */
  path(type: SharedNamespace): string;
  stop(): void;
}

/** Sysctls that belong to an IPC namespace (ipc/ipc_sysctl.c, ipc/mq_sysctl.c). */
export function isIpcSysctl(name: string): boolean {
  return (
    /^kernel\.(shm(max|all|mni|_rmid_forced|_next_id)|msg(max|mnb|mni|_next_id)|sem|sem_next_id|auto_msgmni)$/.test(
      name,
    ) || name.startsWith("fs.mqueue.")
  );
}

/**
 * Starts the holder with the pod's IPC sysctls applied inside it (INVALID_ARGUMENT, holder gone,
 * if one is refused); undefined (logged) when no holder can be made — containers then get their
 * own namespaces.
 */
export function startPodNamespaces(log: Logger, ipcSysctls: Record<string, string> = {}): PodNamespaces | undefined {
  const writes = Object.entries(ipcSysctls).map(([k, v]) => [`/proc/sys/${k.replace(/\./g, "/")}`, v] as const);
  let pid: number;
  try {
    const r = spawnNamespaceHolder(CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS, writes);
    pid = r.pid;
    const bad = r.errors.findIndex((e) => e !== 0);
    if (bad >= 0) {
      kill(pid);
      const [k, v] = Object.entries(ipcSysctls)[bad]!;
      throw invalid(`sysctl ${k}=${v}: ${errnoName(r.errors[bad]!)}`);
    }
  } catch (e) {
    if (Object.keys(ipcSysctls).length) throw e;
    log.warn({ err: errorMessage(e) }, "pod namespaces: no holder process; containers get their own");
    return undefined;
  }
  let stopped = false;
  return {
    pid,
    path: (type) => `/proc/${pid}/ns/${type}`,
    stop: () => {
      if (stopped) return;
      stopped = true;
      kill(pid); // also ends whatever is left in its PID namespace
    },
  };
}

function kill(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
}
