import assert from "node:assert/strict";
import { test } from "node:test";
import { defaultConfig } from "../../../src/config/config.ts";
import { podOverrides } from "../../../src/sandbox/overrides.ts";
import { fitSlots, SlotTable } from "../../../src/sandbox/slots.ts";
import { Code, TtrpcError } from "../../../src/ttrpc/index.ts";

test("slots: a shared layer takes one slot, refcounted; empty slots run out with a clear error", () => {
  const t = new SlotTable(2, 1);
  const a = t.claim("/c/a.erofs", "layer-a", true);
  assert.equal(a.serial, "cove-ro0");
  assert.equal(t.reuse("/c/a.erofs"), a);
  assert.equal(a.refs, 2);
  t.claim("/c/b.erofs", "layer-b", true);
  assert.throws(
    () => t.claim("/c/c.erofs", "layer-c", true),
    (e: unknown) => e instanceof TtrpcError && e.code === Code.RESOURCE_EXHAUSTED && /layer_slots/.test(e.message),
  );
  assert.equal(t.claim("/u.ext4", "upper-x", false).serial, "cove-rw0");
  assert.equal(t.release("/c/a.erofs"), undefined, "still used");
  assert.equal(t.release("/c/a.erofs")?.serial, "cove-ro0", "now empty: eject");
  assert.equal(t.claim("/c/c.erofs", "layer-c", true).serial, "cove-ro0", "reused");
});

test("fitSlots: no limit keeps the configured slots; enough room keeps them too", () => {
  assert.deepEqual(fitSlots(4, 2, undefined), { layerSlots: 4, writableSlots: 2 });
  assert.deepEqual(fitSlots(4, 2, 6), { layerSlots: 4, writableSlots: 2 });
  assert.deepEqual(fitSlots(4, 2, 100), { layerSlots: 4, writableSlots: 2 });
});

test("fitSlots: on QEMU microvm (8 transports, root + vsock) each NIC costs a layer slot first", () => {
  const microvm = (nics: number) => 8 - 2 - nics;
  assert.deepEqual(fitSlots(4, 2, microvm(0)), { layerSlots: 4, writableSlots: 2 });
  assert.deepEqual(fitSlots(4, 2, microvm(1)), { layerSlots: 3, writableSlots: 2 });
  assert.deepEqual(fitSlots(4, 2, microvm(2)), { layerSlots: 2, writableSlots: 2 });
  assert.deepEqual(fitSlots(4, 2, microvm(3)), { layerSlots: 1, writableSlots: 2 });
  // Layer slots stop at one; then writable ones give way.
  assert.deepEqual(fitSlots(4, 2, microvm(4)), { layerSlots: 1, writableSlots: 1 });
  assert.deepEqual(fitSlots(1, 5, 3), { layerSlots: 1, writableSlots: 2 });
  // A kind asked for zero times stays at zero; the other shrinks down to one.
  assert.deepEqual(fitSlots(0, 3, 1), { layerSlots: 0, writableSlots: 1 });
  assert.deepEqual(fitSlots(3, 0, 1), { layerSlots: 1, writableSlots: 0 });
});

test("fitSlots: refuses (RESOURCE_EXHAUSTED) when not even one layer and one writable slot fit", () => {
  const refused = (e: unknown) =>
    e instanceof TtrpcError && e.code === Code.RESOURCE_EXHAUSTED && /at least 2/.test(e.message);
  assert.throws(() => fitSlots(4, 2, 1), refused);
  assert.throws(() => fitSlots(4, 2, 0), refused);
  // More NICs than transports: the place count is negative.
  assert.throws(
    () => fitSlots(4, 2, 8 - 2 - 7),
    (e: unknown) => refused(e) && /has 0 virtio/.test((e as Error).message),
  );
  assert.throws(() => fitSlots(0, 1, 0), /at least 1/);
});

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
