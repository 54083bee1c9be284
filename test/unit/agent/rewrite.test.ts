// The OCI spec rewrite for the guest: rootfs and cgroup path replaced, host-only fields dropped or
// mapped, what cannot be honoured rejected with INVALID_ARGUMENT.
import assert from "node:assert/strict";
import { test } from "node:test";
import { type RewriteContext, rewriteSpec } from "../../../agent/src/spec/rewrite.ts";
import { CoveError } from "../../../src/common/errors.ts";
import { grpcStatus } from "../../../src/common/grpc-status.ts";
import { Code } from "../../../src/ttrpc/index.ts";

const ctx: RewriteContext = {
  containerId: "c1",
  rootfs: "/run/cove/containers/c1/rootfs",
  cgroupsPath: "/cove/c1",
  etcFiles: { "/etc/hosts": "/run/cove/sandbox/hosts", "/etc/resolv.conf": "/run/cove/sandbox/resolv.conf" },
  storagePath: (id) => (id === "vol" ? "/run/cove/storage/vol" : undefined),
  scratchFile: (d) => `/run/cove/containers/c1/file-${d.replace(/\//g, "_")}`,
};

function spec(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { ociVersion: "1.0.2", process: { args: ["/bin/sh"], cwd: "/" }, root: { path: "/host/rootfs" }, ...extra };
}

function invalid(fn: () => unknown, re: RegExp): void {
  assert.throws(
    fn,
    (e: unknown) => e instanceof CoveError && grpcStatus(e).code === Code.INVALID_ARGUMENT && re.test(e.message),
  );
}

test("rootfs and cgroupsPath point into the guest; readonly is kept", () => {
  const { spec: s } = rewriteSpec(spec({ root: { path: "rootfs", readonly: true } }), ctx);
  assert.deepEqual(s.root, { path: ctx.rootfs, readonly: true });
  assert.equal((s.linux as { cgroupsPath: string }).cgroupsPath, "/cove/c1");
});

test("namespace paths into the host are dropped; network is the guest's; user ns join is refused", () => {
  const { spec: s, notes } = rewriteSpec(
    spec({
      linux: {
        namespaces: [
          { type: "pid", path: "/proc/42/ns/pid" },
          { type: "network", path: "/proc/42/ns/net" },
          { type: "mount" },
          { type: "ipc", path: "/proc/42/ns/ipc" },
        ],
      },
    }),
    ctx,
  );
  assert.deepEqual((s.linux as { namespaces: unknown }).namespaces, [
    { type: "pid" },
    { type: "mount" },
    { type: "ipc" },
    { type: "cgroup" }, // every container gets its own cgroup view (cgroup-view.test.ts)
  ]);
  assert.ok(notes.some((n) => n.includes("/proc/42/ns/pid")));
  invalid(() => rewriteSpec(spec({ linux: { namespaces: [{ type: "user", path: "/proc/1/ns/user" }] } }), ctx), /user/);
  invalid(() => rewriteSpec(spec({ linux: { namespaces: [{ type: "bogus" }] } }), ctx), /namespace/);
});

test("with the pod's namespaces: pid/ipc/uts paths join the pod's in the guest; mount/cgroup paths still dropped", () => {
  const pod = { ...ctx, podNamespace: (t: string) => `/proc/7/ns/${t}` };
  const { spec: s } = rewriteSpec(
    spec({
      linux: {
        namespaces: [
          { type: "pid", path: "/proc/42/ns/pid" },
          { type: "ipc", path: "/proc/42/ns/ipc" },
          { type: "uts", path: "/proc/42/ns/uts" },
          { type: "mount", path: "/proc/42/ns/mnt" },
          { type: "cgroup" },
          { type: "network", path: "/proc/42/ns/net" },
        ],
      },
    }),
    pod,
  );
  assert.deepEqual((s.linux as { namespaces: unknown }).namespaces, [
    { type: "pid", path: "/proc/7/ns/pid" },
    { type: "ipc", path: "/proc/7/ns/ipc" },
    { type: "uts", path: "/proc/7/ns/uts" },
    { type: "mount" },
    { type: "cgroup" },
  ]);
  // No path: a new namespace, as asked (a pod without shareProcessNamespace).
  const { spec: s2 } = rewriteSpec(spec({ linux: { namespaces: [{ type: "pid" }] } }), pod);
  assert.deepEqual((s2.linux as { namespaces: unknown }).namespaces, [{ type: "pid" }, { type: "cgroup" }]);
});

