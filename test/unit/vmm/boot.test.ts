// The boot structures, checked byte by byte against the Linux x86 boot protocol and the MP spec.
// No KVM needed.
import assert from "node:assert/strict";
import { test } from "node:test";
import { GuestMemory } from "../../../src/virtio/memory.ts";
import { BootError, parseBzImage } from "../../../src/vmm/boot/bzimage.ts";
import { BOOT_GDT, entryRegs, longModeSregs, segmentFromGdt, writeBootTables } from "../../../src/vmm/boot/longmode.ts";
import { buildMpTable, checksum, mpTableSize } from "../../../src/vmm/boot/mptable.ts";
import { buildZeroPage, E820_RAM, E820_RESERVED, e820Map } from "../../../src/vmm/boot/zeropage.ts";
import { decodeRegs, decodeSregs, REGS_SIZE, SREGS_SIZE } from "../../../src/vmm/kvm.ts";
import {
  EBDA_START,
  GDT_ADDR,
  GiB,
  HIMEM_START,
  IOAPIC_ADDR,
  IOAPIC_PINS,
  LAPIC_ADDR,
  MiB,
  PD_ADDR,
  PDPT_ADDR,
  PML4_ADDR,
  ramRanges,
} from "../../../src/vmm/layout.ts";

/** A minimal bzImage: 4 setup sectors + boot sector, a header, then `payload`. */
function fakeBzImage(opts: { protocol?: number; xload?: number; payload?: number[] } = {}): Uint8Array {
  const setupSects = 4;
  const payload = opts.payload ?? [0xde, 0xad, 0xbe, 0xef];
  const b = new Uint8Array((setupSects + 1) * 512 + payload.length);
  const v = new DataView(b.buffer);
  v.setUint8(0x1f1, setupSects);
  v.setUint16(0x1fe, 0xaa55, true);
  v.setUint8(0x200, 0xeb); // jmp short
  v.setUint8(0x201, 0x6a); // header ends at 0x26c
  v.setUint32(0x202, 0x53726448, true);
  v.setUint16(0x206, opts.protocol ?? 0x20f, true);
  v.setUint8(0x211, 0x01); // LOADED_HIGH
  v.setUint32(0x214, 0x100000, true);
  v.setUint32(0x230, 0x200000, true);
  v.setUint8(0x234, 1);
  v.setUint16(0x236, opts.xload ?? 0x7f, true);
  v.setUint32(0x238, 2047, true);
  v.setBigUint64(0x258, 0x1000000n, true);
  v.setUint32(0x260, 0x1234000, true);
  b.set(payload, (setupSects + 1) * 512);
  return b;
}

test("bzImage: header fields and the protected-mode kernel are found", () => {
  const img = parseBzImage(fakeBzImage({ payload: [1, 2, 3] }));
  assert.equal(img.protocol, 0x20f);
  assert.deepEqual([...img.kernel], [1, 2, 3]);
  assert.equal(img.setupHeader.length, 0x26c - 0x1f1);
  assert.equal(img.initSize, 0x1234000);
  assert.equal(img.cmdlineSize, 2047);
  assert.equal(img.prefAddress, 0x1000000n);
  assert.equal(img.relocatable, true);
});

test("bzImage: refuses what cannot boot in 64-bit mode", () => {
  assert.throws(() => parseBzImage(new Uint8Array(100)), BootError);
  assert.throws(() => parseBzImage(new Uint8Array(4096)), /0xAA55/);
  assert.throws(() => parseBzImage(fakeBzImage({ protocol: 0x20b })), /too old/);
  assert.throws(() => parseBzImage(fakeBzImage({ xload: 0 })), /64-bit entry/);
});

test("e820: base RAM, the EBDA reserved, RAM from 1 MiB, and the part above 3 GiB at 4 GiB", () => {
  assert.deepEqual(e820Map(ramRanges(512 * MiB)), [
    { addr: 0, size: EBDA_START, type: E820_RAM },
    { addr: EBDA_START, size: 0x400, type: E820_RESERVED },
    { addr: HIMEM_START, size: 512 * MiB - HIMEM_START, type: E820_RAM },
  ]);
  const big = e820Map(ramRanges(5 * GiB));
  assert.deepEqual(big.slice(2), [
    { addr: HIMEM_START, size: 3 * GiB - HIMEM_START, type: E820_RAM },
    { addr: 4 * GiB, size: 2 * GiB, type: E820_RAM },
  ]);
  assert.throws(() => ramRanges(16 * MiB), /too small/);
});

test("zero page: setup header copied, loader fields, command line pointer, e820 table", () => {
  const image = parseBzImage(fakeBzImage());
  const e820 = e820Map(ramRanges(256 * MiB));
  const zp = buildZeroPage({ image, cmdlineAddr: 0x20000, cmdlineLength: 20, e820 });
  const v = new DataView(zp.buffer);
  assert.equal(zp.length, 4096);
  assert.equal(v.getUint32(0x202, true), 0x53726448, "HdrS kept");
  assert.equal(v.getUint16(0x1fe, true), 0xaa55);
  assert.equal(v.getUint8(0x210), 0xff, "type_of_loader");
  assert.equal(v.getUint8(0x211) & 0x80, 0x80, "CAN_USE_HEAP");
  assert.equal(v.getUint8(0x211) & 0x01, 0x01, "LOADED_HIGH kept");
  assert.equal(v.getUint32(0x228, true), 0x20000, "cmd_line_ptr");
  assert.equal(v.getUint32(0x0c8, true), 0, "ext_cmd_line_ptr");
  assert.equal(v.getUint8(0x1e8), 3, "e820_entries");
  assert.equal(v.getBigUint64(0x2d0 + 2 * 20, true), BigInt(HIMEM_START));
  assert.equal(v.getBigUint64(0x2d0 + 2 * 20 + 8, true), BigInt(256 * MiB - HIMEM_START));
  assert.equal(v.getUint32(0x2d0 + 20 + 16, true), E820_RESERVED);
  assert.throws(
    () => buildZeroPage({ image, cmdlineAddr: 0x20000, cmdlineLength: 5000, e820 }),
    /command line is 5000 bytes/,
  );
});

