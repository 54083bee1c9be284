// The node endpoint: pods found through pod.json, each shim's JSON checked and aggregated, the node's
// own series (pods, conversions kept across pods that ended, the layer cache); the scrape client's
// bounds; `cove monitor --listen` parsing.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, test } from "node:test";
import { parseListen } from "../../../src/cli/metrics.ts";
import { layerCacheSize } from "../../../src/metrics/cache-size.ts";
import { NodeMetrics } from "../../../src/metrics/node.ts";
import { getUnix, parseScrape } from "../../../src/metrics/scrape.ts";
import { ShimMetrics } from "../../../src/metrics/shim-metrics.ts";
import { POD_STATE_FILE, type PodRunState } from "../../../src/sandbox/run-state.ts";
import { fakePod } from "./fake-pod.ts";
import { value } from "./prom-text.ts";

let d: string;
beforeEach(() => {
  d = mkdtempSync(join(tmpdir(), "cove-node-"));
  mkdirSync(join(d, "run"));
  mkdirSync(join(d, "proc"));
  mkdirSync(join(d, "cache", "layers"), { recursive: true });
});
afterEach(() => rmSync(d, { recursive: true, force: true }));

function addPod(dir: string, id: string, shimPid: number): void {
  mkdirSync(join(d, "run", dir));
  mkdirSync(join(d, "proc", String(shimPid)), { recursive: true });
  const s: PodRunState = {
    id,
    namespace: "k8s.io",
    bundle: `/run/containerd/io.containerd.runtime.v2.task/k8s.io/${id}`,
    shimPid,
    vmmPid: shimPid,
    backend: "embedded",
    vcpus: 1,
    memoryMib: 256,
    startedAt: new Date().toISOString(),
    bootMs: 500,
    containers: [id],
  };
  writeFileSync(join(d, "run", dir, POD_STATE_FILE), JSON.stringify(s));
}

/** A shim's JSON for a fake pod `id` that converted `converted` layers. */
async function shimJson(id: string, converted: number, blkReads: number): Promise<string> {
  const m = new ShimMetrics();
  const f = fakePod(id);
  f.root.reads = blkReads;
  const reg = m.withPod(f.src);
  m.recordLayerImages(Array.from({ length: converted }, () => ({ built: true, ms: 100 })));
  return JSON.stringify(await reg.getMetricsAsJSON());
}

test("aggregates every pod's metrics with the node's own", async () => {
  addPod("aaa", "pod-a", 101);
  addPod("bbb", "pod-b", 102);
  addPod("ccc", "pod-c", 103);
  addPod("ddd", "pod-gone", 999_999);
  rmSync(join(d, "proc", "999999"), { recursive: true });
  writeFileSync(join(d, "cache", "layers", "x.erofs"), Buffer.alloc(8192, 1));
  writeFileSync(join(d, "cache", "layers", "x.lock"), "");
  const answers: Record<string, () => Promise<string>> = {
    aaa: () => shimJson("pod-a", 2, 5),
    bbb: () => shimJson("pod-b", 1, 7),
    ccc: () => Promise.reject(new Error("no answer within 3000 ms")),
  };
  const node = new NodeMetrics({
    runDir: join(d, "run"),
    cacheDir: join(d, "cache"),
    proc: join(d, "proc"),
    scrape: (sock) => answers[sock.split("/").at(-2)!]!(),
  });
  let { registry, pods } = await node.collect();
  let text = await registry.metrics();
  assert.equal(value(text, "cove_node_pods"), 3, "the pod whose shim is gone is not counted");
  assert.equal(value(text, "cove_node_pods_unscraped"), 1);
  assert.match(pods.find((p) => p.pod === "pod-c")?.error ?? "", /no answer/);
  assert.equal(value(text, "cove_device_requests_total", { pod: "pod-a", device: "root", op: "read" }), 5);
  assert.equal(value(text, "cove_device_requests_total", { pod: "pod-b", device: "root", op: "read" }), 7);
  assert.equal(value(text, "cove_node_layer_conversions_total"), 3);
  assert.equal(value(text, "cove_node_layer_cache_images"), 1);
  assert.ok((value(text, "cove_node_layer_cache_bytes") ?? 0) >= 8192);
  // One HELP/TYPE per family, whatever the number of pods.
  assert.equal(text.split("\n").filter((l) => l === "# TYPE cove_device_requests_total counter").length, 1);

  // pod-b ends: its conversions stay in the node's total; pod-a converts one more.
  rmSync(join(d, "run", "bbb"), { recursive: true });
  answers.aaa = () => shimJson("pod-a", 3, 9);
  ({ registry, pods } = await node.collect());
  text = await registry.metrics();
  assert.equal(value(text, "cove_node_pods"), 2);
  assert.equal(value(text, "cove_node_layer_conversions_total"), 4);
  assert.equal(value(text, "cove_node_scrape_failures_total"), 2);
  assert.equal(value(text, "cove_device_requests_total", { pod: "pod-a", device: "root", op: "read" }), 9);
});

