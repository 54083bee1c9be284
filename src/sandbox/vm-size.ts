// How big the pod's VM is. The pod's resources (pod-resources.ts: CRI's sandbox annotations, or a
// ctr container's own limits) make it [guest] memory_mib + the pod's memory, and as many vCPUs as
// its CPU quota rounded up, capped by [guest] max_memory_mib / max_vcpus (0: the host's); without
// them, the [guest] defaults. The pod's annotations the operator allows (overrides.ts) win over
// both. Everything that sizes the VM belongs in podVmSize. Guest RAM costs host memory only once
// the guest touches it (nothing pre-faults it), so a large VM for a large limit is not a reservation.
import { availableParallelism, totalmem } from "node:os";
import type { CoveConfig } from "../config/config.ts";
import { annotationsOf, type Json } from "./oci.ts";
import { podOverrides } from "./overrides.ts";
import { type PodResources, podResources } from "./pod-resources.ts";

const MiB = 1024 * 1024;

export interface VmSize {
  vcpus: number;
  memoryMib: number;
  /** What was applied or ignored, for the log. */
  notes: string[];
}

/** What the caps default to (max_vcpus / max_memory_mib = 0). */
export interface HostSize {
  cpus: number;
  memoryMib: number;
}

export function hostSize(): HostSize {
  return { cpus: availableParallelism(), memoryMib: Math.floor(totalmem() / MiB) };
}

/** The VM size for a pod's resources: [guest] base + the pod's memory, vCPUs from the quota; capped. */
export function sizeForResources(config: CoveConfig, res: PodResources, host: HostSize): VmSize {
  const g = config.guest;
  const notes = [...res.notes];
  let { vcpus, memoryMib } = g;
  const parts: string[] = [];
  if (res.memoryBytes !== undefined) {
    const pod = Math.ceil(res.memoryBytes / MiB);
    const max = Math.max(g.maxMemoryMib || host.memoryMib, g.memoryMib);
    memoryMib = Math.min(g.memoryMib + pod, max);
    parts.push(
      `memory ${memoryMib} MiB = [guest] memory_mib ${g.memoryMib} + the pod's ${pod} MiB` +
        (memoryMib < g.memoryMib + pod ? `, capped at ${max} MiB ([guest] max_memory_mib)` : ""),
    );
  }
  if (res.cpus !== undefined) {
    const want = Math.max(1, Math.ceil(res.cpus - 1e-9));
    const max = Math.max(g.maxVcpus || host.cpus, 1);
    vcpus = Math.min(want, max);
    parts.push(
      `${vcpus} vCPU(s) for ${Number(res.cpus.toFixed(3))} CPU(s)` +
        (vcpus < want ? `, capped at ${max} ([guest] max_vcpus)` : ""),
    );
  }
  if (parts.length) notes.push(`VM sized from the pod (${res.source}): ${parts.join("; ")}`);
  return { vcpus, memoryMib, notes };
}

/** The VM size for a pod whose first task has this OCI spec; INVALID_ARGUMENT for a bad override. */
export function podVmSize(oci: Json, config: CoveConfig, host: HostSize = hostSize()): VmSize {
  const fromPod = sizeForResources(config, podResources(oci), host);
  const o = podOverrides(annotationsOf(oci), config, fromPod);
  return { vcpus: o.vcpus, memoryMib: o.memoryMib, notes: [...fromPod.notes, ...o.notes] };
}

/** The memory a VM has for containers: all of it but what the guest itself needs. */
export function containerRoomMib(memoryMib: number, config: CoveConfig): number {
  return Math.max(0, memoryMib - config.guest.memoryMib);
}

/** A warning when a container's memory limit is larger than the room its pod's VM has; undefined if it fits. */
export function memoryFitWarning(
  limitBytes: number | undefined,
  memoryMib: number,
  config: CoveConfig,
): string | undefined {
  if (limitBytes === undefined) return undefined;
  const room = containerRoomMib(memoryMib, config);
  const limit = Math.ceil(limitBytes / MiB);
  if (limit <= room) return undefined;
  return (
    `memory limit of ${limit} MiB does not fit the pod's VM (${memoryMib} MiB, ${room} MiB of it for containers; ` +
    "there is no memory hotplug): the limit applies inside the guest, whose memory runs out first"
  );
}
