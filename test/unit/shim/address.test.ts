import assert from "node:assert/strict";
import { test } from "node:test";
import { addressPath, groupingOf, socketAddress, socketPath } from "../../../src/shim/address.ts";

// The value containerd-shim-runc-v2 (Debian 12, containerd 1.6.20) printed on this machine for
// `-namespace default -address /scratch/containerd.sock -id t1 start`. (notes §2 says 1efc7159…, which
// is not sha256 of that string; the real runc shim agrees with 55bbf1d1….)
const RUNC_SOCKET = "55bbf1d1dcfede355ad27df429e75b9d417c07603211b74a9425b20ca5f44aaf";

test("socket path matches the one runc's shim returns", () => {
  const p = socketPath("/scratch/containerd.sock", "default", "t1");
  assert.equal(p, `/run/containerd/s/${RUNC_SOCKET}`);
  assert.equal(socketAddress(p), `unix://${p}`);
  assert.equal(addressPath(socketAddress(p)), p);
});

test("a socket dir from BootstrapParams replaces /run/containerd/s", () => {
  const p = socketPath("/scratch/containerd.sock", "default", "t1", "/var/run/x");
  assert.equal(p, `/var/run/x/${RUNC_SOCKET}`);
});

test("grouping: explicit group, then CRI sandbox id, then the task id", () => {
  assert.equal(groupingOf("c1", undefined), "c1");
  assert.equal(groupingOf("c1", { "io.kubernetes.cri.sandbox-id": "pod" }), "pod");
  assert.equal(
    groupingOf("c1", { "io.kubernetes.cri.sandbox-id": "pod", "io.containerd.runc.v2.group": "grp" }),
    "grp",
  );
  // Tasks of one pod share a socket; different pods do not.
  const a = socketPath("/c.sock", "k8s.io", groupingOf("c1", { "io.kubernetes.cri.sandbox-id": "pod" }));
  const b = socketPath("/c.sock", "k8s.io", groupingOf("pod", { "io.kubernetes.cri.sandbox-id": "pod" }));
  const c = socketPath("/c.sock", "k8s.io", "other");
  assert.equal(a, b);
  assert.notEqual(a, c);
});
