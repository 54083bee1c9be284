// The pod's cgroup for the shim and its VMM (src/sandbox/pod-cgroup.ts): both cgroupsPath forms,
// mountinfo parsing, and joining/leaving on a fake cgroupfs (plain directories; the pid written to
// cgroup.procs is this test's own number, never moved for real).
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import pino from "pino";
import {
  type CgroupHost,
  cgroupDirOf,
  expandSlice,
  joinCgroup,
  joinPodCgroup,
  parseCgroupMounts,
  parseProcCgroup,
  podCgroupsPath,
} from "../../../src/sandbox/pod-cgroup.ts";

const log = pino({ level: "silent" });

test("cgroupfs form: the path under each hierarchy's root", () => {
  assert.equal(cgroupDirOf("/kubepods/burstable/pod1/abc"), "kubepods/burstable/pod1/abc");
  assert.equal(cgroupDirOf("kubepods/pod1/abc/"), "kubepods/pod1/abc");
});

test("systemd form: the slice expanded, the unit a scope named prefix-id", () => {
  assert.equal(
    expandSlice("kubepods-burstable-pod1.slice"),
    "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice",
  );
  assert.equal(expandSlice("-.slice"), "");
  assert.equal(
    cgroupDirOf("kubepods-besteffort-pod2.slice:cri-containerd:abc"),
    "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod2.slice/cri-containerd-abc.scope",
  );
  assert.equal(cgroupDirOf(":cri-containerd:abc"), "cri-containerd-abc.scope", "no slice: the root slice");
  assert.equal(cgroupDirOf("system.slice::abc"), "system.slice/abc.scope", "no prefix");
});

test("refused paths: .., empty names, NUL, malformed slices", () => {
  for (const bad of [
    "/a/../b",
    "/",
    "",
    "/a//b",
    "a\0b",
    "bad--name.slice:p:id",
    "-a.slice:p:id",
    "a.slice:p:",
    "x:p:a/b",
  ])
    assert.throws(() => cgroupDirOf(bad), /cgroupsPath/, bad);
});

test("only a CRI sandbox's cgroupsPath counts", () => {
  const sandbox = { annotations: { "io.kubernetes.cri.container-type": "sandbox" }, linux: { cgroupsPath: "/k/p/s" } };
  assert.equal(podCgroupsPath(sandbox), "/k/p/s");
  assert.equal(podCgroupsPath({ linux: { cgroupsPath: "/default/c1" } }), undefined, "ctr run: not a CRI pod");
  assert.equal(podCgroupsPath({ annotations: sandbox.annotations }), undefined);
  assert.equal(podCgroupsPath({ annotations: sandbox.annotations, linux: { cgroupsPath: 3 } }), undefined);
});

test("mountinfo: v1 hierarchies with their controllers, v2, other filesystems ignored", () => {
  const mi = [
    "25 24 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
    "26 25 0:23 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
    "27 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct",
    "28 25 0:25 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd",
    "29 25 0:26 /sub /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate",
  ].join("\n");
  assert.deepEqual(parseCgroupMounts(mi), [
    { mountPoint: "/sys/fs/cgroup/memory", version: 1, controllers: ["memory"], root: "/" },
    { mountPoint: "/sys/fs/cgroup/cpu,cpuacct", version: 1, controllers: ["cpu", "cpuacct"], root: "/" },
    { mountPoint: "/sys/fs/cgroup/systemd", version: 1, controllers: ["name=systemd"], root: "/" },
    { mountPoint: "/sys/fs/cgroup/unified", version: 2, controllers: [], root: "/sub" },
  ]);
  const own = parseProcCgroup("4:memory:/a/b\n2:cpu,cpuacct:/c\n0::/d\n");
  assert.equal(own.get("memory"), "/a/b");
  assert.equal(own.get("cpuacct"), "/c");
  assert.equal(own.get(""), "/d");
});

