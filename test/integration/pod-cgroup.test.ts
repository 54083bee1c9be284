// Honest accounting with a real pod: a CRI pod's shim and VMM run in the sandbox's cgroup under the
// pod cgroup (as kubelet makes it: limited to the pod's memory limit + the RuntimeClass's
// overhead.podFixed from deploy/kubernetes/runtimeclass.yaml), for both cgroupsPath forms
// containerd's CRI gives (cgroupfs; systemd, when the parent is a slice). The container then touches
// nearly all of its limit: the pod cgroup's usage covers the VMM's guest RAM and the shim, stays
// within the budget, and nothing is OOM-killed. After RemovePodSandbox the sandbox's cgroup is gone.
import assert from "node:assert/strict";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { cgroupDirOf, parseCgroupMounts } from "../../src/sandbox/pod-cgroup.ts";
import { CNI_BIN_DIR, removeBridge, writeBridgeConflist } from "../harness/cni.ts";
import { COVE_RUNTIME_TYPE, Containerd, REPO_ROOT } from "../harness/containerd.ts";
import { writeCoveConfig } from "../harness/cove-config.ts";
import { CriClient, type PodSandboxConfig } from "../harness/cri.ts";
import { BUSYBOX_IMAGE_REF, buildImage, busyboxImage, importImage, pauseImage } from "../harness/image.ts";
import { processesWithArg, waitFor } from "../harness/processes.ts";
import { requireIntegration } from "../harness/skip.ts";

const art = guestArtifacts();
const BRIDGE = "cove-cgrp0";
const MiB = 1 << 20;
/** The pod's memory limit; its VM is [guest] memory_mib (256) + this. */
const LIMIT_MIB = 128;

/** overhead.podFixed's memory from the RuntimeClass, MiB. */
function podFixedMib(): number {
  const y = readFileSync(join(REPO_ROOT, "deploy/kubernetes/runtimeclass.yaml"), "utf8");
  const m = /podFixed:\s*\n(?:\s+\w+:.*\n)*?\s+memory:\s*"?(\d+)Mi"?/.exec(y);
  if (!m) throw new Error("runtimeclass.yaml: no overhead.podFixed.memory in Mi");
  return Number(m[1]);
}

/** The memory hierarchy's mount point and version. */
function memoryHierarchy(): { mount: string; v: 1 | 2 } | undefined {
  const mounts = parseCgroupMounts(readFileSync("/proc/self/mountinfo", "utf8"));
  const v1 = mounts.find((m) => m.version === 1 && m.controllers.includes("memory"));
  if (v1) return { mount: v1.mountPoint, v: 1 };
  const v2 = mounts.find(
    (m) =>
      m.version === 2 && readFileSync(join(m.mountPoint, "cgroup.controllers"), "utf8").split(/\s+/).includes("memory"),
  );
  return v2 ? { mount: v2.mountPoint, v: 2 } : undefined;
}

const mem = memoryHierarchy();
const skip =
  requireIntegration([
    { path: join(REPO_ROOT, "dist", "containerd-shim-cove-v2.cjs"), why: "the bundled shim (npm test builds first)" },
    { path: art.kernel, why: "the guest kernel (npm run guest)" },
    { path: art.rootfs, why: "the guest image (npm run guest)" },
    { path: "/usr/bin/qemu-system-x86_64", why: "QEMU (qemu-system-x86)" },
    { path: join(CNI_BIN_DIR, "bridge"), why: "CNI plugins (containernetworking-plugins)" },
  ]) || (mem ? false : "no cgroup memory controller on this host");

const usageFile = () => (mem!.v === 1 ? "memory.usage_in_bytes" : "memory.current");
const readNum = (f: string) => Number(readFileSync(f, "utf8").trim());
function oomKills(dir: string): number {
  const t = readFileSync(join(dir, mem!.v === 1 ? "memory.oom_control" : "memory.events"), "utf8");
  return Number(/^oom_kill (\d+)/m.exec(t)?.[1] ?? 0);
}

