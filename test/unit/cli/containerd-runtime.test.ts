// `cove check`'s view of containerd's config: the shipped snippets (deploy/containerd/) declare the
// handler `cove` in config version 2 and 3, imports are followed, and the check names the handler.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { test } from "node:test";
import { containerdRuntimeCheck } from "../../../src/cli/check.ts";
import { coveRuntimeConfig } from "../../../src/cli/containerd-runtime.ts";

const V2 = resolve("deploy/containerd/config.toml");
const V3 = resolve("deploy/containerd/config-v3.toml");

test("the deploy snippets declare the CRI handler `cove` in config version 2 and 3", () => {
  assert.deepEqual(coveRuntimeConfig(V2), { version: 2, handlers: ["cove"], files: [V2] });
  assert.deepEqual(coveRuntimeConfig(V3), { version: 3, handlers: ["cove"], files: [V3] });
});

test("imports (a glob) are read; runc handlers are not cove; a config without cove has no handler", () => {
  const dir = mkdtempSync(join(tmpdir(), "cove-ctdcfg-"));
  try {
    mkdirSync(join(dir, "conf.d"));
    const main = join(dir, "config.toml");
    writeFileSync(
      main,
      `version = 3\nimports = ["conf.d/*.toml"]\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\nruntime_type = "io.containerd.runc.v2"\n`,
    );
    assert.deepEqual(coveRuntimeConfig(main).handlers, []);
    writeFileSync(
      join(dir, "conf.d", "50-vm.toml"),
      readFileSync(V3, "utf8").replace("runtimes.cove]", "runtimes.microvm]"),
    );
    writeFileSync(join(dir, "conf.d", "ignored.txt"), "not toml");
    const c = coveRuntimeConfig(main);
    assert.deepEqual(c.handlers, ["microvm"]);
    assert.equal(c.files.length, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the check names the handler, and says when there is none", () => {
  const dir = mkdtempSync(join(tmpdir(), "cove-ctdcfg-"));
  try {
    const ok = containerdRuntimeCheck(V2);
    assert.equal(ok.ok, true, ok.detail);
    assert.match(ok.detail, /CRI handler "cove" runs cove/);
    const none = join(dir, "config.toml");
    writeFileSync(none, "version = 2\n");
    const missing = containerdRuntimeCheck(none);
    assert.equal(missing.ok, false);
    assert.match(missing.detail, /no runtime with runtime_type = "io.containerd.cove.v2"/);
    assert.match(missing.fix ?? "", /deploy\/containerd\/config/);
    const absent = containerdRuntimeCheck(join(dir, "nope.toml"));
    assert.equal(absent.ok, false);
    assert.match(absent.detail, /no .*nope\.toml/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
