// Every container's own cgroup view (agent/src/spec/cgroup-view.ts): a cgroup namespace and one
// cgroup mount at /sys/fs/cgroup, whatever the host's containerd wrote (v1 host, ctr, privileged).
import assert from "node:assert/strict";
import { test } from "node:test";
import { ownCgroupView } from "../../../agent/src/spec/cgroup-view.ts";
import { type RewriteContext, rewriteSpec } from "../../../agent/src/spec/rewrite.ts";

const RO = ["nosuid", "noexec", "nodev", "relatime", "ro"];
const RW = ["nosuid", "noexec", "nodev", "relatime", "rw"];
const cgroupMount = (options: string[]) => ({
  destination: "/sys/fs/cgroup",
  type: "cgroup",
  source: "cgroup",
  options,
});
const sys = { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] };
const proc = { destination: "/proc", type: "proc", source: "proc" };

test("CRI on a cgroup v1 host: no cgroup namespace, a v1-style mount → a namespace and the same read-only mount", () => {
  const notes: string[] = [];
  const v = ownCgroupView([{ type: "pid" }, { type: "mount" }], [proc, sys, cgroupMount(RO)], notes);
  assert.deepEqual(v.namespaces, [{ type: "pid" }, { type: "mount" }, { type: "cgroup" }]);
  assert.deepEqual(v.mounts, [proc, sys, cgroupMount(RO)]);
  assert.ok(notes.some((n) => /cgroup namespace added/.test(n)));
});

test("a spec that already has a cgroup namespace keeps exactly one, without a path", () => {
  const v = ownCgroupView([{ type: "cgroup", path: "/proc/42/ns/cgroup" }, { type: "ipc" }], undefined, []);
  assert.deepEqual(v.namespaces, [{ type: "ipc" }, { type: "cgroup" }]);
  assert.equal(v.mounts, undefined, "no mounts at all: none added");
});

test("ctr run's spec has no cgroup mount: a read-only one goes right after /sys", () => {
  const tmp = { destination: "/run", type: "tmpfs", source: "tmpfs" };
  const notes: string[] = [];
  const v = ownCgroupView([], [proc, sys, tmp], notes);
  assert.deepEqual(v.mounts, [proc, sys, cgroupMount(RO), tmp]);
  assert.ok(notes.some((n) => /added at \/sys\/fs\/cgroup/.test(n)));
  assert.deepEqual(ownCgroupView([], [proc], []).mounts, [proc, cgroupMount(RO)], "no /sys: at the end");
});

test("privileged (rw, or no options as runc reads them) stays writable; v1 per-controller mounts collapse into one", () => {
  assert.deepEqual(ownCgroupView([], [sys, cgroupMount(RW)], []).mounts, [sys, cgroupMount(RW)]);
  assert.deepEqual(
    ownCgroupView([], [sys, { destination: "/sys/fs/cgroup", type: "cgroup", source: "cgroup" }], []).mounts,
    [sys, cgroupMount(RW)],
  );
  const notes: string[] = [];
  const v1 = ownCgroupView(
    [],
    [
      sys,
      { destination: "/sys/fs/cgroup/memory", type: "cgroup", source: "cgroup", options: ["ro", "memory"] },
      { destination: "/sys/fs/cgroup/unified", type: "cgroup2", source: "cgroup2", options: ["ro"] },
      { destination: "/sys/fs/cgroup/x", type: "bind", source: "storage:v", options: ["rbind"] },
    ],
    notes,
  );
  assert.deepEqual(v1.mounts, [
    sys,
    cgroupMount(RO),
    { destination: "/sys/fs/cgroup/x", type: "bind", source: "storage:v", options: ["rbind"] },
  ]);
  assert.ok(notes.some((n) => n.includes("/sys/fs/cgroup/memory")));
});

test("rewriteSpec gives the view: namespace, mount, cgroupsPath under the sandbox's root", () => {
  const ctx: RewriteContext = {
    containerId: "c1",
    rootfs: "/run/cove/c1/rootfs",
    cgroupsPath: "/cove/c1",
    etcFiles: {},
    storagePath: () => undefined,
    scratchFile: (d) => d,
  };
  const { spec } = rewriteSpec(
    {
      ociVersion: "1.0.2",
      process: { args: ["sh"] },
      linux: { namespaces: [{ type: "pid" }, { type: "network", path: "/proc/1/ns/net" }] },
      mounts: [proc, sys],
    },
    ctx,
  );
  const linux = spec.linux as { namespaces: unknown; cgroupsPath: string };
  assert.deepEqual(linux.namespaces, [{ type: "pid" }, { type: "cgroup" }]);
  assert.equal(linux.cgroupsPath, "/cove/c1");
  assert.deepEqual(spec.mounts, [proc, sys, cgroupMount(RO)]);
});
