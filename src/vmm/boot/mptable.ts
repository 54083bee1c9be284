// The Intel MultiProcessor Specification 1.4 table: how a guest without ACPI learns its CPUs,
// the IOAPIC and how ISA IRQs are wired. Placed in the EBDA (Linux scans 0x9fc00 for "_MP_").
import { IOAPIC_ADDR, IOAPIC_PINS, LAPIC_ADDR } from "../layout.ts";

const FLOATING_SIZE = 16;
const HEADER_SIZE = 44;
const CPU_ENTRY = 20;
const SMALL_ENTRY = 8;
const APIC_VERSION = 0x14;
const IOAPIC_VERSION = 0x11;
const CPU_ENABLED = 1;
const CPU_BSP = 2;
const MP_IRQ_INT = 0;
const MP_IRQ_NMI = 1;
const MP_IRQ_EXTINT = 3;
/** Family 6 in the CPU signature; FPU and APIC present in the feature flags. */
const CPU_SIGNATURE = 0x600;
const CPU_FEATURES = (1 << 0) | (1 << 9);

/** The 8-bit sum of all bytes is zero in every checksummed MP structure. */
export function checksum(b: Uint8Array): number {
  let s = 0;
  for (const x of b) s = (s + x) & 0xff;
  return (0x100 - s) & 0xff;
}

export function mpTableSize(cpus: number): number {
  return FLOATING_SIZE + HEADER_SIZE + cpus * CPU_ENTRY + SMALL_ENTRY * (1 + 1 + IOAPIC_PINS + 2);
}

/** The floating pointer followed by the configuration table, for placement at `addr`. */
export function buildMpTable(addr: number, cpus: number): Uint8Array {
  if (cpus < 1 || cpus > 254) throw new Error(`bad vCPU count ${cpus}`);
  const b = new Uint8Array(mpTableSize(cpus));
  const v = new DataView(b.buffer);
  const ascii = (o: number, s: string) => {
    for (let i = 0; i < s.length; i++) b[o + i] = s.charCodeAt(i);
  };
  // Floating pointer structure.
  ascii(0, "_MP_");
  v.setUint32(4, addr + FLOATING_SIZE, true);
  v.setUint8(8, 1); // length in 16-byte units
  v.setUint8(9, 4); // spec revision 1.4
  // Configuration table header; entries follow.
  const h = FLOATING_SIZE;
  ascii(h, "PCMP");
  v.setUint8(h + 6, 4);
  ascii(h + 8, "COVE    ");
  ascii(h + 16, "MICROVM     ");
  v.setUint32(h + 36, LAPIC_ADDR, true);
  let o = h + HEADER_SIZE;
  let count = 0;
  for (let id = 0; id < cpus; id++) {
    v.setUint8(o, 0);
    v.setUint8(o + 1, id);
    v.setUint8(o + 2, APIC_VERSION);
    v.setUint8(o + 3, CPU_ENABLED | (id === 0 ? CPU_BSP : 0));
    v.setUint32(o + 4, CPU_SIGNATURE, true);
    v.setUint32(o + 8, CPU_FEATURES, true);
    o += CPU_ENTRY;
    count++;
  }
  // One ISA bus.
  v.setUint8(o, 1);
  v.setUint8(o + 1, 0);
  ascii(o + 2, "ISA   ");
  o += SMALL_ENTRY;
  count++;
  // The IOAPIC, with the first APIC id after the CPUs'.
  const ioapicId = cpus;
  v.setUint8(o, 2);
  v.setUint8(o + 1, ioapicId);
  v.setUint8(o + 2, IOAPIC_VERSION);
  v.setUint8(o + 3, 1); // enabled
  v.setUint32(o + 4, IOAPIC_ADDR, true);
  o += SMALL_ENTRY;
  count++;
  // ISA IRQ n → IOAPIC pin n, bus-default polarity and trigger (edge, active high).
  for (let pin = 0; pin < IOAPIC_PINS; pin++) {
    v.setUint8(o, 3);
    v.setUint8(o + 1, MP_IRQ_INT);
    v.setUint16(o + 2, 0, true);
    v.setUint8(o + 4, 0); // source bus
    v.setUint8(o + 5, pin);
    v.setUint8(o + 6, ioapicId);
    v.setUint8(o + 7, pin);
    o += SMALL_ENTRY;
    count++;
  }
  // Local interrupts: ExtINT on LINT0, NMI on LINT1 of every local APIC.
  for (const [type, lint] of [
    [MP_IRQ_EXTINT, 0],
    [MP_IRQ_NMI, 1],
  ] as const) {
    v.setUint8(o, 4);
    v.setUint8(o + 1, type);
    v.setUint16(o + 2, 0, true);
    v.setUint8(o + 4, 0);
    v.setUint8(o + 5, 0);
    v.setUint8(o + 6, 0xff);
    v.setUint8(o + 7, lint);
    o += SMALL_ENTRY;
    count++;
  }
  v.setUint16(h + 4, o - h, true); // base table length
  v.setUint16(h + 34, count, true);
  v.setUint8(h + 7, checksum(b.subarray(h, o)));
  v.setUint8(10, checksum(b.subarray(0, FLOATING_SIZE)));
  return b;
}
