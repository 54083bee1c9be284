// Typed wrapper of src/native/vcpu.c: one native thread per vCPU running KVM_RUN and handing
// each userspace exit to JS on the event loop. src/vmm/vcpu.ts is the only intended user.
import { fn } from "./load.ts";

export interface VcpuRunner {
  readonly __vcpuRunner: unique symbol;
}

/**
 * onExit(errno): called on the event loop for each exit (errno 0), or after a failed KVM_RUN
 * (errno > 0). Read/answer the exit in kvm_run, then return; returning `false` defers the answer
 * until vcpuResume(). A kick (vcpuKick) shows up as KVM_EXIT_INTR.
 */
export type OnExit = (errno: number) => boolean | undefined;

/** threadName (≤ 15 bytes) names the native thread, as seen in /proc/<pid>/task/<tid>/comm. */
export function vcpuCreate(vcpuFd: number, kvmRun: ArrayBuffer, onExit: OnExit, threadName = "vcpu"): VcpuRunner {
  return fn<(fd: number, run: ArrayBuffer, cb: OnExit, name: string) => VcpuRunner>("vcpuCreate")(
    vcpuFd,
    kvmRun,
    onExit,
    threadName,
  );
}
export function vcpuStart(r: VcpuRunner): void {
  fn<(r: VcpuRunner) => void>("vcpuStart")(r);
}
export function vcpuResume(r: VcpuRunner): void {
  fn<(r: VcpuRunner) => void>("vcpuResume")(r);
}
export function vcpuKick(r: VcpuRunner): void {
  fn<(r: VcpuRunner) => void>("vcpuKick")(r);
}
/** Stops and joins the thread; idempotent. No onExit call happens after it returns. */
export function vcpuStop(r: VcpuRunner): void {
  fn<(r: VcpuRunner) => void>("vcpuStop")(r);
}
