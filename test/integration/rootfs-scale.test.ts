// No device-slot limit: an image of 130 layers runs under ctr (same files as under runc), and one
// CRI pod runs 16 containers from 6 images (2 init containers that exit and keep their disks, layers
// shared between the images) with the same virtio devices in the guest as with one container.
// A container whose layer cannot be converted (the layer cache is full) fails with an error naming
// the layer, leaves no partial image, and the pod's other containers keep running.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { cacheDir, guestArtifacts } from "../../src/guest/paths.ts";
import { COVE_RUNTIME_TYPE, Containerd, REPO_ROOT } from "../harness/containerd.ts";
import { CriClient, type PodSandboxConfig } from "../harness/cri.ts";
import {
  buildImage,
  busyboxImage,
  type Entry,
  type ImageSpec,
  importImage,
  type LayerSpec,
  pauseImage,
} from "../harness/image.ts";
import { requireIntegration } from "../harness/skip.ts";

const art = guestArtifacts();
const CNI_BIN = "/usr/lib/cni";
const BRIDGE = "cove-scale0";
const skip = requireIntegration([
  { path: join(REPO_ROOT, "dist", "containerd-shim-cove-v2.cjs"), why: "the bundled shim (npm test builds first)" },
  { path: art.kernel, why: "the guest kernel (npm run guest)" },
  { path: art.rootfs, why: "the guest image (npm run guest)" },
  { path: join(CNI_BIN, "bridge"), why: "CNI plugins (containernetworking-plugins)" },
]);

const DEEP_REF = "docker.io/cove-test/deep:130";
const DEEP_LAYERS = 130;

/** Layer i adds /layers/NNN; every 10th also removes the file the layer before it added. */
function deepLayers(): LayerSpec[] {
  const out: LayerSpec[] = [];
  for (let i = 1; i < DEEP_LAYERS; i++) {
    const n = String(i).padStart(3, "0");
    const entries: Entry[] = [
      { name: "layers/", type: "directory", mode: 0o755 },
      { name: `layers/${n}`, type: "file", mode: 0o644, content: `layer ${i}\n` },
    ];
    if (i % 10 === 0) {
      entries.push({ name: `layers/.wh.${String(i - 1).padStart(3, "0")}`, type: "file", mode: 0o644, content: "" });
    }
    out.push({ entries });
  }
  return out;
}

/** Six images over busybox: each has the shared layer, some a second shared one, and its own. */
function podImages(): ImageSpec[] {
  const shared = (name: string): LayerSpec => ({
    entries: [
      { name: "shared/", type: "directory", mode: 0o755 },
      { name: `shared/${name}`, type: "file", mode: 0o644, content: `${name}\n` },
    ],
  });
  const own = (i: number): LayerSpec => ({
    entries: [{ name: "etc/image", type: "file", mode: 0o644, content: `image ${i}\n` }],
  });
  return [0, 1, 2, 3, 4, 5].map((i) => ({
    ...busyboxImage({ ref: `docker.io/cove-test/app${i}:1` }),
    layers: [shared("a"), ...(i % 2 ? [shared("b")] : []), own(i)],
  }));
}

/** The virtio devices the guest has, as a container sees them in sysfs. */
const DEVICES_SCRIPT = "ls /sys/bus/virtio/devices | wc -l";

