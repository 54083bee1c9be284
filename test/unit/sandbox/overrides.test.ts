// Per-pod VM size annotations the operator allows (src/sandbox/overrides.ts).
import assert from "node:assert/strict";
import { test } from "node:test";
import { defaultConfig } from "../../../src/config/config.ts";
import { podOverrides } from "../../../src/sandbox/overrides.ts";

test("annotation overrides apply only when allowed, and are validated", () => {
  const c = defaultConfig();
  const ann = { "io.cove.memory_mib": "512", "io.cove.vcpus": "2" };
  const none = podOverrides(ann, c);
  assert.equal(none.memoryMib, c.guest.memoryMib);
  assert.equal(none.notes.length, 2);
  c.pod.allowedAnnotations = ["io.cove.memory_mib"];
  const some = podOverrides(ann, c);
  assert.equal(some.memoryMib, 512);
  assert.equal(some.vcpus, c.guest.vcpus);
  c.pod.allowedAnnotations = ["io.cove.*"];
  assert.throws(() => podOverrides({ "io.cove.vcpus": "lots" }, c), /integer/);
});
