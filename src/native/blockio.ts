import { fn } from "./load.ts";

export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

/** fallocate(2) on an open fd (discard: PUNCH_HOLE|KEEP_SIZE; write-zeroes: ZERO_RANGE). */
export function fallocate(fd: number, mode: number, offset: number, length: number): void {
  fn<(fd: number, m: number, o: number, l: number) => void>("fallocate")(fd, mode, offset, length);
}

/** fallocate(2) on libuv's thread pool (never blocks the event loop); rejects with the errno Error. */
export function fallocateAsync(fd: number, mode: number, offset: number, length: number): Promise<void> {
  return fn<(fd: number, m: number, o: number, l: number) => Promise<void>>("fallocateAsync")(fd, mode, offset, length);
}

/** Size in bytes of an open block device (BLKGETSIZE64). */
export function blockDeviceSize(fd: number): number {
  return fn<(fd: number) => number>("blockDeviceSize")(fd);
}
