// Typed wrapper of src/native/kvm.c: KVM ioctls, guest-memory mappings, eventfds and their
// event-loop watches. Struct layouts live in src/vmm/ (kvm-structs.ts); this is the syscall edge.
import { fn } from "./load.ts";

/** fd of /dev/kvm. */
export function kvmOpen(): number {
  return fn<() => number>("kvmOpen")();
}

/** ioctl(fd, request, arg) for KVM ioctls: a number/bigint is passed by value, a buffer by pointer. */
export function kvmIoctl(fd: number, request: number, arg?: number | bigint | Uint8Array): number {
  const f = fn<(fd: number, req: number, arg?: number | bigint | Uint8Array) => number>("kvmIoctl");
  return arg === undefined ? f(fd, request) : f(fd, request, arg);
}

/** Private anonymous memory (MAP_NORESERVE), unmapped when the ArrayBuffer is collected. */
export function mapAnonymous(size: number): ArrayBuffer {
  return fn<(size: number) => ArrayBuffer>("vmmMapAnonymous")(size);
}

/** A MAP_SHARED mapping of fd (e.g. a vCPU's kvm_run), unmapped when collected. */
export function mapFd(fd: number, size: number, offset = 0): ArrayBuffer {
  return fn<(fd: number, size: number, off: number) => ArrayBuffer>("vmmMapFd")(fd, size, offset);
}

/** Host virtual address of the first byte of an ArrayBuffer or view. */
export function addressOf(buf: ArrayBuffer | ArrayBufferView): bigint {
  return fn<(b: ArrayBuffer | ArrayBufferView) => bigint>("vmmAddressOf")(buf);
}

/** A close-on-exec eventfd (non-blocking unless told). */
export function eventfd(initval = 0, nonblock = true): number {
  return fn<(i: number, nb: boolean) => number>("vmmEventfd")(initval, nonblock);
}

export function eventfdWrite(fd: number, n = 1): void {
  fn<(fd: number, n: number) => void>("vmmEventfdWrite")(fd, n);
}

/** Reads and resets the counter; 0 when nothing was pending. */
export function eventfdRead(fd: number): number {
  return fn<(fd: number) => number>("vmmEventfdRead")(fd);
}

export interface FdWatch {
  readonly __fdWatch: unique symbol;
}

/**
 * Calls cb(count) on the event loop whenever eventfd `fd` is signalled (count = the counter, read
 * and reset first). Keeps the loop alive until unwatchFd(); the fd stays owned by the caller.
 */
export function watchFd(fd: number, cb: (count: number) => void): FdWatch {
  return fn<(fd: number, cb: (n: number) => void) => FdWatch>("vmmFdWatch")(fd, cb);
}

export function unwatchFd(w: FdWatch): void {
  fn<(w: FdWatch) => void>("vmmFdUnwatch")(w);
}

/** ioctl numbers, struct sizes and a few offsets from the build machine's <linux/kvm.h>. */
export type KvmConstants = Record<string, number>;

let constants: KvmConstants | undefined;
export function kvmConstants(): KvmConstants {
  constants ??= fn<() => KvmConstants>("kvmConstants")();
  return constants;
}

/**
 * Unmaps a mapping made by mapAnonymous/mapFd now and detaches its ArrayBuffer (every view then
 * has length 0). Idempotent. A vCPU's kvm_run mapping keeps its VM alive in the kernel until this.
 */
export function unmap(buf: ArrayBuffer): void {
  fn<(b: ArrayBuffer) => void>("vmmUnmap")(buf);
}
