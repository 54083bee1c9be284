// `ctr run` end to end on the embedded VMM: containerd 1.6 → containerd-shim-cove-v2 → a pod VM on
// our own VMM (hypervisor = "embedded") over KVM → the agent → the container. The container prints
// /proc/version, which must be the guest kernel's, not the host's.
// Where KVM is backed by hardware virtualization the test runs directly; on a PVM host (like the
// project's build machines) this file re-runs itself inside the nested test host, whose root is
// read-only: every path the run writes (containerd's dirs, cove's cache_dir) lives under /tmp.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { chooseAccel } from "../../src/hypervisor/qemu/accel.ts";
import { COVE_RUNTIME_TYPE, Containerd, REPO_ROOT } from "../harness/containerd.ts";
import { BUSYBOX_IMAGE_REF, buildImage, busyboxImage, importImage } from "../harness/image.ts";
import { nestedUnavailable, runNested } from "../harness/nested.ts";
import { mountsUnder, processesWithArg, processesWithCwdUnder, waitFor } from "../harness/processes.ts";
import { requireIntegration } from "../harness/skip.ts";

const art = guestArtifacts();
const kernel = process.env.COVE_TEST_KERNEL ?? art.kernel;
const image = process.env.COVE_TEST_IMAGE ?? art.rootfs;
const direct = chooseAccel().accel === "kvm";
const needs = [
  { path: join(REPO_ROOT, "dist", "containerd-shim-cove-v2.cjs"), why: "the bundled shim (npm test builds first)" },
  { path: join(REPO_ROOT, "build", "Release", "cove_native.node"), why: "the native addon (npx node-gyp rebuild)" },
  { path: kernel, why: "the guest kernel (npm run guest)" },
  { path: image, why: "the guest image (npm run guest)" },
];

/**
 * The version string a bzImage carries in its setup header (boot protocol ≥ 2.00: a pointer at
 * 0x20E, relative to 0x200): "<release> (<user>@<host>) <#build …>". /proc/version in the kernel
 * booted from it says "Linux version <release> (<user>@<host>) (<compiler…>) <#build …>".
 */
function bzImageVersion(bz: Buffer): { release: string; build: string } {
  if (bz.length < 0x210 || bz.toString("latin1", 0x202, 0x206) !== "HdrS") throw new Error("not a bzImage");
  const at = bz.readUInt16LE(0x20e) + 0x200;
  const end = bz.indexOf(0, at);
  if (at >= bz.length || end < 0 || end - at > 512) throw new Error("bzImage version string out of bounds");
  const s = bz.toString("latin1", at, end);
  const m = /^(\S+) \([^)]*\) (#.*)$/.exec(s);
  if (!m) throw new Error(`unexpected bzImage version string: ${s}`);
  return { release: m[1]!, build: m[2]! };
}

