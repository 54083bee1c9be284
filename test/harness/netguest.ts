// The guest side of a virtio-net device in tests: a TypeScript driver over a memory buffer that
// posts rx buffers, reassembles frames spread over mergeable buffers, and sends frames on tx.
import { bit } from "../../src/virtio/device.ts";
import { GuestMemory } from "../../src/virtio/memory.ts";
import type { NetDevice } from "../../src/virtio/net/device.ts";
import { NET_HDR_SIZE, VIRTIO_NET_F_MRG_RXBUF } from "../../src/virtio/net/header.ts";
import { TestDriver } from "../unit/virtio/driver.ts";
import { type Parsed, parseFrame } from "./testnet.ts";

export interface RxFrame {
  hdr: Buffer;
  frame: Buffer;
  buffers: number;
}

/** The guest side: rx buffers posted to the device, frames collected from the used ring. */
export class NetGuest {
  readonly mem = GuestMemory.alloc(32 << 20);
  readonly rx: TestDriver;
  readonly tx = new TestDriver(256, 0, this.mem, 16 << 20);
  readonly frames: RxFrame[] = [];
  onFrame: ((f: RxFrame, p: Parsed) => void) | undefined;
  private partial: { hdr: Buffer; parts: Buffer[]; want: number } | undefined;
  private readonly poller: NodeJS.Timeout;

  constructor(
    readonly dev: NetDevice,
    readonly features: bigint,
    rxRingSize = 256,
  ) {
    this.rx = new TestDriver(rxRingSize, 0, this.mem, 0);
    dev.activate({
      mem: this.mem,
      queues: [this.rx.queue(), this.tx.queue()],
      interrupt: { queue: (i) => i === 0 && this.collect(), config: () => {} },
      features,
    });
    // With EVENT_IDX the device interrupts only when asked: poll the used ring as well.
    this.poller = setInterval(() => this.collect(), 5);
  }

  get mergeable(): boolean {
    return (this.features & bit(VIRTIO_NET_F_MRG_RXBUF)) !== 0n;
  }

  post(n: number, len: number): void {
    for (let i = 0; i < n; i++) this.rx.add([], [len]);
    this.dev.notify(0);
  }

  collect(): void {
    for (const u of this.rx.takeUsed()) {
      const data = this.rx.written(u.head).subarray(0, u.len);
      if (!this.partial) {
        const hdr = Buffer.from(data.subarray(0, NET_HDR_SIZE));
        this.partial = { hdr, parts: [Buffer.from(data.subarray(NET_HDR_SIZE))], want: hdr.readUInt16LE(10) };
      } else this.partial.parts.push(Buffer.from(data));
      if (this.partial.parts.length >= this.partial.want) {
        const f = {
          hdr: this.partial.hdr,
          frame: Buffer.concat(this.partial.parts),
          buffers: this.partial.parts.length,
        };
        this.partial = undefined;
        this.frames.push(f);
        this.onFrame?.(f, parseFrame(f.frame));
      }
    }
  }

  send(frame: Buffer, hdr = Buffer.alloc(NET_HDR_SIZE)): number {
    const head = this.tx.add([hdr, frame], []);
    this.dev.notify(1);
    return head;
  }

  async waitFrames(n: number, ms = 5000): Promise<RxFrame[]> {
    const deadline = Date.now() + ms;
    while (this.frames.length < n) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${n} rx frames (got ${this.frames.length})`);
      await new Promise((r) => setTimeout(r, 10));
    }
    return this.frames.slice(0, n);
  }

  stop(): void {
    clearInterval(this.poller);
  }
}