/** The pod cgroup kubelet would make: the parent, limited to limit + overhead (v2: memory enabled down to it). */
function makePodCgroup(rel: string, bytes: number): string {
  const dir = join(mem!.mount, rel);
  mkdirSync(dir, { recursive: true });
  if (mem!.v === 2) {
    let at = mem!.mount;
    for (const part of rel.split("/")) {
      writeFileSync(join(at, "cgroup.subtree_control"), "+memory");
      at = join(at, part);
    }
    writeFileSync(join(dir, "cgroup.subtree_control"), "+memory");
    writeFileSync(join(dir, "memory.max"), String(bytes));
  } else {
    writeFileSync(join(dir, "memory.limit_in_bytes"), String(bytes));
  }
  return dir;
}

/** Every directory at and under `rel` in every hierarchy (deepest first). */
function cgroupTree(rel: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name));
    out.push(d);
  };
  for (const m of parseCgroupMounts(readFileSync("/proc/self/mountinfo", "utf8")))
    if (existsSync(join(m.mountPoint, rel))) walk(join(m.mountPoint, rel));
  return out;
}

/** Removes the test's pod cgroup and its parents in every hierarchy. */
function removeCgroupTree(rel: string): void {
  for (const d of cgroupTree(rel)) rmdirSync(d);
  const parts = rel.split("/").slice(0, -1);
  for (let i = parts.length; i > 0; i--)
    for (const m of parseCgroupMounts(readFileSync("/proc/self/mountinfo", "utf8"))) {
      const d = join(m.mountPoint, ...parts.slice(0, i));
      if (existsSync(d)) rmdirSync(d);
    }
}

