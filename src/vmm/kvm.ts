// The KVM API as objects: the system fd, a VM, its vCPUs. Every struct is laid out here with a
// DataView (offsets from <linux/kvm.h>, checked against the C compiler's in test/unit/vmm); the
// native addon only performs the ioctl. Nothing here knows about Linux boot or devices.
import { closeSync } from "node:fs";
import { kvmConstants, kvmIoctl, kvmOpen, mapFd, unmap } from "../native/kvm.ts";

/** KVM_CAP_* numbers used by the VMM (stable ABI). */
export const Cap = {
  IRQCHIP: 0,
  USER_MEMORY: 3,
  SET_TSS_ADDR: 4,
  EXT_CPUID: 7,
  NR_VCPUS: 9,
  PIT2: 33,
  IOEVENTFD: 36,
  IRQFD: 32,
  SET_IDENTITY_MAP_ADDR: 37,
  IRQ_ROUTING: 25,
  SIGNAL_MSI: 77,
  IMMEDIATE_EXIT: 136,
  IOEVENTFD_NO_LENGTH: 100,
  MAX_VCPUS: 66,
} as const;

/** KVM_EXIT_* reasons (stable ABI). */
export const Exit = {
  UNKNOWN: 0,
  EXCEPTION: 1,
  IO: 2,
  HYPERCALL: 3,
  DEBUG: 4,
  HLT: 5,
  MMIO: 6,
  IRQ_WINDOW_OPEN: 7,
  SHUTDOWN: 8,
  FAIL_ENTRY: 9,
  INTR: 10,
  INTERNAL_ERROR: 17,
  SYSTEM_EVENT: 24,
} as const;

export const IOEVENTFD_FLAG_DATAMATCH = 1 << 0;
export const IOEVENTFD_FLAG_PIO = 1 << 1;
export const IOEVENTFD_FLAG_DEASSIGN = 1 << 2;
export const IRQFD_FLAG_DEASSIGN = 1 << 0;
export const IRQ_ROUTING_IRQCHIP = 1;
export const IRQ_ROUTING_MSI = 2;

/** The numbers the C compiler saw; throws if this build's addon lacks one. */
function k(name: string): number {
  const v = kvmConstants()[name];
  if (v === undefined) throw new Error(`KVM constant ${name} missing from the native addon`);
  return v;
}

export interface Regs {
  rax: bigint;
  rbx: bigint;
  rcx: bigint;
  rdx: bigint;
  rsi: bigint;
  rdi: bigint;
  rsp: bigint;
  rbp: bigint;
  r8: bigint;
  r9: bigint;
  r10: bigint;
  r11: bigint;
  r12: bigint;
  r13: bigint;
  r14: bigint;
  r15: bigint;
  rip: bigint;
  rflags: bigint;
}
export const REG_NAMES: readonly (keyof Regs)[] = [
  "rax",
  "rbx",
  "rcx",
  "rdx",
  "rsi",
  "rdi",
  "rsp",
  "rbp",
  "r8",
  "r9",
  "r10",
  "r11",
  "r12",
  "r13",
  "r14",
  "r15",
  "rip",
  "rflags",
];
export const REGS_SIZE = 144;

export interface Segment {
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
}
export interface DTable {
  base: bigint;
  limit: number;
}
export interface Sregs {
  cs: Segment;
  ds: Segment;
  es: Segment;
  fs: Segment;
  gs: Segment;
  ss: Segment;
  tr: Segment;
  ldt: Segment;
  gdt: DTable;
  idt: DTable;
  cr0: bigint;
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  cr8: bigint;
  efer: bigint;
  apicBase: bigint;
  /** The raw interrupt_bitmap (4 × u64), carried through unchanged. */
  interruptBitmap: Uint8Array;
}
export const SREGS_SIZE = 312;
const SEG_NAMES = ["cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"] as const;

