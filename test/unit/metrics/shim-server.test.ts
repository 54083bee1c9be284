// The shim's metrics socket: root-only, Prometheus text and JSON, nothing else; closes cleanly.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { ShimMetrics } from "../../../src/metrics/shim-metrics.ts";
import { serveMetrics } from "../../../src/metrics/shim-server.ts";
import { fakePod } from "./fake-pod.ts";
import { value } from "./prom-text.ts";

function get(socketPath: string, path: string, method = "GET"): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => {
        body += d;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

test("serves the pod's metrics on a 0600 socket in the VM work dir", async () => {
  const dir = mkdtempSync(join(tmpdir(), "cove-metrics-"));
  const f = fakePod();
  const s = await serveMetrics(dir, new ShimMetrics().withPod(f.src));
  try {
    assert.equal(s.path, join(dir, "metrics.sock"));
    assert.equal(statSync(s.path).mode & 0o777, 0o600);
    f.root.writes = 3;
    const text = await get(s.path, "/metrics");
    assert.equal(text.status, 200);
    assert.equal(value(text.body, "cove_device_requests_total", { device: "root", op: "write", pod: "pod-1" }), 3);
    const json = await get(s.path, "/metrics.json");
    assert.equal(json.status, 200);
    const metrics = JSON.parse(json.body) as { name: string }[];
    assert.ok(metrics.some((m) => m.name === "cove_pod_boot_seconds"));
    assert.equal((await get(s.path, "/other")).status, 404);
    assert.equal((await get(s.path, "/metrics", "POST")).status, 404);
  } finally {
    await s.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
