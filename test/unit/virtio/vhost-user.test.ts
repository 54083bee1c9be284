// The vhost-user backend driven by a TypeScript frontend over its Unix socket: negotiation,
// SET_MEM_TABLE with a memfd by SCM_RIGHTS, vring setup, a kick that makes virtio-blk complete
// a request written into the shared memory, the call eventfd, GET_CONFIG, GET_VRING_BASE
// stopping the ring, and hostile messages answered without crashing.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { pino } from "pino";
import { eventfdCreate, eventfdRead, eventfdWrite } from "../../../src/native/eventfd.ts";
import { closeFd } from "../../../src/native/fdpass.ts";
import { BlkDevice } from "../../../src/virtio/blk/device.ts";
import { bit, VIRTIO_F_VERSION_1 } from "../../../src/virtio/device.ts";
import { VhostUserBackend } from "../../../src/virtio/vhost-user/backend.ts";
import {
  MAX_PAYLOAD,
  ProtocolFeature,
  Req,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VRING_NOFD_MASK,
} from "../../../src/virtio/vhost-user/messages.ts";
import { fdsOpenedSince, openFds } from "../../harness/fds.ts";
import { TestDriver } from "./driver.ts";
import { memTable, SharedRam, TestFrontend, u64, vringAddr, vringState } from "./vhost-user-frontend.ts";