export function decodeRegs(b: Uint8Array): Regs {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const r = {} as Regs;
  REG_NAMES.forEach((n, i) => {
    r[n] = v.getBigUint64(i * 8, true);
  });
  return r;
}
export function encodeRegs(r: Regs): Uint8Array {
  const b = new Uint8Array(REGS_SIZE);
  const v = new DataView(b.buffer);
  REG_NAMES.forEach((n, i) => {
    v.setBigUint64(i * 8, BigInt.asUintN(64, r[n]), true);
  });
  return b;
}

function readSeg(v: DataView, o: number): Segment {
  return {
    base: v.getBigUint64(o, true),
    limit: v.getUint32(o + 8, true),
    selector: v.getUint16(o + 12, true),
    type: v.getUint8(o + 14),
    present: v.getUint8(o + 15),
    dpl: v.getUint8(o + 16),
    db: v.getUint8(o + 17),
    s: v.getUint8(o + 18),
    l: v.getUint8(o + 19),
    g: v.getUint8(o + 20),
    avl: v.getUint8(o + 21),
    unusable: v.getUint8(o + 22),
  };
}
function writeSeg(v: DataView, o: number, s: Segment): void {
  v.setBigUint64(o, s.base, true);
  v.setUint32(o + 8, s.limit >>> 0, true);
  v.setUint16(o + 12, s.selector, true);
  v.setUint8(o + 14, s.type);
  v.setUint8(o + 15, s.present);
  v.setUint8(o + 16, s.dpl);
  v.setUint8(o + 17, s.db);
  v.setUint8(o + 18, s.s);
  v.setUint8(o + 19, s.l);
  v.setUint8(o + 20, s.g);
  v.setUint8(o + 21, s.avl);
  v.setUint8(o + 22, s.unusable);
  v.setUint8(o + 23, 0);
}

export function decodeSregs(b: Uint8Array): Sregs {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const s = {} as Sregs;
  SEG_NAMES.forEach((n, i) => {
    s[n] = readSeg(v, i * 24);
  });
  s.gdt = { base: v.getBigUint64(192, true), limit: v.getUint16(200, true) };
  s.idt = { base: v.getBigUint64(208, true), limit: v.getUint16(216, true) };
  s.cr0 = v.getBigUint64(224, true);
  s.cr2 = v.getBigUint64(232, true);
  s.cr3 = v.getBigUint64(240, true);
  s.cr4 = v.getBigUint64(248, true);
  s.cr8 = v.getBigUint64(256, true);
  s.efer = v.getBigUint64(264, true);
  s.apicBase = v.getBigUint64(272, true);
  s.interruptBitmap = b.slice(280, 312);
  return s;
}
export function encodeSregs(s: Sregs): Uint8Array {
  const b = new Uint8Array(SREGS_SIZE);
  const v = new DataView(b.buffer);
  SEG_NAMES.forEach((n, i) => {
    writeSeg(v, i * 24, s[n]);
  });
  v.setBigUint64(192, s.gdt.base, true);
  v.setUint16(200, s.gdt.limit, true);
  v.setBigUint64(208, s.idt.base, true);
  v.setUint16(216, s.idt.limit, true);
  v.setBigUint64(224, s.cr0, true);
  v.setBigUint64(232, s.cr2, true);
  v.setBigUint64(240, s.cr3, true);
  v.setBigUint64(248, s.cr4, true);
  v.setBigUint64(256, s.cr8, true);
  v.setBigUint64(264, s.efer, true);
  v.setBigUint64(272, s.apicBase, true);
  b.set(s.interruptBitmap.subarray(0, 32), 280);
  return b;
}

export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}
const CPUID_ENTRY_SIZE = 40;

