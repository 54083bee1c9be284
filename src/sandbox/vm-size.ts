// How big the pod's VM is: vCPUs and memory from the cove config, then the pod's annotations the
// operator allows (overrides.ts). Everything that sizes the VM belongs in podVmSize.
import type { CoveConfig } from "../config/config.ts";
import { annotationsOf, type Json } from "./oci.ts";
import { podOverrides } from "./overrides.ts";

export interface VmSize {
  vcpus: number;
  memoryMib: number;
  /** What was applied or ignored, for the log. */
  notes: string[];
}

/** The VM size for a pod whose first task has this OCI spec; INVALID_ARGUMENT for a bad value. */
export function podVmSize(oci: Json, config: CoveConfig): VmSize {
  return podOverrides(annotationsOf(oci), config);
}
