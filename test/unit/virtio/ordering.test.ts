// Release/acquire index accesses on guest memory (aligned views use Atomics, unaligned mappings
// fall back to fence + plain access) and fallocate on the thread pool.
import assert from "node:assert/strict";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  fallocateAsync,
  preadvNowait,
  pwritevNowait,
} from "../../../src/native/blockio.ts";
import { GuestError } from "../../../src/virtio/errors.ts";
import { GuestMemory } from "../../../src/virtio/memory.ts";
import { TestDriver } from "./driver.ts";

describe("guest memory index accesses", () => {
  it("stores and loads 16-bit indexes through Atomics on aligned regions", () => {
    const mem = new GuestMemory([
      { guestAddr: 0, bytes: Buffer.alloc(4096) },
      { guestAddr: 0x10000, bytes: Buffer.alloc(4096) },
    ]);
    mem.storeU16Release(0x10002, 0x1_2345); // truncated to 16 bits
    assert.equal(mem.readU16(0x10002), 0x2345);
    mem.writeU16(0x20, 0xbeef);
    assert.equal(mem.loadU16Acquire(0x20), 0xbeef);
    // An odd address inside an aligned region takes the fallback path and still works.
    mem.storeU16Release(0x31, 0x4242);
    assert.equal(mem.readU16(0x31), 0x4242);
    assert.equal(mem.loadU16Acquire(0x31), 0x4242);
  });

  it("falls back to fence + plain access on a mapping that is not 2-byte aligned", () => {
    const backing = Buffer.alloc(4097);
    const bytes = backing.subarray(1); // byteOffset 1: no Uint16Array view is possible
    const mem = new GuestMemory([{ guestAddr: 0x1000, bytes }]);
    mem.storeU16Release(0x1002, 7);
    assert.equal(backing.readUInt16LE(3), 7);
    assert.equal(mem.loadU16Acquire(0x1002), 7);
  });

  it("bounds-checks like every other access", () => {
    const mem = GuestMemory.alloc(4096);
    assert.throws(() => mem.storeU16Release(4095, 1), GuestError);
    assert.throws(() => mem.loadU16Acquire(4096), GuestError);
    assert.throws(() => mem.loadU16Acquire(-2), GuestError);
  });

  it("publishes the used index after the used entry", () => {
    const d = new TestDriver(8);
    const q = d.queue();
    const head = d.add([Buffer.from("x")], [4]);
    const chain = q.pop();
    assert.equal(chain?.head, head);
    q.addUsed(head, 3);
    assert.equal(d.mem.readU16(d.usedRing + 2), 1);
    assert.equal(d.mem.readU32(d.usedRing + 4), head);
    assert.equal(d.mem.readU32(d.usedRing + 8), 3);
  });
});

describe("fallocateAsync", () => {
  it("punches a hole off the event loop and keeps the size", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cove-falloc-"));
    const f = join(dir, "disk");
    writeFileSync(f, Buffer.alloc(1 << 20, 0xaa));
    const fd = openSync(f, "r+");
    try {
      const p = fallocateAsync(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 65536);
      assert.ok(p instanceof Promise);
      await p;
      const data = await readFile(f);
      assert.equal(statSync(f).size, 1 << 20);
      assert.ok(data.subarray(4096, 4096 + 65536).every((b) => b === 0));
      assert.equal(data[4095], 0xaa);
      assert.equal(data[4096 + 65536], 0xaa);
    } finally {
      closeSync(fd);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("rejects with the errno code on a bad fd", async () => {
    await assert.rejects(fallocateAsync(987654, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096), {
      code: "EBADF",
      syscall: "fallocate",
    });
  });
});

describe("RWF_NOWAIT vectored I/O", () => {
  it("reads cached data and writes into several buffers, or says -1 when it would block", () => {
    const dir = mkdtempSync(join(tmpdir(), "cove-nowait-"));
    const f = join(dir, "disk");
    const content = Buffer.alloc(16384);
    for (let i = 0; i < content.length; i++) content[i] = (i * 31) & 0xff;
    writeFileSync(f, content); // just written: in the page cache
    const fd = openSync(f, "r+");
    try {
      const a = Buffer.alloc(1000);
      const b = Buffer.alloc(3096);
      const n = preadvNowait(fd, [a, b], 4096);
      // A kernel may refuse (-1) but must never return anything else than all of it here.
      assert.ok(n === 4096 || n === -1, `got ${n}`);
      if (n === 4096) assert.deepEqual(Buffer.concat([a, b]), content.subarray(4096, 8192));
      const w = pwritevNowait(fd, [Buffer.alloc(512, 1), Buffer.alloc(512, 2)], 0);
      assert.ok(w === 1024 || w === -1, `got ${w}`);
      if (w === 1024) assert.deepEqual(readFileSync(f).subarray(510, 514), Buffer.from([1, 1, 2, 2]));
      assert.throws(() => preadvNowait(fd, [], 0), /buffer count/);
      assert.throws(() => preadvNowait(fd, ["x" as unknown as Uint8Array], 0), /Uint8Array/);
    } finally {
      closeSync(fd);
      rmSync(dir, { recursive: true, force: true });
    }
    assert.throws(() => preadvNowait(987654, [Buffer.alloc(8)], 0), { code: "EBADF" });
  });
});
