import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { VsockDevice } from "../../../src/virtio/vsock/device.ts";
import { HybridVsock } from "../../../src/virtio/vsock/hybrid.ts";
import {
  HDR_SIZE,
  OP_CREDIT_UPDATE,
  OP_REQUEST,
  OP_RESPONSE,
  OP_RST,
  OP_RW,
  OP_SHUTDOWN,
} from "../../../src/virtio/vsock/packet.ts";
import { CID, established, FakeGuest } from "./vsock-guest.ts";

const dir = mkdtempSync(join(tmpdir(), "cove-vsock-"));
after(() => rmSync(dir, { recursive: true, force: true }));

describe("virtio-vsock", () => {
  it("reports the guest CID in config space", () => {
    const d = new VsockDevice({ guestCid: CID });
    assert.equal(d.readConfig(0, 8).readBigUInt64LE(0), 42n);
    assert.equal(d.readConfig(4, 4).readUInt32LE(0), 0);
    assert.throws(() => new VsockDevice({ guestCid: 2 }));
  });

  it("host connect, data both ways, guest shutdown ends the stream", async () => {
    const g = new FakeGuest();
    const { s, hostPort } = await established(g);
    s.write(Buffer.from("hello guest"));
    const rw = await g.expect((x) => x.op === OP_RW, "RW");
    assert.equal(rw.payload.toString(), "hello guest");
    assert.equal(rw.bufAlloc, 256 * 1024);
    const chunks: Buffer[] = [];
    s.on("data", (d: Buffer) => chunks.push(d));
    g.send({ op: OP_RW, srcPort: 1024, dstPort: hostPort }, Buffer.from("hello host"));
    const ended = new Promise((r) => s.once("end", r));
    g.send({ op: OP_SHUTDOWN, flags: 3, srcPort: 1024, dstPort: hostPort });
    await ended;
    assert.equal(Buffer.concat(chunks).toString(), "hello host");
    await g.expect((x) => x.op === OP_RST && x.dstPort === 1024, "RST after full shutdown");
    assert.equal(g.dev.connectionCount, 0);
  });

  it("a large transfer respects the guest's credit and resumes on CREDIT_UPDATE", async () => {
    const g = new FakeGuest(200);
    g.bufAlloc = 10_000;
    const { s, hostPort } = await established(g);
    const data = Buffer.alloc(50_000);
    for (let i = 0; i < data.length; i++) data[i] = i % 251;
    s.write(data);
    const got: Buffer[] = [];
    let total = 0;
    while (total < data.length) {
      const p = await g.expect((x) => x.op === OP_RW || x.op === 7, "RW or CREDIT_REQUEST");
      if (p.op === OP_RW) {
        got.push(p.payload);
        total += p.payload.length;
        assert.ok(total - g.fwdCnt <= g.bufAlloc, "never more in flight than the guest's buf_alloc");
      } else {
        // The host ran out of credit: consume everything and tell it.
        g.fwdCnt = total;
        g.send({ op: OP_CREDIT_UPDATE, srcPort: 1024, dstPort: hostPort });
      }
    }
    assert.deepEqual(Buffer.concat(got), data);
    s.destroy();
    await g.expect((x) => x.op === OP_RST, "RST on destroy");
  });

  it("advertises consumed bytes back to the guest (credit update on read)", async () => {
    const g = new FakeGuest();
    const { s, hostPort } = await established(g);
    s.resume();
    const block = Buffer.alloc(4096, 1);
    for (let i = 0; i < 32; i++) g.send({ op: OP_RW, srcPort: 1024, dstPort: hostPort }, block);
    const cu = await g.expect((x) => x.op === OP_CREDIT_UPDATE, "CREDIT_UPDATE");
    assert.ok(cu.fwdCnt >= 64 * 1024, `fwd_cnt ${cu.fwdCnt}`);
    s.destroy();
  });

  it("refuses: guest RST → ECONNREFUSED; guest REQUEST to an unknown port → RST", async () => {
    const g = new FakeGuest();
    const p = g.dev.connect(5000, 2000);
    const req = await g.expect((x) => x.op === OP_REQUEST, "REQUEST");
    g.send({ op: OP_RST, srcPort: 5000, dstPort: req.srcPort });
    await assert.rejects(p, (e: NodeJS.ErrnoException) => e.code === "ECONNREFUSED");
    g.send({ op: OP_REQUEST, srcPort: 777, dstPort: 9999 });
    await g.expect((x) => x.op === OP_RST && x.dstPort === 777 && x.srcPort === 9999, "RST for REQUEST");
    g.send({ op: OP_RW, srcPort: 778, dstPort: 1 }, Buffer.from("x"));
    await g.expect((x) => x.op === OP_RST && x.dstPort === 778, "RST for unknown connection");
  });

  it("accepts guest connections on listened ports", async () => {
    const g = new FakeGuest();
    const seen = new Promise<Buffer>((resolve) => g.dev.listen(1025, (s) => s.once("data", (d: Buffer) => resolve(d))));
    g.send({ op: OP_REQUEST, srcPort: 3000, dstPort: 1025 });
    await g.expect((x) => x.op === OP_RESPONSE && x.dstPort === 3000, "RESPONSE");
    g.send({ op: OP_RW, srcPort: 3000, dstPort: 1025 }, Buffer.from("ping"));
    assert.equal((await seen).toString(), "ping");
  });

  it("resets a guest that exceeds the advertised credit, drops wrong CIDs", async () => {
    const g = new FakeGuest();
    const { hostPort } = await established(g);
    g.send({ op: OP_RW, srcCid: 7n, srcPort: 1024, dstPort: hostPort }, Buffer.from("x"));
    assert.equal(g.dev.metrics.invalid, 1);
    const big = Buffer.alloc(60 * 1024);
    for (let i = 0; i < 5; i++) g.send({ op: OP_RW, srcPort: 1024, dstPort: hostPort }, big);
    await g.expect((x) => x.op === OP_RST && x.dstPort === 1024, "RST for credit violation");
    assert.equal(g.dev.connectionCount, 0);
  });

  it("needs reset on a tx packet shorter than its header or a lying length", () => {
    for (const bad of [Buffer.alloc(20), Buffer.alloc(HDR_SIZE)]) {
      const g = new FakeGuest(0);
      if (bad.length === HDR_SIZE) bad.writeUInt32LE(1000, 24); // claims 1000 payload bytes, has none
      g.tx.add([bad], []);
      g.dev.notify(1);
      assert.ok(g.dev.needsReset, "needs reset");
    }
    const g = new FakeGuest(0);
    g.rx.add([Buffer.alloc(8)], [HDR_SIZE]); // rx buffer with a device-readable part
    g.dev.connect(1, 100).catch(() => {});
    return new Promise<void>((r) =>
      setImmediate(() => {
        assert.ok(g.dev.needsReset);
        r();
      }),
    );
  });

  it("hybrid vsock: CONNECT <port> → OK <hostport>, and guest connections to <uds>_<port>", async () => {
    const g = new FakeGuest();
    const uds = join(dir, "h.vsock");
    const h = new HybridVsock(g.dev, uds);
    await h.listen();
    try {
      const c = connect(uds);
      await new Promise((r) => c.once("connect", r));
      c.write("connect 1024\n");
      const req = await g.expect((x) => x.op === OP_REQUEST, "REQUEST");
      g.send({ op: OP_RESPONSE, srcPort: 1024, dstPort: req.srcPort });
      const line = await new Promise<string>((r) => c.once("data", (d: Buffer) => r(d.toString())));
      assert.equal(line, `OK ${req.srcPort}\n`);
      c.write("raw bytes");
      assert.equal((await g.expect((x) => x.op === OP_RW, "RW")).payload.toString(), "raw bytes");
      c.destroy();

      // Guest → host: someone listens on <uds>_5005.
      const got = new Promise<string>((resolve, reject) => {
        const srv = createServer((s) =>
          s.once("data", (d: Buffer) => {
            resolve(d.toString());
            s.destroy();
            srv.close();
          }),
        );
        srv.on("error", reject);
        srv.listen(`${uds}_5005`);
      });
      await new Promise((r) => setTimeout(r, 20));
      g.send({ op: OP_REQUEST, srcPort: 4000, dstPort: 5005 });
      await g.expect((x) => x.op === OP_RESPONSE && x.dstPort === 4000, "RESPONSE from the hybrid socket");
      g.send({ op: OP_RW, srcPort: 4000, dstPort: 5005 }, Buffer.from("from guest"));
      assert.equal(await got, "from guest");
      g.send({ op: OP_REQUEST, srcPort: 4001, dstPort: 5006 });
      await g.expect((x) => x.op === OP_RST && x.dstPort === 4001, "RST: nobody at <uds>_5006");
    } finally {
      await h.close();
    }
  });
});
