// Guest RAM for the embedded VMM: anonymous host mappings registered as KVM memory slots, seen by
// devices through the same GuestMemory abstraction the vhost-user path uses (src/virtio/memory.ts).
import { addressOf, mapAnonymous, unmap } from "../native/kvm.ts";
import { GuestMemory } from "../virtio/memory.ts";
import type { Vm } from "./kvm.ts";
import { ramRanges } from "./layout.ts";

export interface GuestRam {
  mem: GuestMemory;
  /** Where each region is mapped in this process (to tell guest RAM apart in /proc/self/smaps). */
  hostRanges: { start: bigint; size: number }[];
  /**
   * Unmaps every region (KVM slots must be gone, i.e. the VM closed, or vCPUs stopped) once no
   * device I/O holds guest memory (GuestMemory.hold): a read still on the thread pool would
   * otherwise write guest disk bytes into whatever the process maps there next. Until then the
   * regions stay mapped, however long that takes. Idempotent; resolves once unmapped.
   */
  release(): Promise<void>;
}

export function allocateGuestRam(vm: Vm, bytes: number): GuestRam {
  const maps: ArrayBuffer[] = [];
  const hostRanges: { start: bigint; size: number }[] = [];
  try {
    const regions = ramRanges(bytes).map((r, slot) => {
      const ab = mapAnonymous(r.size);
      maps.push(ab);
      const host = addressOf(ab);
      hostRanges.push({ start: host, size: r.size });
      vm.setMemoryRegion(slot, r.guestAddr, r.size, host);
      return { guestAddr: r.guestAddr, bytes: Buffer.from(ab) };
    });
    const mem = new GuestMemory(regions);
    let released: Promise<void> | undefined;
    return {
      mem,
      hostRanges,
      release() {
        released ??= mem.unheld().then(() => {
          for (const ab of maps) unmap(ab);
        });
        return released;
      },
    };
  } catch (err) {
    for (const ab of maps) unmap(ab);
    throw err;
  }
}