export function encodeCpuid(entries: readonly CpuidEntry[]): Uint8Array {
  const b = new Uint8Array(8 + entries.length * CPUID_ENTRY_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, entries.length, true);
  entries.forEach((e, i) => {
    const o = 8 + i * CPUID_ENTRY_SIZE;
    v.setUint32(o, e.function >>> 0, true);
    v.setUint32(o + 4, e.index >>> 0, true);
    v.setUint32(o + 8, e.flags >>> 0, true);
    v.setUint32(o + 12, e.eax >>> 0, true);
    v.setUint32(o + 16, e.ebx >>> 0, true);
    v.setUint32(o + 20, e.ecx >>> 0, true);
    v.setUint32(o + 24, e.edx >>> 0, true);
  });
  return b;
}
export function decodeCpuid(b: Uint8Array): CpuidEntry[] {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const n = v.getUint32(0, true);
  const out: CpuidEntry[] = [];
  for (let i = 0; i < n && 8 + (i + 1) * CPUID_ENTRY_SIZE <= b.byteLength; i++) {
    const o = 8 + i * CPUID_ENTRY_SIZE;
    out.push({
      function: v.getUint32(o, true),
      index: v.getUint32(o + 4, true),
      flags: v.getUint32(o + 8, true),
      eax: v.getUint32(o + 12, true),
      ebx: v.getUint32(o + 16, true),
      ecx: v.getUint32(o + 20, true),
      edx: v.getUint32(o + 24, true),
    });
  }
  return out;
}

export function encodeMsrs(msrs: readonly { index: number; data: bigint }[]): Uint8Array {
  const b = new Uint8Array(8 + msrs.length * 16);
  const v = new DataView(b.buffer);
  v.setUint32(0, msrs.length, true);
  msrs.forEach((m, i) => {
    v.setUint32(8 + i * 16, m.index >>> 0, true);
    v.setBigUint64(8 + i * 16 + 8, BigInt.asUintN(64, m.data), true);
  });
  return b;
}

export interface IoeventfdSpec {
  addr: number;
  /** 0 = any length ("fast MMIO", needs Cap.IOEVENTFD_NO_LENGTH), else 1, 2, 4 or 8. */
  len: number;
  fd: number;
  datamatch?: bigint;
  pio?: boolean;
}

export interface MsiRoute {
  gsi: number;
  addressLo: number;
  addressHi: number;
  data: number;
}
export interface IrqchipRoute {
  gsi: number;
  irqchip: number;
  pin: number;
}
export type GsiRoute = ({ kind: "msi" } & MsiRoute) | ({ kind: "irqchip" } & IrqchipRoute);

export function encodeGsiRouting(routes: readonly GsiRoute[]): Uint8Array {
  const b = new Uint8Array(8 + routes.length * 48);
  const v = new DataView(b.buffer);
  v.setUint32(0, routes.length, true);
  routes.forEach((r, i) => {
    const o = 8 + i * 48;
    v.setUint32(o, r.gsi, true);
    if (r.kind === "msi") {
      v.setUint32(o + 4, IRQ_ROUTING_MSI, true);
      v.setUint32(o + 16, r.addressLo >>> 0, true);
      v.setUint32(o + 20, r.addressHi >>> 0, true);
      v.setUint32(o + 24, r.data >>> 0, true);
    } else {
      v.setUint32(o + 4, IRQ_ROUTING_IRQCHIP, true);
      v.setUint32(o + 16, r.irqchip, true);
      v.setUint32(o + 20, r.pin, true);
    }
  });
  return b;
}

/** /dev/kvm. */
export class Kvm {
  private constructor(readonly fd: number) {}

  static open(): Kvm {
    return new Kvm(kvmOpen());
  }

  apiVersion(): number {
    return kvmIoctl(this.fd, k("KVM_GET_API_VERSION"));
  }

  checkExtension(cap: number): number {
    return kvmIoctl(this.fd, k("KVM_CHECK_EXTENSION"), cap);
  }

  vcpuMmapSize(): number {
    return kvmIoctl(this.fd, k("KVM_GET_VCPU_MMAP_SIZE"));
  }

  supportedCpuid(max = 256): CpuidEntry[] {
    const b = new Uint8Array(8 + max * CPUID_ENTRY_SIZE);
    new DataView(b.buffer).setUint32(0, max, true);
    kvmIoctl(this.fd, k("KVM_GET_SUPPORTED_CPUID"), b);
    return decodeCpuid(b);
  }

