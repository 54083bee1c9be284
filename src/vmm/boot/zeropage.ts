// boot_params ("the zero page") for the 64-bit boot protocol: the kernel's setup header with the
// loader's fields filled in, the command line pointer and the e820 memory map.
import { BASE_RAM_END, EBDA_START, HIMEM_START, type RamRange } from "../layout.ts";
import { BootError, type BzImage } from "./bzimage.ts";

export const ZERO_PAGE_SIZE = 4096;
export const E820_RAM = 1;
export const E820_RESERVED = 2;
const E820_MAX = 128;
const OFF_EXT_CMD_LINE_PTR = 0x0c8;
const OFF_E820_ENTRIES = 0x1e8;
const OFF_SETUP_HEADER = 0x1f1;
const OFF_TYPE_OF_LOADER = 0x210;
const OFF_LOADFLAGS = 0x211;
const OFF_HEAP_END_PTR = 0x224;
const OFF_CMD_LINE_PTR = 0x228;
const OFF_E820_TABLE = 0x2d0;
const CAN_USE_HEAP = 0x80;
const KEEP_SEGMENTS = 0x40;

export interface E820Entry {
  addr: number;
  size: number;
  type: number;
}

/** The map Linux gets: base RAM, the EBDA (MP table) reserved, then RAM from 1 MiB. */
export function e820Map(ram: readonly RamRange[]): E820Entry[] {
  const out: E820Entry[] = [
    { addr: 0, size: EBDA_START, type: E820_RAM },
    { addr: EBDA_START, size: BASE_RAM_END - EBDA_START, type: E820_RESERVED },
  ];
  for (const r of ram) {
    const start = Math.max(r.guestAddr, HIMEM_START);
    const end = r.guestAddr + r.size;
    if (end > start) out.push({ addr: start, size: end - start, type: E820_RAM });
  }
  return out;
}

export interface ZeroPageInput {
  /** The kernel's setup header (a bzImage's own, or made up for a vmlinux) and command line limit. */
  image: Pick<BzImage, "setupHeader" | "cmdlineSize">;
  cmdlineAddr: number;
  /** Command line length in bytes, without the NUL. */
  cmdlineLength: number;
  e820: readonly E820Entry[];
}

export function buildZeroPage(z: ZeroPageInput): Uint8Array {
  const b = new Uint8Array(ZERO_PAGE_SIZE);
  const v = new DataView(b.buffer);
  if (OFF_SETUP_HEADER + z.image.setupHeader.length > OFF_E820_TABLE) {
    throw new BootError("setup header too long");
  }
  b.set(z.image.setupHeader, OFF_SETUP_HEADER);
  if (z.image.cmdlineSize && z.cmdlineLength > z.image.cmdlineSize) {
    throw new BootError(`kernel command line is ${z.cmdlineLength} bytes; this kernel takes ${z.image.cmdlineSize}`);
  }
  v.setUint8(OFF_TYPE_OF_LOADER, 0xff); // "undefined" loader: no ID assigned
  v.setUint8(OFF_LOADFLAGS, (v.getUint8(OFF_LOADFLAGS) | CAN_USE_HEAP) & ~KEEP_SEGMENTS);
  v.setUint16(OFF_HEAP_END_PTR, 0xfe00, true);
  v.setUint32(OFF_CMD_LINE_PTR, z.cmdlineAddr >>> 0, true);
  v.setUint32(OFF_EXT_CMD_LINE_PTR, Math.floor(z.cmdlineAddr / 2 ** 32), true);
  if (z.e820.length > E820_MAX) throw new BootError("too many e820 entries");
  v.setUint8(OFF_E820_ENTRIES, z.e820.length);
  z.e820.forEach((e, i) => {
    const o = OFF_E820_TABLE + i * 20;
    v.setBigUint64(o, BigInt(e.addr), true);
    v.setBigUint64(o + 8, BigInt(e.size), true);
    v.setUint32(o + 16, e.type, true);
  });
  return b;
}
