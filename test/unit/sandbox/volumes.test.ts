import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, test } from "node:test";
import { pino } from "pino";
import { CoveError } from "../../../src/common/errors.ts";
import { grpcStatus } from "../../../src/common/grpc-status.ts";
import { FileKind } from "../../../src/proto/agent.ts";
import type { SyncFiles } from "../../../src/sandbox/agent/index.ts";
import { VolumeSync } from "../../../src/sandbox/volume-sync.ts";
import { COPY_MAX_BYTES, copyTree, planVolumes } from "../../../src/sandbox/volumes.ts";
import { Code } from "../../../src/ttrpc/index.ts";

type Mount = { destination: string; type?: string; source: string; options?: string[] };
const bind = (source: string, destination: string, ro: boolean): Mount => ({
  destination,
  type: "bind",
  source,
  options: ["rbind", "rprivate", ...(ro ? ["ro"] : ["rw"])],
});

describe("host volumes for the guest (planVolumes, copyTree, VolumeSync)", () => {
  let root: string;
  let pod: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), "cove-vol-"));
    pod = join(root, "pods/uid1/volumes");
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  /** A ConfigMap as kubelet writes it. */
  const configMap = (name: string, data: Record<string, string>) => {
    const d = join(pod, "kubernetes.io~configmap", name);
    mkdirSync(join(d, "..2026_01"), { recursive: true });
    for (const [k, v] of Object.entries(data)) {
      writeFileSync(join(d, "..2026_01", k), v);
      symlinkSync(`..data/${k}`, join(d, k));
    }
    symlinkSync("..2026_01", join(d, "..data"));
    return d;
  };

  test("classifies binds: copied ro dirs and files, shared emptyDirs, the rest left for the agent", () => {
    const cm = configMap("cfg", { "a.conf": "A" });
    const tokenFile = join(root, "token");
    writeFileSync(tokenFile, "tok");
    const empty = join(pod, "kubernetes.io~empty-dir", "scratch");
    mkdirSync(empty, { recursive: true });
    const mounts: Mount[] = [
      { destination: "/proc", type: "proc", source: "proc" },
      bind(cm, "/etc/cfg", true),
      bind(tokenFile, "/var/run/token", true),
      bind(empty, "/scratch", false),
      bind(join(root, "hostpath"), "/data", false),
      bind("/etc/hosts-of-pod", "/etc/hosts", true),
    ];
    const plan = planVolumes({ mounts });
    const out = plan.spec.mounts as Mount[];
    assert.deepEqual(out[0], mounts[0]);
    assert.match(out[1]!.source, /^storage:copy-[0-9a-f]{20}$/);
    assert.match(out[2]!.source, /^storage:copy-[0-9a-f]{20}\/content$/);
    assert.match(out[3]!.source, /^storage:empty-[0-9a-f]{20}$/);
    assert.deepEqual(out[4], mounts[4], "a writable hostPath is left for the agent to refuse");
    assert.deepEqual(out[5], mounts[5], "/etc/hosts is the agent's");
    assert.deepEqual(out[1]!.options, mounts[1]!.options, "options kept (ro)");
    assert.equal(plan.copies.length, 2);
    assert.deepEqual(
      plan.storages.map((s) => [s.source, s.fstype]),
      [
        ["tmpfs", "tmpfs"],
        ["tmpfs", "tmpfs"],
        ["tmpfs", "tmpfs"],
      ],
    );
    // Same host path in another container → the same storage ids (shared in the guest).
    const again = planVolumes({ mounts: [bind(empty, "/s2", false), bind(cm, "/c2", true)] });
    assert.equal((again.spec.mounts as Mount[])[0]!.source, out[3]!.source);
    assert.equal((again.spec.mounts as Mount[])[1]!.source, out[1]!.source);
  });

  test("CRI's pod-wide /dev/shm becomes the pod's one guest tmpfs, shared by id", () => {
    const shm = { destination: "/dev/shm", type: "bind", source: "/run/c/sandboxes/p/shm", options: ["rbind", "ro"] };
    const a = planVolumes({ mounts: [shm] });
    const m = (a.spec.mounts as Mount[])[0]!;
    assert.equal(m.source, "storage:pod-shm");
    assert.ok(!m.options!.includes("ro") && m.options!.includes("nosuid"));
    assert.deepEqual(
      a.storages.map((s) => [s.id, s.fstype]),
      [["pod-shm", "tmpfs"]],
    );
    // A plain tmpfs /dev/shm (ctr) is left as it is.
    const t = { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["size=65536k"] };
    assert.deepEqual((planVolumes({ mounts: [t] }).spec.mounts as Mount[])[0], t);
  });

  test("copyTree keeps kubelet's layout, modes and symlinks (not followed)", () => {
    const cm = configMap("cfg", { "a.conf": "A", "b.conf": "B" });
    const outside = join(root, "secret-elsewhere");
    writeFileSync(outside, "do not copy");
    symlinkSync(outside, join(cm, "evil"));
    const t = copyTree(cm).entries;
    const byPath = new Map(t.map((e) => [e.path, e]));
    assert.deepEqual(
      t.map((e) => e.path),
      ["..2026_01", "..2026_01/a.conf", "..2026_01/b.conf", "..data", "a.conf", "b.conf", "evil"],
      "parents before children",
    );
    assert.equal(byPath.get("..2026_01")!.kind, FileKind.DIR);
    assert.equal(byPath.get("..data")!.target, "..2026_01");
    assert.equal(byPath.get("..2026_01/a.conf")!.data!.toString(), "A");
    assert.equal(byPath.get("evil")!.kind, FileKind.SYMLINK, "a symlink out is copied as a symlink");
    assert.equal(byPath.get("evil")!.data, undefined);
  });

  test("a read-only source past the copy limit is refused with a clear error", () => {
    const big = join(root, "big");
    mkdirSync(big);
    writeFileSync(join(big, "blob"), Buffer.alloc(COPY_MAX_BYTES + 1));
    assert.throws(
      () => planVolumes({ mounts: [bind(big, "/big", true)] }),
      (e: unknown) =>
        e instanceof CoveError && grpcStatus(e).code === Code.INVALID_ARGUMENT && /at most/.test(e.message),
    );
    assert.throws(
      () => planVolumes({ mounts: [bind(join(root, "missing"), "/m", true)] }),
      (e: unknown) => e instanceof CoveError && grpcStatus(e).code === Code.INVALID_ARGUMENT,
    );
  });

  test("VolumeSync resends a volume only when the host copy changed, and stops with its last user", async () => {
    const cm = configMap("cfg", { "a.conf": "A" });
    const sent: SyncFiles[] = [];
    const sync = new VolumeSync(async (r) => void sent.push(r), pino({ level: "silent" }), 60_000);
    const plan = planVolumes({ mounts: [bind(cm, "/etc/cfg", true)] });
    const initial = sync.add("c1", plan.copies);
    assert.equal(initial.length, 1);
    sync.add("c2", plan.copies);
    await sync.poll();
    assert.equal(sent.length, 0, "nothing changed");
    // kubelet's update: a new generation, then the ..data swap.
    mkdirSync(join(cm, "..2026_02"));
    writeFileSync(join(cm, "..2026_02", "a.conf"), "A2");
    symlinkSync("..2026_02", join(cm, "..data.tmp"));
    rmSync(join(cm, "..data"));
    symlinkSync("..2026_02", join(cm, "..data"));
    rmSync(join(cm, "..data.tmp"));
    rmSync(join(cm, "..2026_01"), { recursive: true });
    await sync.poll();
    assert.equal(sent.length, 1);
    const files = sent[0]!.entries.filter((e) => e.kind === FileKind.FILE);
    assert.deepEqual(
      files.map((e) => [e.path, Buffer.from(e.data!).toString()]),
      [["..2026_02/a.conf", "A2"]],
    );
    await sync.poll();
    assert.equal(sent.length, 1, "sent once");
    sync.remove("c1");
    writeFileSync(join(cm, "..2026_02", "a.conf"), "A3!");
    await sync.poll();
    assert.equal(sent.length, 2, "c2 still uses it");
    sync.remove("c2");
    writeFileSync(join(cm, "..2026_02", "a.conf"), "A4!!");
    await sync.poll();
    assert.equal(sent.length, 2, "no user left: not watched");
  });
});