  createVm(): Vm {
    const version = this.apiVersion();
    if (version !== 12) throw new Error(`KVM API version ${version}, expected 12`);
    return new Vm(this, kvmIoctl(this.fd, k("KVM_CREATE_VM"), 0));
  }

  close(): void {
    closeSync(this.fd);
  }
}

/** A VM fd: memory slots, vCPUs, interrupt controller, eventfd wiring. */
export class Vm {
  private readonly vcpus: Vcpu[] = [];
  private closed = false;

  constructor(
    readonly kvm: Kvm,
    readonly fd: number,
  ) {}

  checkExtension(cap: number): number {
    return kvmIoctl(this.fd, k("KVM_CHECK_EXTENSION"), cap);
  }

  /** Maps host memory `host` (an ArrayBuffer from mapAnonymous) at guest address `gpa`. */
  setMemoryRegion(slot: number, gpa: number, size: number, hostAddr: bigint, flags = 0): void {
    const b = new Uint8Array(32);
    const v = new DataView(b.buffer);
    v.setUint32(0, slot, true);
    v.setUint32(4, flags, true);
    v.setBigUint64(8, BigInt(gpa), true);
    v.setBigUint64(16, BigInt(size), true);
    v.setBigUint64(24, hostAddr, true);
    kvmIoctl(this.fd, k("KVM_SET_USER_MEMORY_REGION"), b);
  }

  setTssAddr(addr: number): void {
    kvmIoctl(this.fd, k("KVM_SET_TSS_ADDR"), addr);
  }

  setIdentityMapAddr(addr: number): void {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(addr), true);
    kvmIoctl(this.fd, k("KVM_SET_IDENTITY_MAP_ADDR"), b);
  }

  createIrqchip(): void {
    kvmIoctl(this.fd, k("KVM_CREATE_IRQCHIP"));
  }

  /** The in-kernel PIT; `speakerDummy` makes port 0x61 reads work without a speaker. */
  createPit2(speakerDummy = true): void {
    const b = new Uint8Array(64);
    new DataView(b.buffer).setUint32(0, speakerDummy ? 1 : 0, true);
    kvmIoctl(this.fd, k("KVM_CREATE_PIT2"), b);
  }

  irqLine(irq: number, level: boolean): void {
    const b = new Uint8Array(8);
    const v = new DataView(b.buffer);
    v.setUint32(0, irq, true);
    v.setUint32(4, level ? 1 : 0, true);
    kvmIoctl(this.fd, k("KVM_IRQ_LINE"), b);
  }

  irqfd(fd: number, gsi: number, deassign = false): void {
    const b = new Uint8Array(32);
    const v = new DataView(b.buffer);
    v.setUint32(0, fd, true);
    v.setUint32(4, gsi, true);
    v.setUint32(8, deassign ? IRQFD_FLAG_DEASSIGN : 0, true);
    kvmIoctl(this.fd, k("KVM_IRQFD"), b);
  }

  ioeventfd(spec: IoeventfdSpec, deassign = false): void {
    const b = new Uint8Array(64);
    const v = new DataView(b.buffer);
    let flags = 0;
    if (spec.datamatch !== undefined) flags |= IOEVENTFD_FLAG_DATAMATCH;
    if (spec.pio) flags |= IOEVENTFD_FLAG_PIO;
    if (deassign) flags |= IOEVENTFD_FLAG_DEASSIGN;
    v.setBigUint64(0, spec.datamatch ?? 0n, true);
    v.setBigUint64(8, BigInt(spec.addr), true);
    v.setUint32(16, spec.len, true);
    v.setInt32(20, spec.fd, true);
    v.setUint32(24, flags, true);
    kvmIoctl(this.fd, k("KVM_IOEVENTFD"), b);
  }

  /** Replaces the whole GSI routing table (KVM has no incremental update). */
  setGsiRouting(routes: readonly GsiRoute[]): void {
    kvmIoctl(this.fd, k("KVM_SET_GSI_ROUTING"), encodeGsiRouting(routes));
  }

  /** Injects one MSI; returns >0 if delivered, 0 if the guest blocked it. */
  signalMsi(addressLo: number, addressHi: number, data: number): number {
    const b = new Uint8Array(32);
    const v = new DataView(b.buffer);
    v.setUint32(0, addressLo >>> 0, true);
    v.setUint32(4, addressHi >>> 0, true);
    v.setUint32(8, data >>> 0, true);
    return kvmIoctl(this.fd, k("KVM_SIGNAL_MSI"), b);
  }

  createVcpu(id: number): Vcpu {
    const fd = kvmIoctl(this.fd, k("KVM_CREATE_VCPU"), id);
    const run = mapFd(fd, this.kvm.vcpuMmapSize(), 0);
    const vcpu = new Vcpu(id, fd, run);
    this.vcpus.push(vcpu);
    return vcpu;
  }

  /** Closes every vCPU fd and the VM fd (vCPU threads must be stopped first). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const v of this.vcpus) v.close();
    closeSync(this.fd);
  }
}

/** A vCPU fd and its kvm_run mapping. */
export class Vcpu {
  readonly runView: DataView;
  private closed = false;

