// Address-space buses for exits that reach userspace: port I/O and MMIO. A device claims a
// range and sees offsets into it; accesses nobody claims read as all-ones and are otherwise
// ignored (as on real hardware), with a rate-limited debug log so a probing guest stays cheap.
import type { Logger } from "pino";

export interface BusDevice {
  /** Fill `data` (1, 2, 4 or 8 bytes) with the value at `offset` in the device's range. */
  read(offset: number, data: Uint8Array): void;
  write(offset: number, data: Uint8Array): void;
}

interface Range {
  base: number;
  size: number;
  dev: BusDevice;
  name: string;
}

export class Bus {
  private ranges: Range[] = [];
  private unclaimed = 0;

  constructor(
    readonly kind: "pio" | "mmio",
    private readonly log?: Logger,
  ) {}

  /** Claims [base, base+size); overlapping claims are a programming error. */
  register(base: number, size: number, dev: BusDevice, name: string): void {
    if (size <= 0) throw new Error(`${this.kind} range for ${name} has no size`);
    for (const r of this.ranges) {
      if (base < r.base + r.size && r.base < base + size) {
        throw new Error(`${this.kind} range ${name} 0x${base.toString(16)}+0x${size.toString(16)} overlaps ${r.name}`);
      }
    }
    this.ranges.push({ base, size, dev, name });
    this.ranges.sort((a, b) => a.base - b.base);
  }

  unregister(dev: BusDevice): void {
    this.ranges = this.ranges.filter((r) => r.dev !== dev);
  }

  find(addr: number): Range | undefined {
    for (const r of this.ranges) if (addr >= r.base && addr < r.base + r.size) return r;
    return undefined;
  }

  /** Returns false if no device claims `addr` (data is then all-ones). */
  read(addr: number, data: Uint8Array): boolean {
    const r = this.find(addr);
    if (!r || addr + data.length > r.base + r.size) {
      data.fill(0xff);
      this.noteUnclaimed("read", addr, data.length);
      return false;
    }
    r.dev.read(addr - r.base, data);
    return true;
  }

  write(addr: number, data: Uint8Array): boolean {
    const r = this.find(addr);
    if (!r || addr + data.length > r.base + r.size) {
      this.noteUnclaimed("write", addr, data.length);
      return false;
    }
    r.dev.write(addr - r.base, data);
    return true;
  }

  private noteUnclaimed(op: string, addr: number, len: number): void {
    this.unclaimed++;
    // Powers of two: the first few, then ever rarer, so a guest probing ports cannot flood logs.
    if ((this.unclaimed & (this.unclaimed - 1)) === 0) {
      this.log?.debug(
        { bus: this.kind, op, addr: `0x${addr.toString(16)}`, len, count: this.unclaimed },
        "unclaimed access",
      );
    }
  }
}
