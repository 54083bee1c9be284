// OCI runtime spec 1.2 in the guest: what containerd 2.1 writes (spec 1.2.1) passes the rewrite and
// its 1.2 fields are kept or honoured; fields the guest's crun 1.21 does not know (spec 1.3's
// netDevices, memoryPolicy, anything newer) or a VM cannot honour are refused with INVALID_ARGUMENT
// naming the field.
import assert from "node:assert/strict";
import { test } from "node:test";
import { checkProcess, type RewriteContext, rewriteSpec } from "../../../agent/src/spec/rewrite.ts";
import { CoveError } from "../../../src/common/errors.ts";
import { grpcStatus } from "../../../src/common/grpc-status.ts";
import { Code } from "../../../src/ttrpc/index.ts";

const ctx: RewriteContext = {
  containerId: "c1",
  rootfs: "/run/cove/containers/c1/rootfs",
  cgroupsPath: "/cove/c1",
  etcFiles: {},
  storagePath: () => undefined,
  scratchFile: (d) => `/run/cove/scratch${d}`,
};

const spec12 = (extra: { process?: object; linux?: object; mounts?: object[]; top?: object } = {}) => ({
  ociVersion: "1.2.1",
  process: {
    args: ["/bin/sh"],
    cwd: "/",
    ioPriority: { class: "IOPRIO_CLASS_BE", priority: 4 },
    execCPUAffinity: { initial: "0", final: "0-1" },
    ...extra.process,
  },
  root: { path: "rootfs" },
  mounts: extra.mounts ?? [{ destination: "/proc", type: "proc", source: "proc" }],
  linux: { namespaces: [{ type: "pid" }, { type: "mount" }], timeOffsets: { monotonic: { secs: 1 } }, ...extra.linux },
  ...extra.top,
});

function refused(fn: () => unknown, field: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof CoveError, String(e));
    assert.equal(grpcStatus(e).code, Code.INVALID_ARGUMENT);
    assert.ok(e.message.includes(`spec field ${field} `), e.message);
    return true;
  });
}

test("a spec 1.2.1 as containerd 2.1 writes it passes, its 1.2 fields kept for the guest's crun", () => {
  const { spec } = rewriteSpec(spec12(), ctx);
  const p = spec.process as Record<string, unknown>;
  assert.equal(spec.ociVersion, "1.2.1", "ociVersion is not relabelled");
  assert.deepEqual(p.execCPUAffinity, { initial: "0", final: "0-1" });
  assert.deepEqual(p.ioPriority, { class: "IOPRIO_CLASS_BE", priority: 4 });
});

test("spec 1.2: a relative mount destination is honoured as relative to /", () => {
  const { spec, notes } = rewriteSpec(
    spec12({ mounts: [{ destination: "data/scratch", type: "tmpfs", source: "tmpfs", options: ["size=1m"] }] }),
    ctx,
  );
  const mounts = spec.mounts as { destination: string }[];
  assert.deepEqual(mounts[0], { destination: "/data/scratch", type: "tmpfs", source: "tmpfs", options: ["size=1m"] });
  assert.ok(notes.some((n) => n.includes("data/scratch → /data/scratch")));
});

test("fields the guest's runtime does not know are refused, naming the field", () => {
  refused(() => rewriteSpec(spec12({ linux: { netDevices: { eth1: { name: "eth1" } } } }), ctx), "linux.netDevices");
  refused(
    () => rewriteSpec(spec12({ linux: { memoryPolicy: { mode: "MPOL_BIND", nodes: "0" } } }), ctx),
    "linux.memoryPolicy",
  );
  refused(() => rewriteSpec(spec12({ top: { freebsd: {} } }), ctx), "freebsd");
  refused(() => rewriteSpec(spec12({ process: { futureThing: 1 } }), ctx), "process.futureThing");
  refused(() => checkProcess({ args: ["/bin/true"], cwd: "/", futureThing: 1 }), "process.futureThing");
});

test("known fields a VM guest cannot honour are refused, naming the field", () => {
  refused(() => rewriteSpec(spec12({ linux: { intelRdt: { closID: "gold" } } }), ctx), "linux.intelRdt");
  refused(() => rewriteSpec(spec12({ top: { vm: { hypervisor: { path: "/usr/bin/qemu" } } } }), ctx), "vm");
  refused(() => rewriteSpec(spec12({ top: { windows: {} } }), ctx), "windows");
});
