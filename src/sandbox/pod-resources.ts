// What the pod asks for, read from its first task's OCI spec: under CRI the sandbox spec's
// annotations, which containerd's CRI (1.6.0 on, 1.7 and 2.x alike) sets from the
// PodSandboxConfig's linux.resources (kubelet sends the sum of its containers' limits there); under
// `ctr run` (no CRI) the first container's own linux.resources, since that container is the pod.
// Values are the kubelet's or a ctr user's: anything unusable is ignored with a note, never fatal.
import type { Json } from "./oci.ts";

export const SANDBOX_MEMORY = "io.kubernetes.cri.sandbox-memory";
export const SANDBOX_CPU_QUOTA = "io.kubernetes.cri.sandbox-cpu-quota";
export const SANDBOX_CPU_PERIOD = "io.kubernetes.cri.sandbox-cpu-period";
export const SANDBOX_CPU_SHARES = "io.kubernetes.cri.sandbox-cpu-shares";
const CONTAINER_TYPE = "io.kubernetes.cri.container-type";

/** The CFS period the kernel (and runc) use when a quota comes without one. */
const DEFAULT_CPU_PERIOD = 100_000;

export interface PodResources {
  /** The pod's memory limit in bytes (absent: no limit). */
  memoryBytes?: number;
  /** CPU quota / period, e.g. 1.5 (absent: no quota). */
  cpus?: number;
  /** Where they came from, for the log. */
  source: "cri annotations" | "container resources" | "none";
  notes: string[];
}

const isObj = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/** A positive integer (number or decimal string) within 2^53; 0, negative and absent → undefined. */
function positive(v: unknown, what: string, notes: string[]): number | undefined {
  if (v === undefined || v === null || v === "") return undefined;
  const n = typeof v === "number" ? v : typeof v === "string" && /^-?\d+$/.test(v) ? Number(v) : Number.NaN;
  if (!Number.isSafeInteger(n)) {
    notes.push(`${what}=${JSON.stringify(v).slice(0, 40)} ignored: not an integer`);
    return undefined;
  }
  return n > 0 ? n : undefined;
}

function cpusOf(quota: number | undefined, period: number | undefined): number | undefined {
  return quota === undefined ? undefined : quota / (period ?? DEFAULT_CPU_PERIOD);
}

export function podResources(oci: Json): PodResources {
  const notes: string[] = [];
  const ann = isObj(oci.annotations) ? oci.annotations : {};
  if (SANDBOX_MEMORY in ann || SANDBOX_CPU_QUOTA in ann) {
    const memoryBytes = positive(ann[SANDBOX_MEMORY], SANDBOX_MEMORY, notes);
    const quota = positive(ann[SANDBOX_CPU_QUOTA], SANDBOX_CPU_QUOTA, notes);
    const period = positive(ann[SANDBOX_CPU_PERIOD], SANDBOX_CPU_PERIOD, notes);
    return { memoryBytes, cpus: cpusOf(quota, period), source: "cri annotations", notes };
  }
  // A CRI sandbox spec without the annotations (a pod without resources) describes the pause
  // container, whose own resources say nothing about the pod.
  if (ann[CONTAINER_TYPE] === "sandbox") return { source: "none", notes };
  const linux = isObj(oci.linux) ? oci.linux : {};
  const res = isObj(linux.resources) ? linux.resources : {};
  const mem = isObj(res.memory) ? res.memory : {};
  const cpu = isObj(res.cpu) ? res.cpu : {};
  const memoryBytes = positive(mem.limit, "linux.resources.memory.limit", notes);
  const cpus = cpusOf(
    positive(cpu.quota, "linux.resources.cpu.quota", notes),
    positive(cpu.period, "linux.resources.cpu.period", notes),
  );
  if (memoryBytes === undefined && cpus === undefined) return { source: "none", notes };
  return { memoryBytes, cpus, source: "container resources", notes };
}

/** A container's own memory limit in bytes (its spec's linux.resources.memory.limit), if any. */
export function containerMemoryLimit(oci: Json): number | undefined {
  const linux = isObj(oci.linux) ? oci.linux : {};
  const res = isObj(linux.resources) ? linux.resources : {};
  const mem = isObj(res.memory) ? res.memory : {};
  return positive(mem.limit, "linux.resources.memory.limit", []);
}
