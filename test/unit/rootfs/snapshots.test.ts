// committedChain (src/rootfs/snapshots.ts) against a fake containerd: the walk from a container's
// snapshot down its parents, and every way containerd's answer may not match the mount.
import assert from "node:assert/strict";
import { test } from "node:test";
import { pino } from "pino";
import type { ContainerdLookup, SnapshotInfo } from "../../../src/rootfs/containerd.ts";
import { committedChain } from "../../../src/rootfs/snapshots.ts";

const log = pino({ level: "silent" });

/** containerd with container c1 on snapshot "c1" (active) over the chain top → mid → base. */
function fake(over: Partial<Record<string, Partial<SnapshotInfo>>> = {}, snapshotter = "overlayfs") {
  const snaps: Record<string, SnapshotInfo> = {
    c1: { name: "c1", parent: "sha256:top", kind: "ACTIVE" },
    "sha256:top": { name: "sha256:top", parent: "sha256:mid", kind: "COMMITTED" },
    "sha256:mid": { name: "sha256:mid", parent: "sha256:base", kind: "COMMITTED" },
    "sha256:base": { name: "sha256:base", parent: "", kind: "COMMITTED" },
  };
  for (const [k, v] of Object.entries(over)) snaps[k] = { ...snaps[k]!, ...v };
  let closed = 0;
  const calls: string[] = [];
  const lookup: ContainerdLookup = {
    async container(id) {
      if (id !== "c1") throw new Error(`container "${id}" in namespace "default": not found`);
      return { snapshotter, snapshotKey: "c1" };
    },
    async snapshot(s, key) {
      calls.push(`${s}:${key}`);
      const info = snaps[key];
      if (!info) throw new Error(`snapshot ${key} does not exist: not found`);
      return info;
    },
    close: () => void closed++,
  };
  return { open: async () => lookup, calls, closed: () => closed };
}

test("committedChain names each lower, nearest first, with the snapshotter; the client is closed", async () => {
  const f = fake();
  assert.deepEqual(await committedChain(f.open, "c1", 3, log), [
    "overlayfs/sha256:top",
    "overlayfs/sha256:mid",
    "overlayfs/sha256:base",
  ]);
  assert.deepEqual(f.calls, ["overlayfs:c1", "overlayfs:sha256:top", "overlayfs:sha256:mid", "overlayfs:sha256:base"]);
  assert.equal(f.closed(), 1);
});

test("committedChain gives up (undefined) when the chain does not match the mount or containerd fails", async () => {
  assert.equal(await committedChain(fake().open, "c1", 2, log), undefined, "chain longer than the mount");
  assert.equal(await committedChain(fake().open, "c1", 4, log), undefined, "chain shorter than the mount");
  assert.equal(await committedChain(fake({ "sha256:mid": { kind: "ACTIVE" } }).open, "c1", 3, log), undefined);
  assert.equal(await committedChain(fake().open, "other", 3, log), undefined, "unknown container");
  assert.equal(await committedChain(fake({ "sha256:top": { name: "bad name\n" } }).open, "c1", 3, log), undefined);
  assert.equal(await committedChain(fake({}, "").open, "c1", 3, log), undefined, "no snapshotter");
  const f = fake({ "sha256:mid": { parent: "sha256:gone" } });
  assert.equal(await committedChain(f.open, "c1", 3, log), undefined, "a parent that does not exist");
  assert.equal(f.closed(), 1);
  const unreachable = () => Promise.reject(new Error("connect ENOENT /run/containerd/containerd.sock"));
  assert.equal(await committedChain(unreachable, "c1", 3, log), undefined);
});