describe("a CRI pod's shim and VMM are charged to the pod's cgroup", { skip, timeout: 900_000 }, () => {
  let cd: Containerd;
  let cri: CriClient;
  let dir: string;

  before(async () => {
    dir = mkdtempSync("/tmp/cove-pod-cgroup-");
    const configPath = writeCoveConfig(dir);
    writeFileSync(configPath, `hypervisor = "qemu"\n${readFileSync(configPath, "utf8")}`);
    cd = await Containerd.start({
      criRuntimes: { cove: { runtimeType: COVE_RUNTIME_TYPE, configPath } },
      cniConfDir: dirname(
        writeBridgeConflist(join(dir, "cni-conf"), dir, { name: "cove-cgrp", bridge: BRIDGE, prefix: "10.231.11" }),
      ),
      cniBinDir: CNI_BIN_DIR,
    });
    const images = join(cd.dir, "images");
    await importImage(cd, await buildImage(pauseImage(), images), "k8s.io");
    await importImage(cd, await buildImage(busyboxImage(), images), "k8s.io");
    cri = new CriClient(cd.address);
  });

  after(async () => {
    cri?.close();
    await cd?.stop();
    removeBridge(BRIDGE);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const forms = [
    // kubelet's cgroupfs driver: /kubepods/<qos>/pod<uid>; containerd adds /<sandbox id>.
    {
      name: "cgroupfs",
      parent: `/cove-test-${process.pid}/pod-a`,
      rel: (p: string, id: string) => `${p.slice(1)}/${id}`,
    },
    // kubelet's systemd driver: a slice; containerd makes it "<slice>:cri-containerd:<id>".
    {
      name: "systemd",
      parent: `covetest${process.pid}-podb.slice`,
      rel: (p: string, id: string) => cgroupDirOf(`${p}:cri-containerd:${id}`),
    },
  ];

  for (const form of forms) {
    test(`${form.name} form: shim and VMM in the sandbox's cgroup, within limit + overhead while a container touches nearly its limit`, async () => {
      const overhead = podFixedMib();
      const budget = (LIMIT_MIB + overhead) * MiB;
      const parentRel =
        form.name === "cgroupfs"
          ? form.parent.slice(1)
          : cgroupDirOf(`${form.parent}:x:y`).split("/").slice(0, -1).join("/");
      const podDir = makePodCgroup(parentRel, budget);
      const pod: PodSandboxConfig = {
        metadata: { name: `cg-${form.name}`, uid: `cg-${form.name}-${Date.now()}`, namespace: "default" },
        linux: { cgroup_parent: form.parent, resources: { memory_limit_in_bytes: String(LIMIT_MIB * MiB) } },
      };
      let podId = "";
      try {
        podId = await cri.runPodSandbox(pod, "cove");
        const ctr = await cri.createContainer(
          podId,
          { metadata: { name: "idle" }, image: { image: BUSYBOX_IMAGE_REF }, command: ["sleep", "1000000"] },
          pod,
        );
        await cri.startContainer(ctr);

        const sandboxDir = join(mem!.mount, form.rel(form.parent, podId));
        assert.ok(existsSync(sandboxDir), `the sandbox's cgroup ${sandboxDir}`);
        const procs = readFileSync(join(sandboxDir, "cgroup.procs"), "utf8").split("\n").filter(Boolean).map(Number);
        const shims = processesWithArg(cd.address).filter((p) => /containerd-shim-cove-v2/.test(p.argv.join(" ")));
        assert.equal(shims.length, 1, "one shim");
        const shim = shims[0]!.pid;
        const vmm = procs.find((p) => p !== shim && /qemu/.test(readFileSync(`/proc/${p}/cmdline`, "utf8")));
        assert.ok(procs.includes(shim), `the shim (${shim}) is in ${sandboxDir}: ${procs}`);
        assert.ok(vmm, `the VMM is in ${sandboxDir}: ${procs}`);

        // The container touches nearly all of its limit (anonymous memory, freed again: the host
        // keeps the pages, as it does for any guest without free page reporting).
        const touch = LIMIT_MIB - 16;
        const r = await cri.execSync(
          ctr,
          ["sh", "-c", `dd if=/dev/zero of=/dev/null bs=${touch}M count=1 && echo ok`],
          120,
        );
        assert.equal(r.stdout.toString().trim(), "ok", r.stderr.toString());

        const status = (pid: number, key: string) =>
          Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) *
          1024;
        // What the VMM and shim hold privately in RAM: guest RAM (shared memory) and anonymous memory.
        const held = status(vmm!, "RssAnon") + status(vmm!, "RssShmem") + status(shim, "RssAnon");
        const usage = readNum(join(podDir, usageFile()));
        console.log(
          `${form.name}: pod cgroup usage ${(usage / MiB).toFixed(0)} MiB; VMM anon+guest RAM + shim anon ` +
            `${(held / MiB).toFixed(0)} MiB; budget ${LIMIT_MIB} + ${overhead} MiB`,
        );
        assert.ok(usage >= held * 0.9, `the pod cgroup is charged for the VMM and shim (${usage} < ${held})`);
        assert.ok(usage <= budget, `within the pod's limit + overhead (${usage} > ${budget})`);
        assert.equal(oomKills(podDir), 0, "nothing OOM-killed in the pod cgroup");
        assert.ok(existsSync(`/proc/${vmm}`), "the VMM still runs");
        assert.equal((await cri.execSync(ctr, ["true"])).exit_code, 0, "the pod still answers");
      } finally {
        if (podId) {
          await cri.stopPodSandbox(podId);
          await cri.removePodSandbox(podId);
        }
        await waitFor("the shim to go", () => processesWithArg(cd.address).length === 0, 60_000);
      }
      try {
        const left = readdirSync(podDir, { withFileTypes: true })
          .filter((d) => d.isDirectory())
          .map((d) => d.name);
        assert.deepEqual(left, [], "the sandbox's cgroup is removed when its shim exits");
      } finally {
        removeCgroupTree(parentRel);
      }
    });
  }
});
