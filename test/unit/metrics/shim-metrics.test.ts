// The shim's registry: the pod's series from a fake pod, labelled with the pod; counters mirror the
// devices' own; the agent histogram and layer counters; bounded label sets.
import assert from "node:assert/strict";
import { test } from "node:test";
import { exitReasonName, exitTotals, MAX_EXIT_KINDS } from "../../../src/metrics/exits.ts";
import { ShimMetrics } from "../../../src/metrics/shim-metrics.ts";
import { fakePod } from "./fake-pod.ts";

import { value } from "./prom-text.ts";

const POD = { pod: "pod-1", namespace: "k8s.io", backend: "embedded" };

test("the pod's series carry the pod's labels and mirror its devices", async () => {
  const f = fakePod();
  const reg = new ShimMetrics().withPod(f.src);
  f.root.reads = 5;
  f.root.bytesRead = 4096;
  f.root.inFlight = 2;
  f.net0.txFrames = 9;
  f.vsock.rxBytes = 77;
  let text = await reg.metrics();
  assert.equal(value(text, "cove_device_requests_total", { device: "root", type: "blk", op: "read", ...POD }), 5);
  assert.equal(
    value(text, "cove_device_bytes_total", { device: "root", type: "blk", direction: "read", ...POD }),
    4096,
  );
  assert.equal(value(text, "cove_device_in_flight", { device: "root", type: "blk", ...POD }), 2);
  assert.equal(value(text, "cove_device_in_flight", { device: "vsock", type: "vsock", ...POD }), 3);
  assert.equal(value(text, "cove_device_requests_total", { device: "net0", type: "net", op: "tx", ...POD }), 9);
  assert.equal(value(text, "cove_device_bytes_total", { device: "vsock", type: "vsock", direction: "rx", ...POD }), 77);
  assert.equal(value(text, "cove_pod_boot_seconds", POD), 1.234);
  assert.equal(value(text, "cove_pod_memory_bytes", POD), 512 * 1024 * 1024);
  assert.equal(value(text, "cove_pod_guest_ram_touched_bytes", POD), 100 * 1024 * 1024);
  assert.equal(value(text, "cove_pod_host_pss_bytes", { process: "shim", ...POD }), 50 * 1024 * 1024);
  assert.equal(value(text, "cove_pod_containers", POD), 2);
  assert.equal(value(text, "cove_vm_exits_total", POD), 10);
  assert.equal(value(text, "cove_vm_exits_by_kind_total", { kind: "io", ...POD }), 4);
  // A second scrape sees the counters move, not added up twice.
  f.root.reads = 8;
  text = await reg.metrics();
  assert.equal(value(text, "cove_device_requests_total", { device: "root", type: "blk", op: "read", ...POD }), 8);
  assert.match(text, /# TYPE cove_device_requests_total counter/);
});

test("the qemu backend: QEMU's PSS and vhost-user counters, no exits", async () => {
  const f = fakePod("p2", "qemu");
  const text = await new ShimMetrics().withPod(f.src).metrics();
  const pod = { pod: "p2", namespace: "k8s.io", backend: "qemu" };
  assert.equal(value(text, "cove_pod_host_pss_bytes", { process: "vmm", ...pod }), 150 * 1024 * 1024);
  assert.equal(value(text, "cove_vhost_user_kicks_total", { device: "root", ...pod }), 7);
  assert.doesNotMatch(text, /^cove_vm_exits_total\{/m);
});

test("agent round trips: a histogram by method; methods beyond the bound are not recorded", async () => {
  const m = new ShimMetrics(2);
  const f = fakePod();
  const reg = m.withPod(f.src);
  m.observeAgentCall("Check", 0.003, true);
  m.observeAgentCall("Check", 0.2, false);
  m.observeAgentCall("StatsContainer", 0.01, true);
  m.observeAgentCall("Third", 0.01, true);
  const text = await reg.metrics();
  assert.equal(value(text, "cove_agent_rpc_duration_seconds_count", { method: "Check", ...POD }), 2);
  assert.equal(value(text, "cove_agent_rpc_duration_seconds_bucket", { le: "0.005", method: "Check", ...POD }), 1);
  assert.equal(value(text, "cove_agent_rpc_failures_total", { method: "Check", ...POD }), 1);
  assert.doesNotMatch(text, /method="Third"/);
});

test("layer images: conversions and cache hits counted, conversion time observed", async () => {
  const m = new ShimMetrics();
  const reg = m.withPod(fakePod().src);
  m.recordLayerImages([
    { built: true, ms: 700 },
    { built: false, ms: 1 },
    { built: false, ms: 1 },
  ]);
  const text = await reg.metrics();
  assert.equal(value(text, "cove_layer_images_total", { result: "converted", ...POD }), 1);
  assert.equal(value(text, "cove_layer_images_total", { result: "cached", ...POD }), 2);
  assert.equal(value(text, "cove_layer_conversion_seconds_sum", POD), 0.7);
});

test("exit totals: summed over vCPUs, reasons named, kinds bounded", () => {
  const v0 = new Map<string, bigint>([
    ["exits", 5n],
    ["io_exits", 2n],
    ["halt_successful_poll", 9n],
  ]);
  const v1 = new Map<string, bigint>([
    ["exits", 3n],
    ["io_exits", 1n],
  ]);
  for (let i = 0; i < 100; i++) v1.set(`k${i}_exits`, 1n);
  const t = exitTotals(
    [v0, undefined, v1],
    [
      new Map([
        [2, 1],
        [5, 2],
      ]),
      new Map([
        [2, 3],
        [1234, 1],
      ]),
    ],
  );
  assert.equal(t.all, 8);
  assert.equal(t.byKind.get("io"), 3);
  assert.equal(t.byKind.has("halt_successful_poll"), false);
  assert.equal(t.byKind.size, MAX_EXIT_KINDS);
  assert.deepEqual(
    [...t.userspace],
    [
      ["io", 4],
      ["hlt", 2],
      ["other", 1],
    ],
  );
  assert.equal(exitReasonName(6), "mmio");
});
