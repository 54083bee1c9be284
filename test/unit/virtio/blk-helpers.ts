// What the virtio-blk tests share: a request header and an interrupt sink that counts.
import type { InterruptSink } from "../../../src/virtio/device.ts";

/** struct virtio_blk_outhdr: type, reserved, sector. */
export function hdr(type: number, sector: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(type, 0);
  b.writeBigUInt64LE(BigInt(sector), 8);
  return b;
}

export class Irq implements InterruptSink {
  queues = 0;
  configs = 0;
  /** Called on every used-buffer interrupt (a driver's interrupt handler). */
  onQueue: (() => void) | undefined;
  queue(): void {
    this.queues++;
    this.onQueue?.();
  }
  config(): void {
    this.configs++;
  }
}
