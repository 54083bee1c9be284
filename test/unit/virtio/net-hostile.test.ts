// virtio-net against a guest that posts fewer mergeable rx buffers than a frame needs: the device
// must wait for more (a kick, or a slow retry) instead of popping and giving back the same buffers
// turn after turn, which burned a core for as long as the guest kept it so.
import assert from "node:assert/strict";
import { it, mock } from "node:test";
import { bit, VIRTIO_F_VERSION_1 } from "../../../src/virtio/device.ts";
import { GuestMemory } from "../../../src/virtio/memory.ts";
import { NetDevice } from "../../../src/virtio/net/device.ts";
import { NET_HDR_SIZE, VIRTIO_NET_F_MRG_RXBUF } from "../../../src/virtio/net/header.ts";
import type { NetHostEnd } from "../../../src/virtio/net/host-end.ts";
import { TestDriver } from "./driver.ts";

/** A tap holding frames to deliver. */
class Tap implements NetHostEnd {
  readonly frames: Buffer[] = [];
  recv(bufs: Buffer[]): number {
    const f = this.frames.shift();
    if (!f) return -1;
    f.copy(bufs[0]!);
    return f.length;
  }
  send(bufs: Buffer[]): number {
    return bufs.reduce((n, b) => n + b.length, 0);
  }
  setOffload(): void {}
  onReady(): void {}
  want(): void {}
  close(): void {}
}

const turn = () => new Promise<void>((r) => setImmediate(r));

it("a frame larger than the rx buffers posted waits without spinning, then goes once buffers come", async () => {
  // The device's slow retry is a 10 ms timer: with real timers, a loaded machine's 20 turns outlast
  // it and the retry's pop-and-give-back looks like a spin. Mocked, time passes only when ticked.
  mock.timers.enable({ apis: ["setTimeout"] });
  const mem = GuestMemory.alloc(1 << 20);
  const rx = new TestDriver(64, 0, mem, 0);
  const tx = new TestDriver(64, 0, mem, 1 << 19);
  const tap = new Tap();
  const dev = new NetDevice({ hostEnd: tap, mac: "52:54:00:12:34:56" });
  const rxq = rx.queue();
  let pops = 0;
  const pop = rxq.pop.bind(rxq);
  rxq.pop = () => {
    const c = pop();
    if (c) pops++;
    return c;
  };
  dev.activate({
    mem,
    queues: [rxq, tx.queue()],
    interrupt: { queue: () => {}, config: () => {} },
    features: bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MRG_RXBUF),
  });
  try {
    const frame = Buffer.alloc(NET_HDR_SIZE + 1514, 0x5a);
    frame.fill(0, 0, NET_HDR_SIZE);
    tap.frames.push(frame);
    for (let i = 0; i < 2; i++) rx.add([], [256]); // 512 bytes for a 1526-byte frame
    dev.notify(0);
    for (let t = 0; t < 5; t++) await turn();
    const settled = pops;
    for (let t = 0; t < 20; t++) await turn();
    assert.equal(pops, settled, "no chains taken while nothing changed");
    mock.timers.tick(10); // the slow retry: one look at the same two buffers, given back
    for (let t = 0; t < 20; t++) await turn();
    assert.equal(pops, settled + 2, "one retry per retry period, not a spin");
    assert.deepEqual(rx.takeUsed(), [], "nothing delivered yet");
    // The guest posts enough: the frame goes out across the buffers.
    for (let i = 0; i < 6; i++) rx.add([], [256]);
    dev.notify(0);
    for (let t = 0; t < 3; t++) await turn();
    const used = rx.takeUsed();
    assert.equal(used.length, 6, "1526 bytes over six 256-byte buffers");
    assert.equal(
      used.reduce((n, u) => n + u.len, 0),
      frame.length,
    );
  } finally {
    dev.reset(); // (a spinning device would otherwise keep the test process busy for good)
    mock.timers.reset();
  }
});
