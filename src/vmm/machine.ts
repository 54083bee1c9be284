// One microVM: KVM VM with in-kernel irqchip and PIT, guest RAM, a bzImage booted through the
// 64-bit Linux boot protocol, an MP table, COM1, the buses devices attach to, and one native run
// thread per vCPU. The guest ends the run by rebooting (reboot=t: triple fault → SHUTDOWN).
import { readFileSync } from "node:fs";
import type { Logger } from "pino";
import { GUEST_BASE_PARAMS, kernelCmdline } from "../guest/cmdline.ts";
import type { VirtioDevice } from "../virtio/device.ts";
import type { GuestMemory } from "../virtio/memory.ts";
import { BootError, parseBzImage } from "./boot/bzimage.ts";
import { isElf, parseElfKernel } from "./boot/elf.ts";
import { entryRegs, longModeSregs, writeBootTables } from "./boot/longmode.ts";
import { buildMpTable } from "./boot/mptable.ts";
import { buildZeroPage, e820Map } from "./boot/zeropage.ts";
import { Bus, type BusDevice } from "./bus.ts";
import { ConsoleLines } from "./console.ts";
import { setupVcpu } from "./cpu.ts";
import { GsiRouter } from "./irq.ts";
import { Cap, Kvm, type Vm } from "./kvm.ts";
import {
  CMDLINE_ADDR,
  CMDLINE_MAX,
  COM1_PORT,
  EBDA_START,
  FIRST_DEVICE_IRQ,
  HIMEM_START,
  IOAPIC_PINS,
  KVM_IDENTITY_MAP_ADDR,
  KVM_TSS_ADDR,
  MAX_VCPUS,
  MiB,
  ramRanges,
  SERIAL_IRQ,
  VIRTIO_MMIO_BASE,
  ZERO_PAGE_ADDR,
} from "./layout.ts";
import { allocateGuestRam, type GuestRam } from "./memory.ts";
import { Serial } from "./serial.ts";
import { StatsReader } from "./stats.ts";
import { type StopReason, VcpuLoop } from "./vcpu.ts";
import { MmioTransport, WINDOW_SIZE } from "./virtio-mmio.ts";
import { KvmMmioInterrupts, KvmMmioNotifiers } from "./virtio-mmio-kvm.ts";

/**
 * What this machine adds to every guest's command line: the guest base (console on COM1, triple-fault
 * reboot, no PCI), and no ACPI (it has none), no port-0x80 delays, no module loading.
 */
export const MACHINE_CMDLINE = kernelCmdline(GUEST_BASE_PARAMS, "acpi=off io_delay=none nomodule");

export interface MachineConfig {
  /** bzImage path or bytes. */
  kernel: string | Uint8Array;
  /** Appended to MACHINE_CMDLINE (parameters already there are dropped). */
  cmdline?: string;
  memoryBytes: number;
  vcpus: number;
  log: Logger;
  /** Each complete line the guest writes to its console. */
  onConsoleLine?: (line: string) => void;
}

/** Ports Linux touches that need an answer but no behaviour: POST codes, CMOS (UIP clear). */
class Quiet implements BusDevice {
  read(_o: number, data: Uint8Array): void {
    data.fill(0);
  }
  write(): void {}
}

export class Machine {
  readonly pio: Bus;
  readonly mmio: Bus;
  readonly serial: Serial;
  readonly loops: VcpuLoop[] = [];
  readonly stopped: Promise<StopReason>;
  private resolveStopped!: (r: StopReason) => void;
  private closed = false;
  private readonly console: ConsoleLines;
  private extraCmdline: string[] = [];
  private started = false;
  readonly router: GsiRouter;
  readonly transports: MmioTransport[] = [];
  /** Per-vCPU KVM stats, readable while the vCPUs run (absent where KVM has no binary stats). */
  readonly vcpuStats: (StatsReader | undefined)[] = [];
  private readonly deviceIrqs: { interrupts: KvmMmioInterrupts; notifiers: KvmMmioNotifiers }[] = [];

  private constructor(
    readonly cfg: MachineConfig,
    readonly kvm: Kvm,
    readonly vm: Vm,
    private readonly ram: GuestRam,
  ) {
    this.router = new GsiRouter(vm, (err) => {
      cfg.log.error({ err: err.message }, "KVM refused the interrupt routing table; stopping the VM");
      this.resolveStopped({ kind: "error", message: `KVM_SET_GSI_ROUTING failed: ${err.message}` });
    });
    this.pio = new Bus("pio", cfg.log);
    this.mmio = new Bus("mmio", cfg.log);
    this.stopped = new Promise((res) => {
      this.resolveStopped = res;
    });
    this.released = new Promise((res) => {
      this.resolveReleased = res;
    });
    this.console = new ConsoleLines((line) => {
      cfg.log.debug({ console: line });
      cfg.onConsoleLine?.(line);
    });
    this.serial = new Serial(
      (b) => this.console.byte(b),
      () => {
        this.vm.irqLine(SERIAL_IRQ, true);
        this.vm.irqLine(SERIAL_IRQ, false);
      },
    );
    this.pio.register(COM1_PORT, 8, this.serial, "com1");
    this.pio.register(0x80, 1, new Quiet(), "post");
    this.pio.register(0x70, 2, new Quiet(), "cmos");
  }

