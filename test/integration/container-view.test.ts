// What a container sees under cove against what it sees under runc: one probe script
// (test/harness/probe/probe.sh) runs under both, through ctr and through CRI, with the same limits,
// user, environment, working directory, hostname and DNS; every difference must be one that
// docs/container-view.md explains (test/harness/probe/compare.ts holds the same list).
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { CNI_BIN_DIR, removeBridge, writeBridgeConflist } from "../harness/cni.ts";
import { COVE_RUNTIME_TYPE, Containerd, REPO_ROOT } from "../harness/containerd.ts";
import { writeCoveConfig } from "../harness/cove-config.ts";
import { CriClient, type PodSandboxConfig } from "../harness/cri.ts";
import { buildImage, busyboxImage, importImage, pauseImage } from "../harness/image.ts";
import { type CgroupLimits, cgroupV2Problems, formatDifference, judge, type Via } from "../harness/probe/compare.ts";
import { type Probe, probeCri, probeCtr } from "../harness/probe/run.ts";
import { requireIntegration } from "../harness/skip.ts";

const art = guestArtifacts();
const BRIDGE = "cove-view0";
const skip = requireIntegration([
  { path: join(REPO_ROOT, "dist", "containerd-shim-cove-v2.cjs"), why: "the bundled shim (npm test builds first)" },
  { path: art.kernel, why: "the guest kernel (npm run guest)" },
  { path: art.rootfs, why: "the guest image (npm run guest)" },
  { path: "/usr/bin/qemu-system-x86_64", why: "QEMU (qemu-system-x86)" },
  { path: join(CNI_BIN_DIR, "bridge"), why: "CNI plugins (containernetworking-plugins)" },
]);

const MEMORY = 128 * 1024 * 1024;
const CPU_QUOTA = 50_000;
const CPU_PERIOD = 100_000;
const CPU_SHARES = 512;

/** Fails on any difference docs/container-view.md does not explain, and on cove's cgroup rows unlike runc's v2. */
function compare(what: string, via: Via, runc: Probe, cove: Probe, limits: CgroupLimits): void {
  assert.ok(runc.size >= 25 && cove.size === runc.size, `${what}: every section printed (${runc.size}, ${cove.size})`);
  const { explained, unexplained } = judge(runc, cove, via);
  console.log(
    `${what}: ${explained.length} explained difference(s): ${[...new Set(explained.map(([, e]) => e.id))].join(", ")}`,
  );
  assert.deepEqual(
    unexplained.map(formatDifference),
    [],
    `${what}: differences no entry of docs/container-view.md explains`,
  );
  assert.deepEqual(cgroupV2Problems(cove, limits), [], `${what}: cgroup rows against runc's cgroup v2 view`);
}

describe("the container's view: cove against runc", { skip, timeout: 900_000 }, () => {
  let cd: Containerd;
  let cri: CriClient;
  let dir: string;
  let configPath: string;

  before(async () => {
    dir = mkdtempSync("/tmp/cove-view-");
    const conf = join(dir, "cni-conf");
    writeBridgeConflist(conf, dir, { name: "cove-view", bridge: BRIDGE, prefix: "10.231.14" });
    configPath = writeCoveConfig(dir);
    cd = await Containerd.start({
      criRuntimes: { cove: { runtimeType: COVE_RUNTIME_TYPE, configPath } },
      cniConfDir: conf,
      cniBinDir: CNI_BIN_DIR,
    });
    const images = join(cd.dir, "images");
    const bb = await buildImage(busyboxImage({ env: ["PATH=/bin", "FROM_IMAGE=1"] }), images);
    await importImage(cd, bb);
    await importImage(cd, await buildImage(pauseImage(), images), "k8s.io");
    await importImage(cd, bb, "k8s.io");
    cri = new CriClient(cd.address);
  });

  after(async () => {
    cri?.close();
    await cd?.stop();
    removeBridge(BRIDGE);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("through ctr: the same view as runc's but for the differences the docs explain", async () => {
    const flags = [
      "--memory-limit",
      String(MEMORY),
      "--cpu-quota",
      String(CPU_QUOTA),
      "--cpu-period",
      String(CPU_PERIOD),
    ];
    flags.push("--env", "PROBE=ctr", "--cwd", "/tmp");
    const runc = await probeCtr(cd, "io.containerd.runc.v2", "view-runc", flags);
    const cove = await probeCtr(cd, COVE_RUNTIME_TYPE, "view-cove", flags, ["--runtime-config-path", configPath]);
    // ctr's spec always has cpu shares (--cpu-shares, 1024 by default): cpu.weight 39 under runc on v2.
    compare("ctr", "ctr", runc, cove, {
      memoryBytes: MEMORY,
      cpuQuota: CPU_QUOTA,
      cpuPeriod: CPU_PERIOD,
      cpuShares: 1024,
    });
  });

  test("through CRI: root with the runtime's seccomp profile, and a user with groups and no_new_privs", async () => {
    const resources = {
      memory_limit_in_bytes: String(MEMORY),
      cpu_quota: String(CPU_QUOTA),
      cpu_period: String(CPU_PERIOD),
      cpu_shares: String(CPU_SHARES),
    };
    const probes: Record<string, Probe[]> = {};
    for (const handler of ["runc", "cove"]) {
      const pod: PodSandboxConfig = {
        metadata: { name: `view-${handler}`, uid: `view-${handler}-${Date.now()}`, namespace: "default", attempt: 0 },
        hostname: "view-pod",
        log_directory: join(dir, "logs", handler),
        dns_config: { servers: ["10.231.14.53"], searches: ["view.svc.cluster.local"], options: ["ndots:5"] },
        linux: { security_context: { namespace_options: { pid: 1 } }, resources },
      };
      mkdirSync(pod.log_directory!, { recursive: true });
      const podId = await cri.runPodSandbox(pod, handler);
      try {
        const root = await probeCri(cri, podId, pod, "root", {
          envs: [{ key: "PROBE", value: "cri" }],
          working_dir: "/tmp",
          linux: {
            resources,
            security_context: { namespace_options: { pid: 1 }, seccomp: { profile_type: "RuntimeDefault" } },
          },
        });
        const user = await probeCri(cri, podId, pod, "user", {
          linux: {
            resources,
            security_context: {
              namespace_options: { pid: 1 },
              run_as_user: { value: "1000" },
              run_as_group: { value: "1000" },
              supplemental_groups: ["2000", "3000"],
              no_new_privs: true,
            },
          },
        });
        probes[handler] = [root, user];
      } finally {
        await cri.stopPodSandbox(podId);
        await cri.removePodSandbox(podId);
      }
    }
    const limits = { memoryBytes: MEMORY, cpuQuota: CPU_QUOTA, cpuPeriod: CPU_PERIOD, cpuShares: CPU_SHARES };
    const [runcRoot, runcUser] = probes.runc!;
    const [coveRoot, coveUser] = probes.cove!;
    compare("CRI, root", "cri", runcRoot!, coveRoot!, limits);
    compare("CRI, user", "cri", runcUser!, coveUser!, limits);
    // What the probes must have seen for the comparison to mean something.
    assert.deepEqual(
      coveRoot!.get("status")?.filter((l) => l.startsWith("Seccomp:")),
      ["Seccomp:\t2"],
      "seccomp filter",
    );
    assert.deepEqual(coveUser!.get("ids"), ["uid=1000 gid=1000 groups=1000,2000,3000"]);
    assert.ok(coveUser!.get("env")?.includes("HOME=/"), "HOME=/ for a user /etc/passwd does not name, as runc");
  });
});