function fakeHost(): { host: CgroupHost; root: string } {
  const root = mkdtempSync(join(tmpdir(), "cove-cgroup-"));
  for (const d of ["memory/containerd", "pids/containerd", "cpuset", "unified/containerd"])
    mkdirSync(join(root, d), { recursive: true });
  return {
    root,
    host: {
      mounts: () => [
        { mountPoint: join(root, "memory"), version: 1, controllers: ["memory"], root: "/" },
        { mountPoint: join(root, "pids"), version: 1, controllers: ["pids"], root: "/" },
        { mountPoint: join(root, "cpuset"), version: 1, controllers: ["cpuset"], root: "/" },
        { mountPoint: join(root, "unified"), version: 2, controllers: [], root: "/" },
      ],
      ownCgroups: () => "3:memory:/containerd\n2:pids:/containerd\n1:cpuset:/\n0::/containerd\n",
      pid: 4242,
    },
  };
}

test("join: the pod's directory made in each accounting hierarchy, the pid written, charges moved; leave undoes it", () => {
  const { host, root } = fakeHost();
  try {
    // The pod cgroup kubelet made exists; the sandbox's own directory does not.
    mkdirSync(join(root, "memory/kubepods/pod1"), { recursive: true });
    const cg = joinCgroup("/kubepods/pod1/sb", host);
    assert.deepEqual(cg.dirs, [
      join(root, "memory/kubepods/pod1/sb"),
      join(root, "pids/kubepods/pod1/sb"),
      join(root, "unified/kubepods/pod1/sb"),
    ]);
    for (const d of cg.dirs) assert.equal(readFileSync(join(d, "cgroup.procs"), "utf8"), "4242");
    assert.equal(readFileSync(join(root, "memory/kubepods/pod1/sb/memory.move_charge_at_immigrate"), "utf8"), "3");
    assert.equal(existsSync(join(root, "cpuset/kubepods")), false, "cpuset is not joined");
    // A fake cgroupfs keeps the files a real one would not; remove them so rmdir can work.
    for (const d of cg.dirs) rmSync(join(d, "cgroup.procs"));
    rmSync(join(root, "memory/kubepods/pod1/sb/memory.move_charge_at_immigrate"));
    cg.leave(log);
    assert.equal(readFileSync(join(root, "memory/containerd/cgroup.procs"), "utf8"), "4242", "back where it was");
    assert.equal(readFileSync(join(root, "unified/containerd/cgroup.procs"), "utf8"), "4242");
    assert.equal(existsSync(join(root, "memory/kubepods/pod1/sb")), false, "its own directory removed");
    assert.equal(existsSync(join(root, "memory/kubepods/pod1")), true, "kubelet's pod cgroup kept");
    assert.equal(existsSync(join(root, "pids/kubepods")), false, "directories it made removed, parents too");
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("a failed join undoes the hierarchies already joined; the hook logs it and boots on", () => {
  const { host, root } = fakeHost();
  try {
    // cgroup.procs a directory: the write fails in the second hierarchy.
    mkdirSync(join(root, "pids/kubepods/pod1/sb/cgroup.procs"), { recursive: true });
    assert.throws(() => joinCgroup("/kubepods/pod1/sb", host));
    assert.equal(readFileSync(join(root, "memory/containerd/cgroup.procs"), "utf8"), "4242", "memory left again");
    const sandbox = {
      annotations: { "io.kubernetes.cri.container-type": "sandbox" },
      linux: { cgroupsPath: "/kubepods/pod1/sb" },
    };
    assert.equal(joinPodCgroup(sandbox, log, host), undefined);
    assert.equal(joinPodCgroup({ linux: { cgroupsPath: "/x" } }, log, host), undefined, "not a CRI pod: nothing");
    assert.equal(joinPodCgroup(sandbox, log, { ...host, mounts: () => [] }), undefined, "no hierarchy: nothing");
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