if (!direct) {
  const skip = nestedUnavailable() ?? requireIntegration(needs);
  if (skip) console.error(`!!! SKIPPED embedded ctr test: ${skip}`);
  test("ctr run on the embedded VMM passes inside the nested test host (this host's KVM is not hardware-backed)", {
    skip,
    timeout: 330_000,
  }, async () => {
    const r = await runNested(
      `node --import tsx --test --test-reporter=spec test/integration/vmm-nested-ctr.test.ts 2>&1`,
      { timeoutMs: 300_000, memoryMiB: 3072, env: { COVE_TEST_KERNEL: kernel, COVE_TEST_IMAGE: image } },
    );
    const why = `inner run: status ${r.status}${r.timedOut ? " (timed out)" : ""} after ${r.wallMs} ms\n${r.output.slice(-12000)}\nnested console:\n${r.console.slice(-3000)}`;
    assert.equal(r.status, 0, why);
    assert.match(r.output, /ℹ pass [1-9]/, why);
    assert.match(r.output, /ℹ fail 0/, why);
    assert.match(r.output, /ℹ skipped 0/, why);
    console.log(`nested host run: ${r.wallMs} ms; ${/ctr run on the embedded VMM: \d+ ms/.exec(r.output)?.[0]}`);
  });
} else {
  const skip = requireIntegration(needs);
  describe("ctr run in a pod VM on the embedded VMM", { skip, timeout: 240_000 }, () => {
    let cd: Containerd | undefined;
    let configPath: string;
    let cacheDir: string;

    before(async () => {
      cd = await Containerd.start({});
      await importImage(cd, await buildImage(busyboxImage(), join(cd.dir, "images")));
      const coveDir = join(cd.dir, "cove");
      mkdirSync(coveDir);
      cacheDir = join(coveDir, "cache");
      configPath = join(coveDir, "cove.toml");
      writeFileSync(
        configPath,
        [
          `hypervisor = "embedded"`,
          `cache_dir = "${cacheDir}"`,
          "",
          "[guest]",
          `kernel = "${kernel}"`,
          `image = "${image}"`,
          "memory_mib = 256",
          "",
          "[pod]",
          "writable_layer_mib = 64",
          "boot_timeout_ms = 120000",
          "",
          "[log]",
          `level = "debug"`,
          "",
        ].join("\n"),
      );
    });

    after(async () => {
      await cd?.stop();
    });

    test("ctr run --rm prints the container's output from the guest kernel, exit 0, nothing left", async () => {
      const c = cd!;
      const id = "t1";
      const t0 = Date.now();
      const r = await c.ctr(
        [
          "run",
          "--rm",
          "--runtime",
          COVE_RUNTIME_TYPE,
          "--runtime-config-path",
          configPath,
          BUSYBOX_IMAGE_REF,
          id,
          "/bin/sh",
          "-c",
          "echo hello from the embedded VMM; cat /proc/version; cat /proc/cmdline; grep MemTotal /proc/meminfo",
        ],
        { timeoutMs: 180_000 },
      );
      const ms = Date.now() - t0;
      const why = () =>
        `ctr: code ${r.code}${r.timedOut ? " (timed out)" : ""} after ${ms} ms\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}\ncontainerd + shim log:\n${c.log().slice(-8000)}`;
      assert.equal(r.timedOut, false, why());
      assert.equal(r.code, 0, why());
      console.log(`ctr run on the embedded VMM: ${ms} ms\n${r.stdout}`);
      const lines = r.stdout.trimEnd().split("\n");
      assert.equal(lines[0], "hello from the embedded VMM", why());
      const version = lines[1] ?? "";
      const guest = bzImageVersion(readFileSync(kernel));
      assert.ok(version.startsWith(`Linux version ${guest.release} `), `guest release ${guest.release}: ${why()}`);
      assert.ok(version.endsWith(` ${guest.build}`), `guest build "${guest.build}": ${why()}`);
      // The nested host's kernel is built from the same sources by the same reproducible build, so
      // its version string can be identical: what proves the pod VM is its command line (the one
      // our VMM wrote, with the pod's hostname and our virtio-mmio devices) and its memory size.
      const cmdline = lines[2] ?? "";
      assert.notEqual(cmdline, readFileSync("/proc/cmdline", "utf8").trim(), `not the host's kernel: ${why()}`);
      assert.match(cmdline, /(^| )cove\.hostname=/, `the pod VM's command line: ${why()}`);
      assert.match(cmdline, /(^| )virtio_mmio\.device=\S+@0x[0-9a-f]+:\d+/, `devices on the command line: ${why()}`);
      const memKiB = Number(/^MemTotal:\s+(\d+) kB$/.exec(lines[3] ?? "")?.[1] ?? Number.NaN);
      assert.ok(memKiB > 64 * 1024 && memKiB <= 256 * 1024, `the guest has memory_mib = 256: ${why()}`);
      // The embedded backend ran it: the shim logged its choice (and no QEMU was started).
      assert.match(
        c.log(),
        /hypervisor backend chosen[^\n]*embedded|embedded[^\n]*hypervisor backend chosen/,
        "the shim chose the embedded backend",
      );

      await waitFor(
        `the shim and VM of ${id} to exit`,
        () => processesWithArg(c.address).length === 0 && processesWithCwdUnder(c.dir).length === 0,
        20_000,
      );
      assert.deepEqual(mountsUnder(c.dir), [], "no mounts under containerd's dirs");
      assert.equal(existsSync(c.bundleDir(id)), false, "bundle removed");
      assert.equal((await c.ctrOk(["tasks", "ls", "-q"])).stdout.trim(), "", "no tasks");
      assert.equal((await c.ctrOk(["containers", "ls", "-q"])).stdout.trim(), "", "no containers");
    });
  });
}
