// The reusable root-building helpers (src/guest/rootfs.ts): a root holding the running node with
// exactly its libraries becomes an erofs image that is byte-for-byte reproducible, mounts, and in
// which node runs under chroot (so no library is missing).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import {
  binaryWithLibraries,
  dedupe,
  makeErofs,
  materialize,
  planKey,
  type RootPlan,
  sharedLibraries,
  usrMergedSkeleton,
} from "../../src/guest/rootfs.ts";

test("sharedLibraries: node needs libc and the loader; a static busybox needs nothing", () => {
  const libs = sharedLibraries(process.execPath);
  assert.ok(
    libs.some((l) => l.endsWith("/libc.so.6")),
    libs.join(" "),
  );
  assert.ok(
    libs.some((l) => l.includes("ld-linux")),
    libs.join(" "),
  );
  assert.deepEqual(sharedLibraries("/bin/busybox"), []);
});

test("dedupe drops identical entries and rejects conflicting ones", () => {
  const a: RootPlan = [{ kind: "dir", path: "/x", mode: 0o755 }];
  assert.equal(dedupe([...a, ...a]).length, 1);
  assert.throws(() => dedupe([...a, { kind: "dir", path: "/x", mode: 0o700 }]), /conflicting entries for \/x/);
  assert.throws(() => dedupe([{ kind: "dir", path: "x/../y", mode: 0o755 }]), /bad root path/);
});

test("a node root → erofs: reproducible, mountable, node runs inside (chroot)", () => {
  const dir = mkdtempSync(join(tmpdir(), "cove-rootfs-"));
  const mnt = join(dir, "mnt");
  let mounted = false;
  try {
    const plan = dedupe([
      ...usrMergedSkeleton(),
      ...binaryWithLibraries(process.execPath, "/usr/bin/node"),
      { kind: "content", path: "/etc/hello", content: "hi\n", mode: 0o644 },
    ]);
    const key = planKey(plan);
    assert.match(key, /^[0-9a-f]{20}$/);
    assert.notEqual(planKey([...plan, { kind: "dir", path: "/extra", mode: 0o755 }]), key);

    materialize(plan, join(dir, "a"));
    materialize(plan, join(dir, "b"));
    makeErofs(join(dir, "a"), join(dir, "a.erofs"), { uuid: "01234567-89ab-4cde-8f01-23456789abcd" });
    makeErofs(join(dir, "b"), join(dir, "b.erofs"), { uuid: "01234567-89ab-4cde-8f01-23456789abcd" });
    assert.ok(readFileSync(join(dir, "a.erofs")).equals(readFileSync(join(dir, "b.erofs"))), "images differ");

    mkdirSync(mnt);
    const m = spawnSync("mount", ["-t", "erofs", "-o", "loop,ro", join(dir, "a.erofs"), mnt], { encoding: "utf8" });
    assert.equal(m.status, 0, `mount failed: ${m.stderr}`);
    mounted = true;
    assert.equal(readFileSync(join(mnt, "etc/hello"), "utf8"), "hi\n");
    const r = spawnSync("chroot", [mnt, "/usr/bin/node", "-p", "1+1"], { encoding: "utf8", timeout: 30_000 });
    assert.equal(r.status, 0, `node in the chroot failed: ${r.stderr}`);
    assert.equal(r.stdout.trim(), "2");
  } finally {
    if (mounted) spawnSync("umount", [mnt]);
    rmSync(dir, { recursive: true, force: true });
  }
});
