// The guest physical address map of the embedded VMM (x86_64). One place, so the boot
// structures, the e820 map, the MP table and the device windows cannot disagree.
export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** Boot GDT (4 entries) and an empty IDT: Linux loads its own before enabling interrupts. */
export const GDT_ADDR = 0x500;
export const IDT_ADDR = 0x520;
/** boot_params, "the zero page". */
export const ZERO_PAGE_ADDR = 0x7000;
/** Stack for the 64-bit entry (grows down below the page tables). */
export const BOOT_STACK = 0x8ff0;
/** Identity-mapping page tables: PML4, PDPT, then one PD per GiB mapped. */
export const PML4_ADDR = 0x9000;
export const PDPT_ADDR = 0xa000;
export const PD_ADDR = 0xb000;
/** How much the boot page tables identity-map (2 MiB pages); Linux builds its own right away. */
export const IDENTITY_MAP_GIB = 4;
/** Kernel command line. */
export const CMDLINE_ADDR = 0x20000;
export const CMDLINE_MAX = 0x10000;
/** The last KiB of base memory: Linux scans it for the MP floating pointer. */
export const EBDA_START = 0x9fc00;
export const BASE_RAM_END = 0xa0000;
/** Where the bzImage's protected-mode kernel goes (its code32_start; 64-bit entry at +0x200). */
export const HIMEM_START = 0x100000;

/** RAM above this is placed at 4 GiB: the gap holds the device windows, IOAPIC and LAPIC. */
export const MMIO_GAP_START = 3 * GiB;
export const MMIO_GAP_END = 4 * GiB;
/** virtio-mmio windows: 4 KiB registers + 4 KiB doorbells each (the Dragonball layout). */
export const VIRTIO_MMIO_BASE = 0xd000_0000;
export const VIRTIO_MMIO_SIZE = 0x2000;
export const IOAPIC_ADDR = 0xfec0_0000;
export const LAPIC_ADDR = 0xfee0_0000;
/** KVM's real-mode TSS (3 pages) and identity-map page (VMX only), just below the BIOS area. */
export const KVM_TSS_ADDR = 0xfffb_d000;
export const KVM_IDENTITY_MAP_ADDR = 0xfffb_c000;

/** Legacy IRQs: COM1 on 4; virtio-mmio devices from 5 on (IOAPIC pins, 24 in KVM's). */
export const SERIAL_IRQ = 4;
export const FIRST_DEVICE_IRQ = 5;
export const IOAPIC_PINS = 24;
export const COM1_PORT = 0x3f8;

/** The MP table fits in the EBDA's 1 KiB only up to this many vCPUs. */
export const MAX_VCPUS = 32;

export interface RamRange {
  guestAddr: number;
  size: number;
}

/** RAM below the gap, then the remainder at 4 GiB. Sizes are rounded down to 2 MiB. */
export function ramRanges(bytes: number): RamRange[] {
  const size = Math.floor(bytes / (2 * MiB)) * 2 * MiB;
  if (size < 64 * MiB) throw new Error(`guest memory ${bytes} bytes is too small (at least 64 MiB)`);
  if (size <= MMIO_GAP_START) return [{ guestAddr: 0, size }];
  return [
    { guestAddr: 0, size: MMIO_GAP_START },
    { guestAddr: MMIO_GAP_END, size: size - MMIO_GAP_START },
  ];
}
