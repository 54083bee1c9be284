// A running vCPU: its native run thread (src/native/vcpu.c) and the decoding of each exit that
// reaches userspace — port I/O and MMIO go to the buses, the rest ends the run with a reason.
// The guest stays parked (the thread waits) while an exit is being handled here.
import type { Logger } from "pino";
import { type VcpuRunner, vcpuCreate, vcpuKick, vcpuResume, vcpuStart, vcpuStop } from "../native/vcpu.ts";
import type { Bus } from "./bus.ts";
import { Exit, type Vcpu } from "./kvm.ts";

// struct kvm_run offsets (<linux/kvm.h>; checked against the compiler's in test/unit/vmm).
const RUN_EXIT_REASON = 8;
const RUN_U = 32;
const KVM_EXIT_IO_OUT = 1;
const SYSTEM_EVENT_NAMES: Record<number, string> = { 1: "shutdown", 2: "reset", 3: "crash" };

export type StopReason =
  | { kind: "hlt" }
  | { kind: "shutdown"; cpu?: CpuState } // triple fault: Linux's reboot=t, or a crashed guest
  | { kind: "system-event"; event: string }
  | { kind: "error"; message: string };

/** Where a vCPU was when it stopped (hex strings), to tell a reboot from a crash in the log. */
export interface CpuState {
  vcpu: number;
  rip: string;
  rsp: string;
  rflags: string;
  cr0: string;
  cr2: string;
  cr3: string;
  cr4: string;
  efer: string;
}

export interface VcpuLoopOptions {
  pio: Bus;
  mmio: Bus;
  /** Called once, on the event loop, when the guest can no longer run on this vCPU. */
  onStop: (reason: StopReason) => void;
  log?: Logger;
}

export class VcpuLoop {
  private runner: VcpuRunner | undefined;
  private readonly bytes: Uint8Array;
  private stopped = false;
  private pauseWaiters: (() => void)[] = [];
  private parked = false;
  /** Exits that reached userspace, by KVM exit reason. */
  readonly exits = new Map<number, number>();

  constructor(
    readonly vcpu: Vcpu,
    private readonly opts: VcpuLoopOptions,
  ) {
    this.bytes = new Uint8Array(vcpu.run);
  }

  start(): void {
    if (this.runner) throw new Error(`vCPU ${this.vcpu.id} already started`);
    this.runner = vcpuCreate(this.vcpu.fd, this.vcpu.run, (errno) => this.onExit(errno), `cove-vcpu${this.vcpu.id}`);
    vcpuStart(this.runner);
  }

  /** Forces the vCPU out of the guest once (it shows up as an INTR exit and resumes). */
  kick(): void {
    if (this.runner) vcpuKick(this.runner);
  }

  /**
   * Brings the vCPU out of the guest and keeps it parked (its thread waits) until resume(): the
   * vCPU's registers and stats can then be read (KVM serialises those ioctls with KVM_RUN).
   */
  pause(): Promise<void> {
    if (!this.runner || this.stopped || this.parked) return Promise.resolve();
    const p = new Promise<void>((res) => this.pauseWaiters.push(res));
    vcpuKick(this.runner);
    return p;
  }

  resume(): void {
    if (!this.runner || !this.parked || this.stopped) return;
    this.parked = false;
    vcpuResume(this.runner);
  }

  /** Stops and joins the thread (idempotent). */
  stop(): void {
    this.stopped = true;
    if (this.runner) vcpuStop(this.runner);
  }

  private end(reason: StopReason): false {
    if (!this.stopped) {
      this.stopped = true;
      this.opts.log?.debug({ vcpu: this.vcpu.id, reason }, "vCPU stopped");
      this.opts.onStop(reason);
    }
    return false;
  }

