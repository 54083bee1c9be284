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

/**
 * preadv2/pwritev2 with RWF_NOWAIT: bytes transferred, or -1 if it would have had to wait (data
 * not cached, or the filesystem cannot do it without blocking). Safe on the event loop.
 */
export function preadvNowait(fd: number, bufs: Uint8Array[], position: number): number {
  return fn<(fd: number, b: Uint8Array[], p: number) => number>("preadvNowait")(fd, bufs, position);
}
export function pwritevNowait(fd: number, bufs: Uint8Array[], position: number): number {
  return fn<(fd: number, b: Uint8Array[], p: number) => number>("pwritevNowait")(fd, bufs, position);
}

/** Size in bytes of an open block device (BLKGETSIZE64). */
export function blockDeviceSize(fd: number): number {
  return fn<(fd: number) => number>("blockDeviceSize")(fd);
}

export const BLKPG_ADD_PARTITION = 1;
export const BLKPG_DEL_PARTITION = 2;

/** ioctl(BLKPG) on a whole disk: adds or deletes partition `pno` ([start, start+length) bytes). */
export function blkpg(fd: number, op: number, pno: number, start: number, length: number): void {
  fn<(fd: number, op: number, pno: number, s: number, l: number) => void>("blkpg")(fd, op, pno, start, length);
}
