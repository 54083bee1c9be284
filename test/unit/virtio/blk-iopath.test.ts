// BlkBacking's two I/O paths: RWF_NOWAIT on the event loop (page-cache hits, small requests or
// queue depth 1) and the thread pool (everything else, and the fallback when the kernel refuses).
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { BlkBacking } from "../../../src/virtio/blk/backing.ts";

const dir = mkdtempSync(join(tmpdir(), "cove-blk-io-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 131 + seed) & 0xff;
  return b;
}

async function open(size: number, seed = 1) {
  const path = join(dir, `d-${Math.random().toString(36).slice(2)}`);
  const content = pattern(size, seed);
  writeFileSync(path, content);
  return { path, content, b: await BlkBacking.open(path, false) };
}

describe("BlkBacking I/O paths", () => {
  it("serves small cached reads and writes inline, and scatters into several buffers", async () => {
    const { path, content, b } = await open(1 << 20);
    try {
      const parts = [Buffer.alloc(512), Buffer.alloc(3584)];
      await b.readInto(parts, 8192);
      assert.deepEqual(Buffer.concat(parts), content.subarray(8192, 12288));
      const data = [pattern(1024, 9), pattern(3072, 10)];
      await b.writeFrom(data, 4096);
      assert.deepEqual(readFileSync(path).subarray(4096, 8192), Buffer.concat(data));
      // Inline when the kernel could do it without waiting; never more attempts than requests.
      assert.ok(b.nowait.hits + b.nowait.misses <= 2);
      assert.ok(b.nowait.hits >= 1, "a just-written file is in the page cache");
    } finally {
      await b.close();
    }
  });

  it("sends large requests to the thread pool unless alone, with the same results", async () => {
    const { path, content, b } = await open(4 << 20);
    try {
      const before = { ...b.nowait };
      const big = Buffer.alloc(768 * 1024);
      await b.readInto([big], 1 << 20); // concurrent-style: over the inline limit, pool only
      assert.deepEqual(big, content.subarray(1 << 20, (1 << 20) + big.length));
      assert.deepEqual(b.nowait, before, "no inline attempt above the limit");
      const alone = Buffer.alloc(768 * 1024);
      await b.readInto([alone], 2 << 20, true); // queue depth 1: inline allowed
      assert.deepEqual(alone, content.subarray(2 << 20, (2 << 20) + alone.length));
      assert.equal(b.nowait.hits + b.nowait.misses, before.hits + before.misses + 1);
      const huge = pattern(2 << 20, 3); // above even the alone limit
      await b.writeFrom([huge], 1 << 20, true);
      assert.deepEqual(readFileSync(path).subarray(1 << 20, 3 << 20), huge);
    } finally {
      await b.close();
    }
  });

  it("reads zeros past the end of a file that shrank underneath", async () => {
    const { b, path, content } = await open(64 * 1024);
    try {
      truncateSync(path, 40 * 1024);
      const out = Buffer.alloc(16 * 1024, 0xff);
      await b.readInto([out], 32 * 1024); // 8 KiB of data, then EOF
      assert.deepEqual(out.subarray(0, 8192), content.subarray(32 * 1024, 40 * 1024));
      // The pool loop sees EOF and fills the rest with zeros (as for a hole).
      assert.ok(out.subarray(8192).every((x) => x === 0));
    } finally {
      await b.close();
    }
  });
});