  /**
   * The registers that place a triple fault (read while the thread waits; undefined if KVM refuses).
   * On Intel that is where the guest was; on AMD, KVM reinitialises the VMCB on the shutdown
   * intercept, so this shows the reset state (rip 0xfff0) and only the vCPU number says anything.
   */
  private cpuState(): CpuState | undefined {
    try {
      const r = this.vcpu.getRegs();
      const s = this.vcpu.getSregs();
      const hex = (x: bigint) => `0x${x.toString(16)}`;
      return {
        vcpu: this.vcpu.id,
        rip: hex(r.rip),
        rsp: hex(r.rsp),
        rflags: hex(r.rflags),
        cr0: hex(s.cr0),
        cr2: hex(s.cr2),
        cr3: hex(s.cr3),
        cr4: hex(s.cr4),
        efer: hex(s.efer),
      };
    } catch {
      return undefined;
    }
  }

  /** Returns false to leave the vCPU parked (it stopped), true to re-enter the guest. */
  private onExit(errno: number): boolean {
    if (this.stopped) return false;
    if (errno !== 0) return this.end({ kind: "error", message: `KVM_RUN failed: errno ${errno}` });
    const v = this.vcpu.runView;
    const reason = v.getUint32(RUN_EXIT_REASON, true);
    this.exits.set(reason, (this.exits.get(reason) ?? 0) + 1);
    if (this.pauseWaiters.length) {
      // Whatever exit this is, it has to be completed before the guest runs again; handle it,
      // then park instead of re-entering.
      const resume = this.handle(reason, v);
      if (!resume) return false;
      this.parked = true;
      for (const w of this.pauseWaiters.splice(0)) w();
      return false;
    }
    return this.handle(reason, v);
  }

  private handle(reason: number, v: DataView): boolean {
    try {
      switch (reason) {
        case Exit.IO:
          this.io(v);
          return true;
        case Exit.MMIO:
          this.mmio(v);
          return true;
        case Exit.INTR:
          return true;
        case Exit.HLT:
          return this.end({ kind: "hlt" });
        case Exit.SHUTDOWN:
          return this.end({ kind: "shutdown", cpu: this.cpuState() });
        case Exit.SYSTEM_EVENT: {
          const type = v.getUint32(RUN_U, true);
          return this.end({ kind: "system-event", event: SYSTEM_EVENT_NAMES[type] ?? `type ${type}` });
        }
        case Exit.FAIL_ENTRY:
          return this.end({
            kind: "error",
            message: `VM entry failed: hardware reason 0x${v.getBigUint64(RUN_U, true).toString(16)}`,
          });
        case Exit.INTERNAL_ERROR:
          return this.end({ kind: "error", message: `KVM internal error, suberror ${v.getUint32(RUN_U, true)}` });
        default:
          return this.end({ kind: "error", message: `unhandled KVM exit reason ${reason}` });
      }
    } catch (err) {
      // A device threw: that is a host bug, not a guest one; stop this VM rather than the shim.
      return this.end({ kind: "error", message: `exit ${reason} handler failed: ${(err as Error).stack ?? err}` });
    }
  }

  private io(v: DataView): void {
    const out = v.getUint8(RUN_U) === KVM_EXIT_IO_OUT;
    const size = v.getUint8(RUN_U + 1);
    const port = v.getUint16(RUN_U + 2, true);
    const count = v.getUint32(RUN_U + 4, true);
    const off = Number(v.getBigUint64(RUN_U + 8, true));
    if (off + size * count > this.bytes.length) throw new Error("kvm_run io data outside the mapping");
    for (let i = 0; i < count; i++) {
      const data = this.bytes.subarray(off + i * size, off + (i + 1) * size);
      if (out) this.opts.pio.write(port, data);
      else this.opts.pio.read(port, data);
    }
  }

  private mmio(v: DataView): void {
    const addr = Number(v.getBigUint64(RUN_U, true));
    const len = Math.min(v.getUint32(RUN_U + 16, true), 8);
    const isWrite = v.getUint8(RUN_U + 20) !== 0;
    const data = this.bytes.subarray(RUN_U + 8, RUN_U + 8 + len);
    if (isWrite) this.opts.mmio.write(addr, data);
    else this.opts.mmio.read(addr, data);
  }
}
