// The Linux x86 boot protocol (Documentation/x86/boot.rst) as a loader sees it: parse a bzImage's
// setup header, and find the protected-mode kernel that goes to code32_start. Only 64-bit entry
// is supported (XLF_KERNEL_64): the VMM starts the vCPU in long mode at load address + 0x200.

const SETUP_HEADER_START = 0x1f1;
const HDRS_MAGIC = 0x53726448; // "HdrS"
const XLF_KERNEL_64 = 1 << 0;
const LOADED_HIGH = 1 << 0;
/** 2.12 added xloadflags (64-bit entry). */
const MIN_PROTOCOL = 0x20c;

export interface BzImage {
  /** Boot protocol version, e.g. 0x20f. */
  protocol: number;
  /** The setup header bytes (from 0x1f1), copied into boot_params at the same offset. */
  setupHeader: Uint8Array;
  /** The protected-mode kernel (after the real-mode setup sectors). */
  kernel: Uint8Array;
  /** Memory the kernel needs from its load address while decompressing. */
  initSize: number;
  cmdlineSize: number;
  prefAddress: bigint;
  relocatable: boolean;
}

export class BootError extends Error {
  override name = "BootError";
}

export function parseBzImage(image: Uint8Array): BzImage {
  if (image.length < 0x400) throw new BootError("kernel image too small to be a bzImage");
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  if (v.getUint16(0x1fe, true) !== 0xaa55) throw new BootError("not a bzImage (no 0xAA55 boot flag)");
  if (v.getUint32(0x202, true) !== HDRS_MAGIC) throw new BootError("not a bzImage (no HdrS setup header)");
  const protocol = v.getUint16(0x206, true);
  if (protocol < MIN_PROTOCOL) {
    throw new BootError(`boot protocol 0x${protocol.toString(16)} is too old (64-bit entry needs ≥ 2.12)`);
  }
  if (!(v.getUint8(0x211) & LOADED_HIGH)) throw new BootError("zImage (not loaded high) is not supported");
  if (!(v.getUint16(0x236, true) & XLF_KERNEL_64)) throw new BootError("kernel has no 64-bit entry point");
  const setupSects = v.getUint8(0x1f1) || 4;
  const kernelOffset = (setupSects + 1) * 512;
  if (kernelOffset >= image.length) throw new BootError("bzImage truncated: no protected-mode kernel");
  // The header ends where the jump at 0x200 lands: 0x202 + its 8-bit displacement.
  const headerEnd = 0x202 + v.getUint8(0x201);
  return {
    protocol,
    setupHeader: image.slice(SETUP_HEADER_START, headerEnd),
    kernel: image.subarray(kernelOffset),
    initSize: v.getUint32(0x260, true),
    cmdlineSize: v.getUint32(0x238, true),
    prefAddress: v.getBigUint64(0x258, true),
    relocatable: v.getUint8(0x234) !== 0,
  };
}
