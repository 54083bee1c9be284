// What `cove ps` reads: the pod's shim writes pod.json into its VM's work dir (/run/cove/vm/<hash>/,
// root-only) when the VM is ready and whenever the pod's containers change. The file goes with the
// work dir when the VM is torn down (or by `delete` after a shim crash).
import { readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { errorMessage } from "../common/errors.ts";

/** Parent of every pod VM's work dir (src/sandbox/pod.ts). */
export const VM_RUN_DIR = "/run/cove/vm";
export const POD_STATE_FILE = "pod.json";

export interface PodRunState {
  /** The pod's id: its first task (the CRI sandbox id, or the container a `ctr run` made). */
  id: string;
  /** containerd namespace (k8s.io for CRI), from the bundle path. */
  namespace: string;
  bundle: string;
  shimPid: number;
  /** The VMM's pid: the shim's own on the embedded backend, QEMU's on the qemu backend. */
  vmmPid: number;
  backend: string;
  /** kvm or tcg, when the backend choice said. */
  accel?: string;
  vcpus: number;
  memoryMib: number;
  /** When the VM was ready (ISO 8601). */
  startedAt: string;
  bootMs: number;
  /** Task ids of the pod's containers (the sandbox container included). */
  containers: string[];
  /** Whether the agent serves the debug console ([debug] console when the pod started). */
  debugConsole?: boolean;
}

/** containerd's bundle dir: <state>/io.containerd.runtime.v2.task/<namespace>/<id>. */
export function namespaceOfBundle(bundle: string): string {
  return basename(dirname(bundle));
}

/** Keeps pod.json in step; writes are atomic, and none recreates a work dir already removed. */
export class PodRunStateFile {
  constructor(
    private readonly workDir: string,
    private state: PodRunState,
  ) {
    this.write();
  }

  setContainers(ids: string[]): void {
    this.state = { ...this.state, containers: ids };
    this.write();
  }

  private write(): void {
    const path = join(this.workDir, POD_STATE_FILE);
    try {
      writeFileSync(`${path}.tmp`, `${JSON.stringify(this.state)}\n`, { mode: 0o600 });
      renameSync(`${path}.tmp`, path);
    } catch {
      // The VM's work dir is gone (the pod is being torn down): nothing left to describe.
    }
  }
}

const isNum = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0;
const isStr = (v: unknown): v is string => typeof v === "string";

/** pod.json parsed and checked (it is root's, but may be from another cove version or cut short). */
export function parsePodState(text: string): PodRunState {
  const v = JSON.parse(text) as Record<string, unknown>;
  const ok =
    isStr(v.id) &&
    isStr(v.namespace) &&
    isStr(v.bundle) &&
    isNum(v.shimPid) &&
    isNum(v.vmmPid) &&
    isStr(v.backend) &&
    (v.accel === undefined || isStr(v.accel)) &&
    isNum(v.vcpus) &&
    isNum(v.memoryMib) &&
    isStr(v.startedAt) &&
    typeof v.bootMs === "number" &&
    Array.isArray(v.containers) &&
    v.containers.every(isStr) &&
    (v.debugConsole === undefined || typeof v.debugConsole === "boolean");
  if (!ok) throw new Error("not a pod state of this cove version");
  return v as unknown as PodRunState;
}

/** Every pod state under the VM run dir; a dir without a readable pod.json is reported, not thrown. */
export function readPodStates(runDir: string): { dir: string; state?: PodRunState; error?: string }[] {
  let dirs: string[];
  try {
    dirs = readdirSync(runDir).sort();
  } catch {
    return [];
  }
  return dirs.map((d) => {
    const dir = join(runDir, d);
    try {
      return { dir, state: parsePodState(readFileSync(join(dir, POD_STATE_FILE), "utf8")) };
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      return { dir, error: code === "ENOENT" ? "no pod.json (booting, or from an older cove)" : errorMessage(e) };
    }
  });
}
