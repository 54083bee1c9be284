// CPUID/XCR0 consistency of the vCPU setup: leaf 0xD.0 EBX (XSAVE area size) must match the
// XCR0 the guest runs with, or Linux warns "XSAVE consistency problem: size 832 != kernel_size 576".
// The table is KVM_GET_SUPPORTED_CPUID from the nested test host (QEMU TCG `-cpu max`, KVM 6.1).
import assert from "node:assert/strict";
import { test } from "node:test";
import { bootXcr0, vcpuCpuid, xsaveSize } from "../../../src/vmm/cpu.ts";
import type { CpuidEntry } from "../../../src/vmm/kvm.ts";

const e = (fn: number, index: number, eax: number, ebx: number, ecx: number, edx: number): CpuidEntry => ({
  function: fn,
  index,
  flags: fn === 0xd || fn === 7 ? 1 : 0,
  eax,
  ebx,
  ecx,
  edx,
});

// Leaf 0xD.0 EAX 0x207: x87, SSE, AVX, PKRU offered; leaf 7 ECX lacks PKU, so PKRU stays off.
const nestedHost: CpuidEntry[] = [
  e(1, 0, 0x60fb1, 0x800, 0x76f83203, 0xf8bfbfd),
  e(7, 0, 0, 0x19803ab, 0x10204, 0x20000000),
  e(0xd, 0, 0x207, 0xa88, 0xa88, 0),
  e(0xd, 1, 0x5, 0, 0, 0),
  e(0xd, 2, 0x100, 0x240, 0, 0),
  e(0xd, 9, 0x8, 0xa80, 0, 0),
];
const with_ = (t: CpuidEntry[], fn: number, patch: Partial<CpuidEntry>) =>
  t.map((x) => (x.function === fn && x.index === 0 ? { ...x, ...patch } : x));

test("the boot XCR0 enables x87, SSE and AVX, not PKRU without the PKU feature", () => {
  assert.equal(bootXcr0(nestedHost), 0x7n);
  assert.equal(bootXcr0(with_(nestedHost, 7, { ecx: 0x10204 | (1 << 3) })), 0x207n);
});

test("without AVX only x87/SSE; without XSAVE no XCR0 at all", () => {
  assert.equal(bootXcr0(with_(nestedHost, 1, { ecx: 0x76f83203 & ~(1 << 28) })), 0x3n);
  assert.equal(bootXcr0(with_(nestedHost, 1, { ecx: 0x76f83203 & ~(1 << 26) })), 0n);
});

test("AVX-512 is all three components or none", () => {
  const t = [
    ...with_(with_(nestedHost, 7, { ebx: 0x19803ab | (1 << 16) }), 0xd, { eax: 0xe7 }),
    e(0xd, 5, 0x40, 0x440, 0, 0),
    e(0xd, 6, 0x200, 0x480, 0, 0),
    e(0xd, 7, 0x400, 0x680, 0, 0),
  ];
  assert.equal(bootXcr0(t), 0xe7n);
  assert.equal(xsaveSize(t, 0xe7n), 0x680 + 0x400);
  assert.equal(bootXcr0(with_(t, 0xd, { eax: 0x67 })), 0x7n, "a partial AVX-512 offer is dropped");
});

test("xsaveSize follows the component offsets: 576 for x87/SSE, 832 with AVX", () => {
  assert.equal(xsaveSize(nestedHost, 0x3n), 576);
  assert.equal(xsaveSize(nestedHost, 0x7n), 832);
  assert.equal(xsaveSize(nestedHost, 0x207n), 0xa88);
});

test("every vCPU's table says the XSAVE size of the boot XCR0 in leaf 0xD.0 EBX", () => {
  for (const id of [0, 1]) {
    const t = vcpuCpuid(nestedHost, id, 2);
    const d0 = t.find((x) => x.function === 0xd && x.index === 0)!;
    assert.equal(d0.ebx, 832, "what the guest computes for XCR0 = 0x7");
    assert.equal(d0.ebx, xsaveSize(t, bootXcr0(t)));
    assert.equal(d0.ecx, 0xa88, "the maximum for every offered component is untouched");
    assert.equal(d0.eax, 0x207);
  }
  // The input is not modified.
  assert.equal(nestedHost.find((x) => x.function === 0xd && x.index === 0)!.ebx, 0xa88);
});
