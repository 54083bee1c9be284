// The pod VM's size (src/sandbox/vm-size.ts): [guest] defaults without resources; base + the pod's
// memory and its CPU quota rounded up, capped by [guest] max_* (0: the host's); allowed io.cove.*
// annotations win; the warning for a container whose limit does not fit.
import assert from "node:assert/strict";
import { test } from "node:test";
import { defaultConfig } from "../../../src/config/config.ts";
import { SANDBOX_CPU_PERIOD, SANDBOX_CPU_QUOTA, SANDBOX_MEMORY } from "../../../src/sandbox/pod-resources.ts";
import { memoryFitWarning, podVmSize } from "../../../src/sandbox/vm-size.ts";

const GiB = 1 << 30;
const host = { cpus: 8, memoryMib: 16384 };
const sandbox = (ann: Record<string, string>) => ({
  annotations: { "io.kubernetes.cri.container-type": "sandbox", ...ann },
});

test("no resources: the [guest] defaults", () => {
  const c = defaultConfig();
  assert.deepEqual(podVmSize(sandbox({}), c, host), { vcpus: 1, memoryMib: 256, notes: [] });
  assert.deepEqual(podVmSize({}, c, host), { vcpus: 1, memoryMib: 256, notes: [] });
});

test("CRI annotations: base + the pod's memory, vCPUs = the quota rounded up, logged", () => {
  const c = defaultConfig();
  const s = podVmSize(
    sandbox({ [SANDBOX_MEMORY]: String(GiB), [SANDBOX_CPU_QUOTA]: "150000", [SANDBOX_CPU_PERIOD]: "100000" }),
    c,
    host,
  );
  assert.equal(s.memoryMib, 256 + 1024);
  assert.equal(s.vcpus, 2, "1.5 CPUs → 2 vCPUs");
  assert.match(
    s.notes.join("\n"),
    /VM sized from the pod \(cri annotations\): memory 1280 MiB = \[guest\] memory_mib 256 \+ the pod's 1024 MiB; 2 vCPU\(s\) for 1\.5 CPU\(s\)/,
  );
  const exact = podVmSize(sandbox({ [SANDBOX_CPU_QUOTA]: "200000", [SANDBOX_CPU_PERIOD]: "100000" }), c, host);
  assert.equal(exact.vcpus, 2, "2 CPUs → 2 vCPUs, not 3");
  assert.equal(exact.memoryMib, 256, "no memory limit: the base");
  const small = podVmSize(sandbox({ [SANDBOX_CPU_QUOTA]: "10000", [SANDBOX_MEMORY]: "1" }), c, host);
  assert.equal(small.vcpus, 1);
  assert.equal(small.memoryMib, 257, "a partial MiB counts");
});

test("ctr: the container's own limits", () => {
  const s = podVmSize(
    { linux: { resources: { memory: { limit: 64 << 20 }, cpu: { quota: 300000, period: 100000 } } } },
    defaultConfig(),
    host,
  );
  assert.deepEqual([s.vcpus, s.memoryMib], [3, 320]);
});

test("caps: configured, else the host's; never below the base", () => {
  const c = defaultConfig();
  const big = sandbox({
    [SANDBOX_MEMORY]: String(64 * GiB),
    [SANDBOX_CPU_QUOTA]: "6400000",
    [SANDBOX_CPU_PERIOD]: "100000",
  });
  const h = podVmSize(big, c, host);
  assert.deepEqual([h.vcpus, h.memoryMib], [8, 16384], "the host's CPUs and memory");
  assert.match(
    h.notes.join("\n"),
    /capped at 16384 MiB \(\[guest\] max_memory_mib\).*capped at 8 \(\[guest\] max_vcpus\)/,
  );
  c.guest.maxVcpus = 2;
  c.guest.maxMemoryMib = 2048;
  const m = podVmSize(big, c, host);
  assert.deepEqual([m.vcpus, m.memoryMib], [2, 2048]);
  c.guest.maxMemoryMib = 128;
  assert.equal(podVmSize(big, c, host).memoryMib, 256, "a cap below the base leaves the base");
});

test("allowed io.cove.* annotations win over the pod's resources; refused ones are noted", () => {
  const c = defaultConfig();
  const ann = { [SANDBOX_MEMORY]: String(GiB), "io.cove.memory_mib": "512", "io.cove.vcpus": "3" };
  const refused = podVmSize(sandbox(ann), c, host);
  assert.equal(refused.memoryMib, 1280);
  assert.ok(refused.notes.some((n) => /not in \[pod\] allowed_annotations/.test(n)));
  c.pod.allowedAnnotations = ["io.cove.*"];
  const s = podVmSize(sandbox(ann), c, host);
  assert.deepEqual([s.vcpus, s.memoryMib], [3, 512]);
});

test("memoryFitWarning: a limit above the VM's memory minus the guest's own says so, with both numbers", () => {
  const c = defaultConfig();
  assert.equal(memoryFitWarning(undefined, 1280, c), undefined);
  assert.equal(memoryFitWarning(GiB, 1280, c), undefined, "exactly the room");
  const w = memoryFitWarning(2 * GiB, 1280, c);
  assert.match(
    w ?? "",
    /memory limit of 2048 MiB does not fit the pod's VM \(1280 MiB, 1024 MiB of it for containers; there is no memory hotplug\)/,
  );
  assert.match(memoryFitWarning(64 << 20, 256, c) ?? "", /0 MiB of it for containers/, "a VM with only the base");
});
