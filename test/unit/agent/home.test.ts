// HOME as runc sets it (agent/src/spec/home.ts): from the container's /etc/passwd, "/" for a user it
// does not name, an env's own HOME kept; a passwd that links out of the rootfs is not read.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { homeInBundle, homeInPasswd, homeInRootfs, withHome } from "../../../agent/src/spec/home.ts";
import { checkProcess } from "../../../agent/src/spec/rewrite.ts";

const PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nbad:x:7\n";

test("homeInPasswd: the uid's sixth field; unknown uids and short lines give undefined", () => {
  assert.equal(homeInPasswd(PASSWD, 0), "/root");
  assert.equal(homeInPasswd(PASSWD, 1000), "/home/app");
  assert.equal(homeInPasswd(PASSWD, 7), undefined);
  assert.equal(homeInPasswd(PASSWD, 4242), undefined);
});

test("withHome: kept when set, looked up, else /", () => {
  const homeOf = (uid: number) => homeInPasswd(PASSWD, uid);
  const p1: Record<string, unknown> = { env: ["PATH=/bin", "HOME=/mine"], user: { uid: 1000 } };
  withHome(p1, homeOf);
  assert.deepEqual(p1.env, ["PATH=/bin", "HOME=/mine"]);
  const p2: Record<string, unknown> = { env: ["PATH=/bin"], user: { uid: 1000 } };
  withHome(p2, homeOf);
  assert.deepEqual(p2.env, ["PATH=/bin", "HOME=/home/app"]);
  const p3: Record<string, unknown> = { user: { uid: 4242 } };
  withHome(p3, homeOf);
  assert.deepEqual(p3.env, ["HOME=/"]);
  const p4: Record<string, unknown> = { env: [] };
  withHome(p4, homeOf);
  assert.deepEqual(p4.env, ["HOME=/root"], "no user: uid 0");
  assert.deepEqual(checkProcess({ args: ["id"], user: { uid: 4242 } }, homeOf).env, ["HOME=/"], "exec too");
});

test("homeInRootfs / homeInBundle read the container's file, never one a symlink points to outside", () => {
  const dir = mkdtempSync(join(tmpdir(), "cove-home-"));
  try {
    const rootfs = join(dir, "rootfs");
    mkdirSync(join(rootfs, "etc"), { recursive: true });
    writeFileSync(join(rootfs, "etc", "passwd"), PASSWD);
    assert.equal(homeInRootfs(rootfs, 1000), "/home/app");
    writeFileSync(join(dir, "config.json"), JSON.stringify({ root: { path: "rootfs" } }));
    assert.equal(homeInBundle(dir, 1000), "/home/app", "relative root.path");
    assert.equal(homeInBundle(join(dir, "nope"), 1000), undefined);

    const evil = join(dir, "evil");
    mkdirSync(evil);
    writeFileSync(join(dir, "outside"), "x:x:1000:1000::/outside:/bin/sh\n");
    mkdirSync(join(evil, "etc"));
    symlinkSync(join(dir, "outside"), join(evil, "etc", "passwd"));
    assert.equal(homeInRootfs(evil, 1000), undefined);
    assert.equal(homeInRootfs(join(dir, "missing"), 0), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
