// Faults under ctr: the VM is killed, the shim is SIGKILLed. In each case
// containerd sees the task exit, `ctr task rm` + `container rm` succeed, and no shim, VMM, mount or
// VM work dir is left.
import assert from "node:assert/strict";
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { VM_RUN_DIR } from "../../src/sandbox/pod.ts";
import { COVE_RUNTIME_TYPE, Containerd, REPO_ROOT } from "../harness/containerd.ts";
import { BUSYBOX_IMAGE_REF, buildImage, busyboxImage, importImage } from "../harness/image.ts";
import { mountsUnder, processesWithArg, processesWithCwdUnder, waitFor } from "../harness/processes.ts";
import { requireIntegration } from "../harness/skip.ts";

const art = guestArtifacts();
const skip = requireIntegration([
  { path: join(REPO_ROOT, "dist", "containerd-shim-cove-v2.cjs"), why: "the bundled shim (npm test builds first)" },
  { path: art.kernel, why: "the guest kernel (npm run guest)" },
  { path: art.rootfs, why: "the guest image (npm run guest)" },
  { path: "/usr/bin/qemu-system-x86_64", why: "QEMU (qemu-system-x86)" },
]);

const vmDirs = () => {
  try {
    return readdirSync(VM_RUN_DIR);
  } catch {
    return [];
  }
};

describe("faults: containerd sees the exit and nothing leaks", { skip, timeout: 600_000 }, () => {
  let cd: Containerd;
  let configPath: string;

  before(async () => {
    cd = await Containerd.start({});
    await importImage(cd, await buildImage(busyboxImage(), join(cd.dir, "images")));
    const coveDir = join(cd.dir, "cove");
    mkdirSync(coveDir);
    configPath = join(coveDir, "cove.toml");
    writeFileSync(
      configPath,
      `cache_dir = "${join(coveDir, "cache")}"\n\n[guest]\nkernel = "${art.kernel}"\nimage = "${art.rootfs}"\n\n[pod]\nwritable_layer_mib = 64\n`,
    );
  });

  after(async () => {
    await cd?.stop();
  });

  const runDetached = (id: string, extra: string[] = []) =>
    cd.ctrOk(
      [
        "run",
        "-d",
        ...extra,
        "--runtime",
        COVE_RUNTIME_TYPE,
        "--runtime-config-path",
        configPath,
        BUSYBOX_IMAGE_REF,
        id,
        "sleep",
        "100000",
      ],
      { timeoutMs: 180_000 },
    );
  const qemus = () => processesWithCwdUnder(cd.dir).filter((p) => /qemu-system/.test(p.argv[0] ?? ""));
  const status = async (id: string) =>
    new RegExp(`^${id}\\s+\\d+\\s+(\\w+)`, "m").exec((await cd.ctrOk(["task", "ls"])).stdout)?.[1];

  async function removeAndCheck(id: string, before: string[]) {
    // After a dead shim containerd may already have dropped the task itself.
    if (await status(id)) await cd.ctrOk(["task", "rm", "-f", id], { timeoutMs: 30_000 });
    await cd.ctrOk(["container", "rm", id]);
    await waitFor(
      `everything of ${id} to go`,
      () => processesWithArg(cd.address).length === 0 && qemus().length === 0,
      20_000,
    );
    assert.deepEqual(mountsUnder(cd.dir), []);
    assert.deepEqual(
      vmDirs().filter((d) => !before.includes(d)),
      [],
      "no VM work dir left",
    );
  }

  test("the VM is killed: the task exits", async () => {
    const before = vmDirs();
    await runDetached("f1");
    const [vmm] = qemus();
    assert.ok(vmm, "a VMM runs");
    process.kill(vmm.pid, "SIGKILL");
    await waitFor("f1 to be reported stopped", async () => (await status("f1")) === "STOPPED", 30_000);
    await removeAndCheck("f1", before);
  });

  test("the shim is SIGKILLed: containerd sees the exit, `delete` stops the orphaned VM", async () => {
    const before = vmDirs();
    await runDetached("f3");
    const shims = processesWithArg(cd.address).filter((p) => !/qemu/.test(p.argv[0] ?? ""));
    assert.equal(shims.length, 1, `one shim: ${shims.map((p) => p.argv.join(" ")).join("\n")}`);
    process.kill(shims[0]!.pid, "SIGKILL");
    await waitFor(
      "f3 to be reported stopped",
      async () => {
        const s = await status("f3");
        return s === "STOPPED" || s === "UNKNOWN" || s === undefined;
      },
      30_000,
    );
    await waitFor("the orphaned VM to be stopped", () => qemus().length === 0, 30_000);
    await removeAndCheck("f3", before);
  });
});
