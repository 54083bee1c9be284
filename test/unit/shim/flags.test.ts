import assert from "node:assert/strict";
import { test } from "node:test";
import { daemonArgs, FlagError, parseFlags } from "../../../src/shim/flags.ts";

test("parses containerd 1.6's start argv", () => {
  const f = parseFlags([
    "-namespace",
    "default",
    "-address",
    "/scratch/containerd.sock",
    "-publish-binary",
    "/usr/bin/containerd",
    "-id",
    "t1",
    "-debug",
    "start",
  ]);
  assert.equal(f.namespace, "default");
  assert.equal(f.address, "/scratch/containerd.sock");
  assert.equal(f.publishBinary, "/usr/bin/containerd");
  assert.equal(f.id, "t1");
  assert.equal(f.debug, true);
  assert.equal(f.action, "start");
});

test("parses delete with -bundle, = forms and double dashes", () => {
  const f = parseFlags(["--namespace=k8s.io", "-id=abc", "-bundle", "/b/abc", "-debug=false", "delete"]);
  assert.deepEqual([f.namespace, f.id, f.bundle, f.debug, f.action], ["k8s.io", "abc", "/b/abc", false, "delete"]);
});

test("no action means serve; -v sets version", () => {
  assert.equal(parseFlags(["-id", "x"]).action, "serve");
  assert.equal(parseFlags(["-v"]).version, true);
});

test("rejects what Go's flag package rejects", () => {
  assert.throws(() => parseFlags(["-nope", "1"]), FlagError);
  assert.throws(() => parseFlags(["-id"]), /needs an argument/);
  assert.throws(() => parseFlags(["-debug=maybe"]), /invalid boolean/);
  assert.throws(() => parseFlags(["-id", "x", "launch"]), /unknown action/);
});

test("daemon argv round-trips through the parser without an action", () => {
  const f = parseFlags(["-namespace", "ns", "-address", "/a", "-publish-binary", "/p", "-id", "i", "-debug", "start"]);
  const d = parseFlags(daemonArgs(f, "unix:///run/x", "/etc/cove/c.toml"));
  assert.equal(d.action, "serve");
  assert.deepEqual(
    [d.namespace, d.address, d.publishBinary, d.id, d.socket, d.configPath, d.debug],
    ["ns", "/a", "/p", "i", "unix:///run/x", "/etc/cove/c.toml", true],
  );
});
