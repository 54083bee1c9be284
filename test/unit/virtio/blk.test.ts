import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { BlkDevice } from "../../../src/virtio/blk/device.ts";
import { bit, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_VERSION_1 } from "../../../src/virtio/device.ts";
import { hdr, Irq, requestRunner } from "./blk-helpers.ts";
import { TestDriver } from "./driver.ts";

const dir = mkdtempSync(join(tmpdir(), "cove-blk-"));
after(() => rmSync(dir, { recursive: true, force: true }));

async function setup(opts: { size?: number; readOnly?: boolean; path?: string | null; features?: bigint } = {}) {
  const path = opts.path === null ? undefined : (opts.path ?? join(dir, `disk-${Math.random()}.img`));
  if (path && opts.path === undefined) writeFileSync(path, Buffer.alloc(opts.size ?? 1 << 20));
  const dev = await BlkDevice.create({ path, readOnly: opts.readOnly, serial: "cove-test-serial-0123456789" });
  const d = new TestDriver(64, 4 << 20);
  const q = d.queue();
  const irq = new Irq();
  dev.activate({
    mem: d.mem,
    queues: [q],
    interrupt: irq,
    features: opts.features ?? dev.features & (bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_RING_EVENT_IDX)),
  });
  const run = requestRunner(dev, d);
  return { dev, d, q, irq, run, path };
}

