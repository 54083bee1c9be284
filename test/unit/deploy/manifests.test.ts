// deploy/kubernetes/*.yaml against the Kubernetes API schemas (kubernetes-models, pinned in
// package.json: see k8s-schema.ts for what is checked and where the schemas come from), negative
// cases that must fail, and the facts the manifests and the installer must agree on.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { before, describe, test } from "node:test";
import { parseAllDocuments } from "yaml";
import { ENTRYPOINT, IMAGE_REF, READY_FILE } from "../../../tools/node-installer/image.ts";
import { NODE_LABEL, NODE_LABEL_VALUE } from "../../../tools/node-installer/label.ts";
import { coveArgs } from "../../../tools/node-installer/main.ts";
import { type Manifest, schemaErrors, typeErrors } from "./k8s-schema.ts";

const DIR = resolve("deploy/kubernetes");

function load(): Manifest[] {
  const out: Manifest[] = [];
  for (const f of readdirSync(DIR)
    .filter((n) => n.endsWith(".yaml"))
    .sort()) {
    parseAllDocuments(readFileSync(join(DIR, f), "utf8")).forEach((d, i) => {
      assert.deepEqual(d.errors, [], `${f}#${i}: YAML errors`);
      out.push({ source: `${f}#${i}`, object: d.toJS() as Record<string, unknown> });
    });
  }
  return out;
}

// biome-ignore lint/suspicious/noExplicitAny: walking parsed YAML
type Any = any;
const clone = (m: Manifest, source: string): Manifest & { object: Any } => ({
  source,
  object: structuredClone(m.object),
});

describe("deploy/kubernetes manifests", () => {
  let all: Manifest[];
  const find = (kind: string): Any => {
    const m = all.find((x) => x.object.kind === kind);
    assert.ok(m, `a ${kind} in deploy/kubernetes`);
    return m;
  };
  before(() => {
    all = load();
  });

  test("every object passes the API schema and the API types (no unknown field)", async () => {
    assert.deepEqual(all.map((m) => `${m.object.apiVersion} ${m.object.kind}`).sort(), [
      "apps/v1 DaemonSet",
      "node.k8s.io/v1 RuntimeClass",
      "rbac.authorization.k8s.io/v1 ClusterRole",
      "rbac.authorization.k8s.io/v1 ClusterRoleBinding",
      "v1 ServiceAccount",
    ]);
    for (const m of all) assert.equal(await schemaErrors(m), "");
    assert.deepEqual(typeErrors(all), []);
  });

  test("wrong types, missing required fields, bad enums and quantities fail the schema", async () => {
    const ds = find("DaemonSet");
    const rc = find("RuntimeClass");
    const privileged = clone(ds, "privileged as a string");
    privileged.object.spec.template.spec.containers[0].securityContext.privileged = "true";
    assert.match(await schemaErrors(privileged), /securityContext\/privileged must be boolean/);
    const strategy = clone(ds, "unknown update strategy");
    strategy.object.spec.updateStrategy.type = "Rolling";
    assert.match(await schemaErrors(strategy), /updateStrategy\/type must be equal to one of the allowed values/);
    const noHandler = clone(rc, "no handler");
    delete noHandler.object.handler;
    assert.match(await schemaErrors(noHandler), /must have required property handler/);
    const quantity = clone(rc, "bad quantity");
    quantity.object.overhead = { podFixed: { memory: "lots" } };
    assert.match(await schemaErrors(quantity), /podFixed\/memory must match format "quantity"/);
    const kind = clone(rc, "no such kind");
    kind.object.kind = "RuntimeKlass";
    assert.match(await schemaErrors(kind), /not a Kubernetes API kind/);
  });

  test("a misspelt or misplaced field fails the type check", () => {
    const ds = find("DaemonSet");
    const misspelt = clone(ds, "misspelt");
    const c = misspelt.object.spec.template.spec.containers[0];
    c.securityContext = { privilegd: true };
    const misplaced = clone(find("RuntimeClass"), "misplaced");
    misplaced.object.nodeSelector = misplaced.object.scheduling.nodeSelector;
    delete misplaced.object.scheduling;
    const errs = typeErrors([misspelt, misplaced]);
    assert.equal(errs.length, 2, errs.join("\n"));
    assert.match(errs[0]!, /^misspelt: .*'"privilegd"' does not exist in type 'ISecurityContext'/);
    assert.match(errs[1]!, /^misplaced: .*'"nodeSelector"' does not exist/);
  });

  test("the RuntimeClass selects the label the installer sets; the DaemonSet runs the image's entry point", () => {
    const rc = find("RuntimeClass").object;
    assert.equal(rc.handler, "cove");
    assert.deepEqual(rc.scheduling.nodeSelector, { [NODE_LABEL]: NODE_LABEL_VALUE });
    const ds = find("DaemonSet").object;
    const pod = ds.spec.template.spec;
    const c = pod.containers[0];
    assert.equal(c.image, IMAGE_REF, "the image tools/node-installer builds");
    assert.equal(c.securityContext.privileged, true);
    assert.equal(pod.hostPID, true, "the restart command enters the node init's mount namespace");
    assert.deepEqual(c.args, ["daemon"]);
    assert.deepEqual(c.lifecycle.preStop.exec.command, [ENTRYPOINT, "uninstall"]);
    assert.deepEqual(c.readinessProbe.exec.command, ["/bin/cat", READY_FILE]);
    assert.ok(
      c.env.some((e: Any) => e.name === "NODE_NAME" && e.valueFrom.fieldRef.fieldPath === "spec.nodeName"),
      "NODE_NAME from the downward API",
    );
    const env = Object.fromEntries(c.env.filter((e: Any) => "value" in e).map((e: Any) => [e.name, e.value]));
    assert.ok(coveArgs("install", [], env).includes("--restart-command"), "the manifest's restart setting is read");
    const root = pod.volumes.find((v: Any) => v.hostPath?.path === "/");
    assert.ok(root, "the node's root as a hostPath volume");
    assert.deepEqual(
      c.volumeMounts.find((v: Any) => v.name === root.name),
      { name: root.name, mountPath: "/host" },
    );
    // The service account may patch nodes (the label) and is the one the pod runs as.
    const role = find("ClusterRole").object;
    assert.ok(role.rules.some((r: Any) => r.resources.includes("nodes") && r.verbs.includes("patch")));
    const binding = find("ClusterRoleBinding").object;
    assert.equal(binding.roleRef.name, role.metadata.name);
    assert.equal(binding.subjects[0].name, pod.serviceAccountName);
    assert.equal(binding.subjects[0].namespace, ds.metadata.namespace);
    assert.equal(find("ServiceAccount").object.metadata.name, pod.serviceAccountName);
  });
});
