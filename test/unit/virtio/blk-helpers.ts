// What the virtio-blk tests share: a request header, an interrupt sink that counts, and a request
// runner over a test driver's queue.
import type { BlkDevice } from "../../../src/virtio/blk/device.ts";
import type { InterruptSink } from "../../../src/virtio/device.ts";
import type { TestDriver } from "./driver.ts";

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

/** Submits a request on queue 0 and waits (bounded) for its completion: status, used length, data. */
export function requestRunner(dev: BlkDevice, d: TestDriver) {
  return async (readable: Buffer[], writable: number[]) => {
    const head = d.add(readable, writable);
    dev.notify(0);
    const deadline = Date.now() + 5000;
    for (;;) {
      const u = d.takeUsed().find((x) => x.head === head);
      if (u) {
        const w = d.written(head);
        return { status: w[w.length - 1]!, len: u.len, data: w.subarray(0, w.length - 1) };
      }
      if (Date.now() > deadline) throw new Error("request did not complete in 5 s");
      await new Promise((r) => setTimeout(r, 1));
    }
  };
}
