// Cleanup of a pod VM whose shim died without tearing it down (SIGKILL, crash): run by the `delete`
// binary that containerd calls afterwards. The VMM's pid is in <workDir>/vmm.pid; it is killed only
// if that process still is the VMM of this work dir (its argv names the dir), never a reused pid.
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { vmWorkDir } from "./pod.ts";

export const VMM_PID_FILE = "vmm.pid";

/** Kills the dead shim's VMM for this bundle (if this bundle started the pod) and removes its dir. */
export function reapOrphanVm(bundle: string, warn: (m: string) => void): { killed: number | undefined } {
  const dir = vmWorkDir(bundle);
  if (!existsSync(dir)) return { killed: undefined };
  let killed: number | undefined;
  try {
    const pid = Number.parseInt(readFileSync(join(dir, VMM_PID_FILE), "utf8"), 10);
    if (pid > 1) {
      const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8");
      if (argv.includes(dir)) {
        process.kill(pid, "SIGKILL");
        killed = pid;
      }
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "ENOENT" && code !== "ESRCH")
      warn(`cove: cannot stop the orphaned VM in ${dir}: ${(e as Error).message}`);
  }
  rmSync(dir, { recursive: true, force: true });
  return { killed };
}
