// A disk of extents (src/virtio/blk/extents.ts) through the virtio-blk device: files placed at
// aligned offsets as the disk grows (config interrupts), requests split at extent edges, gaps read
// as zeros and refuse writes, extents removed and their partition numbers reused, the bound.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { BlkDevice } from "../../../src/virtio/blk/device.ts";
import { EXTENT_ALIGN, ExtentMap, MAX_EXTENTS } from "../../../src/virtio/blk/extents.ts";
import { bit, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_VERSION_1 } from "../../../src/virtio/device.ts";
import { hdr, Irq, requestRunner } from "./blk-helpers.ts";
import { TestDriver } from "./driver.ts";

const dir = mkdtempSync(join(tmpdir(), "cove-extents-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, bytes: number, fill: number): string {
  const p = join(dir, name);
  writeFileSync(p, Buffer.alloc(bytes, fill));
  return p;
}

async function disk(readOnly: boolean) {
  const dev = await BlkDevice.create({ extents: true, readOnly, serial: "cove-ro" });
  const d = new TestDriver(64, 8 << 20);
  const q = d.queue();
  const irq = new Irq();
  dev.activate({
    mem: d.mem,
    queues: [q],
    interrupt: irq,
    features: bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_RING_EVENT_IDX),
  });
  const run = requestRunner(dev, d);

  return { dev, irq, run };
}

const SECTORS_PER_MIB = EXTENT_ALIGN / 512;

describe("virtio-blk disk of extents", () => {
  it("grows as files arrive, reads across extents and gaps, and never reuses a freed range", async () => {
    const { dev, irq, run } = await disk(true);
    assert.equal(dev.capacity, 0);
    const a = await dev.addExtent(file("a", 4096 + 100, 0xaa)); // not a sector multiple: rounded up
    assert.deepEqual([a.start, a.length, a.index], [0, 4608, 1]);
    assert.equal(irq.configs, 1, "the guest hears the capacity change");
    const b = await dev.addExtent(file("b", 8192, 0xbb));
    assert.deepEqual([b.start, b.index], [EXTENT_ALIGN, 2]);
    assert.equal(dev.capacity, SECTORS_PER_MIB + 16);
    assert.equal(irq.configs, 2);
    // One read over the end of a (past its file: zeros), the gap, and the start of b.
    const r = await run([hdr(0, SECTORS_PER_MIB - 1)], [1024, 1]);
    assert.equal(r.status, 0);
    assert.ok(
      r.data.subarray(0, 512).every((x) => x === 0),
      "gap",
    );
    assert.ok(
      r.data.subarray(512).every((x) => x === 0xbb),
      "b",
    );
    const head = await run([hdr(0, 8)], [1024, 1]);
    assert.ok(head.data.subarray(0, 100).every((x) => x === 0xaa) && head.data.subarray(100).every((x) => x === 0));
    assert.equal((await run([hdr(0, SECTORS_PER_MIB + 16)], [512, 1])).status, 1, "past the end");
    await dev.removeExtent(1);
    const gone = await run([hdr(0, 0)], [512, 1]);
    assert.ok(
      gone.data.every((x) => x === 0),
      "a removed extent reads as a gap",
    );
    const c = await dev.addExtent(file("c", 512, 0xcc));
    assert.equal(c.index, 1, "the partition number is free again");
    assert.equal(c.start, 2 * EXTENT_ALIGN, "but the range is not");
    await dev.close();
  });

  it("writes land in the right file, split at extent edges; a write into a gap fails", async () => {
    const { dev, run } = await disk(false);
    const pa = file("wa", EXTENT_ALIGN, 0);
    const pb = file("wb", EXTENT_ALIGN, 0);
    await dev.addExtent(pa);
    await dev.addExtent(pb);
    const data = Buffer.alloc(1024, 0x5a);
    assert.equal((await run([hdr(1, SECTORS_PER_MIB - 1), data], [1])).status, 0, "across the edge of a and b");
    assert.ok(
      readFileSync(pa)
        .subarray(EXTENT_ALIGN - 512)
        .every((x) => x === 0x5a),
    );
    assert.ok(
      readFileSync(pb)
        .subarray(0, 512)
        .every((x) => x === 0x5a),
    );
    assert.ok(
      readFileSync(pb)
        .subarray(512, 1024)
        .every((x) => x === 0),
    );
    await dev.removeExtent(1);
    assert.equal((await run([hdr(1, 0), Buffer.alloc(512, 1)], [1])).status, 1, "nothing is there any more");
    assert.ok(
      readFileSync(pa)
        .subarray(0, 512)
        .every((x) => x === 0),
      "the removed file is untouched",
    );
    await dev.close();
  });

  it("holds at most MAX_EXTENTS files; changeMedia is refused", async () => {
    const map = new ExtentMap(true);
    const p = file("tiny", 512, 1);
    for (let i = 0; i < MAX_EXTENTS; i++) await map.add(p);
    assert.equal(map.count, MAX_EXTENTS);
    assert.equal(map.list()[MAX_EXTENTS - 1]!.index, MAX_EXTENTS);
    await assert.rejects(map.add(p), /partition limit/);
    await map.close();
    const { dev } = await disk(true);
    await assert.rejects(dev.changeMedia(p), /disk of extents/);
    await dev.close();
  });
});

describe("a request split over extents", () => {
  it("settles only once every piece is back from the thread pool, even when one piece fails at once", async () => {
    const map = new ExtentMap(false);
    const a = await map.add(file("split-a.img", EXTENT_ALIGN, 1));
    const b = await map.add(file("split-b.img", 4 * EXTENT_ALIGN, 2));
    await a.backing.close(); // the piece in A fails at once (EBADF)
    let bBack = false;
    const readB = b.backing.readInto.bind(b.backing);
    b.backing.readInto = async (...args) => {
      await readB(...args); // 4 MiB: a thread-pool read
      bBack = true;
    };
    const bufs = [Buffer.alloc(512 + 4 * EXTENT_ALIGN)];
    await assert.rejects(map.readInto(bufs, EXTENT_ALIGN - 512));
    assert.ok(bBack, "the request settled while a piece still held guest buffers on the thread pool");
    await b.backing.close();
  });
});
