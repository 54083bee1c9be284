// The node installer's label client against a fake API server over real HTTPS: the in-cluster
// settings a pod has (service host/port, token, CA), the merge patch that sets and removes the label,
// retries on what may pass (503, no connection) and none on refusals (403), a node that is gone.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { which } from "../../../src/common/exec.ts";
import { type ApiServer, inClusterApi, NODE_LABEL, setNodeLabel } from "../../../tools/node-installer/label.ts";
import { type FakeApiServer, startFakeApiServer } from "./fake-apiserver.ts";

// The fake API server's certificate is made with openssl (scripts/test-setup.sh installs it).
const skip = which("openssl") ? false : "openssl is not installed (apt-get install openssl)";

describe("node label over the API server", { skip }, () => {
  let fake: FakeApiServer;
  let sa: string;
  let api: ApiServer;
  const fast = { retryMs: 10 };

  before(async () => {
    fake = await startFakeApiServer(["node-a", "node:b"]);
    sa = mkdtempSync(join(tmpdir(), "cove-sa-"));
    writeFileSync(join(sa, "token"), `${fake.token}\n`);
    writeFileSync(join(sa, "ca.crt"), fake.ca);
    const found = inClusterApi({ KUBERNETES_SERVICE_HOST: fake.host, KUBERNETES_SERVICE_PORT: String(fake.port) }, sa);
    assert.ok(found);
    api = found;
  });
  after(async () => {
    await fake.close();
    rmSync(sa, { recursive: true, force: true });
  });

  test("in-cluster settings: none outside a pod; IPv6 hosts bracketed; an unreadable token is an error", () => {
    assert.equal(inClusterApi({}, sa), undefined);
    assert.equal(api.url, `https://127.0.0.1:${fake.port}`);
    assert.equal(api.token, fake.token, "the token's trailing newline is dropped");
    assert.equal(
      inClusterApi({ KUBERNETES_SERVICE_HOST: "fd00::1", KUBERNETES_SERVICE_PORT: "443" }, sa)?.url,
      "https://[fd00::1]:443",
    );
    assert.throws(
      () => inClusterApi({ KUBERNETES_SERVICE_HOST: "10.0.0.1", KUBERNETES_SERVICE_PORT: "443" }, join(sa, "missing")),
      /service account is unreadable/,
    );
  });

  test("sets the label with a merge patch and the bearer token, then removes it with null", async () => {
    fake.requests.length = 0;
    await setNodeLabel(api, "node-a", "true", fast);
    assert.deepEqual(fake.nodes.get("node-a"), { [NODE_LABEL]: "true" });
    const r = fake.requests[0]!;
    assert.equal(r.method, "PATCH");
    assert.equal(r.path, "/api/v1/nodes/node-a");
    assert.equal(r.contentType, "application/merge-patch+json");
    assert.equal(r.authorization, `Bearer ${fake.token}`);
    assert.deepEqual(JSON.parse(r.body), { metadata: { labels: { "cove.io/runtime": "true" } } });
    await setNodeLabel(api, "node-a", "true", fast);
    assert.deepEqual(fake.nodes.get("node-a"), { [NODE_LABEL]: "true" }, "setting twice changes nothing");
    await setNodeLabel(api, "node-a", null, fast);
    assert.deepEqual(fake.nodes.get("node-a"), {});
  });

  test("a node name is escaped in the path", async () => {
    await setNodeLabel(api, "node:b", "true", fast);
    assert.equal(fake.requests.at(-1)!.path, "/api/v1/nodes/node%3Ab");
    assert.deepEqual(fake.nodes.get("node:b"), { [NODE_LABEL]: "true" });
  });

  test("503 and 429 are retried; 403 is not; out of tries is an error naming the last answer", async () => {
    fake.failNext.push(503, 429);
    const before = fake.requests.length;
    await setNodeLabel(api, "node-a", "true", fast);
    assert.equal(fake.requests.length - before, 3);
    fake.failNext.push(403);
    const n = fake.requests.length;
    await assert.rejects(
      setNodeLabel(api, "node-a", "true", fast),
      /PATCH \/api\/v1\/nodes\/node-a: 403 injected 403$/,
    );
    assert.equal(fake.requests.length - n, 1, "a refusal is not retried");
    fake.failNext.push(500, 500, 500);
    await assert.rejects(setNodeLabel(api, "node-a", "true", { ...fast, attempts: 3 }), /500 injected 500 \(3 tries\)/);
  });

  test("a wrong token is refused (401); a missing node is an error to label and fine to unlabel", async () => {
    await assert.rejects(setNodeLabel({ ...api, token: "other" }, "node-a", "true", fast), /401 Unauthorized/);
    await assert.rejects(setNodeLabel(api, "gone", "true", fast), /404 nodes "gone" not found/);
    await setNodeLabel(api, "gone", null, fast);
  });

  test("a server whose certificate the CA does not sign is refused", async () => {
    const other = await startFakeApiServer(["node-a"], fake.token);
    try {
      const wrongCa = { ...api, url: `https://127.0.0.1:${other.port}` };
      await assert.rejects(
        setNodeLabel(wrongCa, "node-a", "true", { ...fast, attempts: 1 }),
        /self.signed|certificate/i,
      );
      assert.equal(other.requests.length, 0);
    } finally {
      await other.close();
    }
  });

  test("no server at the address: retried, then an error", async () => {
    const closed = await startFakeApiServer([]);
    await closed.close();
    await assert.rejects(
      setNodeLabel({ ...api, url: `https://127.0.0.1:${closed.port}` }, "node-a", "true", { ...fast, attempts: 2 }),
      /ECONNREFUSED.*\(2 tries\)/,
    );
  });
});
