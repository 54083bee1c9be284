// The guest side of a virtio-vsock device, driven from TypeScript: rx/tx rings in a GuestMemory
// (test/unit/virtio/driver.ts), packets encoded and decoded the way a driver does.
import assert from "node:assert/strict";
import { bit, VIRTIO_F_VERSION_1 } from "../../../src/virtio/device.ts";
import { GuestMemory } from "../../../src/virtio/memory.ts";
import { VsockDevice, type VsockOptions } from "../../../src/virtio/vsock/device.ts";
import {
  decodeHeader,
  encodeHeader,
  HDR_SIZE,
  OP_REQUEST,
  OP_RESPONSE,
  OP_RW,
  type VsockHeader,
} from "../../../src/virtio/vsock/packet.ts";
import { TestDriver } from "./driver.ts";

export const CID = 42;

export type Pkt = VsockHeader & { payload: Buffer };

export interface FakeGuestOptions {
  /** rx buffers posted at start. */
  rxBuffers?: number;
  /** Payload room of each rx buffer posted by fill() (the header's 44 bytes come on top). */
  rxRoom?: number;
  /** Ring size of rx and tx. */
  ringSize?: number;
  device?: Partial<VsockOptions>;
}

export class FakeGuest {
  readonly mem: GuestMemory;
  readonly rx: TestDriver;
  readonly tx: TestDriver;
  readonly dev: VsockDevice;
  readonly got: Pkt[] = [];
  readonly rxRoom: number;
  bufAlloc = 1 << 20;
  fwdCnt = 0;

  constructor(opts: FakeGuestOptions | number = {}) {
    const o = typeof opts === "number" ? { rxBuffers: opts } : opts;
    const size = o.ringSize ?? 256;
    this.mem = GuestMemory.alloc(16 << 20);
    this.rx = new TestDriver(size, 0, this.mem, 0);
    this.tx = new TestDriver(size, 0, this.mem, 8 << 20);
    this.rxRoom = o.rxRoom ?? 4096;
    this.dev = new VsockDevice({ guestCid: CID, ...o.device });
    this.dev.activate({
      mem: this.mem,
      queues: [this.rx.queue(), this.tx.queue(), undefined],
      interrupt: { queue: () => this.collect(), config: () => {} },
      features: bit(VIRTIO_F_VERSION_1),
    });
    this.fill(o.rxBuffers ?? 64);
  }

  fill(n: number, room = this.rxRoom): void {
    for (let i = 0; i < n; i++) this.rx.add([], room > 0 ? [HDR_SIZE, room] : [HDR_SIZE]);
    this.dev.notify(0);
  }

  collect(): void {
    for (const u of this.rx.takeUsed()) {
      const w = this.rx.written(u.head);
      const h = decodeHeader(w);
      this.got.push({ ...h, payload: Buffer.from(w.subarray(HDR_SIZE, HDR_SIZE + h.len)) });
      assert.equal(u.len, HDR_SIZE + h.len, "used length covers header and payload");
    }
  }

  header(h: Partial<VsockHeader>, len = 0): Buffer {
    return encodeHeader({
      srcCid: BigInt(CID),
      dstCid: 2n,
      srcPort: 0,
      dstPort: 0,
      len,
      type: 1,
      op: OP_RW,
      flags: 0,
      bufAlloc: this.bufAlloc,
      fwdCnt: this.fwdCnt,
      ...h,
    });
  }

  /** Posts a packet on the tx ring without a kick. */
  post(h: Partial<VsockHeader>, payload = Buffer.alloc(0)): void {
    const hdr = this.header(h, payload.length);
    this.tx.add(payload.length ? [hdr, payload] : [hdr], []);
  }

  /** Posts a packet and kicks. */
  send(h: Partial<VsockHeader>, payload = Buffer.alloc(0)): void {
    this.post(h, payload);
    this.dev.notify(1);
  }

  /** Waits (bounded) for a packet matching `pred`, removing it. */
  async expect(pred: (p: Pkt) => boolean, what: string, ms = 2000): Promise<Pkt> {
    const deadline = Date.now() + ms;
    for (;;) {
      this.collect();
      const i = this.got.findIndex(pred);
      if (i >= 0) return this.got.splice(i, 1)[0]!;
      if (Date.now() > deadline)
        throw new Error(`no ${what} within ${ms} ms; got ${JSON.stringify(this.got.map((p) => p.op))}`);
      await new Promise((r) => setTimeout(r, 1));
    }
  }
}

/** Opens a host → guest connection and answers it. */
export async function established(g: FakeGuest, port = 1024) {
  const p = g.dev.connect(port, 2000);
  const req = await g.expect((x) => x.op === OP_REQUEST, "REQUEST");
  assert.equal(req.dstPort, port);
  assert.equal(req.dstCid, BigInt(CID));
  assert.equal(req.srcCid, 2n);
  g.send({ op: OP_RESPONSE, srcPort: port, dstPort: req.srcPort });
  const s = await p;
  return { s, hostPort: req.srcPort };
}

/** Lets pending ticks, immediates and deferred stream errors run. */
export function turns(n = 3): Promise<void> {
  let p = Promise.resolve();
  for (let i = 0; i < n; i++) p = p.then(() => new Promise<void>((r) => setImmediate(r)));
  return p;
}
