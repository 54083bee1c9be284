// The struct layouts src/vmm/kvm.ts writes by hand must match what the C compiler sees in
// <linux/kvm.h> (the addon reports sizes and offsets); encoders must round-trip.
import assert from "node:assert/strict";
import { test } from "node:test";
import { kvmConstants } from "../../../src/native/kvm.ts";
import {
  decodeCpuid,
  decodeRegs,
  decodeSregs,
  encodeCpuid,
  encodeGsiRouting,
  encodeMsrs,
  encodeRegs,
  encodeSregs,
  REGS_SIZE,
  SREGS_SIZE,
} from "../../../src/vmm/kvm.ts";

const c = kvmConstants();

test("struct sizes and offsets match <linux/kvm.h>", () => {
  assert.equal(c["sizeof(struct kvm_regs)"], REGS_SIZE);
  assert.equal(c["sizeof(struct kvm_sregs)"], SREGS_SIZE);
  assert.equal(c["offsetof(struct kvm_sregs, gdt)"], 192);
  assert.equal(c["offsetof(struct kvm_sregs, idt)"], 208);
  assert.equal(c["offsetof(struct kvm_sregs, cr0)"], 224);
  assert.equal(c["offsetof(struct kvm_sregs, efer)"], 264);
  assert.equal(c["offsetof(struct kvm_run, exit_reason)"], 8);
  assert.equal(c["offsetof(struct kvm_run, immediate_exit)"], 1);
  assert.equal(c["offsetof(struct kvm_run, io)"], 32);
  assert.equal(c["offsetof(struct kvm_run, mmio)"], 32);
  assert.equal(c["sizeof(struct kvm_userspace_memory_region)"], 32);
  assert.equal(c["sizeof(struct kvm_irqfd)"], 32);
  assert.equal(c["sizeof(struct kvm_ioeventfd)"], 64);
  assert.equal(c["sizeof(struct kvm_msi)"], 32);
  assert.equal(c["sizeof(struct kvm_irq_routing_entry)"], 48);
  assert.equal(c["sizeof(struct kvm_cpuid_entry2)"], 40);
  assert.equal(c["sizeof(struct kvm_msr_entry)"], 16);
  assert.equal(c["sizeof(struct kvm_pit_config)"], 64);
});

test("regs round-trip", () => {
  const b = new Uint8Array(REGS_SIZE).map((_, i) => (i * 7 + 3) & 0xff);
  assert.deepEqual(encodeRegs(decodeRegs(b)), b);
  const r = decodeRegs(new Uint8Array(REGS_SIZE));
  r.rip = 0x1000000n;
  r.rsi = 0x7000n;
  const e = new DataView(encodeRegs(r).buffer);
  assert.equal(e.getBigUint64(16 * 8, true), 0x1000000n, "rip is the 17th register");
  assert.equal(e.getBigUint64(4 * 8, true), 0x7000n, "rsi is the 5th register");
});

test("sregs round-trip, fields land where KVM reads them", () => {
  const b = new Uint8Array(SREGS_SIZE).map((_, i) => (i * 13 + 1) & 0xff);
  // Padding bytes are written as zero: clear them in the sample (segment byte 23, dtable 10..15).
  for (let s = 0; s < 8; s++) b[s * 24 + 23] = 0;
  for (const d of [192, 208]) b.fill(0, d + 10, d + 16);
  assert.deepEqual(encodeSregs(decodeSregs(b)), b);
  const s = decodeSregs(new Uint8Array(SREGS_SIZE));
  s.cs.selector = 0x10;
  s.cs.l = 1;
  s.efer = 0x500n;
  s.cr3 = 0x9000n;
  const v = new DataView(encodeSregs(s).buffer);
  assert.equal(v.getUint16(12, true), 0x10);
  assert.equal(v.getUint8(19), 1);
  assert.equal(v.getBigUint64(264, true), 0x500n);
  assert.equal(v.getBigUint64(240, true), 0x9000n);
});

test("cpuid, msrs and GSI routing encodings", () => {
  const entries = [{ function: 1, index: 0, flags: 0, eax: 1, ebx: 2, ecx: 3, edx: 4 }];
  assert.deepEqual(decodeCpuid(encodeCpuid(entries)), entries);
  const m = new DataView(encodeMsrs([{ index: 0x174, data: 0x10n }]).buffer);
  assert.equal(m.getUint32(0, true), 1);
  assert.equal(m.getUint32(8, true), 0x174);
  assert.equal(m.getBigUint64(16, true), 0x10n);
  const g = new DataView(
    encodeGsiRouting([
      { kind: "msi", gsi: 24, addressLo: 0xfee00000, addressHi: 0, data: 0x41 },
      { kind: "irqchip", gsi: 5, irqchip: 2, pin: 5 },
    ]).buffer,
  );
  assert.equal(g.getUint32(0, true), 2);
  assert.equal(g.getUint32(8, true), 24);
  assert.equal(g.getUint32(12, true), 2, "type MSI");
  assert.equal(g.getUint32(24, true), 0xfee00000);
  assert.equal(g.getUint32(32, true), 0x41);
  assert.equal(g.getUint32(56 + 4, true), 1, "type IRQCHIP");
  assert.equal(g.getUint32(56 + 16, true), 2);
});

test("KVM_GET_STATS_FD is _IO(KVMIO, 0xce)", async () => {
  const { KVM_GET_STATS_FD } = await import("../../../src/vmm/stats.ts");
  assert.equal(KVM_GET_STATS_FD, (0xae << 8) | 0xce);
});
