// Pods through CRI (what kubelet does) on the `cove` handler: RunPodSandbox boots one microVM, both
// containers run in it, ExecSync, CRI logs, stats, StopContainer graceful then SIGKILL, and
// Stop/RemovePodSandbox tear the VM down. CNI (bridge + host-local) gives the pod a network
// namespace exactly as under kubelet; a host-network pod is refused with a clear error. Volumes as
// kubelet lays them out: ConfigMap/token copied in and kept in step, an emptyDir shared in the pod.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { beyondSmoke, COVE_RUNTIME_TYPE, Containerd, containerdUnderTest, REPO_ROOT } from "../harness/containerd.ts";
import { CriClient, hostNetworkPod, type PodSandboxConfig } from "../harness/cri.ts";
import { BUSYBOX_IMAGE_REF, buildImage, busyboxImage, importImage, pauseImage } from "../harness/image.ts";
import { mountsUnder, processesWithArg, processesWithCwdUnder, waitFor } from "../harness/processes.ts";
import { requireIntegration } from "../harness/skip.ts";

const art = guestArtifacts();
const CNI_BIN = "/usr/lib/cni";
const BRIDGE = "cove-e2e0";
const skip = requireIntegration([
  { path: join(REPO_ROOT, "dist", "containerd-shim-cove-v2.cjs"), why: "the bundled shim (npm test builds first)" },
  { path: art.kernel, why: "the guest kernel (npm run guest)" },
  { path: art.rootfs, why: "the guest image (npm run guest)" },
  { path: "/usr/bin/qemu-system-x86_64", why: "QEMU (qemu-system-x86)" },
  { path: join(CNI_BIN, "bridge"), why: "CNI plugins (containernetworking-plugins)" },
]);

const qemus = (dir: string) => processesWithCwdUnder(dir).filter((p) => /qemu-system/.test(p.argv[0] ?? ""));