describe("virtio-blk", () => {
  it("writes, reads back, flushes and reports its id and capacity", async () => {
    const { dev, run, path, irq } = await setup({ size: 1 << 20 });
    assert.equal(dev.readConfig(0, 8).readBigUInt64LE(0), 2048n);
    const data = Buffer.alloc(8192);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
    let r = await run([hdr(1, 8), data.subarray(0, 4096), data.subarray(4096)], [1]);
    assert.equal(r.status, 0);
    assert.equal(r.len, 1);
    assert.deepEqual(readFileSync(path!).subarray(4096, 4096 + 8192), data);
    r = await run([hdr(0, 8)], [512, 7680, 1]);
    assert.equal(r.status, 0);
    assert.equal(r.len, 8193);
    assert.deepEqual(r.data, data);
    r = await run([hdr(4, 0)], [1]);
    assert.equal(r.status, 0);
    r = await run([hdr(8, 0)], [20, 1]);
    assert.equal(r.status, 0);
    assert.equal(r.data.toString(), "cove-test-serial-012");
    assert.ok(irq.queues >= 1);
    assert.equal(dev.metrics.reads, 1);
    assert.equal(dev.metrics.bytesWritten, 8192);
    await dev.close();
  });

  it("keeps several requests in flight and completes them all", async () => {
    const { dev, d, path } = await setup({ size: 4 << 20 });
    const src = Buffer.alloc(4 << 20);
    for (let i = 0; i < src.length; i += 4) src.writeUInt32LE(i, i);
    writeFileSync(path!, src);
    const heads = [];
    for (let i = 0; i < 12; i++) heads.push(d.add([hdr(0, i * 64)], [32768, 1]));
    dev.notify(0);
    const got = new Map<number, number>();
    const deadline = Date.now() + 5000;
    while (got.size < heads.length && Date.now() < deadline) {
      for (const u of d.takeUsed()) got.set(u.head, u.len);
      await new Promise((r) => setTimeout(r, 2));
    }
    assert.equal(got.size, 12);
    assert.ok(dev.metrics.maxInFlight > 1, `max in flight ${dev.metrics.maxInFlight}`);
    for (const [i, h] of heads.entries()) {
      const w = d.written(h);
      assert.equal(w[32768], 0);
      assert.equal(
        createHash("sha256").update(w.subarray(0, 32768)).digest("hex"),
        createHash("sha256")
          .update(src.subarray(i * 32768, (i + 1) * 32768))
          .digest("hex"),
      );
    }
    await dev.close();
  });

  it("answers IOERR out of range, UNSUPP for unknown types, and IOERR for writes to a read-only disk", async () => {
    const { dev, run } = await setup({ size: 1 << 20 });
    assert.equal((await run([hdr(0, 2048)], [512, 1])).status, 1, "read past the end");
    assert.equal((await run([hdr(0, 2047)], [1024, 1])).status, 1, "read crossing the end");
    assert.equal((await run([hdr(0, 2 ** 60)], [512, 1])).status, 1, "huge sector");
    assert.equal((await run([hdr(0, 0)], [100, 1])).status, 1, "not a multiple of 512");
    assert.equal((await run([hdr(99, 0)], [1])).status, 2);
    await dev.close();
    const ro = join(dir, "ro.img");
    writeFileSync(ro, Buffer.alloc(65536, 3));
    const r = await setup({ path: ro, readOnly: true });
    assert.ok(r.dev.features & (1n << 5n), "VIRTIO_BLK_F_RO offered");
    assert.equal((await r.run([hdr(1, 0), Buffer.alloc(512)], [1])).status, 1);
    assert.equal(readFileSync(ro)[0], 3);
    assert.equal((await r.run([hdr(0, 0)], [512, 1])).data[0], 3);
    await r.dev.close();
  });

  it("discards and zeroes ranges", async () => {
    const { dev, run, path } = await setup({ size: 1 << 20 });
    writeFileSync(path!, Buffer.alloc(1 << 20, 0xab));
    const seg = (sector: number, n: number, flags = 0) => {
      const b = Buffer.alloc(16);
      b.writeBigUInt64LE(BigInt(sector), 0);
      b.writeUInt32LE(n, 8);
      b.writeUInt32LE(flags, 12);
      return b;
    };
    assert.equal((await run([hdr(13, 0), seg(8, 8)], [1])).status, 0);
    const f = readFileSync(path!);
    assert.ok(f.subarray(4096, 8192).every((x) => x === 0));
    assert.equal(f[4095], 0xab);
    assert.equal(f[8192], 0xab);
    assert.equal((await run([hdr(11, 0), seg(64, 8)], [1])).status, 0);
    assert.ok(
      readFileSync(path!)
        .subarray(64 * 512, 72 * 512)
        .every((x) => x === 0),
      "punched hole reads zero",
    );
    assert.equal((await run([hdr(11, 0), seg(2040, 16)], [1])).status, 1, "discard past the end");
    assert.equal((await run([hdr(13, 0), seg(0, 8, 2)], [1])).status, 2, "unknown flag");
    await dev.close();
  });

  it("changes media on an empty slot and raises a config interrupt", async () => {
    const { dev, run, irq } = await setup({ path: null });
    assert.equal(dev.capacity, 0);
    assert.equal((await run([hdr(0, 0)], [512, 1])).status, 1, "no media");
    const p = join(dir, "media.img");
    writeFileSync(p, Buffer.alloc(1 << 16, 9));
    await dev.changeMedia(p);
    assert.equal(irq.configs, 1);
    assert.equal(dev.readConfig(0, 8).readBigUInt64LE(0), 128n);
    assert.equal((await run([hdr(0, 0)], [512, 1])).data[0], 9);
    truncateSync(p, 1 << 17);
    await dev.resize();
    assert.equal(irq.configs, 2);
    assert.equal(dev.capacity, 256);
    assert.equal(statSync(p).size, 1 << 17);
    await dev.close();
  });

  const hostile: [string, Buffer[], number[]][] = [
    ["a short header", [Buffer.alloc(8)], [1]],
    ["no status byte", [hdr(0, 0)], []],
    ["a read with device-readable data", [hdr(0, 0), Buffer.alloc(512)], [1]],
    ["a write with device-writable data", [hdr(1, 0)], [512, 1]],
    ["a discard payload not made of 16-byte segments", [hdr(11, 0), Buffer.alloc(10)], [1]],
  ];
  for (const [what, readable, writable] of hostile) {
    it(`marks the device as needing reset on ${what}`, async () => {
      const { dev, d } = await setup();
      let reported = "";
      dev.onNeedsReset = (r) => {
        reported = r;
      };
      d.add(readable, writable);
      dev.notify(0);
      assert.ok(dev.needsReset, "needs reset");
      assert.equal(reported, dev.needsReset);
      assert.equal(dev.metrics.invalid, 1);
      assert.deepEqual(d.takeUsed(), []);
      await dev.close();
    });
  }

  it("refuses a driver without VIRTIO_F_VERSION_1", async () => {
    const { dev } = await setup({ features: 0n });
    assert.match(dev.needsReset ?? "", /VERSION_1/);
    await dev.close();
  });
});
