// Per-vCPU CPU setup before the first entry: CPUID (what KVM supports, with the topology and the
// hypervisor bit filled in for this vCPU), XCR0 consistent with the XSAVE size leaf, the boot
// MSRs, the FPU, and the local APIC's LINT pins wired as the MP table says (ExtINT on LINT0, NMI
// on LINT1).
import { kvmConstants, kvmIoctl } from "../native/kvm.ts";
import type { CpuidEntry, Vcpu } from "./kvm.ts";

const CPUID_HYPERVISOR = 1 << 31; // leaf 1 ECX
const CPUID_TSC_DEADLINE = 1 << 24; // leaf 1 ECX

const CPUID_XSAVE = 1 << 26; // leaf 1 ECX
const CPUID_AVX = 1 << 28; // leaf 1 ECX
const CPUID_AVX512F = 1 << 16; // leaf 7 EBX
const CPUID_PKU = 1 << 3; // leaf 7 ECX
const XFEATURE_FP_SSE = 0x3n;
const XFEATURE_YMM = 0x4n;
const XFEATURE_AVX512 = 0xe0n; // opmask, ZMM_Hi256, Hi16_ZMM: all or none
const XFEATURE_PKRU = 0x200n;
/** Legacy region (512) + XSAVE header (64): where the extended components start. */
const XSAVE_LEGACY_AND_HEADER = 576;

const leaf = (t: readonly CpuidEntry[], fn: number, index = 0) => t.find((e) => e.function === fn && e.index === index);

/**
 * The XCR0 a booting Linux enables for this CPUID table: the user state components the table
 * offers (leaf 0xD.0 EDX:EAX) whose CPU features are also advertised — x87/SSE always, AVX,
 * AVX-512 and PKRU only with their feature bits. 0n without XSAVE.
 */
export function bootXcr0(table: readonly CpuidEntry[]): bigint {
  const l1 = leaf(table, 1);
  const d0 = leaf(table, 0xd, 0);
  if (!l1 || !d0 || !(l1.ecx & CPUID_XSAVE)) return 0n;
  const offered = (BigInt(d0.edx >>> 0) << 32n) | BigInt(d0.eax >>> 0);
  const l7 = leaf(table, 7);
  let want = XFEATURE_FP_SSE;
  if (l1.ecx & CPUID_AVX) want |= XFEATURE_YMM;
  if (l7 && l7.ebx & CPUID_AVX512F && (want & XFEATURE_YMM) !== 0n) want |= XFEATURE_AVX512;
  if (l7 && l7.ecx & CPUID_PKU) want |= XFEATURE_PKRU;
  let xcr0 = want & offered;
  if ((xcr0 & XFEATURE_AVX512) !== XFEATURE_AVX512) xcr0 &= ~XFEATURE_AVX512;
  return xcr0 | 1n; // x87 can never be off
}

/**
 * The standard (uncompacted) XSAVE area size for `xcr0`, from the table's per-component
 * offset/size sub-leaves (0xD.i: EAX size, EBX offset) — what leaf 0xD.0 EBX must say.
 */
export function xsaveSize(table: readonly CpuidEntry[], xcr0: bigint): number {
  let size = XSAVE_LEGACY_AND_HEADER;
  for (let i = 2; i < 64; i++) {
    if (((xcr0 >> BigInt(i)) & 1n) === 0n) continue;
    const c = leaf(table, 0xd, i);
    if (c && c.eax > 0) size = Math.max(size, c.ebx + c.eax);
  }
  return size;
}

/** The CPUID table for vCPU `id` of `count`, from KVM_GET_SUPPORTED_CPUID. */
export function vcpuCpuid(supported: readonly CpuidEntry[], id: number, count: number): CpuidEntry[] {
  const xcr0 = bootXcr0(supported);
  return supported.map((e0) => {
    const e = { ...e0 };
    switch (e.function) {
      case 1:
        // Initial APIC id in EBX[31:24], logical processor count in EBX[23:16], CLFLUSH size 8.
        e.ebx = ((id & 0xff) << 24) | ((count & 0xff) << 16) | (8 << 8) | (e.ebx & 0xff);
        e.ecx |= CPUID_HYPERVISOR;
        // The in-kernel LAPIC emulates the TSC deadline timer even when the host reports it off.
        e.ecx |= CPUID_TSC_DEADLINE;
        if (count > 1) e.edx |= 1 << 28; // HTT: the count in EBX is valid
        break;
      case 0xb:
      case 0x1f:
        // Extended topology: x2APIC id in EDX; one thread per core, `count` cores.
        e.edx = id;
        if (e.index === 0) {
          e.eax = 0;
          e.ebx = 1;
          e.ecx = (1 << 8) | 0;
        } else if (e.index === 1) {
          e.eax = 32 - Math.clz32(Math.max(count - 1, 0));
          e.ebx = count;
          e.ecx = (2 << 8) | 1;
        } else {
          e.eax = 0;
          e.ebx = 0;
          e.ecx = e.index;
        }
        break;
      case 0xd:
        // Size of the XSAVE area for the XCR0 the guest will run with (see setupVcpu); KVM also
        // recomputes it from its own view of XCR0 at KVM_SET_CPUID2/KVM_SET_XCRS.
        if (e.index === 0 && xcr0 !== 0n) e.ebx = xsaveSize(supported, xcr0);
        break;
      default:
        break;
    }
    return e;
  });
}