test("hooks, host devices and LSM labels are dropped", () => {
  const { spec: s } = rewriteSpec(
    spec({
      hooks: { prestart: [{ path: "/usr/bin/x" }] },
      process: { args: ["/bin/sh"], apparmorProfile: "p", selinuxLabel: "l" },
      linux: { devices: [{ path: "/dev/nvidia0", type: "c", major: 195, minor: 0 }] },
    }),
    ctx,
  );
  assert.equal(s.hooks, undefined);
  assert.equal((s.linux as { devices?: unknown }).devices, undefined);
  assert.equal((s.process as { apparmorProfile?: string }).apparmorProfile, undefined);
});

test("bind mounts: storage sources, /etc files and termination-log mapped; other host paths refused", () => {
  const { spec: s } = rewriteSpec(
    spec({
      mounts: [
        { destination: "/proc", type: "proc", source: "proc" },
        { destination: "/data", type: "bind", source: "storage:vol/sub", options: ["rbind"] },
        { destination: "/etc/hosts", type: "bind", source: "/var/lib/containerd/x/hosts", options: ["rbind", "ro"] },
        { destination: "/dev/termination-log", type: "bind", source: "/var/lib/kubelet/x", options: ["rbind"] },
      ],
    }),
    ctx,
  );
  const m = s.mounts as Array<{ destination: string; source: string }>;
  assert.equal(m[0]!.source, "proc");
  assert.equal(m[1]!.source, "/run/cove/storage/vol/sub");
  assert.equal(m[2]!.source, "/run/cove/sandbox/hosts");
  assert.match(m[3]!.source, /^\/run\/cove\/containers\/c1\/file-/);
  invalid(
    () => rewriteSpec(spec({ mounts: [{ destination: "/x", type: "bind", source: "/host/dir" }] }), ctx),
    /cannot be honoured/,
  );
  invalid(
    () => rewriteSpec(spec({ mounts: [{ destination: "/x", type: "bind", source: "storage:nope" }] }), ctx),
    /not attached/,
  );
  invalid(
    () => rewriteSpec(spec({ mounts: [{ destination: "/x", type: "bind", source: "storage:vol/../../etc" }] }), ctx),
    /\.\./,
  );
});

test("malformed specs are INVALID_ARGUMENT", () => {
  invalid(() => rewriteSpec({ process: { args: ["x"] } }, ctx), /ociVersion/);
  invalid(() => rewriteSpec({ ociVersion: "1", process: { args: [] } }, ctx), /args/);
  invalid(() => rewriteSpec({ ociVersion: "1" }, ctx), /process/);
  invalid(() => rewriteSpec(spec({ mounts: "x" }), ctx), /mounts/);
  // JSON can carry an object whose own "toString" is no function: converting it threw a TypeError
  // (found by the spec-rewrite fuzzer); such values are refused like any other wrong type.
  const trap = JSON.parse('{"toString": 1}') as object;
  invalid(() => rewriteSpec(spec({ mounts: [{ destination: "/x", type: "tmpfs", options: [trap] }] }), ctx), /options/);
  invalid(() => rewriteSpec(spec({ mounts: [{ destination: "/x", type: "bind", options: "rbind" }] }), ctx), /options/);
  invalid(() => rewriteSpec(spec({ linux: { namespaces: [{ type: "network", path: trap }] } }), ctx), /namespace/);
  const { spec: s } = rewriteSpec(
    spec({ mounts: [{ destination: "/sys/fs/cgroup/cpu", source: "cgroup", type: trap, options: [trap] }] }),
    ctx,
  );
  assert.equal(
    (s.mounts as Array<{ destination: string }>).filter((m) => m.destination.startsWith("/sys/fs/cgroup")).length,
    1,
  );
});
