// Extent sources (agent/src/storage/extents.ts): what the shim may name, and partition names.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MAX_PNO, parseExtentSource, partitionName } from "../../../agent/src/storage/extents.ts";

test("parseExtentSource takes extent:<serial>:<pno>:<start>:<sectors> and nothing looser", () => {
  assert.equal(parseExtentSource("serial:cove-ro0"), undefined, "not an extent");
  assert.deepEqual(parseExtentSource("extent:cove-ro:7:4096:16"), {
    serial: "cove-ro",
    pno: 7,
    start: 4096,
    sectors: 16,
  });
  for (const bad of [
    "extent:cove-ro:0:0:8",
    `extent:cove-ro:${MAX_PNO + 1}:0:8`,
    "extent:cove-ro:1:0:0",
    "extent:cove ro:1:0:8",
    "extent:cove-ro:1:-1:8",
    "extent:cove-ro:1:0",
    "extent:../x:1:0:8x",
    "extent:a-serial-longer-than-twenty:1:0:8",
  ]) {
    assert.throws(() => parseExtentSource(bad), /extent/, bad);
  }
});

test("partitionName follows the kernel: vdb → vdb7, a name ending in a digit → p7", () => {
  assert.equal(partitionName("vdb", 7), "vdb7");
  assert.equal(partitionName("vdb", 255), "vdb255");
  assert.equal(partitionName("nvme0n1", 3), "nvme0n1p3");
});
