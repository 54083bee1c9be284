// A 16550A-compatible UART (COM1): enough for Linux's 8250 driver — transmit with the THR-empty
// interrupt, receive with a FIFO, scratch/divisor/line/modem registers, and loopback (the
// driver's probe checks it). Output bytes go to a sink (the VMM logs them as console lines).
import type { BusDevice } from "./bus.ts";

const IER_RDI = 0x01;
const IER_THRI = 0x02;
const IIR_NONE = 0x01;
const IIR_THRI = 0x02;
const IIR_RDI = 0x04;
const IIR_FIFO_BITS = 0xc0;
const LCR_DLAB = 0x80;
const LSR_DR = 0x01;
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;
const MCR_LOOP = 0x10;
const MSR_DCD_DSR_CTS = 0xb0;
/** Bytes of host input (or loopback) the UART holds for the guest; more are dropped. */
export const RX_FIFO_MAX = 4096;

export class Serial implements BusDevice {
  private ier = 0;
  private lcr = 0x03;
  private mcr = 0x08;
  private scr = 0;
  private dll = 0x0c;
  private dlm = 0;
  private thrEmptyPending = false;
  private rx: number[] = [];

  constructor(
    /** Called with each byte the guest transmits. */
    private readonly out: (byte: number) => void,
    /** Raises the UART's interrupt line (an edge). */
    private readonly irq: () => void,
  ) {}

  /** Bytes waiting for the guest to read them (≤ RX_FIFO_MAX). */
  get rxQueued(): number {
    return this.rx.length;
  }

  /** Bytes from the host side (console input). */
  input(data: Uint8Array): void {
    for (const b of data) if (this.rx.length < RX_FIFO_MAX) this.rx.push(b);
    this.update();
  }

  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    data[0] = this.readReg(offset);
  }

  write(offset: number, data: Uint8Array): void {
    this.writeReg(offset, data[0] ?? 0);
  }

  private dlab(): boolean {
    return (this.lcr & LCR_DLAB) !== 0;
  }

  private iir(): number {
    if (this.ier & IER_RDI && this.rx.length) return IIR_RDI | IIR_FIFO_BITS;
    if (this.ier & IER_THRI && this.thrEmptyPending) return IIR_THRI | IIR_FIFO_BITS;
    return IIR_NONE | IIR_FIFO_BITS;
  }

  private readReg(offset: number): number {
    switch (offset) {
      case 0:
        if (this.dlab()) return this.dll;
        {
          const b = this.rx.shift() ?? 0;
          this.update();
          return b;
        }
      case 1:
        return this.dlab() ? this.dlm : this.ier;
      case 2: {
        const v = this.iir();
        // Reading IIR while it reports THR-empty acknowledges that interrupt.
        if ((v & 0x0f) === IIR_THRI) this.thrEmptyPending = false;
        return v;
      }
      case 3:
        return this.lcr;
      case 4:
        return this.mcr;
      case 5:
        return LSR_THRE | LSR_TEMT | (this.rx.length ? LSR_DR : 0);
      case 6:
        if (this.mcr & MCR_LOOP) {
          // Loopback: DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD.
          const m = this.mcr;
          return ((m & 0x01) << 5) | ((m & 0x02) << 3) | ((m & 0x04) << 4) | ((m & 0x08) << 4);
        }
        return MSR_DCD_DSR_CTS;
      case 7:
        return this.scr;
      default:
        return 0xff;
    }
  }

  private writeReg(offset: number, v: number): void {
    switch (offset) {
      case 0:
        if (this.dlab()) {
          this.dll = v;
          return;
        }
        if (this.mcr & MCR_LOOP) {
          if (this.rx.length < RX_FIFO_MAX) this.rx.push(v);
        } else {
          this.out(v);
        }
        // The byte left at once: THR is empty again.
        this.thrEmptyPending = true;
        this.update();
        return;
      case 1:
        if (this.dlab()) {
          this.dlm = v;
          return;
        }
        {
          const enablingThri = !(this.ier & IER_THRI) && v & IER_THRI;
          this.ier = v & 0x0f;
          if (enablingThri) this.thrEmptyPending = true;
          this.update();
        }
        return;
      case 2:
        if (v & 0x02) this.rx = []; // FCR: clear receive FIFO
        return;
      case 3:
        this.lcr = v;
        return;
      case 4:
        this.mcr = v & 0x1f;
        return;
      case 7:
        this.scr = v;
        return;
      default:
        return;
    }
  }

  /** Raises the line when an enabled condition is pending (edge-triggered on the IOAPIC). */
  private update(): void {
    if ((this.iir() & 0x0f) !== IIR_NONE) this.irq();
  }
}
