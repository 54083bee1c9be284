// The node installer's program (tools/node-installer/main.ts) with a stand-in `cove` in a fake
// payload and the fake API server: the cove arguments (restart only when configured), install then
// label, no label when the install fails, unlabel before uninstalling, an uninstall that happens
// even when the API server refuses. The image and its entry point run for real in
// test/integration/install.test.ts.
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { which } from "../../../src/common/exec.ts";
import { NODE_LABEL } from "../../../tools/node-installer/label.ts";
import { coveArgs, DEFAULT_RESTART_COMMAND, run } from "../../../tools/node-installer/main.ts";
import { type FakeApiServer, startFakeApiServer } from "./fake-apiserver.ts";

test("cove arguments: the caller's, plus a restart command only when COVE_RESTART_CONTAINERD is true", () => {
  assert.deepEqual(coveArgs("install", ["--prefix", "/p"], {}), ["install", "--prefix", "/p"]);
  assert.deepEqual(coveArgs("install", [], { COVE_RESTART_CONTAINERD: "false" }), ["install"]);
  assert.deepEqual(coveArgs("uninstall", [], { COVE_RESTART_CONTAINERD: "true" }), [
    "uninstall",
    "--restart-command",
    DEFAULT_RESTART_COMMAND,
  ]);
  assert.deepEqual(
    coveArgs("install", [], { COVE_RESTART_CONTAINERD: "true", COVE_RESTART_COMMAND: "rc-service containerd restart" }),
    ["install", "--restart-command", "rc-service containerd restart"],
  );
  assert.deepEqual(coveArgs("install", ["--restart-command", "x"], { COVE_RESTART_CONTAINERD: "true" }), [
    "install",
    "--restart-command",
    "x",
  ]);
  assert.throws(() => coveArgs("install", [], { COVE_RESTART_CONTAINERD: "yes" }), /"true" or "false"/);
});

const skip = which("openssl") ? false : "openssl is not installed (apt-get install openssl)";

describe("install and uninstall with the node label", { skip }, () => {
  let api: FakeApiServer;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  const calls = () => readFileSync(join(dir, "calls"), "utf8").trim().split("\n");
  const go = async (argv: string[], extra: NodeJS.ProcessEnv = {}) => {
    const lines: string[] = [];
    const code = await run(argv, {
      env: { ...env, ...extra },
      payload: join(dir, "payload"),
      log: (l) => lines.push(l),
      label: { retryMs: 10, attempts: 2 },
    });
    return { code, lines };
  };

  before(async () => {
    api = await startFakeApiServer(["n1"]);
    dir = mkdtempSync(join(tmpdir(), "cove-node-installer-"));
    mkdirSync(join(dir, "payload", "bin"), { recursive: true });
    mkdirSync(join(dir, "sa"));
    writeFileSync(join(dir, "sa", "token"), api.token);
    writeFileSync(join(dir, "sa", "ca.crt"), api.ca);
    // A stand-in cove: records its arguments, exits with $FAKE_COVE_EXIT.
    const cove = join(dir, "payload", "bin", "cove");
    writeFileSync(cove, `#!/bin/sh\necho "$*" >> ${join(dir, "calls")}\nexit \${FAKE_COVE_EXIT:-0}\n`);
    chmodSync(cove, 0o755);
    env = {
      PATH: process.env.PATH,
      NODE_NAME: "n1",
      KUBERNETES_SERVICE_HOST: api.host,
      KUBERNETES_SERVICE_PORT: String(api.port),
      COVE_SA_DIR: join(dir, "sa"),
    };
  });
  after(async () => {
    await api.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("a failed install labels nothing and passes cove's exit code on", async () => {
    const r = await go(["install", "--prefix", "/x"], { FAKE_COVE_EXIT: "3" });
    assert.equal(r.code, 3);
    assert.deepEqual(calls(), ["install --prefix /x"]);
    assert.deepEqual(api.nodes.get("n1"), {});
  });

  test("install, then the label; uninstall removes the label first", async () => {
    const i = await go(["install"], { COVE_RESTART_CONTAINERD: "true", COVE_RESTART_COMMAND: "true" });
    assert.equal(i.code, 0);
    assert.deepEqual(i.lines, ["cove install --restart-command true", `node n1: labelled ${NODE_LABEL}=true`]);
    assert.deepEqual(api.nodes.get("n1"), { [NODE_LABEL]: "true" });
    const u = await go(["uninstall"]);
    assert.equal(u.code, 0);
    assert.deepEqual(u.lines, [`node n1: label ${NODE_LABEL} removed`, "cove uninstall"]);
    assert.deepEqual(api.nodes.get("n1"), {});
  });

  test("an API server that refuses does not keep cove installed, but the uninstall fails", async () => {
    api.failNext.push(403);
    await assert.rejects(go(["uninstall"]), /403/);
    assert.equal(calls().at(-1), "uninstall", "cove uninstall ran all the same");
  });

  test("outside a pod: installed without a label; NODE_NAME missing in a pod is an error", async () => {
    const r = await go(["install"], { KUBERNETES_SERVICE_HOST: "" });
    assert.equal(r.code, 0);
    assert.match(r.lines.at(-1)!, /not in a Kubernetes pod/);
    await assert.rejects(go(["install"], { NODE_NAME: "" }), /NODE_NAME is not set/);
  });

  test("an unknown verb is a usage error", async () => {
    const r = await go(["reinstall"]);
    assert.equal(r.code, 2);
    assert.match(r.lines[0]!, /usage/);
  });
});
