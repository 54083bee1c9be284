// What the pod asks for (src/sandbox/pod-resources.ts): CRI's sandbox annotations, a ctr container's
// own resources, nothing for a CRI pod without resources; unusable values ignored with a note.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  containerMemoryLimit,
  podResources,
  SANDBOX_CPU_PERIOD,
  SANDBOX_CPU_QUOTA,
  SANDBOX_CPU_SHARES,
  SANDBOX_MEMORY,
} from "../../../src/sandbox/pod-resources.ts";

const GiB = 1 << 30;
const cri = (ann: Record<string, string>) => ({
  annotations: { "io.kubernetes.cri.container-type": "sandbox", ...ann },
  linux: { resources: { cpu: { shares: 2 } } },
});

test("CRI: containerd's sandbox annotations (all four set whenever kubelet sends resources)", () => {
  const r = podResources(
    cri({
      [SANDBOX_MEMORY]: String(GiB),
      [SANDBOX_CPU_QUOTA]: "150000",
      [SANDBOX_CPU_PERIOD]: "100000",
      [SANDBOX_CPU_SHARES]: "1536",
    }),
  );
  assert.deepEqual(r, { memoryBytes: GiB, cpus: 1.5, source: "cri annotations", notes: [] });
  // kubelet sends 0 for what no container limits; containerd writes "0" (and a quota of -1 is "none")
  const none = podResources(cri({ [SANDBOX_MEMORY]: "0", [SANDBOX_CPU_QUOTA]: "-1", [SANDBOX_CPU_PERIOD]: "0" }));
  assert.equal(none.memoryBytes, undefined);
  assert.equal(none.cpus, undefined);
  assert.equal(podResources(cri({ [SANDBOX_CPU_QUOTA]: "50000" })).cpus, 0.5, "no period: the kernel's 100 ms");
});

test("a CRI pod without resources: nothing, whatever the pause container's spec says", () => {
  assert.deepEqual(podResources(cri({})), { source: "none", notes: [] });
});

test("ctr run: the first container's own limits size its pod", () => {
  const r = podResources({
    linux: { resources: { memory: { limit: 64 << 20 }, cpu: { quota: 200000, period: 100000 } } },
  });
  assert.deepEqual(r, { memoryBytes: 64 << 20, cpus: 2, source: "container resources", notes: [] });
  assert.deepEqual(podResources({ linux: { resources: { cpu: { shares: 1024 } } } }), { source: "none", notes: [] });
  assert.deepEqual(podResources({}), { source: "none", notes: [] });
});

test("unusable values are ignored with a note, never fatal", () => {
  const r = podResources(
    cri({ [SANDBOX_MEMORY]: "lots", [SANDBOX_CPU_QUOTA]: "1e9", [SANDBOX_CPU_PERIOD]: "99999999999999999999" }),
  );
  assert.equal(r.memoryBytes, undefined);
  assert.equal(r.cpus, undefined);
  assert.equal(r.notes.length, 3, r.notes.join("; "));
  assert.match(r.notes[0]!, /io\.kubernetes\.cri\.sandbox-memory="lots" ignored/);
  const ctr = podResources({ linux: { resources: { memory: { limit: "x" }, cpu: { quota: 1.5 } } } });
  assert.equal(ctr.source, "none");
  assert.equal(ctr.notes.length, 2);
});

test("containerMemoryLimit: the container's limit in bytes, or none", () => {
  assert.equal(containerMemoryLimit({ linux: { resources: { memory: { limit: 2 * GiB } } } }), 2 * GiB);
  assert.equal(containerMemoryLimit({ linux: { resources: { memory: { limit: 0 } } } }), undefined);
  assert.equal(containerMemoryLimit({ linux: { resources: { memory: { limit: -1 } } } }), undefined);
  assert.equal(containerMemoryLimit({}), undefined);
});
