// containerd-shim-cove-v2 as a CRI runtime handler (what kubelet's RuntimeClass `cove` selects):
// the handler's options.ConfigPath reaches the shim on `start` stdin, and while no guest kernel is
// installed RunPodSandbox fails with the shim's clear error and containerd leaves nothing behind.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { COVE_RUNTIME_TYPE, Containerd, REPO_ROOT } from "../harness/containerd.ts";
import { CriClient, hostNetworkPod } from "../harness/cri.ts";
import { buildImage, importImage, pauseImage } from "../harness/image.ts";
import { mountsUnder, processesWithArg, waitFor } from "../harness/processes.ts";
import { requireIntegration } from "../harness/skip.ts";

const SHIM_BUNDLE = join(REPO_ROOT, "dist", "containerd-shim-cove-v2.cjs");
const skip = requireIntegration([
  { path: SHIM_BUNDLE, why: "the bundled shim (npm run build; npm test builds first)" },
]);

describe("containerd-shim-cove-v2 as the CRI handler `cove`", { skip, timeout: 180_000 }, () => {
  let cd: Containerd;
  let cri: CriClient;
  let missingKernel: string;
  let coveDir: string | undefined;

  before(async () => {
    // The handler's options.ConfigPath is fixed in containerd's config, so the cove config comes first.
    coveDir = mkdtempSync(join(tmpdir(), "cove-cri-cfg-"));
    missingKernel = join(coveDir, "no-such-dir", "vmlinux");
    const configPath = join(coveDir, "cove.toml");
    writeFileSync(
      configPath,
      `cache_dir = "${join(coveDir, "cache")}"\n\n[guest]\nkernel = "${missingKernel}"\nimage = "${join(coveDir, "no-such-dir", "rootfs.erofs")}"\n`,
    );
    cd = await Containerd.start({
      traceShims: true,
      criRuntimes: { cove: { runtimeType: COVE_RUNTIME_TYPE, configPath } },
    });
    await importImage(cd, await buildImage(pauseImage(), join(cd.dir, "images")), "k8s.io");
    cri = new CriClient(cd.address);
  });

  after(async () => {
    cri?.close();
    await cd?.stop();
    if (coveDir) rmSync(coveDir, { recursive: true, force: true });
  });

  test("RunPodSandbox fails with the missing-kernel error and leaves no sandbox, shim or mount", async () => {
    const pod = hostNetworkPod("cove-pod", { annotations: { "cove.io/test": "1" } });
    await assert.rejects(cri.runPodSandbox(pod, "cove"), (e: Error) => {
      assert.ok(
        e.message.includes(missingKernel),
        `CRI error names the kernel the handler's ConfigPath set: ${e.message}`,
      );
      assert.match(e.message, /cove guest build|npm run guest/);
      return true;
    });
    const calls = cd.shimCalls();
    const starts = calls.filter((c) => c.action === "start");
    assert.equal(starts.length, 1, `one shim start: ${JSON.stringify(calls)}`);
    const sandboxId = starts[0]!.id!;
    await waitFor(
      "the sandbox's shim to exit and its bundle and socket to go",
      () =>
        processesWithArg(cd.address).length === 0 &&
        !existsSync(cd.bundleDir(sandboxId, "k8s.io")) &&
        !existsSync(cd.shimSocketPath(sandboxId, "k8s.io")),
      15_000,
    );
    assert.ok(
      cd.shimCalls().some((c) => c.action === "delete" && c.id === sandboxId),
      "containerd ran the shim's delete for the sandbox",
    );
    assert.deepEqual(mountsUnder(cd.dir), [], "no mounts left");
    const tasks = await cd.ctrOk(["tasks", "ls", "-q"], { namespace: "k8s.io" });
    assert.equal(tasks.stdout.trim(), "");
    const listed = await cri.call<{ items: unknown[] }>("runtime", "ListPodSandbox", {});
    assert.deepEqual(listed.items, [], "no pod sandbox registered");
  });
});
