// The soak run's short version (tools/soak/churn.ts; `npm run soak` is the long one): pods through
// CRI on a real containerd, one cycle of each kind — a re-import (busybox as it was, the app image
// as a new generation: a conversion, and the old generation's layer image collected), the shim
// SIGKILLed, the VM SIGKILLed, the VM SIGKILLed while the shim stops a container and while it
// removes the pod — and every countable resource (containerd's fds, mounts, taps, netns, /run/cove,
// containerd's state files, cove's cache files, shims, VMMs) exactly back at its baseline afterwards;
// each pod's shim and VM gone within seconds of RemovePodSandbox.
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, test } from "node:test";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { formatReport, runSoak, type Step } from "../../tools/soak/churn.ts";
import { CNI_BIN_DIR } from "../harness/cni.ts";
import { REPO_ROOT } from "../harness/containerd.ts";
import { requireIntegration } from "../harness/skip.ts";

const art = guestArtifacts();
const skip = requireIntegration([
  { path: join(REPO_ROOT, "dist", "containerd-shim-cove-v2.cjs"), why: "the bundled shim (npm test builds first)" },
  { path: art.kernel, why: "the guest kernel (npm run guest)" },
  { path: art.rootfs, why: "the guest image (npm run guest)" },
  { path: "/usr/bin/qemu-system-x86_64", why: "QEMU (qemu-system-x86)" },
  { path: join(CNI_BIN_DIR, "bridge"), why: "CNI plugins (containernetworking-plugins)" },
]);

const STEPS: Step[] = [
  { fault: "none", reimport: true, phase: "StopContainer", delayMs: 0 },
  { fault: "kill shim", reimport: false, phase: "StopContainer", delayMs: 0 },
  { fault: "kill VM while stopping", reimport: false, phase: "StopContainer", delayMs: 300 },
  { fault: "kill VM", reimport: false, phase: "StopContainer", delayMs: 0 },
  { fault: "kill VM while stopping", reimport: false, phase: "RemovePodSandbox", delayMs: 50 },
];

describe("churn: pods come and go, nothing stays", { skip, timeout: 300_000 }, () => {
  test("a re-import and each fault once; every countable resource back at its baseline", async () => {
    const r = await runSoak({
      cycles: STEPS.length,
      seed: 0,
      sampleEvery: 1,
      steps: STEPS,
      log: (l) => process.stdout.write(`# ${l}\n`),
    });
    process.stdout.write(`${formatReport(r).replace(/^/gm, "# ")}\n`);
    assert.deepEqual(r.failures, [], "every countable series back at its baseline");
    for (const c of r.cycles) {
      assert.ok(c.goneMs < 10_000, `cycle ${c.cycle} (${c.fault}): shim and VM gone ${c.goneMs} ms after removal`);
    }
    // The baseline has the images of busybox and the first app generation; after the re-import the
    // new generation's image replaced the old one: the same count, so the old one was collected.
    assert.equal(r.final["cache files"], r.samples[0]![1]["cache files"]);
  });
});
