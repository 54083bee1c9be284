// The VM's GSI routing table. KVM_SET_GSI_ROUTING replaces the whole table, so one owner keeps
// it: KVM's default routes for the 24 legacy pins (PIC + IOAPIC for 0-15, IOAPIC for 16-23 —
// dropping them would silently break every legacy interrupt) plus one MSI route per device vector.
// Each KVM_SET_GSI_ROUTING copies the table and waits for an SRCU grace period, and the guest
// reprograms vectors at will (MSI UPDATE), so changes are coalesced: they reach KVM only before
// an interrupt goes out through a changed route (flush()), at most once however many came first;
// an UPDATE that changes nothing changes nothing.
import type { GsiRoute, Vm } from "./kvm.ts";
import { IOAPIC_PINS } from "./layout.ts";

const IRQCHIP_PIC_MASTER = 0;
const IRQCHIP_PIC_SLAVE = 1;
const IRQCHIP_IOAPIC = 2;
/** KVM's table holds up to 4096 GSIs; plenty for a microVM's devices. */
const MAX_GSI = 1024;

export function defaultRoutes(): GsiRoute[] {
  const r: GsiRoute[] = [];
  for (let pin = 0; pin < IOAPIC_PINS; pin++) {
    if (pin < 16) {
      r.push({ kind: "irqchip", gsi: pin, irqchip: pin < 8 ? IRQCHIP_PIC_MASTER : IRQCHIP_PIC_SLAVE, pin: pin % 8 });
    }
    r.push({ kind: "irqchip", gsi: pin, irqchip: IRQCHIP_IOAPIC, pin });
  }
  return r;
}

export class GsiRouter {
  private readonly msi = new Map<number, { addressLo: number; addressHi: number; data: number }>();
  private next = IOAPIC_PINS;
  private free: number[] = [];
  /** GSIs whose route changed since the table last went to KVM. */
  private readonly dirty = new Set<number>();
  /** KVM_SET_GSI_ROUTING calls made (tests, metrics). */
  commits = 0;

  constructor(
    private readonly vm: Pick<Vm, "setGsiRouting">,
    /**
     * KVM refused the table. flush() runs where a device raises an interrupt (a completion on the
     * event loop), so it never throws: the owner hears of it here (the machine stops the VM: a
     * host bug, as when a vCPU exit handler throws).
     */
    private readonly onError: (err: Error) => void = () => {},
  ) {}

  /** A GSI number for a new MSI vector (not routed until setMsi). */
  allocate(): number {
    const g = this.free.pop() ?? this.next++;
    if (g >= MAX_GSI) throw new Error("out of GSIs for MSI vectors");
    return g;
  }

  /** Routes `gsi` to an MSI; KVM sees it at the next flush(). */
  setMsi(gsi: number, addressLo: number, addressHi: number, data: number): void {
    const cur = this.msi.get(gsi);
    if (cur && cur.addressLo === addressLo && cur.addressHi === addressHi && cur.data === data) return;
    this.msi.set(gsi, { addressLo, addressHi, data });
    this.dirty.add(gsi);
  }

  /** Frees `gsi` for another vector; its route goes with the next flush(). */
  release(gsi: number): void {
    if (this.msi.delete(gsi)) this.dirty.add(gsi);
    this.free.push(gsi);
  }

  /**
   * Sends the table to KVM if `gsi`'s route (or, without an argument, any route) changed since
   * the last time: called right before an interrupt is injected through `gsi`. Returns false if
   * KVM refused it (onError was told; the interrupt should not go out).
   */
  flush(gsi?: number): boolean {
    if (this.dirty.size === 0 || (gsi !== undefined && !this.dirty.has(gsi))) return true;
    this.dirty.clear();
    this.commits++;
    try {
      this.vm.setGsiRouting(this.table());
      return true;
    } catch (e) {
      this.onError(e as Error);
      return false;
    }
  }

  /** The table as it is sent to KVM. */
  table(): GsiRoute[] {
    const t = defaultRoutes();
    for (const [gsi, m] of this.msi) t.push({ kind: "msi", gsi, ...m });
    return t;
  }
}
