import { fn } from "./load.ts";

/** PR_SET_CHILD_SUBREAPER on this process (the shim daemon adopts orphaned helpers, as runc's shim does). */
export function setChildSubreaper(): void {
  fn<() => void>("setChildSubreaper")();
}

export const CLONE_NEWUTS = 0x04000000;
export const CLONE_NEWIPC = 0x08000000;
export const CLONE_NEWPID = 0x20000000;

/**
 * A child process in new namespaces (CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS) that only exists
 * — and, as PID 1 of its PID namespace, reaps orphans there — until it is sent SIGKILL. It keeps
 * none of this process's fds: this returns only after the child has closed the last of them. Its /proc/<pid>/ns/* are a pod's shared namespaces in the guest.
 * `writes` ([/proc/sys/… path, value]) are done by the child from inside its namespaces first (a
 * new IPC namespace starts from the defaults); `errors` holds an errno per write (0: written).
 */
export function spawnNamespaceHolder(
  flags: number,
  writes: readonly (readonly [string, string])[] = [],
): { pid: number; errors: number[] } {
  return fn<(flags: number, writes: readonly (readonly [string, string])[]) => { pid: number; errors: number[] }>(
    "spawnNamespaceHolder",
  )(flags, writes);
}
