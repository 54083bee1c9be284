// The KVM side of a virtio-mmio device: its legacy interrupt as an irqfd on an IOAPIC pin, its
// MSI vectors as irqfds on MSI routes, and queue kicks as ioeventfds — QueueNotify with datamatch
// per queue (any guest driver), plus length-0 "fast MMIO" doorbells at +0x1000 + 4·i when KVM
// has them. A kick then wakes the event loop through the eventfd without a vCPU exit to JS.
import { closeSync } from "node:fs";
import { eventfd, eventfdWrite, type FdWatch, unwatchFd, watchFd } from "../native/kvm.ts";
import type { GsiRouter } from "./irq.ts";
import { Cap, type IoeventfdSpec, type Vm } from "./kvm.ts";
import { DOORBELL_OFFSET, DOORBELL_SCALE, type MmioInterrupts, type MmioNotifiers, REG } from "./virtio-mmio.ts";

interface VectorFd {
  gsi: number;
  fd: number;
  assigned: boolean;
}

export class KvmMmioInterrupts implements MmioInterrupts {
  readonly msiCapable: boolean;
  private readonly legacyFd: number;
  private readonly vectors = new Map<number, VectorFd>();
  private enabled = false;
  private closed = false;

  constructor(
    private readonly vm: Vm,
    private readonly router: GsiRouter,
    readonly pin: number,
  ) {
    this.msiCapable = vm.checkExtension(Cap.IRQ_ROUTING) > 0 && vm.checkExtension(Cap.SIGNAL_MSI) > 0;
    this.legacyFd = eventfd();
    vm.irqfd(this.legacyFd, pin);
  }

  legacy(): void {
    eventfdWrite(this.legacyFd);
  }

  msiUpdate(v: number, addressLo: number, addressHi: number, data: number): void {
    let vec = this.vectors.get(v);
    if (!vec) {
      vec = { gsi: this.router.allocate(), fd: eventfd(), assigned: false };
      this.vectors.set(v, vec);
    }
    this.router.setMsi(vec.gsi, addressLo, addressHi, data);
    if (this.enabled && !vec.assigned) {
      this.vm.irqfd(vec.fd, vec.gsi);
      vec.assigned = true;
    }
  }

  msiEnable(on: boolean): void {
    this.enabled = on;
    for (const vec of this.vectors.values()) {
      if (on && !vec.assigned) this.vm.irqfd(vec.fd, vec.gsi);
      if (!on && vec.assigned) this.vm.irqfd(vec.fd, vec.gsi, true);
      vec.assigned = on;
    }
  }

  msiSignal(v: number): void {
    const vec = this.vectors.get(v);
    if (!vec?.assigned) return;
    // The route the guest programmed last goes to KVM before the interrupt uses it.
    if (this.router.flush(vec.gsi)) eventfdWrite(vec.fd);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const vec of this.vectors.values()) {
      if (vec.assigned) this.vm.irqfd(vec.fd, vec.gsi, true);
      closeSync(vec.fd);
      this.router.release(vec.gsi);
    }
    this.vectors.clear();
    this.vm.irqfd(this.legacyFd, this.pin, true);
    closeSync(this.legacyFd);
  }
}

interface Attached {
  fd: number;
  watch: FdWatch;
  specs: IoeventfdSpec[];
}

export class KvmMmioNotifiers implements MmioNotifiers {
  readonly doorbells: boolean;
  private attached: Attached[] = [];

  constructor(
    private readonly vm: Vm,
    private readonly base: number,
  ) {
    this.doorbells = vm.checkExtension(Cap.IOEVENTFD_NO_LENGTH) > 0;
  }

  attach(index: number, kick: () => void): void {
    const fd = eventfd();
    // Always QueueNotify with datamatch: a stock driver knows nothing of doorbells.
    const specs: IoeventfdSpec[] = [{ addr: this.base + REG.QUEUE_NOTIFY, len: 4, fd, datamatch: BigInt(index) }];
    if (this.doorbells) specs.push({ addr: this.base + DOORBELL_OFFSET + DOORBELL_SCALE * index, len: 0, fd });
    const done: IoeventfdSpec[] = [];
    try {
      for (const s of specs) {
        this.vm.ioeventfd(s);
        done.push(s);
      }
    } catch (err) {
      for (const s of done) this.vm.ioeventfd(s, true);
      closeSync(fd);
      throw err;
    }
    const watch = watchFd(fd, () => kick());
    this.attached.push({ fd, watch, specs });
  }

  detachAll(): void {
    for (const a of this.attached) {
      unwatchFd(a.watch);
      for (const s of a.specs) this.vm.ioeventfd(s, true);
      closeSync(a.fd);
    }
    this.attached = [];
  }
}
