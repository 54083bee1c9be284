// What a VMM process costs the host, guest RAM excluded: PSS summed over /proc/<pid>/smaps,
// leaving out the mappings that back guest memory (for QEMU: its RAM block; for the embedded VMM:
// the ranges Machine reports). Used by the VMM benchmark.
import { readFileSync } from "node:fs";

export interface PssReport {
  /** All mappings, KiB. */
  totalKiB: number;
  /** Mappings that back guest RAM, KiB. */
  guestRamKiB: number;
  /** totalKiB − guestRamKiB. */
  vmmKiB: number;
}

/**
 * `isGuestRam(start, end)` decides per mapping; by default none is.
 */
export function pssReport(
  pid: number | "self",
  isGuestRam: (start: bigint, end: bigint) => boolean = () => false,
): PssReport {
  const text = readFileSync(`/proc/${pid}/smaps`, "utf8");
  let total = 0;
  let guest = 0;
  let inGuest = false;
  for (const line of text.split("\n")) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (m) {
      inGuest = isGuestRam(BigInt(`0x${m[1]}`), BigInt(`0x${m[2]}`));
      continue;
    }
    const p = /^Pss:\s+(\d+) kB/.exec(line);
    if (p) {
      const kib = Number(p[1]);
      total += kib;
      if (inGuest) guest += kib;
    }
  }
  return { totalKiB: total, guestRamKiB: guest, vmmKiB: total - guest };
}

/** A predicate for mappings inside any of `ranges`. */
export function withinRanges(ranges: readonly { start: bigint; size: number }[]) {
  return (start: bigint, end: bigint) => ranges.some((r) => start >= r.start && end <= r.start + BigInt(r.size));
}

/** QEMU: its guest RAM is the one anonymous mapping at least `ramBytes` long. */
export function qemuGuestRam(ramBytes: number) {
  return (start: bigint, end: bigint) => end - start >= BigInt(ramBytes);
}