const MSR_IA32_SYSENTER_CS = 0x174;
const MSR_IA32_SYSENTER_ESP = 0x175;
const MSR_IA32_SYSENTER_EIP = 0x176;
const MSR_STAR = 0xc0000081;
const MSR_LSTAR = 0xc0000082;
const MSR_CSTAR = 0xc0000083;
const MSR_SYSCALL_MASK = 0xc0000084;
const MSR_KERNEL_GS_BASE = 0xc0000102;
const MSR_IA32_TSC = 0x10;
const MSR_IA32_MISC_ENABLE = 0x1a0;
const MSR_MTRR_DEF_TYPE = 0x2ff;
const MISC_ENABLE_FAST_STRING = 1n;
const MTRR_ENABLE_WRITEBACK = (1n << 11n) | 6n;

/** The MSRs a booting Linux expects in a sane state (as Firecracker sets them). */
export function bootMsrs(): { index: number; data: bigint }[] {
  return [
    { index: MSR_IA32_SYSENTER_CS, data: 0n },
    { index: MSR_IA32_SYSENTER_ESP, data: 0n },
    { index: MSR_IA32_SYSENTER_EIP, data: 0n },
    { index: MSR_STAR, data: 0n },
    { index: MSR_CSTAR, data: 0n },
    { index: MSR_KERNEL_GS_BASE, data: 0n },
    { index: MSR_SYSCALL_MASK, data: 0n },
    { index: MSR_LSTAR, data: 0n },
    { index: MSR_IA32_TSC, data: 0n },
    { index: MSR_IA32_MISC_ENABLE, data: MISC_ENABLE_FAST_STRING },
    { index: MSR_MTRR_DEF_TYPE, data: MTRR_ENABLE_WRITEBACK },
  ];
}

const APIC_LVT0 = 0x350;
const APIC_LVT1 = 0x360;
const APIC_MODE_NMI = 4;
const APIC_MODE_EXTINT = 7;
const LAPIC_STATE_SIZE = 1024;

/** Sets the delivery mode (bits 8-10) of an LVT register value. */
export function lvtWithMode(value: number, mode: number): number {
  return ((value & ~0x700) | (mode << 8)) >>> 0;
}

/** LINT0 = ExtINT (the PIC), LINT1 = NMI, as the MP table's local interrupt entries declare. */
export function setupLint(vcpu: Vcpu): void {
  const c = kvmConstants();
  const b = new Uint8Array(LAPIC_STATE_SIZE);
  kvmIoctl(vcpu.fd, c.KVM_GET_LAPIC!, b);
  const v = new DataView(b.buffer);
  v.setUint32(APIC_LVT0, lvtWithMode(v.getUint32(APIC_LVT0, true), APIC_MODE_EXTINT), true);
  v.setUint32(APIC_LVT1, lvtWithMode(v.getUint32(APIC_LVT1, true), APIC_MODE_NMI), true);
  kvmIoctl(vcpu.fd, c.KVM_SET_LAPIC!, b);
}

/** Everything per vCPU except registers: CPUID, MSRs, FPU, LINT pins. */
export function setupVcpu(vcpu: Vcpu, supported: readonly CpuidEntry[], count: number): void {
  const table = vcpuCpuid(supported, vcpu.id, count);
  vcpu.setCpuid(table);
  // KVM derives leaf 0xD.0 EBX (the XSAVE area size) from its own copy of XCR0 and updates it when
  // the guest's XSETBV exits to it. Under nested virtualization that does not intercept XSETBV
  // (QEMU TCG's SVM: the nested test host) it never sees the guest's write, keeps XCR0 = x87 and
  // reports 576 bytes while the guest enabled AVX (832): Linux warns "XSAVE consistency problem"
  // and KVM reloads its stale XCR0 on every entry. Setting the XCR0 Linux will choose up front keeps
  // size, XCR0 and the guest's view in agreement; where XSETBV does exit, the guest's write wins.
  const xcr0 = bootXcr0(table);
  if (xcr0 !== 0n) vcpu.setXcr0(xcr0);
  const msrs = bootMsrs();
  const n = vcpu.setMsrs(msrs);
  if (n !== msrs.length) {
    throw new Error(`KVM refused MSR 0x${msrs[n]?.index.toString(16)} (set ${n} of ${msrs.length})`);
  }
  vcpu.setFpuDefaults();
  setupLint(vcpu);
}
