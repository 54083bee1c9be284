import { existsSync } from "node:fs";
import { constants } from "node:os";
import { dirname, join, resolve } from "node:path";
import { addonCandidates, fn } from "./load.ts";

/** PR_SET_CHILD_SUBREAPER on this process (the shim daemon adopts orphaned helpers, as runc's shim does). */
export function setChildSubreaper(): void {
  fn<() => void>("setChildSubreaper")();
}

export const CLONE_NEWUTS = 0x04000000;
export const CLONE_NEWIPC = 0x08000000;
export const CLONE_NEWPID = 0x20000000;

/** The holder's program (src/native/holder/cove-holder.c), built beside the addon. */
export const HOLDER_FILE = "cove-holder";

/** Where the holder's program is: $COVE_HOLDER, else beside the addon (wherever load.ts finds it). */
export function holderBinary(): string {
  const candidates = [
    ...(process.env.COVE_HOLDER ? [process.env.COVE_HOLDER] : []),
    ...addonCandidates().map((a) => join(dirname(a), HOLDER_FILE)),
  ];
  const found = candidates.find((p) => existsSync(p));
  if (!found)
    throw new Error(`${HOLDER_FILE} not found (looked in ${candidates.join(", ")}); run \`npx node-gyp rebuild\``);
  return resolve(found);
}

/**
 * A child process in new namespaces (CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS) that execs the
 * holder's program, which only exists — and, as PID 1 of its PID namespace, reaps orphans there —
 * until it is sent SIGKILL. This returns only after the exec: the child then holds none of this
 * process's fds and no copy of its memory. Its /proc/<pid>/ns/* are a pod's shared namespaces in
 * the guest. `writes` ([/proc/sys/… path, value]) are done by the child from inside its namespaces
 * first (a new IPC namespace starts from the defaults); `errors` holds an errno per write (0:
 * written). Throws (the child gone) if the exec fails.
 */
export function spawnNamespaceHolder(
  flags: number,
  writes: readonly (readonly [string, string])[] = [],
  holder = holderBinary(),
): { pid: number; errors: number[] } {
  const r = fn<
    (
      flags: number,
      writes: readonly (readonly [string, string])[],
      holder: string,
    ) => { pid: number; errors: number[]; execError: number }
  >("spawnNamespaceHolder")(flags, writes, holder);
  if (r.execError !== 0) {
    const code = errnoName(r.execError);
    throw Object.assign(new Error(`namespace holder: exec ${holder}: ${code}`), { code });
  }
  return { pid: r.pid, errors: r.errors };
}

/** The errno name of a number ("ENOENT"), or "errno <n>". */
export function errnoName(n: number): string {
  return Object.entries(constants.errno).find(([, v]) => v === n)?.[0] ?? `errno ${n}`;
}
