// The uncompressed kernel (vmlinux, ELF64 x86-64) as Firecracker boots it: each PT_LOAD segment
// copied to its physical address, then the 64-bit entry (e_entry is startup_64's physical address)
// with boot_params in rsi. It skips the bzImage's self-decompression — the kernel runs from its
// first instruction. Every header value is checked before anything is read or written.
import { BootError } from "./bzimage.ts";

const ET_EXEC = 2;
const EM_X86_64 = 62;
const PT_LOAD = 1;
const EHDR_SIZE = 64;
const PHDR_SIZE = 56;
const MAX_PHNUM = 64;
/** The setup header a loader of a bzImage would copy from the image; made up here (from 0x1f1). */
const SETUP_HEADER_START = 0x1f1;
const SETUP_HEADER_END = 0x268;
/** What the kernel may assume without a real setup header (the 2.15 protocol's command line limit). */
export const ELF_CMDLINE_SIZE = 2048;

export interface ElfSegment {
  /** Guest-physical load address. */
  paddr: number;
  /** File bytes to copy there (filesz). */
  data: Uint8Array;
  /** Bytes the segment occupies in memory (memsz ≥ data length; the rest is zero). */
  memsz: number;
}

export interface ElfKernel {
  /** Physical address of the 64-bit entry (startup_64). */
  entry: number;
  segments: ElfSegment[];
  /** boot_params' setup header for this kernel (the fields Firecracker fills). */
  setupHeader: Uint8Array;
  cmdlineSize: number;
  /** The highest physical byte any segment occupies, plus one. */
  end: number;
}

export const isElf = (image: Uint8Array) =>
  image.length >= 4 && image[0] === 0x7f && image[1] === 0x45 && image[2] === 0x4c && image[3] === 0x46;

/** Parses a vmlinux; throws BootError on anything malformed or out of range. */
export function parseElfKernel(image: Uint8Array, limit = 2 ** 32): ElfKernel {
  if (image.length < EHDR_SIZE || !isElf(image)) throw new BootError("not an ELF file");
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  if (image[4] !== 2 || image[5] !== 1) throw new BootError("not a 64-bit little-endian ELF");
  if (v.getUint16(16, true) !== ET_EXEC) throw new BootError("ELF kernel is not an executable (ET_EXEC)");
  if (v.getUint16(18, true) !== EM_X86_64) throw new BootError("ELF kernel is not for x86-64");
  const entry = Number(v.getBigUint64(24, true));
  const phoff = Number(v.getBigUint64(32, true));
  const phentsize = v.getUint16(54, true);
  const phnum = v.getUint16(56, true);
  if (phentsize !== PHDR_SIZE) throw new BootError(`ELF program header size ${phentsize} (want ${PHDR_SIZE})`);
  if (phnum === 0 || phnum > MAX_PHNUM) throw new BootError(`ELF has ${phnum} program headers`);
  if (!Number.isSafeInteger(phoff) || phoff + phnum * PHDR_SIZE > image.length)
    throw new BootError("ELF program headers lie outside the file");
  const segments: ElfSegment[] = [];
  let end = 0;
  for (let i = 0; i < phnum; i++) {
    const o = phoff + i * PHDR_SIZE;
    if (v.getUint32(o, true) !== PT_LOAD) continue;
    const offset = Number(v.getBigUint64(o + 8, true));
    const paddr = Number(v.getBigUint64(o + 24, true));
    const filesz = Number(v.getBigUint64(o + 32, true));
    const memsz = Number(v.getBigUint64(o + 40, true));
    if (![offset, paddr, filesz, memsz].every(Number.isSafeInteger))
      throw new BootError(`ELF segment ${i}: bad values`);
    if (filesz > memsz) throw new BootError(`ELF segment ${i}: file size above memory size`);
    if (offset + filesz > image.length) throw new BootError(`ELF segment ${i} lies outside the file`);
    if (paddr + memsz > limit) throw new BootError(`ELF segment ${i} ends above ${limit.toString(16)}`);
    for (const s of segments)
      if (paddr < s.paddr + s.memsz && s.paddr < paddr + memsz)
        throw new BootError(`ELF segment ${i} overlaps another`);
    segments.push({ paddr, data: image.subarray(offset, offset + filesz), memsz });
    end = Math.max(end, paddr + memsz);
  }
  if (segments.length === 0) throw new BootError("ELF kernel has no loadable segment");
  if (!segments.some((s) => entry >= s.paddr && entry < s.paddr + s.memsz))
    throw new BootError(`ELF entry 0x${entry.toString(16)} is not inside a loaded segment (not a vmlinux?)`);
  return { entry, segments, setupHeader: syntheticSetupHeader(), cmdlineSize: ELF_CMDLINE_SIZE - 1, end };
}

/** boot_flag, "HdrS", protocol 2.15, LOADED_HIGH, 16 MiB alignment, the command line size. */
function syntheticSetupHeader(): Uint8Array {
  const b = new Uint8Array(SETUP_HEADER_END - SETUP_HEADER_START);
  const v = new DataView(b.buffer);
  const at = (abs: number) => abs - SETUP_HEADER_START;
  v.setUint16(at(0x1fe), 0xaa55, true);
  v.setUint32(at(0x202), 0x53726448, true);
  v.setUint16(at(0x206), 0x020f, true);
  v.setUint8(at(0x211), 0x01);
  v.setUint32(at(0x230), 0x01000000, true);
  v.setUint32(at(0x238), ELF_CMDLINE_SIZE - 1, true);
  return b;
}