test("a shim's answer is checked before it is aggregated", () => {
  const ok = [{ name: "cove_x_total", help: "h", type: "counter", values: [{ value: 1, labels: { a: "b" } }] }];
  assert.equal(parseScrape(JSON.stringify(ok))[0]?.aggregator, "sum");
  const bad: unknown[] = [
    {},
    [{ name: "other_x", type: "counter", values: [] }],
    [{ name: "cove_x", type: "weird", values: [] }],
    [{ name: "cove_x", type: "gauge", values: [{ value: "1", labels: {} }] }],
    [{ name: "cove_x", type: "gauge", values: [{ value: 1, labels: { "a b": "c" } }] }],
    [{ name: "cove_x", type: "gauge", values: [{ value: 1, labels: { a: "x".repeat(300) } }] }],
    [{ name: "cove_x", type: "gauge", values: [{ value: 1, labels: {}, metricName: 'x{a="b"} 1\n' }] }],
    [{ name: "cove_x", type: "gauge", values: Array.from({ length: 10_001 }, () => ({ value: 1, labels: {} })) }],
  ];
  for (const b of bad) assert.throws(() => parseScrape(JSON.stringify(b)), Error, JSON.stringify(b).slice(0, 80));
});

test("the scrape client gives up on a slow or oversized answer", async () => {
  const sock = join(d, "s.sock");
  const server = createServer((req, res) => {
    if (req.url === "/slow") return; // never answers
    res.end("x".repeat(5000));
  });
  await new Promise<void>((r) => server.listen(sock, r));
  try {
    assert.equal((await getUnix(sock, "/ok", 2000, 10_000)).length, 5000);
    await assert.rejects(getUnix(sock, "/ok", 2000, 1000), /over 1000 bytes/);
    await assert.rejects(getUnix(sock, "/slow", 200), /within 200 ms/);
    await assert.rejects(getUnix(join(d, "none.sock"), "/metrics"), /ENOENT/);
  } finally {
    server.closeAllConnections();
    server.close();
  }
});

test("layer cache size: erofs images only; a missing cache is empty; bounded", async () => {
  const c = join(d, "cache");
  assert.deepEqual(await layerCacheSize(join(d, "nothing")), { images: 0, bytes: 0, truncated: false });
  for (let i = 0; i < 5; i++) writeFileSync(join(c, "layers", `${i}.erofs`), Buffer.alloc(4096, 1));
  writeFileSync(join(c, "layers", "5.erofs.tmp"), Buffer.alloc(4096, 1));
  const all = await layerCacheSize(c);
  assert.equal(all.images, 5);
  assert.ok(all.bytes >= 5 * 4096);
  const some = await layerCacheSize(c, 3);
  assert.deepEqual([some.images, some.truncated], [3, true]);
});

test("cove monitor --listen", () => {
  assert.deepEqual(parseListen("127.0.0.1:9464"), { host: "127.0.0.1", port: 9464 });
  assert.deepEqual(parseListen(":9464"), { host: "0.0.0.0", port: 9464 });
  assert.deepEqual(parseListen("[::1]:80"), { host: "::1", port: 80 });
  for (const bad of ["9464", "host:", "h:99999", "a:b"]) assert.throws(() => parseListen(bad), /expected host:port/);
});
