// End to end under ctr: containerd 1.6 → containerd-shim-cove-v2 → a qemu/TCG microVM → the agent →
// crun in the guest. The container's rootfs reaches the guest as block devices (an erofs image per
// layer + an ext4 writable layer), never as a host directory.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { guestArtifacts } from "../../src/guest/paths.ts";
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

describe("ctr run in a cove microVM", { skip, timeout: 600_000 }, () => {
  let cd: Containerd;
  let configPath: string;
  let cacheDir: string;

  const run = (id: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}) =>
    cd.ctr(
      [
        "run",
        "--rm",
        "--runtime",
        COVE_RUNTIME_TYPE,
        "--runtime-config-path",
        configPath,
        BUSYBOX_IMAGE_REF,
        id,
        ...args,
      ],
      { timeoutMs: opts.timeoutMs ?? 180_000, input: opts.input },
    );

  async function nothingLeft(id: string) {
    await waitFor(
      `the shim and VM of ${id} to exit`,
      () => processesWithArg(cd.address).length === 0 && processesWithCwdUnder(cd.dir).length === 0,
      20_000,
    );
    assert.deepEqual(mountsUnder(cd.dir), [], "no mounts under containerd's dirs");
    assert.equal(existsSync(cd.bundleDir(id)), false, "bundle removed");
    assert.equal((await cd.ctrOk(["tasks", "ls", "-q"])).stdout.trim(), "");
  }

  before(async () => {
    cd = await Containerd.start({});
    await importImage(cd, await buildImage(busyboxImage(), join(cd.dir, "images")));
    const coveDir = join(cd.dir, "cove");
    mkdirSync(coveDir);
    cacheDir = join(coveDir, "cache");
    configPath = join(coveDir, "cove.toml");
    writeFileSync(
      configPath,
      `hypervisor = "auto"\ncache_dir = "${cacheDir}"\n\n[guest]\nkernel = "${art.kernel}"\nimage = "${art.rootfs}"\nmemory_mib = 256\n\n[pod]\nwritable_layer_mib = 64\n`,
    );
  });

  after(async () => {
    await cd?.stop();
  });

  test("ctr run --rm … /bin/echo hi prints hi from inside the VM, and nothing is left", async () => {
    const r = await run("t1", ["/bin/echo", "hi"]);
    assert.equal(r.timedOut, false, "ctr returned");
    assert.equal(r.code, 0, `ctr run succeeded:\n${r.stdout}\n${r.stderr}\n${cd.log().slice(-4000)}`);
    assert.equal(r.stdout, "hi\n");
    // The layer went through mkfs.erofs into the cache (a block device for the guest).
    const layers = readdirSync(join(cacheDir, "layers")).filter((f) => f.endsWith(".erofs"));
    assert.equal(layers.length, 1, `one layer image: ${layers.join(",")}`);
    await nothingLeft("t1");
  });

  test("it runs in the guest kernel, exit codes propagate, stdin reaches the process, the rootfs is writable", async () => {
    const r = await run(
      "t2",
      [
        "/bin/sh",
        "-c",
        "uname -r; cat /proc/cmdline; echo data > /newfile && cat /newfile; read line; echo got:$line; exit 7",
      ],
      { input: "from-stdin\n" },
    );
    assert.equal(r.timedOut, false, "ctr returned");
    assert.equal(r.code, 7, `exit code 7:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /cove\.hostname=/, "the guest kernel's command line");
    assert.match(r.stdout, /^data$/m, "wrote to the writable layer");
    assert.match(r.stdout, /^got:from-stdin$/m, "stdin delivered");
    await nothingLeft("t2");
  });

  test("large output arrives complete before the exit", async () => {
    const r = await run("t3", ["/bin/sh", "-c", "seq 1 200000"]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split("\n");
    assert.equal(lines[0], "1");
    assert.equal(lines[199_999], "200000");
    assert.equal(lines.length, 200_001);
    await nothingLeft("t3");
  });
});