test("MP table: signatures, checksums, CPUs, IOAPIC and one interrupt entry per pin", () => {
  for (const cpus of [1, 2, 32]) {
    const t = buildMpTable(EBDA_START, cpus);
    assert.equal(t.length, mpTableSize(cpus));
    assert.ok(t.length <= 0x400, "fits in the EBDA");
    const v = new DataView(t.buffer);
    assert.equal(Buffer.from(t.subarray(0, 4)).toString(), "_MP_");
    assert.equal(checksum(t.subarray(0, 16)), 0, "floating pointer sums to zero");
    assert.equal(v.getUint32(4, true), EBDA_START + 16, "physptr → config table");
    const len = v.getUint16(16 + 4, true);
    assert.equal(Buffer.from(t.subarray(16, 20)).toString(), "PCMP");
    assert.equal(checksum(t.subarray(16, 16 + len)), 0, "config table sums to zero");
    assert.equal(v.getUint32(16 + 36, true), LAPIC_ADDR);
    const count = v.getUint16(16 + 34, true);
    assert.equal(count, cpus + 1 + 1 + IOAPIC_PINS + 2);
    // Walk the entries by type and check each kind.
    let o = 16 + 44;
    const seen = new Map<number, number>();
    for (let i = 0; i < count; i++) {
      const type = v.getUint8(o);
      seen.set(type, (seen.get(type) ?? 0) + 1);
      if (type === 0) {
        assert.equal(v.getUint8(o + 1), (seen.get(0) ?? 0) - 1, "APIC ids in order");
        assert.equal(v.getUint8(o + 3) & 2, seen.get(0) === 1 ? 2 : 0, "only CPU 0 is the BSP");
      }
      if (type === 2) {
        assert.equal(v.getUint8(o + 1), cpus, "IOAPIC id after the CPUs");
        assert.equal(v.getUint32(o + 4, true), IOAPIC_ADDR);
      }
      o += type === 0 ? 20 : 8;
    }
    assert.equal(o, 16 + len);
    assert.deepEqual([...seen.entries()].sort(), [
      [0, cpus],
      [1, 1],
      [2, 1],
      [3, IOAPIC_PINS],
      [4, 2],
    ]);
  }
});

test("page tables identity-map the first 4 GiB with 2 MiB pages; GDT as the boot protocol wants", () => {
  const mem = GuestMemory.alloc(1 * MiB);
  writeBootTables(mem);
  assert.equal(mem.readU64(PML4_ADDR), BigInt(PDPT_ADDR) | 3n);
  for (let gib = 0; gib < 4; gib++) {
    const pd = PD_ADDR + gib * 4096;
    assert.equal(mem.readU64(PDPT_ADDR + gib * 8), BigInt(pd) | 3n);
    // Translate a few addresses through the tables.
    for (const i of [0, 1, 255, 511]) {
      const e = mem.readU64(pd + i * 8);
      assert.equal(e & 0x83n, 0x83n, "present, writable, 2 MiB");
      assert.equal(e & ~0xfffn, (BigInt(gib) << 30n) | (BigInt(i) << 21n));
    }
  }
  assert.equal(mem.readU64(PDPT_ADDR + 4 * 8), 0n, "nothing above 4 GiB");
  assert.equal(mem.readU64(GDT_ADDR + 0x10), 0x00af9b000000ffffn, "__BOOT_CS: 64-bit code");
  assert.equal(mem.readU64(GDT_ADDR + 0x18), 0x00cf93000000ffffn, "__BOOT_DS: flat data");
});

test("long-mode registers: CS 0x10 64-bit, DS 0x18, paging and LME/LMA on, rsi → zero page", () => {
  const s = longModeSregs(decodeSregs(new Uint8Array(SREGS_SIZE)));
  assert.equal(s.cs.selector, 0x10);
  assert.equal(s.cs.l, 1);
  assert.equal(s.cs.db, 0);
  assert.equal(s.cs.present, 1);
  assert.equal(s.ds.selector, 0x18);
  assert.equal(s.ds.limit, 0xffffffff);
  assert.equal(s.ss.db, 1);
  assert.equal(s.cr0 & 0x80000001n, 0x80000001n);
  assert.equal(s.cr4 & 0x20n, 0x20n);
  assert.equal(s.efer, 0x500n);
  assert.equal(s.cr3, BigInt(PML4_ADDR));
  assert.equal(s.gdt.limit, BOOT_GDT.length * 8 - 1);
  const seg = segmentFromGdt(BOOT_GDT[2]!, 2);
  assert.equal(seg.type, 0xb);
  const r = entryRegs(decodeRegs(new Uint8Array(REGS_SIZE)), 0x100200, 0x7000);
  assert.equal(r.rip, 0x100200n);
  assert.equal(r.rsi, 0x7000n);
  assert.equal(r.rflags, 2n);
});
