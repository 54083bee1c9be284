// The pod's shared namespaces in the guest. Under CRI a pod's containers share its IPC and UTS
// namespaces (and its PID namespace with shareProcessNamespace): their specs name the pause
// process's namespaces on the host. Those mean nothing in the guest, so the agent keeps a holder
// process of its own in new PID, IPC and UTS namespaces (PID 1 there, reaping orphans, like pause)
// and containers whose spec joins a pid/ipc/uts namespace join the holder's instead.
// The holder is made after the hostname is set: its UTS namespace starts with the pod's hostname.
import { CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWUTS, spawnNamespaceHolder } from "../../../src/native/process.ts";
import type { Logger } from "../log.ts";

export type SharedNamespace = "pid" | "ipc" | "uts";

export interface PodNamespaces {
  pid: number;
  /** The guest path of the pod's namespace of that type. */
  path(type: SharedNamespace): string;
  stop(): void;
}

/** Starts the holder; undefined (logged) when it cannot be made — containers then get new namespaces. */
export function startPodNamespaces(log: Logger): PodNamespaces | undefined {
  let pid: number;
  try {
    pid = spawnNamespaceHolder(CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS);
  } catch (e) {
    log.warn({ err: (e as Error).message }, "pod namespaces: no holder process; containers get their own");
    return undefined;
  }
  let stopped = false;
  return {
    pid,
    path: (type) => `/proc/${pid}/ns/${type}`,
    stop: () => {
      if (stopped) return;
      stopped = true;
      try {
        process.kill(pid, "SIGKILL"); // also ends whatever is left in its PID namespace
      } catch {
        // already gone
      }
    },
  };
}
