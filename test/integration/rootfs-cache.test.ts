// The layer image cache across containerd roots: the shim asks containerd which committed snapshot
// (chain ID) each layer directory is, so a fresh containerd root (as after a re-pull, or in every
// test) finds the layers already converted in a shared cove cache.
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { COVE_RUNTIME_TYPE, Containerd, REPO_ROOT } from "../harness/containerd.ts";
import { BUSYBOX_IMAGE_REF, buildImage, busyboxImage, importImage } from "../harness/image.ts";
import { requireIntegration } from "../harness/skip.ts";

const art = guestArtifacts();
const skip = requireIntegration([
  { path: join(REPO_ROOT, "dist", "containerd-shim-cove-v2.cjs"), why: "the bundled shim (npm test builds first)" },
  { path: art.kernel, why: "the guest kernel (npm run guest)" },
  { path: art.rootfs, why: "the guest image (npm run guest)" },
]);

/** The shim's log lines (JSON) with this msg, from containerd's log. */
function shimLines(cd: Containerd, msg: string): Record<string, unknown>[] {
  return cd
    .log()
    .split("\n")
    .filter((l) => l.includes(msg))
    .map((l) => {
      const m = /\{.*\}/.exec(l);
      try {
        return m ? (JSON.parse(m[0]) as Record<string, unknown>) : {};
      } catch {
        return {};
      }
    });
}

describe("layer images are keyed by content across containerd roots", { skip, timeout: 600_000 }, () => {
  let dir: string;
  let configPath: string;
  const erofs = () => readdirSync(join(dir, "cache", "layers")).filter((f) => f.endsWith(".erofs"));

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "cove-rootfs-cache-"));
    configPath = join(dir, "cove.toml");
    writeFileSync(
      configPath,
      `cache_dir = "${join(dir, "cache")}"\n\n[guest]\nkernel = "${art.kernel}"\nimage = "${art.rootfs}"\nmemory_mib = 256\n\n[pod]\nwritable_layer_mib = 64\n`,
    );
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  /** In a fresh containerd root: import the image, run it under cove; the shim's rootfs log lines. */
  async function runInFreshRoot(id: string) {
    const cd = await Containerd.start({});
    try {
      await importImage(cd, await buildImage(busyboxImage(), join(dir, "images")));
      const r = await cd.ctr(
        [
          "run",
          "--rm",
          "--runtime",
          COVE_RUNTIME_TYPE,
          "--runtime-config-path",
          configPath,
          BUSYBOX_IMAGE_REF,
          id,
        ].concat(["/bin/echo", "hi"]),
        { timeoutMs: 180_000 },
      );
      assert.equal(r.code, 0, `ctr run: ${r.stdout}${r.stderr}\n${cd.log().slice(-4000)}`);
      assert.equal(r.stdout, "hi\n");
      assert.deepEqual(
        shimLines(cd, "did not name the layers"),
        [],
        "containerd named every layer's snapshot (Containers.Get + Snapshots.Stat)",
      );
      return { ready: shimLines(cd, "rootfs: layer images ready"), snapshotDir: cd.dir };
    } finally {
      await cd.stop();
    }
  }

  test("the second containerd root converts nothing: the image made for the first is reused", async () => {
    const first = await runInFreshRoot("c1");
    assert.equal(first.ready.length, 1);
    assert.equal(first.ready[0]!.converted, 1, "the first root converts its one layer");
    assert.equal(erofs().length, 1);
    const second = await runInFreshRoot("c2");
    assert.notEqual(second.snapshotDir, first.snapshotDir);
    assert.equal(second.ready[0]!.converted, 0, "nothing converted again");
    assert.equal(second.ready[0]!.cached, 1);
    assert.equal(erofs().length, 1, "still one image in the cache");
  });
});