describe("no device-slot limit: many layers, many containers", { skip, timeout: 1_800_000 }, () => {
  let cd: Containerd;
  let cri: CriClient;
  let dir: string;
  let configPath: string;
  let smallCache: string;

  before(async () => {
    dir = mkdtempSync("/tmp/cove-scale-");
    const conf = join(dir, "cni-conf");
    mkdirSync(conf);
    writeFileSync(
      join(conf, "10-cove-scale.conflist"),
      JSON.stringify({
        cniVersion: "1.0.0",
        name: "cove-scale",
        plugins: [
          {
            type: "bridge",
            bridge: BRIDGE,
            ipam: { type: "host-local", ranges: [[{ subnet: "10.231.9.0/24" }]], dataDir: join(dir, "ipam") },
          },
          { type: "loopback" },
        ],
      }),
    );
    // The layer cache on a small tmpfs: the 17th container's big layer does not fit.
    smallCache = join(dir, "small-cache");
    mkdirSync(smallCache);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=48m", "tmpfs", smallCache]);
    configPath = join(dir, "cove.toml");
    writeFileSync(
      configPath,
      `cache_dir = "${smallCache}"\n\n[guest]\nkernel = "${art.kernel}"\nimage = "${art.rootfs}"\nmemory_mib = 512\n\n[pod]\nwritable_layer_mib = 32\n`,
    );
    cd = await Containerd.start({
      criRuntimes: { cove: { runtimeType: COVE_RUNTIME_TYPE, configPath } },
      cniConfDir: conf,
      cniBinDir: CNI_BIN,
    });
    const images = join(cacheDir(), "test-images");
    await importImage(cd, await buildImage({ ...busyboxImage({ ref: DEEP_REF }), layers: deepLayers() }, images));
    await importImage(cd, await buildImage(pauseImage(), images), "k8s.io");
    for (const s of podImages()) await importImage(cd, await buildImage(s, images), "k8s.io");
    await importImage(
      cd,
      await buildImage(
        {
          ...busyboxImage({ ref: "docker.io/cove-test/too-big:1" }),
          layers: [
            {
              entries: [
                { name: "big", type: "file", mode: 0o644, content: { size: 80 << 20, data: [], random: true } },
              ],
              gzip: true,
            },
          ],
        },
        images,
      ),
      "k8s.io",
    );
    cri = new CriClient(cd.address);
  });

  after(async () => {
    cri?.close();
    await cd?.stop();
    try {
      execFileSync("ip", ["link", "del", BRIDGE], { stdio: "ignore" });
    } catch {
      // never created
    }
    try {
      execFileSync("umount", [smallCache], { stdio: "ignore" });
    } catch {
      // not mounted
    }
    if (dir) execFileSync("rm", ["-rf", dir]);
  });

  test(`an image of ${DEEP_LAYERS} layers runs under ctr, with the files runc shows`, async () => {
    const script = `ls /layers | wc -l; cat /layers/001 /layers/128; ls /layers/009 2>&1; ${DEVICES_SCRIPT}`;
    const run = async (runtime: string[], id: string) => {
      const r = await cd.ctr(["run", "--rm", ...runtime, DEEP_REF, id, "/bin/sh", "-c", script], {
        timeoutMs: 600_000,
      });
      assert.equal(r.code, 0, `${id}: ${r.stderr}\n${cd.log().slice(-3000)}`);
      return r.stdout.trim().split("\n");
    };
    const runc = await run([], "deep-runc");
    const cove = await run(["--runtime", COVE_RUNTIME_TYPE, "--runtime-config-path", configPath], "deep-cove");
    assert.deepEqual(runc.slice(0, 4), ["117", "layer 1", "layer 128", "ls: /layers/009: No such file or directory"]);
    assert.deepEqual(cove.slice(0, 4), runc.slice(0, 4));
    assert.equal(cove[4], "4", "guest image, layer disk, writable disk, vsock");
  });

  test("one pod: 16 containers from 6 images (2 init containers), same devices as with one; a layer that cannot be converted fails its container only", async () => {
    const pod: PodSandboxConfig = {
      metadata: { name: "many", uid: `many-${Date.now()}`, namespace: "default", attempt: 0 },
      log_directory: join(dir, "logs"),
    };
    cri.defaultTimeoutMs = 600_000; // conversions and a TCG guest
    const podId = await cri.runPodSandbox(pod, "cove");
    const ctr = (name: string, image: number | string, args: string[]) =>
      cri.createContainer(
        podId,
        {
          metadata: { name },
          image: { image: typeof image === "number" ? `docker.io/cove-test/app${image}:1` : image },
          command: ["/bin/sh", "-c"],
          args,
          log_path: `${name}.log`,
        },
        pod,
      );
    const exec = async (id: string, script: string) => {
      const r = await cri.execSync(id, ["sh", "-c", script]);
      assert.equal(r.exit_code, 0, r.stderr.toString());
      return r.stdout.toString().trim();
    };
    // Two init containers run to completion first (they keep their disks until the pod goes).
    for (const i of [0, 1]) {
      const id = await ctr(`init${i}`, i, [`cat /etc/image /shared/a > /dev/null && echo init${i} done`]);
      await cri.startContainer(id);
    }
    const first = await ctr("app0", 0, ["exec sleep 100000"]);
    await cri.startContainer(first);
    const devicesWithOne = await exec(first, DEVICES_SCRIPT);
    const apps = [first];
    for (let n = 1; n < 14; n++) {
      const id = await ctr(`app${n}`, n % 6, ["exec sleep 100000"]);
      await cri.startContainer(id);
      apps.push(id);
    }
    const all = await cri.listContainers({ pod_sandbox_id: podId });
    assert.equal(all.length, 16, "16 containers in the pod");
    for (const [n, id] of apps.entries()) {
      assert.equal(await exec(id, "cat /etc/image"), `image ${n % 6}`);
    }
    assert.equal(await exec(apps[13]!, "cat /shared/a /shared/b"), "a\nb", "layers shared between images");
    assert.equal(await exec(apps[13]!, DEVICES_SCRIPT), devicesWithOne, "as many virtio devices with 16 as with 1");
    assert.equal(devicesWithOne, "5", "guest image, layer disk, writable disk, vsock, NIC");

    // The layer cache (a 48 MiB tmpfs) cannot hold an 80 MiB layer: that container alone fails
    // (CRI makes the task, and so the rootfs, at StartContainer).
    const big = await ctr("too-big", "docker.io/cove-test/too-big:1", ["exec sleep 100000"]);
    await assert.rejects(cri.startContainer(big), (e: Error) => {
      assert.match(
        e.message,
        /cannot convert layer overlayfs\/sha256:[0-9a-f]{64} \(.*\) to an erofs image \(the layer cache .* is full\)/,
      );
      return true;
    });
    // Besides the images: their source records and the pods' holds (docs/rootfs.md).
    const left = readdirSync(join(smallCache, "layers")).filter((f) => !/\.erofs(\.json)?$/.test(f) && f !== ".users");
    assert.deepEqual(left, [], "no partial image, temporary file or lock left");
    for (const id of apps) assert.equal(await exec(id, "echo alive"), "alive", "the pod's other containers still run");

    await cri.stopPodSandbox(podId);
    await cri.removePodSandbox(podId);
  });
});
