// Cache plumbing of the guest build: stable-name symlinks, the build lock, cache keys, patch series.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { keyOf } from "../../../src/guest/hash.ts";
import { patchSeries } from "../../../src/guest/kernel.ts";
import { guestArtifacts } from "../../../src/guest/paths.ts";
import { publishLink } from "../../../src/guest/publish.ts";

function withTmp(f: (dir: string) => Promise<void> | void) {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), "cove-cache-"));
    try {
      await f(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test(
  "publishLink makes a relative symlink and repoints it",
  withTmp((dir) => {
    const a = guestArtifacts(dir);
    mkdirSync(join(dir, "kernel/k1"), { recursive: true });
    mkdirSync(join(dir, "kernel/k2"), { recursive: true });
    writeFileSync(join(dir, "kernel/k1/bzImage"), "1");
    writeFileSync(join(dir, "kernel/k2/bzImage"), "2");
    publishLink(a.kernel, join(dir, "kernel/k1/bzImage"));
    assert.equal(readlinkSync(a.kernel), "../kernel/k1/bzImage");
    publishLink(a.kernel, join(dir, "kernel/k2/bzImage"));
    assert.equal(readlinkSync(a.kernel), "../kernel/k2/bzImage");
    assert.throws(() => publishLink(a.rootfs, join(dir, "nope")), /does not exist/);
  }),
);

test("keyOf is stable and input-sensitive", () => {
  assert.equal(keyOf({ a: 1, b: [2] }), keyOf({ a: 1, b: [2] }));
  assert.notEqual(keyOf({ a: 1 }), keyOf({ a: 2 }));
  assert.match(keyOf("x"), /^[0-9a-f]{20}$/);
});

test(
  "patchSeries: order from series, comments ignored, unknown or unsafe names rejected",
  withTmp((dir) => {
    assert.deepEqual(patchSeries(dir), []);
    writeFileSync(join(dir, "0002-b.patch"), "");
    writeFileSync(join(dir, "0001-a.patch"), "");
    writeFileSync(join(dir, "series"), "# comment\n0002-b.patch\n\n0001-a.patch # trailing\n");
    assert.deepEqual(patchSeries(dir), [join(dir, "0002-b.patch"), join(dir, "0001-a.patch")]);
    writeFileSync(join(dir, "series"), "missing.patch\n");
    assert.throws(() => patchSeries(dir), /does not exist/);
    writeFileSync(join(dir, "series"), "../escape.patch\n");
    assert.throws(() => patchSeries(dir), /bad patch name/);
  }),
);
