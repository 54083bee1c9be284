// Image fidelity: one multi-layer image (test/harness/fidelity.ts: whiteouts and opaque directories
// across layers, hard links, xattrs and file capabilities, devices, setuid bits, symlinks, a sparse
// file and one over 2 GiB, 100,000 small files) run under runc and under cove from the same
// containerd; the probe's listing of every file must be identical. Then USER by name and by
// number, a WORKDIR the image lacks, and a read-only rootfs, each compared the same way.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { cacheDir, guestArtifacts } from "../../src/guest/paths.ts";
import { COVE_RUNTIME_TYPE, Containerd, REPO_ROOT } from "../harness/containerd.ts";
import {
  BIG_FILE,
  FIDELITY_REF,
  FIDELITY_UID_REF,
  FIDELITY_USER_REF,
  fidelityImages,
  MANY_FILES,
  PROBE_PATH,
} from "../harness/fidelity.ts";
import { buildImage, importImage } from "../harness/image.ts";
import { requireIntegration } from "../harness/skip.ts";

const art = guestArtifacts();
const skip = requireIntegration([
  { path: join(REPO_ROOT, "dist", "containerd-shim-cove-v2.cjs"), why: "the bundled shim (npm test builds first)" },
  { path: art.kernel, why: "the guest kernel (npm run guest)" },
  { path: art.rootfs, why: "the guest image (npm run guest)" },
  { path: "/usr/bin/gcc", why: "gcc (build-essential) for the probe" },
]);

/** The first lines where two listings differ, for a readable failure. */
function firstDifferences(a: string, b: string, n = 15): string {
  const la = a.split("\n");
  const lb = new Set(b.split("\n"));
  const sa = new Set(la);
  const onlyA = la.filter((l) => !lb.has(l)).slice(0, n);
  const onlyB = b
    .split("\n")
    .filter((l) => !sa.has(l))
    .slice(0, n);
  return `only under runc:\n  ${onlyA.join("\n  ")}\nonly under cove:\n  ${onlyB.join("\n  ")}`;
}

describe("image fidelity: runc and cove see the same files", { skip, timeout: 1_800_000 }, () => {
  let cd: Containerd;
  let dir: string;
  let configPath: string;

  /** ctr run under runc or cove; stdout (stderr and containerd's log tail on failure). */
  async function run(runtime: "runc" | "cove", ref: string, id: string, args: string[], extra: string[] = []) {
    const rt = runtime === "cove" ? ["--runtime", COVE_RUNTIME_TYPE, "--runtime-config-path", configPath] : [];
    const r = await cd.ctr(["run", "--rm", ...rt, ...extra, ref, `${runtime}-${id}`, ...args], { timeoutMs: 900_000 });
    assert.equal(r.timedOut, false, `${runtime} ${id} timed out`);
    assert.equal(r.code, 0, `${runtime} ${id}: ${r.stderr.slice(-2000)}\n${cd.log().slice(-3000)}`);
    return r.stdout;
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "cove-fidelity-"));
    const images = join(cacheDir(), "test-images");
    const specs = fidelityImages(images);
    cd = await Containerd.start({});
    for (const s of [specs.root, specs.byName, specs.byNumber]) {
      await importImage(cd, await buildImage(s, images), "default", 600_000);
    }
    configPath = join(dir, "cove.toml");
    // The layer cache lives with the test images: a warm CI run converts nothing (keys are chain IDs).
    writeFileSync(
      configPath,
      `cache_dir = "${join(images, "cove-cache")}"\n\n[guest]\nkernel = "${art.kernel}"\nimage = "${art.rootfs}"\nmemory_mib = 512\n\n[pod]\nwritable_layer_mib = 64\n`,
    );
  });

  after(async () => {
    await cd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("the probe lists the same files, modes, owners, sizes, links, xattrs and contents", async () => {
    const runc = await run("runc", FIDELITY_REF, "probe", [PROBE_PATH, "/"]);
    const cove = await run("cove", FIDELITY_REF, "probe", [PROBE_PATH, "/"]);
    // The image is what it claims to be (checked on runc's listing), so "identical" means something.
    const line = (path: string) => runc.split("\n").find((l) => l.startsWith(`${path} `)) ?? `${path} missing`;
    assert.match(line("/usr/local/bin/net-tool"), / xattr:security\.capability=0100000200240000/);
    assert.match(line("/usr/local/bin/setuid-tool"), / f 4755 0:0 /);
    assert.match(line("/opt/shared"), / d 1777 /);
    assert.match(line("/opt/data"), / d 2775 0:1000 /);
    assert.match(line("/opt/data/hl-b"), /hardlink=\/opt\/data\/hl-a/);
    assert.match(line("/opt/data/notes"), / f 0600 65534:65534 .* xattr:user\.comment=6b657074/);
    assert.match(line("/opt/dev/null"), / c 0666 0:0 0 \d+ 1:3/);
    assert.match(line("/opt/dev/blk"), / b 0660 0:6 0 \d+ 7:0/);
    assert.match(line("/opt/dev/fifo"), / p 0620 /);
    assert.match(line("/opt/links/absolute"), / -> \/etc\/passwd$/);
    assert.match(line("/opt/links/relative"), / -> \.\.\/data\/hl-a$/);
    assert.match(line("/opt/gone"), / f 0644 0:0 16 /, "removed as a tree, made again as a file");
    assert.doesNotMatch(runc, /^\/opt\/gone\/|^\/etc\/app\.conf |^\/opt\/old\/replaced |^\/opt\/data\/added-later /m);
    assert.match(line("/opt/old/new"), / f /);
    assert.match(line("/opt/mode-changed"), / f 0644 /);
    assert.match(line(`/${BIG_FILE.path}`), new RegExp(` f 0644 0:0 ${BIG_FILE.size} \\d+ sampled-sha256:`));
    assert.equal(runc.split("\n").filter((l) => l.startsWith("/opt/many/") && / f /.test(l)).length, MANY_FILES);
    if (cove !== runc) assert.fail(`the listings differ\n${firstDifferences(runc, cove)}`);
  });

  test("USER by name and by number, a WORKDIR the image lacks: same identity, directory and files", async () => {
    // Sizes of directories are the filesystem's (ext4 block size), not the image's: not compared.
    const script =
      "id; pwd; stat -c '%a %u:%g %F' .; touch here 2>&1 && stat -c '%a %u:%g %s %F' here; cat /home/app/.profile 2>&1; echo end";
    for (const ref of [FIDELITY_USER_REF, FIDELITY_UID_REF]) {
      const runc = await run("runc", ref, "user", ["/bin/sh", "-c", script]);
      const cove = await run("cove", ref, "user", ["/bin/sh", "-c", script]);
      assert.match(runc, ref === FIDELITY_USER_REF ? /^uid=1000\(app\) gid=1000\(app\)/ : /^uid=4321 gid=4322/);
      assert.equal(cove, runc);
    }
  });

  test("a read-only rootfs: writes fail the same way, reads work", async () => {
    const script = "touch /x 2>&1; echo rc=$?; touch /opt/shared/y 2>&1; echo rc=$?; cat /opt/changed";
    const runc = await run("runc", FIDELITY_REF, "ro", ["/bin/sh", "-c", script], ["--read-only"]);
    const cove = await run("cove", FIDELITY_REF, "ro", ["/bin/sh", "-c", script], ["--read-only"]);
    assert.match(runc, /Read-only file system\nrc=1\n.*Read-only file system\nrc=1\nversion 2/);
    assert.equal(cove, runc);
  });
});
