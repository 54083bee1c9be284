// A hostile guest against the vsock device, driven through its rings (vsock-guest.ts): resets
// racing a connection's start never crash the shim; a kick handles at most VSOCK_BATCH packets per
// turn; the RST queue and per-connection control stay bounded without rx buffers; a full window
// costs one CREDIT_REQUEST, not a ping-pong; wrong-CID floods are rate-limited in the log;
// header-only rx buffers get no empty RW packets.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { LOG_BURST } from "../../../src/common/rate-limited-log.ts";
import { handshake } from "../../../src/sandbox/agent/stdio.ts";
import type { VsockStream } from "../../../src/virtio/vsock/connection.ts";
import { MAX_CONNECTIONS, MAX_PENDING_RST, VSOCK_BATCH } from "../../../src/virtio/vsock/device.ts";
import {
  OP_CREDIT_REQUEST,
  OP_CREDIT_UPDATE,
  OP_REQUEST,
  OP_RESPONSE,
  OP_RST,
  OP_RW,
  OP_SHUTDOWN,
} from "../../../src/virtio/vsock/packet.ts";
import { established, FakeGuest, turns } from "./vsock-guest.ts";

const uncaught: unknown[] = [];
const onUncaught = (e: unknown) => uncaught.push(e);
before(() => process.prependListener("uncaughtException", onUncaught));
after(() => process.off("uncaughtException", onUncaught));

/** A kick as the event loop delivers it (an eventfd's poll callback): after it, Node runs the
 * next-tick queue before promise continuations, so a consumer awaiting a stream comes last. */
function kickFromTheEventLoop(g: FakeGuest): void {
  setImmediate(() => g.dev.notify(1));
}

describe("vsock: a reset racing the start of a connection", () => {
  it("REQUEST then RST in one batch, to a listened port: the stream handed out dies quietly", async () => {
    const g = new FakeGuest();
    const handed: VsockStream[] = [];
    g.dev.listen(1025, (s) => handed.push(s as VsockStream));
    g.post({ op: OP_REQUEST, srcPort: 3000, dstPort: 1025 });
    g.post({ op: OP_RST, srcPort: 3000, dstPort: 1025 });
    g.dev.notify(1);
    await turns();
    assert.deepEqual(uncaught, []);
    assert.equal(handed.length, 1);
    assert.ok(handed[0]!.destroyed);
    assert.equal(g.dev.connectionCount, 0);
  });

  it("REQUEST then RST in one batch, while the acceptor (hybrid socket) is still deciding", async () => {
    const g = new FakeGuest();
    let answer: (h: ((s: VsockStream) => void) | undefined) => void = () => {};
    let handed = 0;
    g.dev.acceptor = () => new Promise((r) => (answer = r));
    g.post({ op: OP_REQUEST, srcPort: 3001, dstPort: 7000 });
    g.post({ op: OP_RST, srcPort: 3001, dstPort: 7000 });
    g.dev.notify(1);
    await turns();
    answer(() => handed++);
    await turns();
    assert.deepEqual(uncaught, []);
    assert.equal(handed, 0, "a connection reset before acceptance is not handed out");
    assert.equal(g.dev.connectionCount, 0);
  });

  it("RESPONSE then RST in one batch after a host connect: the caller gets the stream and its error", async () => {
    const g = new FakeGuest();
    const p = g.dev.connect(1024, 2000);
    const req = await g.expect((x) => x.op === OP_REQUEST, "REQUEST");
    g.post({ op: OP_RESPONSE, srcPort: 1024, dstPort: req.srcPort });
    g.post({ op: OP_RST, srcPort: 1024, dstPort: req.srcPort });
    kickFromTheEventLoop(g);
    const s = await p;
    const errs: NodeJS.ErrnoException[] = [];
    s.on("error", (e) => errs.push(e));
    const closed = new Promise((r) => s.once("close", r));
    await turns();
    await closed;
    assert.deepEqual(uncaught, []);
    assert.deepEqual(
      errs.map((e) => e.code),
      ["ECONNRESET"],
    );
  });

  it("`ok` then RST in one batch on a stdio stream: the handshake resolves, the caller still sees the reset", async () => {
    const g = new FakeGuest();
    const { s, hostPort } = await established(g, 1025);
    const hs = handshake(s, "c1", "", "stdout");
    await g.expect((x) => x.op === OP_RW, "stdio header");
    g.post({ op: OP_RW, srcPort: 1025, dstPort: hostPort }, Buffer.from("ok\n"));
    g.post({ op: OP_RST, srcPort: 1025, dstPort: hostPort });
    kickFromTheEventLoop(g);
    const conn = await hs;
    const errs: NodeJS.ErrnoException[] = [];
    conn.on("error", (e) => errs.push(e));
    await turns();
    assert.deepEqual(uncaught, []);
    assert.deepEqual(
      errs.map((e) => e.code),
      ["ECONNRESET"],
    );
  });
});

