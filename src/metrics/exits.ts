// VM exits of the embedded VMM, by kind. Two sources, both with kernel- or VMM-chosen names only:
// KVM's binary stats per vCPU (every exit, including those KVM handles itself: ioeventfd, halts,
// interrupt windows), and the exits that reached the VMM's userspace loop, by KVM exit reason.
import { Exit } from "../vmm/kvm.ts";

const REASON_NAMES = new Map<number, string>(Object.entries(Exit).map(([name, n]) => [n, name.toLowerCase()]));

/** A KVM exit reason's name (io, mmio, hlt, …); reasons the VMM has no name for are "other". */
export function exitReasonName(reason: number): string {
  return REASON_NAMES.get(reason) ?? "other";
}

/** The most exit kinds taken from KVM's stats (x86 has 8 "*_exits" counters in Linux 6.x). */
export const MAX_EXIT_KINDS = 32;

export interface ExitTotals {
  /** KVM's "exits" summed over vCPUs (undefined: KVM has no binary stats, Linux < 5.14). */
  all?: number;
  /** KVM's "<kind>_exits" counters summed over vCPUs. */
  byKind: Map<string, number>;
  /** Exits that reached the VMM's userspace loop, by reason name. */
  userspace: Map<string, number>;
}

/** Sums per-vCPU KVM stats and userspace exit maps into totals. */
export function exitTotals(
  kvmStats: readonly (ReadonlyMap<string, bigint> | undefined)[],
  userspace: readonly ReadonlyMap<number, number>[],
): ExitTotals {
  const t: ExitTotals = { byKind: new Map(), userspace: new Map() };
  for (const s of kvmStats) {
    if (!s) continue;
    for (const [name, v] of s) {
      if (name === "exits") {
        t.all = (t.all ?? 0) + Number(v);
        continue;
      }
      const m = /^([a-z][a-z0-9_]{0,39})_exits$/.exec(name);
      if (!m) continue;
      const kind = m[1]!;
      if (!t.byKind.has(kind) && t.byKind.size >= MAX_EXIT_KINDS) continue;
      t.byKind.set(kind, (t.byKind.get(kind) ?? 0) + Number(v));
    }
  }
  for (const loop of userspace) {
    for (const [reason, n] of loop) {
      const name = exitReasonName(reason);
      t.userspace.set(name, (t.userspace.get(name) ?? 0) + n);
    }
  }
  return t;
}
