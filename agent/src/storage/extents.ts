// Extents of a disk of extents (the shim's one read-only disk for every layer of the pod, one
// read-write disk for every writable layer) named as partitions: BLKPG adds partition <pno> at the
// extent's place, with no partition table and no hotplug, and the kernel (devtmpfs) gives it a
// node, /dev/vdb7 say. The shim says where each extent is: storage source
// `extent:<serial>:<pno>:<start sector>:<sectors>`.
import { closeSync, existsSync, openSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { BLKPG_ADD_PARTITION, BLKPG_DEL_PARTITION, blkpg } from "../../../src/native/blockio.ts";
import { invalid } from "../api/errors.ts";

export interface ExtentSource {
  serial: string;
  pno: number;
  /** 512-byte sectors. */
  start: number;
  sectors: number;
}

/** A disk holds at most this many partitions (DISK_MAX_PARTS - 1). */
export const MAX_PNO = 255;

const SECTOR = 512;

/** Parses `extent:<serial>:<pno>:<start>:<sectors>`; undefined for other sources. */
export function parseExtentSource(source: string): ExtentSource | undefined {
  if (!source.startsWith("extent:")) return undefined;
  const m = /^extent:([A-Za-z0-9_.-]{1,20}):(\d{1,3}):(\d{1,15}):(\d{1,15})$/.exec(source);
  if (!m) throw invalid(`bad extent source "${source}" (want extent:<serial>:<pno>:<start>:<sectors>)`);
  const e = { serial: m[1]!, pno: Number(m[2]), start: Number(m[3]), sectors: Number(m[4]) };
  if (e.pno < 1 || e.pno > MAX_PNO) throw invalid(`extent ${source}: partition number must be 1..${MAX_PNO}`);
  if (e.sectors < 1 || !Number.isSafeInteger((e.start + e.sectors) * SECTOR))
    throw invalid(`extent ${source}: bad range`);
  return e;
}

/** The kernel's name of partition pno of disk `name` (vdb → vdb7; a name ending in a digit → p7). */
export function partitionName(disk: string, pno: number): string {
  return /\d$/.test(disk) ? `${disk}p${pno}` : `${disk}${pno}`;
}

function readSectors(path: string): number | undefined {
  try {
    return Number.parseInt(readFileSync(path, "utf8"), 10);
  } catch {
    return undefined;
  }
}

/**
 * Makes partition e.pno of `disk` (/dev/vdb) cover exactly the extent (re-made when it covered
 * something else); returns the partition's device path once its node exists, undefined while the
 * node has not appeared yet (the caller polls).
 */
export function ensurePartition(disk: string, e: ExtentSource, sysBlock = "/sys/block"): string | undefined {
  const name = disk.slice(disk.lastIndexOf("/") + 1);
  const part = partitionName(name, e.pno);
  const sys = join(sysBlock, name, part);
  const start = readSectors(join(sys, "start"));
  const size = readSectors(join(sys, "size"));
  if (start !== e.start || size !== e.sectors) {
    const fd = openSync(disk, "r");
    try {
      if (start !== undefined) blkpg(fd, BLKPG_DEL_PARTITION, e.pno, 0, 0);
      blkpg(fd, BLKPG_ADD_PARTITION, e.pno, e.start * SECTOR, e.sectors * SECTOR);
    } finally {
      closeSync(fd);
    }
  }
  const dev = `/dev/${part}`;
  return existsSync(dev) ? dev : undefined;
}

/** Deletes the partition (its extent is going away); quiet when it is already gone. */
export function deletePartition(disk: string, pno: number): void {
  const fd = openSync(disk, "r");
  try {
    blkpg(fd, BLKPG_DEL_PARTITION, pno, 0, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENXIO") throw e;
  } finally {
    closeSync(fd);
  }
}