describe(`CRI pods in cove microVMs (containerd ${containerdUnderTest()})`, { skip, timeout: 600_000 }, () => {
  let cd: Containerd;
  let cri: CriClient;
  let dir: string;

  /** After RemovePodSandbox: the pod's shim and VM are gone and nothing stays mounted. */
  async function podGone() {
    await waitFor(
      "the pod's shim and VM to go",
      () => processesWithArg(cd.address).length === 0 && qemus(cd.dir).length === 0,
      20_000,
    );
    assert.deepEqual(mountsUnder(cd.dir), [], "no mounts left");
  }

  before(async () => {
    const { mkdtempSync } = await import("node:fs");
    dir = mkdtempSync("/tmp/cove-e2e-cri-");
    const conf = join(dir, "cni-conf");
    mkdirSync(conf);
    writeFileSync(
      join(conf, "10-cove-e2e.conflist"),
      JSON.stringify({
        cniVersion: "1.0.0",
        name: "cove-e2e",
        plugins: [
          {
            type: "bridge",
            bridge: BRIDGE,
            isGateway: false,
            ipMasq: false,
            ipam: { type: "host-local", ranges: [[{ subnet: "10.231.7.0/24" }]], dataDir: join(dir, "ipam") },
          },
          { type: "loopback" },
        ],
      }),
    );
    const configPath = join(dir, "cove.toml");
    writeFileSync(
      configPath,
      `cache_dir = "${join(dir, "cache")}"\n\n[guest]\nkernel = "${art.kernel}"\nimage = "${art.rootfs}"\n\n[pod]\nwritable_layer_mib = 64\nallowed_annotations = ["io.cove.*"]\n`,
    );
    cd = await Containerd.start({
      traceShims: true,
      criRuntimes: { cove: { runtimeType: COVE_RUNTIME_TYPE, configPath } },
      cniConfDir: conf,
      cniBinDir: CNI_BIN,
    });
    const images = join(cd.dir, "images");
    await importImage(cd, await buildImage(pauseImage(), images), "k8s.io");
    await importImage(cd, await buildImage(busyboxImage(), images), "k8s.io");
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
    if (dir) execFileSync("rm", ["-rf", dir]);
  });

  test("a host-network pod gets a clear error and leaves nothing", { skip: beyondSmoke() }, async () => {
    await assert.rejects(cri.runPodSandbox(hostNetworkPod("hostnet"), "cove"), (e: Error) => {
      assert.match(e.message, /VM cannot join the host's network namespace/);
      return true;
    });
    await waitFor("no shim left", () => processesWithArg(cd.address).length === 0, 15_000);
    assert.equal(qemus(cd.dir).length, 0);
  });

  test("Kubernetes volumes (ConfigMap and token copied in and kept in step, emptyDir), shared pod namespaces and /dev/shm", {
    skip: beyondSmoke(),
  }, async () => {
    // The host side as kubelet lays it out under /var/lib/kubelet/pods/<uid>/volumes/.
    const uid = `vol-${Date.now()}`;
    const vols = join(dir, "kubelet/pods", uid, "volumes");
    const cm = join(vols, "kubernetes.io~configmap", "app-config");
    const gen = (stamp: string, data: Record<string, string>) => {
      mkdirSync(join(cm, stamp), { recursive: true });
      for (const [k, v] of Object.entries(data)) writeFileSync(join(cm, stamp, k), v);
    };
    gen("..2026_11_25_01", { "app.conf": "color=blue\n" });
    symlinkSync("..2026_11_25_01", join(cm, "..data"));
    symlinkSync("..data/app.conf", join(cm, "app.conf"));
    const token = join(vols, "kubernetes.io~projected", "kube-api-access", "token");
    mkdirSync(dirname(token), { recursive: true });
    writeFileSync(token, "token-1", { mode: 0o600 });
    const scratch = join(vols, "kubernetes.io~empty-dir", "scratch");
    mkdirSync(scratch, { recursive: true, mode: 0o777 });

    const logDir = join(dir, "vol-logs");
    const pod: PodSandboxConfig = {
      metadata: { name: "vols", uid, namespace: "default", attempt: 0 },
      hostname: "vols",
      log_directory: logDir,
      // shareProcessNamespace: true (NamespaceMode POD = 0); two IPC-namespaced sysctls.
      linux: {
        security_context: { namespace_options: { pid: 0 } },
        sysctls: { "kernel.shm_rmid_forced": "1", "kernel.msgmax": "65536" },
      },
    };
    const podId = await cri.runPodSandbox(pod, "cove");
    const ids: string[] = [];
    try {
      const mounts = [
        { container_path: "/etc/app", host_path: cm, readonly: true },
        { container_path: "/var/run/secrets/token", host_path: token, readonly: true },
        { container_path: "/scratch", host_path: scratch },
      ];
      const ctr = async (name: string, sleep: number) => {
        const id = await cri.createContainer(
          podId,
          {
            metadata: { name },
            image: { image: BUSYBOX_IMAGE_REF },
            command: ["/bin/sh", "-c", `exec sleep ${sleep}`],
            log_path: `${name}.log`,
            mounts,
            linux: { security_context: { namespace_options: { pid: 0 } } },
          },
          pod,
        );
        ids.push(id);
        await cri.startContainer(id);
        return id;
      };
      const a = await ctr("writer", 100001);
      const b = await ctr("reader", 100002);
      const sh = async (id: string, script: string) => {
        const r = await cri.execSync(id, ["sh", "-c", script]);
        assert.equal(r.exit_code, 0, `${script}: ${r.stderr.toString()}`);
        return r.stdout.toString();
      };
      assert.equal(await sh(a, "cat /etc/app/app.conf"), "color=blue\n");
      assert.equal(await sh(b, "cat /var/run/secrets/token"), "token-1");
      assert.equal(await sh(a, "stat -c %a /var/run/secrets/token"), "600\n", "mode kept");
      // Read-only in the container, like kubelet's.
      const w = await cri.execSync(a, ["sh", "-c", "echo x > /etc/app/new"]);
      assert.notEqual(w.exit_code, 0, "the copied ConfigMap is read-only");
      // emptyDir: one guest directory for the pod, written by one container, read by the other; the
      // host directory is not involved.
      await sh(a, "echo shared-data > /scratch/f");
      assert.equal(await sh(b, "cat /scratch/f"), "shared-data\n");
      assert.equal(existsSync(join(scratch, "f")), false, "emptyDir content stays in the guest");
      // The pod's shared namespaces (CRI: IPC and UTS always, PID with shareProcessNamespace) and its
      // one /dev/shm: the same in both containers.
      const ns = "readlink /proc/self/ns/ipc /proc/self/ns/uts /proc/self/ns/pid; hostname";
      const nsA = await sh(a, ns);
      assert.equal(await sh(b, ns), nsA, "both containers in the pod's ipc/uts/pid namespaces");
      assert.match(nsA, /vols\n$/, "the pod's hostname");
      assert.match(await sh(b, "ps -o args"), /sleep 100001/, "the writer's process is visible to the reader");
      assert.equal(
        await sh(b, "cat /proc/sys/kernel/shm_rmid_forced /proc/sys/kernel/msgmax"),
        "1\n65536\n",
        "the pod's IPC sysctls hold in its IPC namespace",
      );
      await sh(a, "echo shm-data > /dev/shm/seg");
      assert.equal(await sh(b, "cat /dev/shm/seg"), "shm-data\n", "one /dev/shm for the pod");
      // kubelet updates the ConfigMap (new generation, ..data swapped) and rotates the token.
      gen("..2026_11_25_02", { "app.conf": "color=green\n" });
      symlinkSync("..2026_11_25_02", join(cm, "..data_tmp"));
      renameSync(join(cm, "..data_tmp"), join(cm, "..data"));
      rmSync(join(cm, "..2026_11_25_01"), { recursive: true });
      writeFileSync(token, "token-2");
      let seen = "";
      await waitFor(
        "the ConfigMap update and the new token in the container",
        async () => {
          seen = await sh(b, "cat /etc/app/app.conf /var/run/secrets/token");
          return seen === "color=green\ntoken-2";
        },
        20_000,
      ).catch((e) => {
        throw new Error(`${(e as Error).message}; last seen ${JSON.stringify(seen)}`);
      });
      assert.match(cd.log(), /volume: host change copied into the guest/);
      // emptyDir and /dev/shm live as long as the pod: with every container that used them gone, a new
      // one still finds the data (kubelet re-creates a crashed container this way).
      for (const id of [a, b]) {
        await cri.stopContainer(id, 1);
        await cri.removeContainer(id);
      }
      ids.length = 0;
      const c = await ctr("again", 100003);
      assert.equal(await sh(c, "cat /scratch/f /dev/shm/seg"), "shared-data\nshm-data\n");
    } finally {
      // Also after a failure: the next test counts VMs.
      for (const id of ids) {
        await cri.stopContainer(id, 1).catch(() => {});
        await cri.removeContainer(id).catch(() => {});
      }
      await cri.stopPodSandbox(podId);
      await cri.removePodSandbox(podId);
    }
    await podGone();
  });

  test("a pod: one VM, two containers in it, exec, logs, stats, graceful and forced stop, teardown", async () => {
    const logDir = join(dir, "pod-logs");
    const pod: PodSandboxConfig = {
      metadata: { name: "web", uid: `web-${Date.now()}`, namespace: "default", attempt: 0 },
      hostname: "web-pod",
      log_directory: logDir,
      annotations: { "io.cove.memory_mib": "320" },
      // kubelet's default: a PID namespace per container (NamespaceMode CONTAINER = 1)
      linux: { security_context: { namespace_options: { pid: 1 } } },
    };
    const podId = await cri.runPodSandbox(pod, "cove");
    assert.equal(qemus(cd.dir).length, 1, "RunPodSandbox booted one VM");
    assert.match(cd.log(), /pod network: eth0 /, "the shim attached the pod's CNI network to the guest");
    assert.match(cd.log(), /annotation io\.cove\.memory_mib=320 applied/);

    const ctr = (name: string, args: string[]) =>
      cri.createContainer(
        podId,
        {
          metadata: { name },
          image: { image: BUSYBOX_IMAGE_REF },
          command: ["/bin/sh", "-c"],
          args,
          log_path: `${name}.log`,
          linux: { security_context: { namespace_options: { pid: 1 } } },
        },
        pod,
      );
    const c1 = await ctr("graceful", [
      "trap 'echo bye; exit 0' TERM; echo started-graceful; while true; do sleep 1; done",
    ]);
    await cri.startContainer(c1);
    const c2 = await ctr("stubborn", ["echo started-stubborn; exec sleep 100000"]);
    await cri.startContainer(c2);
    // The shim protocol: containerd 2.x took version 3 from the sandbox's `start` and reuses that
    // connection for the pod's containers without running `start`; 1.x runs `start` per container,
    // which finds the pod's live shim.
    const starts = cd
      .shimCalls()
      .filter((c) => c.action === "start" && [podId, c1, c2].includes(c.id ?? ""))
      .map((c) => c.id);
    assert.deepEqual(
      starts,
      cd.version.version.startsWith("2.") ? [podId] : [podId, c1, c2],
      "shim starts for the pod",
    );
    assert.equal(qemus(cd.dir).length, 1, "both containers went into the pod's VM");

    const boot = (id: string) => cri.execSync(id, ["cat", "/proc/sys/kernel/random/boot_id"]);
    const b1 = (await boot(c1)).stdout.toString();
    const b2 = (await boot(c2)).stdout.toString();
    assert.equal(b1, b2, "one guest kernel for both containers");
    assert.notEqual(b1.trim(), readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim(), "not the host kernel");
    const mem = await cri.execSync(c1, ["sh", "-c", "grep MemTotal /proc/meminfo"]);
    const kib = Number(/(\d+)/.exec(mem.stdout.toString())?.[1]);
    assert.ok(kib > 250_000 && kib < 330_000, `guest RAM follows the annotation: ${kib} KiB`);

    const ex = await cri.execSync(c1, ["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert.equal(ex.exit_code, 3);
    assert.equal(ex.stdout.toString(), "out\n");
    assert.equal(ex.stderr.toString(), "err\n");

    await waitFor("the CRI log of the first container", () => existsSync(join(logDir, "graceful.log")), 10_000);
    await waitFor(
      "started-graceful in the CRI log",
      () => /stdout F started-graceful/.test(readFileSync(join(logDir, "graceful.log"), "utf8")),
      10_000,
    );

    const st = (await cri.containerStats(c1)).stats as { memory?: { working_set_bytes?: { value: string } } };
    assert.ok(Number(st.memory?.working_set_bytes?.value ?? 0) > 0, `memory stats: ${JSON.stringify(st)}`);

    const t0 = Date.now();
    await cri.stopContainer(c1, 10);
    assert.ok(Date.now() - t0 < 8000, "SIGTERM was enough for the trapping container");
    const s1 = (await cri.containerStatus(c1)).status;
    assert.equal(s1.state, "CONTAINER_EXITED");
    assert.equal(s1.exit_code, 0);
    assert.match(readFileSync(join(logDir, "graceful.log"), "utf8"), /stdout F bye/);

    const t1 = Date.now();
    await cri.stopContainer(c2, 2);
    assert.ok(Date.now() - t1 >= 1900, "the stubborn container outlived its grace period");
    const s2 = (await cri.containerStatus(c2)).status;
    assert.equal(s2.exit_code, 137, "then SIGKILL");

    await cri.removeContainer(c1);
    await cri.removeContainer(c2);
    await cri.stopPodSandbox(podId);
    await cri.removePodSandbox(podId);
    await podGone();
  });
});