describe("vsock: a host connect always settles", () => {
  it("a guest that answers the REQUEST with a full SHUTDOWN: connect() rejects at once (fuzz seed 654)", async () => {
    const g = new FakeGuest();
    const p = g.dev.connect(1024, 60_000);
    const req = await g.expect((x) => x.op === OP_REQUEST, "REQUEST");
    g.send({ op: OP_SHUTDOWN, flags: 3, srcPort: 1024, dstPort: req.srcPort });
    const late = new Promise((_, reject) => setTimeout(() => reject(new Error("connect() did not settle")), 500));
    await assert.rejects(Promise.race([p, late]), (e: NodeJS.ErrnoException) => e.code === "ECONNRESET");
    assert.equal(g.dev.connectionCount, 0);
  });
});

describe("vsock: bounded work and memory", () => {
  it("a kick with a full tx ring handles at most VSOCK_BATCH packets in that turn, the rest on later turns", async () => {
    const g = new FakeGuest({ ringSize: 1024 });
    // Non-stream packets with op RST: dropped without an answer, so only the tx side works.
    for (let i = 0; i < 1024; i++) g.post({ type: 2, op: OP_RST, srcPort: i, dstPort: 1 });
    g.dev.notify(1);
    assert.equal(g.tx.takeUsed().length, VSOCK_BATCH, "one turn's worth");
    let done = VSOCK_BATCH;
    for (let t = 0; t < 64 && done < 1024; t++) {
      await turns(1);
      const n = g.tx.takeUsed().length;
      assert.ok(n <= VSOCK_BATCH, `${n} packets in one turn`);
      done += n;
    }
    assert.equal(done, 1024);
  });

  it("stray packets without rx buffers queue at most MAX_PENDING_RST RSTs", async () => {
    const g = new FakeGuest({ ringSize: 1024, rxBuffers: 0 });
    for (let round = 0; round < 4; round++) {
      // Header-only packets: one descriptor each, so 1000 fit the ring.
      for (let i = 0; i < 1000; i++) g.post({ op: OP_CREDIT_UPDATE, srcPort: round * 1000 + i, dstPort: 9 });
      g.dev.notify(1);
      await turns(10);
    }
    assert.equal(g.tx.takeUsed().length, 4000);
    g.fill(500);
    await turns(10);
    g.collect();
    assert.equal(g.got.filter((p) => p.op === OP_RST).length, MAX_PENDING_RST);
    assert.equal(g.dev.metrics.resetsDropped, 4000 - MAX_PENDING_RST);
  });

  it("connections opened and fully shut down without rx buffers: the RSTs owed stay bounded", async () => {
    const g = new FakeGuest({ ringSize: 1024, rxBuffers: 0 });
    g.dev.listen(1025, () => {});
    for (let round = 0; round < 8; round++) {
      for (let i = 0; i < 250; i++) {
        g.post({ op: OP_REQUEST, srcPort: round * 250 + i, dstPort: 1025 });
        g.post({ op: OP_SHUTDOWN, flags: 3, srcPort: round * 250 + i, dstPort: 1025 });
      }
      g.dev.notify(1);
      await turns(10);
    }
    assert.equal(g.dev.connectionCount, 0);
    assert.equal(g.dev.pendingResets, MAX_PENDING_RST + MAX_CONNECTIONS);
    assert.equal(g.dev.metrics.resetsDropped, 2000 - MAX_PENDING_RST - MAX_CONNECTIONS);
  });

  it("REQUEST/RST churn to a listened port without rx buffers leaves nothing queued", async () => {
    const g = new FakeGuest({ ringSize: 1024, rxBuffers: 0 });
    g.dev.listen(1025, () => {});
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < 250; i++) {
        g.post({ op: OP_REQUEST, srcPort: round * 250 + i, dstPort: 1025 });
        g.post({ op: OP_RST, srcPort: round * 250 + i, dstPort: 1025 });
      }
      g.dev.notify(1);
      await turns(10);
    }
    g.fill(500);
    await turns(10);
    g.collect();
    assert.equal(g.got.length, 0, "no RESPONSE for connections the guest already reset");
    assert.equal(g.dev.connectionCount, 0);
    assert.deepEqual(uncaught, []);
  });
});