  constructor(
    readonly id: number,
    readonly fd: number,
    /** The kvm_run page(s) of this vCPU, shared with the kernel. */
    readonly run: ArrayBuffer,
  ) {
    this.runView = new DataView(run);
  }

  getRegs(): Regs {
    const b = new Uint8Array(REGS_SIZE);
    kvmIoctl(this.fd, k("KVM_GET_REGS"), b);
    return decodeRegs(b);
  }
  setRegs(r: Regs): void {
    kvmIoctl(this.fd, k("KVM_SET_REGS"), encodeRegs(r));
  }
  getSregs(): Sregs {
    const b = new Uint8Array(SREGS_SIZE);
    kvmIoctl(this.fd, k("KVM_GET_SREGS"), b);
    return decodeSregs(b);
  }
  setSregs(s: Sregs): void {
    kvmIoctl(this.fd, k("KVM_SET_SREGS"), encodeSregs(s));
  }
  setCpuid(entries: readonly CpuidEntry[]): void {
    kvmIoctl(this.fd, k("KVM_SET_CPUID2"), encodeCpuid(entries));
  }
  /** Returns how many MSRs KVM accepted (it stops at the first it refuses). */
  setMsrs(msrs: readonly { index: number; data: bigint }[]): number {
    return kvmIoctl(this.fd, k("KVM_SET_MSRS"), encodeMsrs(msrs));
  }
  /**
   * XCR0 as KVM sees it (struct kvm_xcrs: nr_xcrs, flags, {xcr, reserved, value}[16], padding).
   * Must follow setCpuid: KVM checks the value against the XSAVE features the CPUID table allows.
   */
  setXcr0(value: bigint): void {
    const b = new Uint8Array(k("sizeof(struct kvm_xcrs)"));
    const v = new DataView(b.buffer);
    v.setUint32(0, 1, true);
    v.setUint32(8, 0, true); // XCR_XFEATURE_ENABLED_MASK
    v.setBigUint64(16, value, true);
    kvmIoctl(this.fd, k("KVM_SET_XCRS"), b);
  }
  /** Power-on FPU state: x87 control word 0x37f, MXCSR 0x1f80 (what Linux expects at entry). */
  setFpuDefaults(): void {
    const b = new Uint8Array(416); // struct kvm_fpu: fpr[8][16], fcw @128, …, xmm[16][16] @152, mxcsr @408
    const v = new DataView(b.buffer);
    v.setUint16(128, 0x37f, true);
    v.setUint32(408, 0x1f80, true);
    kvmIoctl(this.fd, k("KVM_SET_FPU"), b);
  }

  /** Unmaps kvm_run and closes the fd (the run thread must be stopped first). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    unmap(this.run);
    closeSync(this.fd);
  }
}