  get mem(): GuestMemory {
    return this.ram.mem;
  }

  /** Guest RAM's host mappings (memory accounting must leave them out). */
  get ramHostRanges(): readonly { start: bigint; size: number }[] {
    return this.ram.hostRanges;
  }

  /** Creates the VM and its memory; devices attach next, then boot(). */
  static create(cfg: MachineConfig): Machine {
    if (!Number.isInteger(cfg.vcpus) || cfg.vcpus < 1 || cfg.vcpus > MAX_VCPUS) {
      throw new Error(`vCPU count ${cfg.vcpus} out of range 1..${MAX_VCPUS}`);
    }
    ramRanges(cfg.memoryBytes); // validates the size before any fd exists
    const kvm = Kvm.open();
    let vm: Vm | undefined;
    try {
      vm = kvm.createVm();
      for (const [cap, name] of [
        [Cap.IRQCHIP, "IRQCHIP"],
        [Cap.IOEVENTFD, "IOEVENTFD"],
        [Cap.IRQFD, "IRQFD"],
        [Cap.PIT2, "PIT2"],
      ] as const) {
        if (!vm.checkExtension(cap)) throw new Error(`KVM lacks KVM_CAP_${name}`);
      }
      vm.setTssAddr(KVM_TSS_ADDR);
      vm.setIdentityMapAddr(KVM_IDENTITY_MAP_ADDR);
      vm.createIrqchip();
      vm.createPit2();
      const ram = allocateGuestRam(vm, cfg.memoryBytes);
      return new Machine(cfg, kvm, vm, ram);
    } catch (err) {
      vm?.close();
      kvm.close();
      throw err;
    }
  }

  /** Adds `virtio_mmio.device=…`-style arguments (devices attached before boot()). */
  addCmdline(arg: string): void {
    this.extraCmdline.push(arg);
  }

  /**
   * Attaches a virtio device on the next virtio-mmio window and IOAPIC pin, with irqfd/ioeventfd
   * wiring and the Dragonball MSI/doorbell extension; it is announced on the command line.
   */
  addVirtioDevice(device: VirtioDevice): MmioTransport {
    if (this.started) throw new Error("devices are attached before boot()");
    const n = this.transports.length;
    const pin = FIRST_DEVICE_IRQ + n;
    if (pin >= IOAPIC_PINS) throw new Error("no IOAPIC pin left for another virtio-mmio device");
    const base = VIRTIO_MMIO_BASE + n * WINDOW_SIZE;
    const interrupts = new KvmMmioInterrupts(this.vm, this.router, pin);
    const notifiers = new KvmMmioNotifiers(this.vm, base);
    const t = new MmioTransport({ device, mem: this.mem, interrupts, notifiers, log: this.cfg.log });
    this.mmio.register(base, WINDOW_SIZE, t, device.name);
    this.transports.push(t);
    this.deviceIrqs.push({ interrupts, notifiers });
    this.addCmdline(`virtio_mmio.device=${WINDOW_SIZE / 1024}K@0x${base.toString(16)}:${pin}`);
    return t;
  }

  /** Loads the kernel and boot structures, sets up the vCPUs and starts them. */
  boot(): void {
    if (this.started) throw new Error("machine already booted");
    this.started = true;
    const { cfg, mem } = this;
    const { image, entry } = loadKernel(mem, typeof cfg.kernel === "string" ? readFileSync(cfg.kernel) : cfg.kernel);
    const cmdline = kernelCmdline(MACHINE_CMDLINE, cfg.cmdline, this.extraCmdline);
    const cmd = Buffer.from(`${cmdline}\0`);
    if (cmd.length > CMDLINE_MAX) throw new Error("kernel command line too long");
    mem.write(CMDLINE_ADDR, cmd);
    const ranges = ramRanges(cfg.memoryBytes);
    mem.write(
      ZERO_PAGE_ADDR,
      buildZeroPage({ image, cmdlineAddr: CMDLINE_ADDR, cmdlineLength: cmd.length - 1, e820: e820Map(ranges) }),
    );
    mem.write(EBDA_START, buildMpTable(EBDA_START, cfg.vcpus));
    writeBootTables(mem);
    cfg.log.info({ cmdline, vcpus: cfg.vcpus, memoryMiB: cfg.memoryBytes / MiB, kernel: image.format }, "booting");

    const supported = this.kvm.supportedCpuid();
    for (let id = 0; id < cfg.vcpus; id++) {
      const vcpu = this.vm.createVcpu(id);
      setupVcpu(vcpu, supported, cfg.vcpus);
      if (id === 0) {
        vcpu.setSregs(longModeSregs(vcpu.getSregs()));
        vcpu.setRegs(entryRegs(vcpu.getRegs(), entry, ZERO_PAGE_ADDR));
      }
      try {
        this.vcpuStats.push(new StatsReader(vcpu.fd));
      } catch {
        this.vcpuStats.push(undefined); // KVM < 5.14
      }
      // Application processors wait in the in-kernel LAPIC for the BSP's INIT/SIPI.
      this.loops.push(
        new VcpuLoop(vcpu, { pio: this.pio, mmio: this.mmio, log: cfg.log, onStop: (r) => this.onVcpuStop(id, r) }),
      );
    }
    for (const l of this.loops) l.start();
    this.watchFirstEntry();
  }

