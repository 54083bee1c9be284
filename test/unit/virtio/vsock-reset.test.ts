// A vsock device reset must be harmless whatever the device's state: never activated (QEMU died
// before the guest drove it), reset twice (vhost-user disconnect, then the backend's cleanup), or
// with connections half open. A host connect() still waiting for the guest is rejected with a clear
// error; nothing is thrown out of the event loop (a stream destroyed with an error and no listener
// used to crash the shim with "vsock device reset").
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { bit, VIRTIO_F_VERSION_1 } from "../../../src/virtio/device.ts";
import { GuestMemory } from "../../../src/virtio/memory.ts";
import type { VsockStream } from "../../../src/virtio/vsock/connection.ts";
import { VsockDevice } from "../../../src/virtio/vsock/device.ts";
import { decodeHeader, encodeHeader, HDR_SIZE, OP_REQUEST, OP_RESPONSE } from "../../../src/virtio/vsock/packet.ts";
import { TestDriver } from "./driver.ts";

const CID = 42;
const uncaught: Error[] = [];
const onUncaught = (e: Error) => uncaught.push(e);
before(() => process.prependListener("uncaughtException", onUncaught));
after(() => process.off("uncaughtException", onUncaught));

/** Lets pending ticks, immediates and stream 'error' emissions run. */
const settle = () => new Promise((r) => setTimeout(r, 20));

function activated(dev: VsockDevice) {
  const mem = GuestMemory.alloc(4 << 20);
  const rx = new TestDriver(64, 0, mem, 0);
  const tx = new TestDriver(64, 0, mem, 2 << 20);
  dev.activate({
    mem,
    queues: [rx.queue(), tx.queue(), undefined],
    interrupt: { queue: () => {}, config: () => {} },
    features: bit(VIRTIO_F_VERSION_1),
  });
  for (let i = 0; i < 16; i++) rx.add([], [HDR_SIZE, 4096]);
  dev.notify(0);
  const send = (h: Parameters<typeof encodeHeader>[0]) => {
    tx.add([encodeHeader(h)], []);
    dev.notify(1);
  };
  const received = () => rx.takeUsed().map((u) => decodeHeader(rx.written(u.head)));
  return { send, received };
}

describe("VsockDevice.reset", () => {
  it("is harmless on a device that was never activated, and twice in a row", async () => {
    const dev = new VsockDevice({ guestCid: CID });
    dev.reset();
    dev.reset();
    assert.equal(dev.connectionCount, 0);
    await settle();
    assert.deepEqual(uncaught, []);
  });

  it("rejects a connect() pending on a never-activated device, without an uncaught error", async () => {
    const dev = new VsockDevice({ guestCid: CID });
    const pending = dev.connect(1024, 5000);
    assert.equal(dev.connectionCount, 1);
    dev.reset();
    await assert.rejects(pending, (e: NodeJS.ErrnoException) => {
      assert.equal(e.code, "ECONNRESET");
      assert.match(e.message, /guest port 1024.*reset/);
      return true;
    });
    dev.reset();
    await settle();
    assert.equal(dev.connectionCount, 0);
    assert.deepEqual(uncaught, []);
  });

  it("resets established streams with ECONNRESET and forgets half-accepted guest connections", async () => {
    const dev = new VsockDevice({ guestCid: CID });
    const g = activated(dev);
    // Host → guest, established.
    const p = dev.connect(2000, 5000);
    await settle();
    const req = g.received().find((h) => h.op === OP_REQUEST);
    assert.ok(req, "the device sent a REQUEST");
    const hdr = {
      srcCid: BigInt(CID),
      dstCid: 2n,
      srcPort: 2000,
      dstPort: req.srcPort,
      type: 1,
      flags: 0,
      bufAlloc: 65536,
      fwdCnt: 0,
      len: 0,
    };
    g.send({ ...hdr, op: OP_RESPONSE });
    const stream = (await p) as VsockStream;
    const streamErr = new Promise<NodeJS.ErrnoException>((r) => stream.once("error", r));
    // Guest → host, still waiting for an acceptor that answers later.
    let answer: (h: ((s: VsockStream) => void) | undefined) => void = () => {};
    let handed = 0;
    dev.acceptor = () => new Promise((r) => (answer = r));
    g.send({ ...hdr, srcPort: 3000, dstPort: 7000, op: OP_REQUEST });
    assert.equal(dev.connectionCount, 2);

    dev.reset();
    assert.equal(dev.connectionCount, 0);
    assert.equal((await streamErr).code, "ECONNRESET");
    answer(() => handed++);
    dev.reset();
    await settle();
    assert.equal(handed, 0, "a connection accepted after the reset is not handed out");
    assert.deepEqual(uncaught, []);
  });
});
