// What a container sees under cove against what it sees under runc: one probe script
// (test/harness/probe/probe.sh) runs under both, through ctr and through CRI, with the same limits,
// user, environment, working directory, hostname and DNS; every difference must be one that
// docs/container-view.md explains (test/harness/probe/compare.ts holds the same list).
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { CNI_BIN_DIR, removeBridge, writeBridgeConflist } from "../harness/cni.ts";
import { COVE_RUNTIME_TYPE, Containerd, REPO_ROOT } from "../harness/containerd.ts";
import { writeCoveConfig } from "../harness/cove-config.ts";
import { CriClient, type PodSandboxConfig } from "../harness/cri.ts";
import { buildImage, busyboxImage, importImage, pauseImage } from "../harness/image.ts";
import { type CgroupLimits, cgroupV2Problems, formatDifference, judge, type Via } from "../harness/probe/compare.ts";
import { criRun, type Probe, probeCri, probeCtr } from "../harness/probe/run.ts";
import { processesWithCwdUnder } from "../harness/processes.ts";
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

/** Resident host memory (MiB) of the processes working under `dir`: the pods' shims and VMs. */
function podRssMib(dir: string): number {
  let kib = 0;
  for (const p of processesWithCwdUnder(dir)) {
    try {
      kib += Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${p.pid}/status`, "utf8"))?.[1] ?? 0);
    } catch {
      // gone meanwhile
    }
  }
  return Math.round(kib / 1024);
}

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

  test("the VM is sized from the pod: 1 GiB + the guest's base, 2 vCPUs; 900 MiB touched; a later container that does not fit is warned about", async () => {
    const GiB = 1024 * 1024 * 1024;
    const resources = { memory_limit_in_bytes: String(GiB), cpu_quota: "200000", cpu_period: "100000" };
    const pod: PodSandboxConfig = {
      metadata: { name: "sized", uid: `sized-${Date.now()}`, namespace: "default", attempt: 0 },
      hostname: "sized",
      log_directory: join(dir, "logs", "sized"),
      linux: { security_context: { namespace_options: { pid: 1 } }, resources },
    };
    mkdirSync(pod.log_directory!, { recursive: true });
    const podId = await cri.runPodSandbox(pod, "cove");
    try {
      assert.match(cd.log(), /VM sized from the pod/, "the shim logs the size and where it came from");
      // Nothing pre-faults guest RAM: the shim and its VM hold far less than the VM's 1280 MiB.
      const rssMib = podRssMib(cd.dir);
      assert.ok(rssMib < 640, `host memory after boot: ${rssMib} MiB for a 1280 MiB VM`);
      const big = await criRun(cri, podId, pod, "big", {
        // dd's 900 MiB buffer is filled from /dev/zero: every page touched
        args: [
          "dd if=/dev/zero of=/dev/null bs=900M count=1 && cat /sys/fs/cgroup/memory.peak && nproc && grep MemTotal /proc/meminfo",
        ],
        linux: { resources: { memory_limit_in_bytes: String(GiB), cpu_quota: "200000", cpu_period: "100000" } },
      });
      assert.equal(big.exit, 0, `900 MiB under a 1 GiB limit:\n${big.out}`);
      console.log(
        `host memory of the pod's shim + VM: ${rssMib} MiB after boot, ${podRssMib(cd.dir)} MiB after 900 MiB touched`,
      );
      const [peak, nproc, memTotal] = big.out.trim().split("\n").slice(-3);
      assert.ok(Number(peak) >= 900 * 1024 * 1024, `memory.peak ${peak}`);
      assert.equal(nproc, "2", "nproc in a 2-CPU pod");
      const kib = Number(/(\d+)/.exec(memTotal ?? "")?.[1]);
      assert.ok(kib > 1200 * 1024 && kib <= 1280 * 1024, `MemTotal ${kib} KiB: the guest's 256 MiB + the pod's 1 GiB`);

      const late = await criRun(cri, podId, pod, "late", {
        args: ["cat /sys/fs/cgroup/memory.max"],
        linux: { resources: { memory_limit_in_bytes: String(2 * GiB) } },
      });
      assert.equal(late.exit, 0);
      assert.equal(late.out.trim(), String(2 * GiB), "its limit applies inside the guest as asked");
      assert.match(cd.log(), /memory limit of 2048 MiB does not fit the pod's VM/, "a clear warning in the log");
    } finally {
      await cri.stopPodSandbox(podId);
      await cri.removePodSandbox(podId);
    }
  });
});
