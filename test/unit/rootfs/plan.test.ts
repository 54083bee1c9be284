import assert from "node:assert/strict";
import { test } from "node:test";
import { CoveError } from "../../../src/common/errors.ts";
import { grpcStatus } from "../../../src/common/grpc-status.ts";
import { planRootfs } from "../../../src/rootfs/plan.ts";
import { Code } from "../../../src/ttrpc/index.ts";

const m = (type: string, source: string, options: string[]) => ({ type, source, target: "", options });

test("overlay: lowerdirs top-most first; containerd's upperdir is not used", () => {
  const p = planRootfs([
    m("overlay", "overlay", ["index=off", "workdir=/w", "upperdir=/u", "lowerdir=/s/2/fs:/s/1/fs"]),
  ]);
  assert.deepEqual(p, { kind: "layers", lowers: ["/s/2/fs", "/s/1/fs"], committed: true });
});

test("bind is one layer (a committed one when read-only); a block device is attached as is, without loop", () => {
  assert.deepEqual(planRootfs([m("bind", "/s/1/fs", ["rw", "rbind"])]), {
    kind: "layers",
    lowers: ["/s/1/fs"],
    committed: false,
  });
  assert.deepEqual(planRootfs([m("bind", "/s/1/fs", ["ro", "rbind"])]), {
    kind: "layers",
    lowers: ["/s/1/fs"],
    committed: true,
  });
  const p = planRootfs([m("ext4", "/dev/mapper/pool-snap-3", ["loop", "rw"])], () => true);
  assert.deepEqual(p, { kind: "block", device: "/dev/mapper/pool-snap-3", fstype: "ext4", options: ["rw"] });
});

test("no mount, several mounts, or an unknown filesystem are clear errors", () => {
  const bad = (e: unknown) => e instanceof CoveError && grpcStatus(e).code === Code.INVALID_ARGUMENT;
  assert.throws(() => planRootfs([]), bad);
  assert.throws(() => planRootfs([m("bind", "/a", ["rbind"]), m("bind", "/b", ["rbind"])]), bad);
  assert.throws(() => planRootfs([m("xfs", "/some/file", [])], () => false), /devmapper/);
});
