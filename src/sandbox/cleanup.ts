// Cleanup of a pod VM whose shim died without tearing it down (SIGKILL, crash): run by the `delete`
// binary that containerd calls afterwards. The VMM's pid is in <workDir>/vmm.pid; it is killed only
// if that process still is the VMM of this work dir (its argv names the dir), never a reused pid.
// The pod network's tc redirects on the CNI interface outlive the shim (its taps do not): they are
// undone from <workDir>/net.json.
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { errorMessage } from "../common/errors.ts";
import { PodNetwork, parseNetRecord } from "../network/pod-network.ts";
import { NET_STATE_FILE, VMM_PID_FILE, vmWorkDir } from "./pod.ts";

export { NET_STATE_FILE, VMM_PID_FILE };

/**
 * Kills the dead shim's VMM for this bundle (if this bundle started the pod), undoes its pod
 * network wiring, and removes its dir. Idempotent: a second call finds no dir.
 */
export async function reapOrphanVm(
  bundle: string,
  warn: (m: string) => void,
): Promise<{ killed: number | undefined; network: boolean }> {
  const dir = vmWorkDir(bundle);
  if (!existsSync(dir)) return { killed: undefined, network: false };
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
    if (code !== "ENOENT" && code !== "ESRCH") warn(`cove: cannot stop the orphaned VM in ${dir}: ${errorMessage(e)}`);
  }
  let network = false;
  try {
    const rec = parseNetRecord(JSON.parse(readFileSync(join(dir, NET_STATE_FILE), "utf8")));
    for (const err of await PodNetwork.undoRecorded(rec)) warn(`cove: pod network cleanup in ${rec.netns}: ${err}`);
    network = true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT")
      warn(`cove: cannot undo the orphaned pod network of ${dir}: ${errorMessage(e)}`);
  }
  rmSync(dir, { recursive: true, force: true });
  return { killed, network };
}
