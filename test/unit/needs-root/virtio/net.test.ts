// virtio-net driven by a TypeScript driver over a memory buffer, attached to a real tap in a
// private network namespace the test creates: frames go guest → tap → the namespace's stack and
// back, with mergeable rx buffers, offloads, backpressure and hostile input.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { bit, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_VERSION_1 } from "../../../../src/virtio/device.ts";
import { GuestMemory } from "../../../../src/virtio/memory.ts";
import { NetDevice } from "../../../../src/virtio/net/device.ts";
import {
  NET_HDR_SIZE,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
} from "../../../../src/virtio/net/header.ts";
import type { NetHostEnd } from "../../../../src/virtio/net/host-end.ts";
import { Tap } from "../../../../src/virtio/net/tap.ts";
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../../../../src/virtio/queue/chain.ts";
import { NetGuest } from "../../../harness/netguest.ts";
import { arpReply, netUnavailable, parseFrame, TestNetns, UdpPeer, udpFrame } from "../../../harness/testnet.ts";
import { TestDriver } from "../../virtio/driver.ts";

const GUEST_MAC = "52:54:00:12:34:56";
const HOST_IP = "10.250.7.1";
const GUEST_IP = "10.250.7.2";

const ALL =
  bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_RING_EVENT_IDX) | bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_NET_F_MRG_RXBUF);

const skip = netUnavailable();