describe("vsock: credit", () => {
  it("a full guest window costs one CREDIT_REQUEST, however often the guest answers with CREDIT_UPDATE", async () => {
    const g = new FakeGuest(100);
    g.bufAlloc = 1000;
    const { s, hostPort } = await established(g);
    // The host has read guest data, so it also owes a credit update (the second livelock).
    const read = new Promise((r) => s.once("data", r));
    g.send({ op: OP_RW, srcPort: 1024, dstPort: hostPort }, Buffer.alloc(100, 1));
    await read;
    s.write(Buffer.alloc(100_000, 2));
    let requests = 0;
    let packets = 0;
    for (let round = 0; round < 50; round++) {
      await turns(2);
      g.collect();
      for (const p of g.got.splice(0)) {
        packets++;
        if (p.op === OP_CREDIT_REQUEST) requests++;
        // Linux answers every CREDIT_REQUEST; its reader has not consumed anything.
        if (p.op === OP_CREDIT_REQUEST) g.send({ op: OP_CREDIT_UPDATE, srcPort: 1024, dstPort: hostPort });
      }
    }
    assert.equal(requests, 1);
    assert.ok(packets <= 4, `${packets} packets while the window was full`);
    // The window opens: data flows again.
    g.fwdCnt = 1000;
    g.send({ op: OP_CREDIT_UPDATE, srcPort: 1024, dstPort: hostPort });
    await g.expect((x) => x.op === OP_RW && x.len > 0, "RW once the window opened");
    s.destroy();
  });
});

describe("vsock: guest-provoked log lines", () => {
  it("a wrong-CID flood writes the first lines, then counts", async () => {
    const lines: string[] = [];
    const logger = pino({ level: "warn" }, { write: (l: string) => lines.push(l) });
    const g = new FakeGuest({ ringSize: 1024, device: { logger } });
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 1000; i++) g.post({ srcCid: 7n, op: OP_RW, srcPort: i, dstPort: 1 });
      g.dev.notify(1);
      await turns(10);
    }
    assert.equal(g.dev.metrics.invalid, 5000);
    assert.equal(lines.length, LOG_BURST);
  });
});

describe("vsock: rx buffers with room for the header only", () => {
  it("carry control packets but never an empty RW", async () => {
    const g = new FakeGuest({ rxBuffers: 0, rxRoom: 0 });
    g.fill(4);
    const { s } = await established(g);
    s.write(Buffer.alloc(1000, 3));
    for (let round = 0; round < 20; round++) {
      g.fill(8);
      await turns(2);
    }
    g.collect();
    assert.deepEqual(
      g.got.filter((p) => p.op === OP_RW),
      [],
    );
    assert.ok(g.dev.metrics.rxBuffersTooSmall > 0);
    s.destroy();
    await g.expect((x) => x.op === OP_RST, "the RST fits a header-only buffer");
  });
});
