import { fn } from "./load.ts";

/**
 * Maps `length` bytes of `fd` at `offset` shared; the memory is unmapped when the returned
 * ArrayBuffer is garbage-collected (keep a reference as long as it is in use).
 */
export function mmapFd(fd: number, length: number, offset = 0, writable = true): ArrayBuffer {
  return fn<(fd: number, l: number, o: number, w: boolean) => ArrayBuffer>("mmapFd")(fd, length, offset, writable);
}

/** An anonymous memory file of `size` bytes (close-on-exec). */
export function memfdCreate(name: string, size: number): number {
  return fn<(n: string, s: number) => number>("memfdCreate")(name, size);
}