describe("virtio-net over a tap in a private namespace", { skip: skip && `SKIPPED LOUDLY: ${skip}` }, () => {
  let ns: TestNetns;
  const cleanups: (() => void)[] = [];

  before(() => {
    ns = TestNetns.create("net");
  });
  after(() => {
    for (const c of cleanups.splice(0).reverse()) c();
    ns.remove();
    assert.ok(!TestNetns.exists(ns.name), "test namespace removed");
  });

  function setup(features: bigint, opts: { mtu?: number; staticNeigh?: boolean; rxRing?: number } = {}) {
    const tap = Tap.open({ name: "cvnet%d", netns: ns.path });
    const dev = new NetDevice({ hostEnd: tap, mac: GUEST_MAC, mtu: opts.mtu });
    const guest = new NetGuest(dev, features, opts.rxRing);
    if (opts.mtu) ns.ip("link", "set", "dev", tap.name, "mtu", String(opts.mtu));
    ns.ip("addr", "add", `${HOST_IP}/24`, "dev", tap.name);
    ns.ip("link", "set", "dev", tap.name, "up");
    if (opts.staticNeigh) ns.ip("neigh", "replace", GUEST_IP, "lladdr", GUEST_MAC, "dev", tap.name);
    const tapMac = ns.macOf(tap.name);
    let done = false;
    const cleanup = () => {
      if (done) return;
      done = true;
      guest.stop();
      dev.close();
    };
    cleanups.push(cleanup);
    return { tap, dev, guest, tapMac, cleanup };
  }

  /** Answers ARP for the guest IP and echoes UDP datagrams to port 6000 as "pong:<payload>". */
  function respond(guest: NetGuest): void {
    guest.onFrame = (_f, p) => {
      if (p.arp && p.arp.op === 1 && p.arp.targetIp === GUEST_IP) {
        guest.send(arpReply(GUEST_MAC, GUEST_IP, p.arp.senderMac, p.arp.senderIp));
      } else if (p.udp && p.udp.dstIp === GUEST_IP && p.udp.dport === 6000) {
        const reply = Buffer.concat([Buffer.from("pong:"), p.udp.payload]);
        guest.send(udpFrame(GUEST_MAC, p.src, GUEST_IP, p.udp.srcIp, 6000, p.udp.sport, reply));
      }
    };
  }

  it("answers ARP and UDP from the namespace: frames flow guest ↔ tap both ways", async () => {
    const { dev, guest, tap, cleanup } = setup(ALL);
    guest.post(64, 2048);
    respond(guest);
    const peer = await UdpPeer.start(ns, HOST_IP, 5000);
    try {
      peer.send(GUEST_IP, 6000, Buffer.from("ping-1"));
      const [d] = await peer.waitFor(1);
      assert.equal(d!.from, GUEST_IP);
      assert.equal(d!.port, 6000);
      assert.equal(d!.data.toString(), "pong:ping-1");
      const neigh = ns.ipJson<{ lladdr?: string }[]>("neigh", "show", GUEST_IP, "dev", tap.name);
      assert.equal(neigh[0]?.lladdr, GUEST_MAC, "the namespace learned the guest's MAC from its ARP reply");
      assert.ok(dev.metrics.rxFrames >= 2, "ARP request and UDP datagram reached the guest");
      assert.ok(dev.metrics.txFrames >= 2, "ARP reply and UDP reply reached the tap");
      assert.equal(dev.needsReset, undefined);
    } finally {
      peer.stop();
      cleanup();
    }
  });

  it("spreads a large frame over mergeable rx buffers (num_buffers)", async () => {
    const { dev, guest, cleanup } = setup(ALL, { mtu: 9000, staticNeigh: true });
    guest.post(32, 1024);
    const peer = await UdpPeer.start(ns, HOST_IP, 5000);
    try {
      const payload = Buffer.alloc(4000);
      for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 0xff;
      peer.send(GUEST_IP, 6000, payload);
      const [f] = await guest.waitFrames(1);
      const frameLen = NET_HDR_SIZE + 14 + 20 + 8 + payload.length;
      assert.equal(f!.buffers, Math.ceil(frameLen / 1024));
      assert.equal(f!.hdr.readUInt16LE(10), f!.buffers, "num_buffers in the first header");
      const p = parseFrame(f!.frame);
      assert.deepEqual(p.udp?.payload, payload);
      assert.equal(dev.metrics.rxBuffers, f!.buffers);
    } finally {
      peer.stop();
      cleanup();
    }
  });

  it("without mergeable buffers drops frames that do not fit one buffer, and keeps the buffer", async () => {
    const features = ALL & ~bit(VIRTIO_NET_F_MRG_RXBUF);
    const { dev, guest, cleanup } = setup(features, { mtu: 9000, staticNeigh: true });
    guest.post(4, 1526);
    const peer = await UdpPeer.start(ns, HOST_IP, 5000);
    try {
      peer.send(GUEST_IP, 6000, Buffer.alloc(4000, 1));
      peer.send(GUEST_IP, 6000, Buffer.from("small"));
      const [f] = await guest.waitFrames(1);
      assert.equal(parseFrame(f!.frame).udp?.payload.toString(), "small");
      assert.equal(f!.hdr.readUInt16LE(10), 1, "num_buffers is 1 without mergeable buffers");
      assert.equal(dev.metrics.rxDropped, 1);
      assert.equal(dev.metrics.rxFrames, 1);
    } finally {
      peer.stop();
      cleanup();
    }
  });

  it("drops a frame the whole rx ring could not hold, instead of waiting forever", async () => {
    const { dev, guest, cleanup } = setup(ALL, { mtu: 9000, staticNeigh: true, rxRing: 8 });
    guest.post(8, 128); // 1 KiB in all: a 3000-byte frame can never fit
    const peer = await UdpPeer.start(ns, HOST_IP, 5000);
    try {
      peer.send(GUEST_IP, 6000, Buffer.alloc(3000, 2));
      peer.send(GUEST_IP, 6000, Buffer.from("fits"));
      const [f] = await guest.waitFrames(1);
      assert.equal(parseFrame(f!.frame).udp?.payload.toString(), "fits");
      assert.equal(dev.metrics.rxDropped, 1);
    } finally {
      peer.stop();
      cleanup();
    }
  });

  it("does not read the tap while the guest has no rx buffers (backpressure), then delivers", async () => {
    const { dev, guest, cleanup } = setup(ALL, { staticNeigh: true });
    const peer = await UdpPeer.start(ns, HOST_IP, 5000);
    try {
      for (let i = 0; i < 5; i++) peer.send(GUEST_IP, 6000, Buffer.from(`queued-${i}`));
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(guest.frames.length, 0);
      assert.equal(dev.metrics.rxFrames, 0, "nothing was read without buffers");
      assert.ok(dev.metrics.rxNoBuffers >= 1);
      guest.post(16, 2048);
      const got = await guest.waitFrames(5);
      assert.deepEqual(
        got.map((f) => parseFrame(f.frame).udp?.payload.toString()),
        [0, 1, 2, 3, 4].map((i) => `queued-${i}`),
      );
    } finally {
      peer.stop();
      cleanup();
    }
  });

  it("maps checksum offload to the tap: with GUEST_CSUM frames arrive with NEEDS_CSUM, without it checksummed", async () => {
    const withCsum = setup(ALL | bit(VIRTIO_NET_F_GUEST_CSUM), { staticNeigh: true });
    withCsum.guest.post(8, 2048);
    const peer = await UdpPeer.start(ns, HOST_IP, 5000);
    try {
      peer.send(GUEST_IP, 6000, Buffer.from("csum"));
      const [a] = await withCsum.guest.waitFrames(1);
      assert.equal(
        a!.hdr[0]! & VIRTIO_NET_HDR_F_NEEDS_CSUM,
        VIRTIO_NET_HDR_F_NEEDS_CSUM,
        "partial checksum handed over",
      );
      withCsum.cleanup();
      peer.stop();

      const plain = setup(ALL, { staticNeigh: true });
      plain.guest.post(8, 2048);
      const peer2 = await UdpPeer.start(ns, HOST_IP, 5000);
      try {
        peer2.send(GUEST_IP, 6000, Buffer.from("csum"));
        const [b] = await plain.guest.waitFrames(1);
        assert.equal(b!.hdr[0], 0, "no header flags without GUEST_CSUM");
        const udp = b!.frame.subarray(14 + 20);
        assert.notEqual(udp.readUInt16BE(6), 0, "the kernel computed the UDP checksum");
        assert.equal(udpChecksumOk(b!.frame), true);
      } finally {
        peer2.stop();
        plain.cleanup();
      }
    } finally {
      peer.stop();
      withCsum.cleanup();
    }
  });

  it("drops hostile tx frames, returns their buffers, and keeps working", async () => {
    const { dev, guest, tapMac, cleanup } = setup(ALL);
    guest.post(8, 2048);
    const peer = await UdpPeer.start(ns, HOST_IP, 5000);
    try {
      const heads: number[] = [];
      heads.push(guest.tx.add([Buffer.alloc(5)], [])); // shorter than the header
      heads.push(guest.tx.add([Buffer.alloc(NET_HDR_SIZE + 60)], [64])); // device-writable part on tx
      heads.push(guest.tx.add([Buffer.alloc(NET_HDR_SIZE + 70_000)], [])); // over 64 KiB + headers
      const badGso = Buffer.alloc(NET_HDR_SIZE);
      badGso[1] = 0x7f; // no such GSO type: the kernel refuses the frame
      const frame = udpFrame(GUEST_MAC, tapMac, GUEST_IP, HOST_IP, 6000, 5000, Buffer.from("x"));
      heads.push(guest.tx.add([badGso, frame], []));
      dev.notify(1);
      const used = guest.tx.takeUsed();
      assert.deepEqual(
        used.map((u) => u.head),
        heads,
        "every chain went back to the driver",
      );
      assert.equal(dev.metrics.txInvalid, 3);
      assert.equal(dev.metrics.txErrors, 1);
      assert.equal(dev.needsReset, undefined);
      guest.send(udpFrame(GUEST_MAC, tapMac, GUEST_IP, HOST_IP, 6000, 5000, Buffer.from("still-alive")));
      const [d] = await peer.waitFor(1);
      assert.equal(d!.data.toString(), "still-alive");
    } finally {
      peer.stop();
      cleanup();
    }
  });

  it("an rx buffer that is device-readable or shorter than the header breaks the device, not the host", async () => {
    for (const bad of ["readable", "short"] as const) {
      const { dev, guest, cleanup } = setup(ALL, { staticNeigh: true });
      let reason: string | undefined;
      dev.onNeedsReset = (r) => {
        reason = r;
      };
      if (bad === "readable") guest.rx.add([Buffer.alloc(16)], [2048]);
      else guest.rx.add([], [8]);
      dev.notify(0);
      const peer = await UdpPeer.start(ns, HOST_IP, 5000);
      try {
        peer.send(GUEST_IP, 6000, Buffer.from("x"));
        const deadline = Date.now() + 5000;
        while (!reason && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
        assert.match(reason ?? "", /rx buffer/);
        assert.equal(guest.frames.length, 0);
      } finally {
        peer.stop();
        cleanup();
      }
    }
  });
});

describe("virtio-net without a tap", () => {
  class FakeBackend implements NetHostEnd {
    offload: number | undefined;
    recv(): number {
      return -1;
    }
    send(bufs: Buffer[]): number {
      return bufs.reduce((s, b) => s + b.length, 0);
    }
    setOffload(flags: number): void {
      this.offload = flags;
    }
    onReady(_cb: (r: boolean, w: boolean) => void): void {}
    want(_r: boolean, _w: boolean): void {}
    close(): void {}
  }

  it("exposes MAC, link status and MTU in config space", () => {
    const dev = new NetDevice({ hostEnd: new FakeBackend(), mac: GUEST_MAC, mtu: 1450 });
    const c = dev.readConfig(0, 12);
    assert.equal(c.subarray(0, 6).toString("hex"), GUEST_MAC.replaceAll(":", ""));
    assert.equal(c.readUInt16LE(6), 1, "VIRTIO_NET_S_LINK_UP");
    assert.equal(c.readUInt16LE(10), 1450);
    assert.equal(dev.readConfig(4, 4).readUInt16LE(2), 1, "partial reads at an offset");
    assert.equal(dev.readConfig(100, 4).length, 4, "reads past the end are zeros");
    assert.throws(() => new NetDevice({ hostEnd: new FakeBackend(), mac: "01:00:5e:00:00:01" }), /multicast/);
    assert.throws(() => new NetDevice({ hostEnd: new FakeBackend(), mac: "nope" }), /invalid MAC/);
  });

  it("maps the guest's offload features to TUNSETOFFLOAD flags", () => {
    const cases: [bigint, number][] = [
      [0n, 0],
      [bit(VIRTIO_NET_F_GUEST_CSUM), 0x1],
      [bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6), 0x7],
      [bit(VIRTIO_NET_F_GUEST_TSO4), 0], // TSO without checksum offload is not valid
      [bit(VIRTIO_NET_F_CSUM), 0], // host-side checksum offload needs nothing from the tap
    ];
    for (const [f, want] of cases) {
      const be = new FakeBackend();
      const dev = new NetDevice({ hostEnd: be, mac: GUEST_MAC });
      const mem = GuestMemory.alloc(1 << 20);
      dev.activate({
        mem,
        queues: [],
        interrupt: { queue: () => {}, config: () => {} },
        features: bit(VIRTIO_F_VERSION_1) | f,
      });
      assert.equal(be.offload, want, `features 0x${f.toString(16)}`);
    }
  });

  it("refuses a driver without VERSION_1", () => {
    const dev = new NetDevice({ hostEnd: new FakeBackend(), mac: GUEST_MAC });
    dev.activate({
      mem: GuestMemory.alloc(1 << 20),
      queues: [],
      interrupt: { queue: () => {}, config: () => {} },
      features: 0n,
    });
    assert.match(dev.needsReset ?? "", /VERSION_1/);
  });

  it("holds a tx frame while the backend is full and sends it when it drains", () => {
    class FullOnce extends FakeBackend {
      full = true;
      sent: Buffer[] = [];
      wanted: [boolean, boolean][] = [];
      ready: ((r: boolean, w: boolean) => void) | undefined;
      override send(bufs: Buffer[]): number {
        if (this.full) return -1;
        this.sent.push(Buffer.concat(bufs));
        return this.sent.at(-1)!.length;
      }
      override onReady(cb: (r: boolean, w: boolean) => void): void {
        this.ready = cb;
      }
      override want(r: boolean, w: boolean): void {
        this.wanted.push([r, w]);
      }
    }
    const be = new FullOnce();
    const dev = new NetDevice({ hostEnd: be, mac: GUEST_MAC });
    const tx = new TestDriver(16);
    const rx = new TestDriver(16, 0, tx.mem, 0x80000);
    dev.activate({
      mem: tx.mem,
      queues: [rx.queue(), tx.queue()],
      interrupt: { queue: () => {}, config: () => {} },
      features: bit(VIRTIO_F_VERSION_1),
    });
    const frame = Buffer.alloc(NET_HDR_SIZE + 60, 0xab);
    tx.add([frame], []);
    tx.add([frame], []);
    dev.notify(1);
    assert.equal(tx.takeUsed().length, 0, "nothing completed while the backend is full");
    assert.deepEqual(be.wanted.at(-1), [false, true], "the device waits for writability");
    assert.equal(dev.metrics.txBlocked, 1);
    be.full = false;
    be.ready!(false, true);
    assert.equal(tx.takeUsed().length, 2, "both frames went out, in order");
    assert.equal(be.sent.length, 2);
    assert.deepEqual(be.sent[0], frame);
    assert.deepEqual(be.wanted.at(-1), [false, false], "writability no longer watched");
  });

  it("survives a descriptor loop in the tx ring (device needs reset, nothing thrown)", () => {
    const be = new FakeBackend();
    const dev = new NetDevice({ hostEnd: be, mac: GUEST_MAC });
    const drv = new TestDriver(16);
    const rx = new TestDriver(16, 0, drv.mem, 0x80000);
    dev.activate({
      mem: drv.mem,
      queues: [rx.queue(), drv.queue()],
      interrupt: { queue: () => {}, config: () => {} },
      features: bit(VIRTIO_F_VERSION_1),
    });
    const a = drv.alloc(64);
    drv.writeDesc(drv.descTable, 0, a, 64, VIRTQ_DESC_F_NEXT, 1);
    drv.writeDesc(drv.descTable, 1, a, 64, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 0);
    drv.publish(0);
    dev.notify(1);
    assert.ok(dev.needsReset, "loop detected");
  });
});

function udpChecksumOk(frame: Buffer): boolean {
  const ip = frame.subarray(14, 34);
  const udp = frame.subarray(34, 14 + ip.readUInt16BE(2));
  const pseudo = Buffer.alloc(12);
  ip.copy(pseudo, 0, 12, 20);
  pseudo[9] = 17;
  pseudo.writeUInt16BE(udp.length, 10);
  const all = Buffer.concat([pseudo, udp, Buffer.alloc(udp.length % 2)]);
  let s = 0;
  for (let i = 0; i < all.length; i += 2) s += all.readUInt16BE(i);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s === 0xffff;
}
