// /proc reads for pod memory: parsing smaps/smaps_rollup, bounded reads, one sample per interval.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import {
  CachedSampler,
  guestRamTouchedBytes,
  parseRollupPss,
  parseSmapsRss,
  pssBytes,
  readProcText,
} from "../../../src/metrics/proc-memory.ts";
import { qemuGuestRam } from "../../../src/vmm/accounting.ts";

const SMAPS = `55d0c0000000-55d0c0001000 r--p 00000000 08:01 1234 /usr/bin/qemu
Size:                  4 kB
Rss:                   4 kB
Pss:                   4 kB
7f0000000000-7f0040000000 rw-s 00000000 00:01 5678 /memfd:ram (deleted)
Size:            1048576 kB
Rss:              204800 kB
Pss:              102400 kB
7f1000000000-7f1000100000 rw-p 00000000 00:00 0
Size:               1024 kB
Rss:                 512 kB
Pss:                 512 kB
`;

test("guest RAM touched: the Rss of the mappings that back guest RAM", () => {
  assert.equal(parseSmapsRss(SMAPS, qemuGuestRam(1024 * 1024 * 1024)), 204800 * 1024);
  assert.equal(
    parseSmapsRss(SMAPS, () => false),
    0,
  );
  assert.equal(parseRollupPss("Rss: 10 kB\nPss:                 4242 kB\n"), 4242 * 1024);
  assert.equal(parseRollupPss("garbage"), undefined);
});

test("reads from a proc dir; a process that is gone reads as unknown", async () => {
  const proc = mkdtempSync(join(tmpdir(), "cove-proc-"));
  try {
    mkdirSync(join(proc, "42"));
    writeFileSync(join(proc, "42", "smaps"), SMAPS);
    writeFileSync(join(proc, "42", "smaps_rollup"), "Pss:  100 kB\n");
    assert.equal(await guestRamTouchedBytes(42, qemuGuestRam(1 << 30), proc), 204800 * 1024);
    assert.equal(await pssBytes(42, proc), 100 * 1024);
    assert.equal(await pssBytes(43, proc), undefined);
    assert.equal(await guestRamTouchedBytes(43, () => true, proc), undefined);
    // A file past the bound is refused, not read whole.
    writeFileSync(join(proc, "big"), Buffer.alloc(3000, 0x41));
    await assert.rejects(readProcText(join(proc, "big"), 1000), /over 1000 bytes/);
    assert.equal((await readProcText(join(proc, "big"), 4000)).length, 3000);
  } finally {
    rmSync(proc, { recursive: true, force: true });
  }
});

test("the real /proc: this process has a PSS", async () => {
  assert.ok(((await pssBytes(process.pid)) ?? 0) > 1024 * 1024);
});

test("one sample per interval, shared by concurrent scrapes", async () => {
  let now = 0;
  let reads = 0;
  const s = new CachedSampler(
    async () => {
      reads++;
      await new Promise((r) => setTimeout(r, 5));
      return reads;
    },
    5000,
    () => now,
  );
  assert.deepEqual(await Promise.all([s.get(), s.get(), s.get()]), [1, 1, 1]);
  now = 4999;
  assert.equal(await s.get(), 1);
  now = 10_000;
  assert.equal(await s.get(), 2);
  assert.equal(reads, 2);
});