  /** ms from boot() until the BSP's first VM exit (i.e. the guest really runs), once known. */
  firstExitMs: number | undefined;
  private entryWatch: NodeJS.Timeout | undefined;

  /**
   * Watches the BSP's KVM stats until its first VM exit. Inside the nested test host under heavy
   * host load the first entry has been seen to take from seconds to minutes (the vCPU thread spins
   * in the L1 kernel before VMRUN, with zero exits); this logs it, and kicks the vCPU (KVM_RUN
   * returns EINTR and is re-entered), which is harmless where the guest is fine.
   */
  private watchFirstEntry(): void {
    const stats = this.vcpuStats[0];
    if (!stats) return;
    const t0 = performance.now();
    let kicks = 0;
    const check = () => {
      if (this.closed) return;
      const exits = stats.read().get("exits") ?? 0n;
      const ms = performance.now() - t0;
      if (exits > 0n) {
        this.firstExitMs = ms;
        if (kicks) this.cfg.log.warn({ ms: Math.round(ms), kicks }, "BSP entered the guest after a slow first entry");
        return;
      }
      if (ms >= 2000) {
        kicks++;
        if ((kicks & (kicks - 1)) === 0) {
          this.cfg.log.warn({ ms: Math.round(ms), kicks }, "BSP has not entered the guest yet; kicking it");
        }
        this.loops[0]?.kick();
      }
      this.entryWatch = setTimeout(check, ms < 2000 ? 20 : 1000);
      this.entryWatch.unref();
    };
    check();
  }

  private onVcpuStop(id: number, reason: StopReason): void {
    this.cfg.log.info({ vcpu: id, reason }, "guest stopped");
    this.resolveStopped(reason);
  }

  /**
   * Resolves once guest RAM is unmapped: after close(), and only when no device I/O holds it any
   * more (a read or write still on the thread pool keeps it mapped; see GuestRam.release).
   */
  readonly released: Promise<void>;
  private resolveReleased!: () => void;

  /** Stops every vCPU thread and frees the VM, and its memory once no device I/O holds it (idempotent). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.entryWatch);
    for (const l of this.loops) l.stop();
    for (const s of this.vcpuStats) s?.close();
    for (const t of this.transports) {
      t.device.reset();
      t.close();
    }
    for (const d of this.deviceIrqs) {
      d.notifiers.detachAll();
      d.interrupts.close();
    }
    this.vm.close();
    this.kvm.close();
    this.ram
      .release()
      .then(this.resolveReleased, (err: unknown) => this.cfg.log.error({ err }, "unmapping guest RAM failed"));
  }
}

/**
 * Puts the kernel into guest memory: a bzImage's protected-mode part at 1 MiB (entered at +0x200,
 * it decompresses itself), or a vmlinux's segments at their physical addresses (entered at
 * startup_64 directly: no decompression). Returns what boot_params needs and the 64-bit entry.
 */
export function loadKernel(
  mem: GuestMemory,
  file: Uint8Array,
): { image: { format: string; setupHeader: Uint8Array; cmdlineSize: number }; entry: number } {
  const tooSmall = (needed: number) =>
    new Error(`guest memory too small for the kernel (needs ${Math.ceil(needed / MiB)} MiB below 3 GiB)`);
  if (isElf(file)) {
    const elf = parseElfKernel(file);
    if (elf.segments.some((s) => s.paddr < HIMEM_START)) throw new BootError("vmlinux segment below 1 MiB");
    for (const s of elf.segments) {
      if (!mem.contains(s.paddr, s.memsz)) throw tooSmall(elf.end);
      mem.write(s.paddr, s.data);
      // Guest RAM starts zeroed (fresh anonymous mapping): the .bss tail needs no writes.
    }
    return { image: { format: "vmlinux", ...elf }, entry: elf.entry };
  }
  const bz = parseBzImage(file);
  const needed = HIMEM_START + Math.max(bz.kernel.length, bz.initSize);
  if (!mem.contains(HIMEM_START, needed - HIMEM_START)) throw tooSmall(needed);
  mem.write(HIMEM_START, bz.kernel);
  return { image: { format: `bzImage ${bz.protocol.toString(16)}`, ...bz }, entry: HIMEM_START + 0x200 };
}