const dir = mkdtempSync(join(tmpdir(), "cove-vhost-user-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const QSIZE = 16;
const RAM = 1 << 20;

function blkHdr(type: number, sector: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(type, 0);
  b.writeBigUInt64LE(BigInt(sector), 8);
  return b;
}

/** Fds of the kinds these tests make (sockets, eventfds, memfds, files in the test dir) left open since `before`. */
const fdsLeakedSince = (before: Set<string>) =>
  fdsOpenedSince(
    before,
    (target) =>
      target.startsWith("socket:") ||
      target === "anon_inode:[eventfd]" ||
      target.startsWith("/memfd:") ||
      target.startsWith(dir),
  );

async function waitFor(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** A blk device behind a listening backend and a connected frontend; `cleanup` undoes all of it. */
async function setup() {
  const disk = join(dir, `disk-${Math.random().toString(36).slice(2)}.img`);
  const content = Buffer.alloc(64 * 1024);
  for (let i = 0; i < content.length; i++) content[i] = (i * 13 + 7) & 0xff;
  writeFileSync(disk, content);
  const logger = pino({ level: "silent" });
  const dev = await BlkDevice.create({ path: disk, serial: "vu-test", logger });
  const sock = join(dir, `vu-${Math.random().toString(36).slice(2)}.sock`);
  const be = new VhostUserBackend(dev, sock, { logger });
  be.listen();
  const fe = new TestFrontend(sock);
  const ram = new SharedRam(RAM);
  const fds: number[] = [];
  const cleanup = async () => {
    fe.close();
    be.close();
    await dev.close();
    ram.close();
    for (const fd of fds) closeFd(fd);
  };
  return { dev, be, fe, ram, disk, content, fds, cleanup };
}

type Ctx = Awaited<ReturnType<typeof setup>>;

/** Negotiates features (with protocol features: REPLY_ACK, CONFIG) and shares the RAM. */
async function negotiate(c: Ctx): Promise<bigint> {
  const features = await c.fe.callU64(Req.GET_FEATURES);
  assert.ok(features & bit(VHOST_USER_F_PROTOCOL_FEATURES), "backend speaks protocol features");
  assert.ok(features & bit(VIRTIO_F_VERSION_1));
  const proto = await c.fe.callU64(Req.GET_PROTOCOL_FEATURES);
  assert.ok(proto & bit(ProtocolFeature.REPLY_ACK));
  assert.ok(proto & bit(ProtocolFeature.CONFIG));
  c.fe.send(Req.SET_OWNER);
  const acked = bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES);
  c.fe.send(Req.SET_FEATURES, u64(acked));
  const want = bit(ProtocolFeature.REPLY_ACK) | bit(ProtocolFeature.CONFIG);
  c.fe.send(Req.SET_PROTOCOL_FEATURES, u64(want));
  // With REPLY_ACK negotiated, NEED_REPLY gets a status; the memfd travels by SCM_RIGHTS.
  assert.equal(
    await c.fe.callU64(Req.SET_MEM_TABLE, memTable([c.ram.region()]), { fds: [c.ram.fd], needReply: true }),
    0n,
  );
  assert.ok(c.be.guestMemory, "backend mapped the region");
  assert.equal(c.be.guestMemory!.size, RAM);
  return acked;
}

/** Sets up ring 0 on a TestDriver layout in the shared RAM; returns the driver and the eventfds. */
async function setupRing(c: Ctx) {
  const d = new TestDriver(QSIZE, RAM, c.ram.mem, 0);
  const kick = eventfdCreate();
  const call = eventfdCreate();
  c.fds.push(kick, call);
  const ack = (req: number, p: Buffer, fds?: number[]) => c.fe.callU64(req, p, { fds, needReply: true });
  assert.equal(await ack(Req.SET_VRING_NUM, vringState(0, QSIZE)), 0n);
  assert.equal(
    await ack(Req.SET_VRING_ADDR, vringAddr(0, c.ram.uva(d.descTable), c.ram.uva(d.usedRing), c.ram.uva(d.availRing))),
    0n,
  );
  assert.equal(await ack(Req.SET_VRING_BASE, vringState(0, 0)), 0n);
  // The backend gets its own copies of the eventfds (SCM_RIGHTS dups them).
  assert.equal(await ack(Req.SET_VRING_CALL, u64(0), [call]), 0n);
  assert.equal(await ack(Req.SET_VRING_KICK, u64(0), [kick]), 0n);
  assert.equal(c.be.running, false, "protocol features negotiated: the ring starts disabled");
  assert.equal(await ack(Req.SET_VRING_ENABLE, vringState(0, 1)), 0n);
  assert.equal(c.be.running, true);
  return { d, kick, call };
}

/** Puts a read of `sectors` at `sector` on the ring, kicks, waits for the call eventfd. */
async function readThroughRing(d: TestDriver, kick: number, call: number, sector: number, sectors: number) {
  const head = d.add([blkHdr(0, sector)], [512 * sectors, 1]);
  eventfdWrite(kick);
  let calls = 0;
  await waitFor("call eventfd", () => {
    calls += eventfdRead(call);
    return calls > 0;
  });
  const used = d.takeUsed();
  assert.equal(used.length, 1);
  assert.equal(used[0]!.head, head);
  assert.equal(used[0]!.len, 512 * sectors + 1);
  const w = d.written(head);
  return { status: w[w.length - 1], data: w.subarray(0, w.length - 1) };
}

describe("vhost-user backend driven by a TypeScript frontend", () => {
  it("negotiates, maps the memfd, serves a blk read on a kick and signals the call eventfd", async () => {
    const fdsBefore = openFds();
    const c = await setup();
    try {
      await negotiate(c);
      const { d, kick, call } = await setupRing(c);
      const r = await readThroughRing(d, kick, call, 2, 4);
      assert.equal(r.status, 0);
      assert.deepEqual(r.data, c.content.subarray(1024, 1024 + 2048));
      assert.equal(c.dev.metrics.reads, 1);
      // A write through the shared memory lands in the file.
      const data = Buffer.alloc(512, 0xee);
      const head = d.add([blkHdr(1, 10), data], [1]);
      eventfdWrite(kick);
      await waitFor("write completion", () => d.takeUsed().some((u) => u.head === head));
      assert.deepEqual(readFileSync(c.disk).subarray(5120, 5632), data);
    } finally {
      await c.cleanup();
    }
    assert.deepEqual(fdsLeakedSince(fdsBefore), [], "no fd leaked (memfd, eventfds, socket)");
  });

  it("answers GET_CONFIG with the blk config space (capacity, blk_size)", async () => {
    const c = await setup();
    try {
      await negotiate(c);
      const p = Buffer.alloc(12 + 24);
      p.writeUInt32LE(0, 0); // offset
      p.writeUInt32LE(24, 4); // size
      const r = await c.fe.call(Req.GET_CONFIG, p);
      assert.equal(r.payload.length, 12 + 24);
      assert.equal(r.payload.readUInt32LE(4), 24);
      assert.equal(r.payload.readBigUInt64LE(12), 128n, "64 KiB = 128 sectors");
      assert.equal(r.payload.readUInt32LE(12 + 20), 512, "blk_size");
      // Past the end of the config space: zeros, not a crash.
      p.writeUInt32LE(4000, 0);
      const far = await c.fe.call(Req.GET_CONFIG, p);
      assert.ok(far.payload.subarray(12).every((b) => b === 0));
    } finally {
      await c.cleanup();
    }
  });

  it("GET_VRING_BASE stops the ring and returns where to resume", async () => {
    const c = await setup();
    try {
      await negotiate(c);
      const { d, kick, call } = await setupRing(c);
      assert.equal((await readThroughRing(d, kick, call, 0, 1)).status, 0);
      assert.equal((await readThroughRing(d, kick, call, 1, 1)).status, 0);
      const r = await c.fe.call(Req.GET_VRING_BASE, vringState(0, 0));
      assert.equal(r.payload.readUInt32LE(0), 0, "ring index");
      assert.equal(r.payload.readUInt32LE(4), 2, "two chains consumed");
      assert.equal(c.be.running, false);
      // A request made available now is not served: the backend dropped the kick fd.
      d.add([blkHdr(0, 0)], [512, 1]);
      eventfdWrite(kick);
      await new Promise((res) => setTimeout(res, 100));
      assert.deepEqual(d.takeUsed(), []);
      assert.equal(c.dev.metrics.reads, 2);
      // Restarted at the returned base with a new kick fd, it picks the pending request up.
      const kick2 = eventfdCreate();
      c.fds.push(kick2);
      assert.equal(await c.fe.callU64(Req.SET_VRING_BASE, vringState(0, 2), { needReply: true }), 0n);
      assert.equal(await c.fe.callU64(Req.SET_VRING_KICK, u64(0), { fds: [kick2], needReply: true }), 0n);
      assert.equal(c.be.running, true);
      await waitFor("pending request served after restart", () => d.takeUsed().length === 1);
      assert.equal(c.dev.metrics.reads, 3);
    } finally {
      await c.cleanup();
    }
  });

  it("answers hostile messages with an error and keeps serving", async () => {
    const fdsBefore = openFds();
    const c = await setup();
    try {
      await negotiate(c);
      const nack = (req: number, p: Buffer, fds?: number[]) => c.fe.callU64(req, p, { fds, needReply: true });
      // Payloads too short for the request.
      assert.notEqual(await nack(Req.SET_VRING_NUM, Buffer.alloc(4)), 0n);
      assert.notEqual(await nack(Req.SET_VRING_ADDR, Buffer.alloc(16)), 0n);
      assert.notEqual(await nack(Req.SET_FEATURES, Buffer.alloc(2)), 0n);
      // Unknown request codes: an error when a reply is wanted, silence (and no crash) otherwise.
      assert.notEqual(await nack(999, Buffer.alloc(8)), 0n);
      c.fe.send(0x7fff_ffff, Buffer.alloc(3));
      // Rings that do not exist.
      assert.notEqual(await nack(Req.SET_VRING_NUM, vringState(7, 16)), 0n);
      assert.notEqual(await nack(Req.SET_VRING_KICK, u64(200 | Number(VRING_NOFD_MASK))), 0n);
      // Too many regions, a count that disagrees with the fds, a count of zero; fds are closed.
      const spare = eventfdCreate();
      const many = Array.from({ length: 9 }, () => c.ram.region());
      assert.notEqual(await nack(Req.SET_MEM_TABLE, memTable(many), [spare]), 0n);
      assert.notEqual(await nack(Req.SET_MEM_TABLE, memTable([c.ram.region(), c.ram.region()]), [spare]), 0n);
      assert.notEqual(await nack(Req.SET_MEM_TABLE, memTable([], 0), [spare]), 0n);
      assert.notEqual(await nack(Req.SET_MEM_TABLE, memTable([c.ram.region()], 1).subarray(0, 20), [spare]), 0n);
      // A region larger than its memfd (a mapping past EOF would SIGBUS on first touch).
      const big = c.ram.region();
      big.writeBigUInt64LE(BigInt(RAM * 2), 8);
      assert.notEqual(await nack(Req.SET_MEM_TABLE, memTable([big]), [c.ram.fd]), 0n);
      const offset = c.ram.region();
      offset.writeBigUInt64LE(4096n, 24);
      assert.notEqual(await nack(Req.SET_MEM_TABLE, memTable([offset]), [c.ram.fd]), 0n);
      assert.equal(c.be.guestMemory?.size, RAM, "the earlier table stays in force");
      closeFd(spare);
      // Ring addresses outside every region: the ring cannot start, the device stays stopped.
      const kick = eventfdCreate();
      c.fds.push(kick);
      assert.equal(await nack(Req.SET_VRING_NUM, vringState(0, QSIZE)), 0n);
      assert.equal(await nack(Req.SET_VRING_ADDR, vringAddr(0, 0x1000n, 0x2000n, 0x3000n)), 0n);
      assert.notEqual(await nack(Req.SET_VRING_KICK, u64(0), [kick]), 0n);
      await nack(Req.SET_VRING_ENABLE, vringState(0, 1));
      assert.equal(c.be.running, false);
      // A ring size the device does not allow: the queue is broken, the device needs reset.
      const d = new TestDriver(QSIZE, RAM, c.ram.mem, 0);
      const call = eventfdCreate();
      c.fds.push(call);
      assert.equal(await nack(Req.SET_VRING_NUM, vringState(0, 3)), 0n);
      assert.equal(
        await nack(
          Req.SET_VRING_ADDR,
          vringAddr(0, c.ram.uva(d.descTable), c.ram.uva(d.usedRing), c.ram.uva(d.availRing)),
        ),
        0n,
      );
      assert.equal(await nack(Req.SET_VRING_CALL, u64(0), [call]), 0n);
      assert.equal(await nack(Req.SET_VRING_KICK, u64(0), [kick]), 0n);
      assert.match(c.dev.needsReset ?? "", /invalid queue size 3/);
      // Still serving: a well-formed request gets its answer.
      assert.ok((await c.fe.callU64(Req.GET_FEATURES)) & bit(VIRTIO_F_VERSION_1));
      assert.ok(c.be.requests.get("#999"), "the unknown request was counted");
    } finally {
      await c.cleanup();
    }
    assert.deepEqual(fdsLeakedSince(fdsBefore), [], "fds that came with rejected messages were closed");
  });

  it("drops a frontend that announces an oversized message, and accepts a new one", async () => {
    const c = await setup();
    let fe2: TestFrontend | undefined;
    try {
      await negotiate(c);
      c.fe.send(Req.GET_FEATURES, Buffer.alloc(0), { size: MAX_PAYLOAD + 1 });
      assert.equal(await c.fe.closedByPeer(), true, "backend closed the connection");
      assert.equal(c.be.guestMemory, undefined, "guest memory unmapped with the frontend gone");
      fe2 = new TestFrontend(c.be.socketPath);
      assert.ok((await fe2.callU64(Req.GET_FEATURES)) & bit(VIRTIO_F_VERSION_1));
    } finally {
      fe2?.close();
      await c.cleanup();
    }
  });
});

it("vhost-user: a device reset that throws on frontend disconnect is logged, not thrown out of the event loop", async () => {
  const uncaught: Error[] = [];
  const onUncaught = (e: Error) => uncaught.push(e);
  process.prependListener("uncaughtException", onUncaught);
  const c = await setup();
  try {
    await negotiate(c);
    await setupRing(c);
    let resets = 0;
    c.dev.reset = () => {
      resets++;
      throw new Error("reset exploded");
    };
    let disconnected = 0;
    c.be.onDisconnect = () => {
      disconnected++;
      throw new Error("onDisconnect exploded");
    };
    c.fe.close(); // QEMU went away
    c.fe.close = () => {}; // (cleanup must not close it again)
    await waitFor("backend notices the disconnect", () => disconnected > 0);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(c.be.running, false);
    assert.equal(resets, 1, "the device was reset once");
    assert.deepEqual(uncaught, []);
  } finally {
    process.off("uncaughtException", onUncaught);
    c.dev.reset = Object.getPrototypeOf(c.dev).reset;
    await c.cleanup();
  }
});
