// The CPU state for the 64-bit boot protocol: a flat GDT (__BOOT_CS 0x10, __BOOT_DS 0x18),
// identity-mapped page tables with 2 MiB pages, long mode on, rsi → boot_params.
import type { GuestMemory } from "../../virtio/memory.ts";
import type { Regs, Segment, Sregs } from "../kvm.ts";
import { BOOT_STACK, GDT_ADDR, IDENTITY_MAP_GIB, IDT_ADDR, PD_ADDR, PDPT_ADDR, PML4_ADDR } from "../layout.ts";

const CR0_PE = 1n;
const CR0_ET = 1n << 4n;
const CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n;
const EFER_LME = 1n << 8n;
const EFER_LMA = 1n << 10n;
const PAGE_PRESENT_RW = 0x3n;
const PAGE_PS = 0x80n;

/** GDT entries: null, null, 64-bit code (selector 0x10), data (0x18), TSS (0x20). */
export const BOOT_GDT: readonly bigint[] = [
  0n,
  0n,
  gdtEntry(0xa09b, 0, 0xfffff),
  gdtEntry(0xc093, 0, 0xfffff),
  gdtEntry(0x808b, 0, 0xfffff),
];

/** Packs flags (type/S/DPL/P in bits 0-7, AVL/L/DB/G in bits 12-15), base and limit. */
export function gdtEntry(flags: number, base: number, limit: number): bigint {
  const f = BigInt(flags);
  const b = BigInt(base);
  const l = BigInt(limit);
  return (
    ((b & 0xff000000n) << 32n) |
    ((f & 0xf0ffn) << 40n) |
    ((l & 0xf0000n) << 32n) |
    ((b & 0x00ffffffn) << 16n) |
    (l & 0xffffn)
  );
}

/** The kvm_segment KVM wants for a GDT entry (what the CPU would load into the hidden part). */
export function segmentFromGdt(entry: bigint, index: number): Segment {
  const flags = Number((entry >> 40n) & 0xf0ffn);
  const limitRaw = Number(((entry >> 32n) & 0xf0000n) | (entry & 0xffffn));
  const g = (flags >> 15) & 1;
  return {
    base: ((entry >> 32n) & 0xff000000n) | ((entry >> 16n) & 0xffffffn),
    limit: g ? limitRaw * 4096 + 4095 : limitRaw,
    selector: index * 8,
    type: flags & 0xf,
    present: (flags >> 7) & 1,
    dpl: (flags >> 5) & 3,
    db: (flags >> 14) & 1,
    s: (flags >> 4) & 1,
    l: (flags >> 13) & 1,
    g,
    avl: (flags >> 12) & 1,
    unusable: (flags >> 7) & 1 ? 0 : 1,
  };
}

/** Writes the GDT and the identity-map page tables into guest memory. */
export function writeBootTables(mem: GuestMemory): void {
  BOOT_GDT.forEach((e, i) => {
    mem.writeU64(GDT_ADDR + i * 8, e);
  });
  mem.writeU64(IDT_ADDR, 0n);
  mem.write(PML4_ADDR, new Uint8Array(4096));
  mem.write(PDPT_ADDR, new Uint8Array(4096));
  mem.writeU64(PML4_ADDR, BigInt(PDPT_ADDR) | PAGE_PRESENT_RW);
  for (let gib = 0; gib < IDENTITY_MAP_GIB; gib++) {
    const pd = PD_ADDR + gib * 4096;
    mem.writeU64(PDPT_ADDR + gib * 8, BigInt(pd) | PAGE_PRESENT_RW);
    for (let i = 0; i < 512; i++) {
      const phys = (BigInt(gib) << 30n) | (BigInt(i) << 21n);
      mem.writeU64(pd + i * 8, phys | PAGE_PRESENT_RW | PAGE_PS);
    }
  }
}

/** Long mode, paging on, flat segments from BOOT_GDT; everything else as KVM reset it. */
export function longModeSregs(base: Sregs): Sregs {
  const code = segmentFromGdt(BOOT_GDT[2]!, 2);
  const data = segmentFromGdt(BOOT_GDT[3]!, 3);
  const tss = segmentFromGdt(BOOT_GDT[4]!, 4);
  return {
    ...base,
    cs: code,
    ds: data,
    es: data,
    fs: data,
    gs: data,
    ss: data,
    tr: tss,
    gdt: { base: BigInt(GDT_ADDR), limit: BOOT_GDT.length * 8 - 1 },
    idt: { base: BigInt(IDT_ADDR), limit: 7 },
    cr0: CR0_PE | CR0_ET | CR0_PG,
    cr3: BigInt(PML4_ADDR),
    cr4: CR4_PAE,
    efer: EFER_LME | EFER_LMA,
  };
}

/** Registers at the 64-bit entry point: rip = entry, rsi = boot_params, interrupts off. */
export function entryRegs(base: Regs, entry: number, zeroPage: number): Regs {
  const r = { ...base };
  for (const k of Object.keys(r) as (keyof Regs)[]) r[k] = 0n;
  r.rip = BigInt(entry);
  r.rsi = BigInt(zeroPage);
  r.rsp = BigInt(BOOT_STACK);
  r.rbp = BigInt(BOOT_STACK);
  r.rflags = 2n;
  return r;
}
