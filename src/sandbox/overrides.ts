// Per-pod overrides of the VM size from annotations, only those the operator allows
// ([pod] allowed_annotations, globs with a trailing `*`).
import { InvalidArgumentError } from "../common/errors.ts";
import type { CoveConfig } from "../config/config.ts";

export const ANNOTATION_VCPUS = "io.cove.vcpus";
export const ANNOTATION_MEMORY_MIB = "io.cove.memory_mib";

export function allowed(key: string, globs: string[]): boolean {
  return globs.some((g) => (g.endsWith("*") ? key.startsWith(g.slice(0, -1)) : key === g));
}

function intValue(key: string, v: string, min: number, max: number): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < min || n > max) {
    throw new InvalidArgumentError(`annotation ${key}="${v}" must be an integer from ${min} to ${max}`);
  }
  return n;
}

/** `base` (default: the [guest] values) with the allowed io.cove.* annotations applied over it. */
export function podOverrides(
  annotations: Record<string, string>,
  config: CoveConfig,
  base: { vcpus: number; memoryMib: number } = config.guest,
): { vcpus: number; memoryMib: number; notes: string[] } {
  let { vcpus, memoryMib } = base;
  const notes: string[] = [];
  for (const [key, value] of Object.entries(annotations)) {
    if (key !== ANNOTATION_VCPUS && key !== ANNOTATION_MEMORY_MIB) continue;
    if (!allowed(key, config.pod.allowedAnnotations)) {
      notes.push(`annotation ${key} ignored: not in [pod] allowed_annotations`);
      continue;
    }
    if (key === ANNOTATION_VCPUS) vcpus = intValue(key, value, 1, 255);
    else memoryMib = intValue(key, value, 64, 1 << 20);
    notes.push(`annotation ${key}=${value} applied`);
  }
  return { vcpus, memoryMib, notes };
}
