// The differential probe's pure parts (test/harness/probe/): parsing its sections and CRI logs,
// keyed differences, explanations scoped by section, key and client, the cgroup v2 expectations,
// and the explained ids against docs/container-view.md. The probe script itself runs here too.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { REPO_ROOT } from "../../harness/containerd.ts";
import {
  cgroupV2Problems,
  differences,
  EXPLAINED,
  formatDifference,
  judge,
  sharesToWeight,
} from "../../harness/probe/compare.ts";
import { criLogStdout, PROBE_SCRIPT, parseProbe } from "../../harness/probe/run.ts";

const probe = (text: string) => parseProbe(text);

test("parseProbe: sections in order, empty lines dropped; criLogStdout joins partial lines, skips stderr", () => {
  const p = probe("== a\n1\n\n2\n== b\n== c\nx\n");
  assert.deepEqual(
    [...p],
    [
      ["a", ["1", "2"]],
      ["b", []],
      ["c", ["x"]],
    ],
  );
  const log = "t1 stdout P == a\nt2 stdout F b\nt3 stderr F noise\nt4 stdout F 1\n";
  assert.equal(criLogStdout(log), "== ab\n1\n");
});

test("differences: keyed sections line by line (one side missing shows as (none)), others whole", () => {
  const runc = probe("== mounts\n/ overlay rw\n/proc proc rw\n== hostname\nh\n== env\nA=1\nB=2\n");
  const cove = probe("== mounts\n/ overlay rw\n/sys sysfs ro\n== hostname\nh\n== env\nA=1\nB=3\n");
  assert.deepEqual(differences(runc, cove), [
    { section: "mounts", key: "/proc", runc: "/proc proc rw", cove: "(none)" },
    { section: "mounts", key: "/sys", runc: "(none)", cove: "/sys sysfs ro" },
    { section: "env", key: "B", runc: "B=2", cove: "B=3" },
  ]);
  assert.match(formatDifference(differences(runc, cove)[2]!), /env B\n {4}runc: B=2\n {4}cove: B=3/);
});

test("judge: an explanation applies only to its section, key and client", () => {
  const runc = probe("== hostname\nhost\n== limits\nMax open files 20000 20000 files\nMax processes 9 9 processes\n");
  const cove = probe("== hostname\nc1\n== limits\nMax open files 1024 4096 files\nMax processes 5 5 processes\n");
  const ctr = judge(runc, cove, "ctr");
  assert.deepEqual(
    ctr.explained.map(([, e]) => e.id),
    ["hostname-ctr", "rlimits-ram"],
  );
  assert.deepEqual(
    ctr.unexplained.map((d) => d.key),
    ["Max open files"],
    "RLIMIT_NOFILE is explained for CRI only (ctr's spec sets it)",
  );
  const cri = judge(runc, cove, "cri");
  assert.deepEqual(
    cri.unexplained.map((d) => d.section),
    ["hostname"],
    "under CRI the pod's hostname must match",
  );
});

test("cgroupV2Problems: runc's v2 view, limit by limit", () => {
  const good = probe(
    [
      "== cgroup",
      "0::/",
      "== mounts",
      "/sys sysfs ro,nosuid rw",
      "/sys/fs/cgroup cgroup2 ro,nosuid,nodev,noexec,relatime rw,nsdelegate",
      "== cgroup_files",
      "cgroup.controllers",
      "cpu.max",
      "cpu.weight",
      "memory.max",
      "pids.max",
      "== cgroup:memory.max",
      "134217728",
      "== cgroup:cpu.max",
      "50000 100000",
      "== cgroup:cpu.weight",
      "20",
      "== cgroup:pids.max",
      "max",
      "== cgroup_writable",
      "no",
    ].join("\n"),
  );
  const limits = { memoryBytes: 134217728, cpuQuota: 50000, cpuPeriod: 100000, cpuShares: 512 };
  assert.deepEqual(cgroupV2Problems(good, limits), []);
  assert.equal(sharesToWeight(512), 20);
  assert.equal(sharesToWeight(1024), 39);
  assert.equal(sharesToWeight(2), 1);
  assert.equal(sharesToWeight(262144), 10000);
  const bad = new Map(good);
  bad.set("cgroup", ["0::/cove/c1"]);
  bad.set("cgroup:memory.max", ["max"]);
  bad.set("cgroup_writable", ["yes"]);
  bad.set("mounts", ["/sys/fs/cgroup tmpfs rw,relatime rw"]);
  const problems = cgroupV2Problems(bad, limits);
  assert.equal(problems.length, 4, problems.join("\n"));
  assert.deepEqual(cgroupV2Problems(good, { cpuShares: 512 }).length, 2, "no memory limit / quota: max expected");
});

test("every explained id is a row of docs/container-view.md, and every row there has an entry", () => {
  const doc = readFileSync(join(REPO_ROOT, "docs", "container-view.md"), "utf8");
  const table = doc.slice(doc.indexOf("### The differences that remain"));
  const rows = new Set([...table.matchAll(/^\| `([a-z0-9-]+)`/gm)].map((m) => m[1]!));
  assert.deepEqual(new Set(EXPLAINED.map((e) => e.id)), rows);
});

test("probe.sh runs in a plain shell and prints every section", () => {
  const out = execFileSync("/bin/sh", ["-c", PROBE_SCRIPT], { encoding: "utf8", timeout: 20_000 });
  const p = parseProbe(out);
  for (const s of ["kernel", "ids", "env", "status", "limits", "mounts", "cgroup", "cgroup:memory.max", "dev", "nproc"])
    assert.ok(p.has(s), `section ${s}`);
  assert.ok(
    (p.get("mounts") ?? []).some((l) => l.startsWith("/proc proc ")),
    "mounts parsed from mountinfo",
  );
});
