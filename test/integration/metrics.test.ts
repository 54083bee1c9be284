// Metrics of a running pod, end to end: containerd → cove shim → a pod VM → the agent. The shim
// serves its pod's metrics on a root-only socket in the VM work dir; `cove monitor` finds the pod
// through pod.json and serves the node's aggregate over HTTP; `cove metrics` prints the same.
// Scraped twice with I/O in between (an exec writing and fsyncing 8 MiB into the container's
// writable layer), the counters move.
// Two backends: qemu (TCG here) on this host; the embedded VMM where KVM is backed by hardware
// virtualization, else inside the nested test host (this file re-runs itself there with
// COVE_METRICS_BACKEND=embedded; the nested host's root is read-only, so everything the run writes
// is under /tmp and /run).
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { chooseAccel } from "../../src/hypervisor/qemu/accel.ts";
import { METRICS_SOCKET } from "../../src/metrics/shim-server.ts";
import { POD_STATE_FILE, VM_RUN_DIR } from "../../src/sandbox/run-state.ts";
import { COVE_RUNTIME_TYPE, Containerd, REPO_ROOT } from "../harness/containerd.ts";
import { run as runCmd } from "../harness/exec.ts";
import { BUSYBOX_IMAGE_REF, buildImage, busyboxImage, importImage } from "../harness/image.ts";
import { nestedUnavailable, runNested } from "../harness/nested.ts";
import { waitFor } from "../harness/processes.ts";
import { requireIntegration } from "../harness/skip.ts";
import { samples, value } from "../unit/metrics/prom-text.ts";

type Backend = "qemu" | "embedded";
const art = guestArtifacts();
const kernel = process.env.COVE_TEST_KERNEL ?? art.kernel;
const image = process.env.COVE_TEST_IMAGE ?? art.rootfs;
const COVE = join(REPO_ROOT, "bin", "cove");
const direct = chooseAccel().accel === "kvm";
const needs = [
  { path: join(REPO_ROOT, "dist", "cove.cjs"), why: "the bundled cove CLI (npm test builds first)" },
  { path: join(REPO_ROOT, "dist", "containerd-shim-cove-v2.cjs"), why: "the bundled shim (npm test builds first)" },
  { path: kernel, why: "the guest kernel (npm run guest)" },
  { path: image, why: "the guest image (npm run guest)" },
];
const QEMU_NEED = { path: "/usr/bin/qemu-system-x86_64", why: "QEMU (qemu-system-x86)" };
const ADDON_NEED = { path: join(REPO_ROOT, "build", "Release", "cove_native.node"), why: "the native addon" };

/** The VM work dir of pod `id` (its pod.json names it). */
function podDir(id: string): string | undefined {
  for (const d of readdirSync(VM_RUN_DIR)) {
    try {
      if ((JSON.parse(readFileSync(join(VM_RUN_DIR, d, POD_STATE_FILE), "utf8")) as { id: string }).id === id) {
        return join(VM_RUN_DIR, d);
      }
    } catch {
      // another pod booting, or torn down meanwhile
    }
  }
  return undefined;
}

function podMetricsSuite(backend: Backend): void {
  const skip = requireIntegration([...needs, backend === "qemu" ? QEMU_NEED : ADDON_NEED]);
  describe(`metrics of a running pod (${backend} backend)`, { skip, timeout: 600_000 }, () => {
    let cd: Containerd;
    let monitor: ChildProcess | undefined;
    let monitorUrl = "";
    const id = `metrics-${backend}`;
    const pod = { pod: id, namespace: "default", backend };

    before(async () => {
      cd = await Containerd.start({});
      await importImage(cd, await buildImage(busyboxImage(), join(cd.dir, "images")));
      const coveDir = join(cd.dir, "cove");
      mkdirSync(coveDir);
      const configPath = join(coveDir, "cove.toml");
      writeFileSync(
        configPath,
        `hypervisor = "${backend}"\ncache_dir = "${join(coveDir, "cache")}"\n\n[guest]\nkernel = "${kernel}"\nimage = "${image}"\nmemory_mib = 256\n\n[pod]\nwritable_layer_mib = 64\nboot_timeout_ms = 120000\n`,
      );
      await cd.ctrOk(
        [
          "run",
          "-d",
          "--runtime",
          COVE_RUNTIME_TYPE,
          "--runtime-config-path",
          configPath,
          BUSYBOX_IMAGE_REF,
          id,
          "/bin/sh",
          "-c",
          "while true; do sleep 1; done",
        ],
        { timeoutMs: 180_000 },
      );
      monitor = spawn(COVE, ["monitor", "--listen", "127.0.0.1:0", "--config", configPath], {
        stdio: ["ignore", "ignore", "pipe"],
      });
      let err = "";
      monitor.stderr?.on("data", (d: Buffer) => {
        err += d.toString();
      });
      await waitFor("cove monitor to listen", () => /serving \/metrics on (\S+)/.test(err), 30_000);
      monitorUrl = `http://${/serving \/metrics on (\S+)/.exec(err)![1]}/metrics`;
    });

    after(async () => {
      monitor?.kill("SIGTERM");
      await cd?.ctr(["task", "kill", "-s", "SIGKILL", id], { timeoutMs: 30_000 }).catch(() => {});
      await cd?.stop();
    });

    const scrape = async () => {
      const r = await fetch(monitorUrl);
      assert.equal(r.status, 200);
      return r.text();
    };

    test("the shim's socket is root-only; two scrapes around some I/O see the counters move", async (t) => {
      const dir = podDir(id);
      assert.ok(dir, `a pod.json names ${id}`);
      assert.equal(statSync(join(dir, METRICS_SOCKET)).mode & 0o777, 0o600, "metrics.sock is 0600");

      const first = await scrape();
      assert.ok((value(first, "cove_node_pods") ?? 0) >= 1, "the node counts the pod");
      assert.equal(samples(first, "cove_pod_info", pod).length, 1, `the ${backend} pod is scraped`);
      assert.ok((value(first, "cove_pod_boot_seconds", pod) ?? 0) > 0, "boot time");
      assert.ok((value(first, "cove_pod_guest_ram_touched_bytes", pod) ?? 0) > 16 * 1024 * 1024, "guest RAM touched");
      assert.ok((value(first, "cove_pod_host_pss_bytes", { ...pod, process: "shim" }) ?? 0) > 0, "the shim's PSS");
      const layers = value(first, "cove_layer_images_total", { ...pod, result: "converted" }) ?? 0;
      assert.ok(layers >= 1, "a layer converted");
      assert.ok((value(first, "cove_node_layer_cache_images") ?? 0) >= 1, "the layer cache (cove monitor --config)");

      const write = (t: string) =>
        value(t, "cove_device_requests_total", { ...pod, device: "writable", op: "write" }) ?? 0;
      const written = (t: string) =>
        value(t, "cove_device_bytes_total", { ...pod, device: "writable", direction: "write" }) ?? 0;
      const vsockTx = (t: string) =>
        value(t, "cove_device_bytes_total", { ...pod, device: "vsock", direction: "tx" }) ?? 0;
      const execs = (t: string) =>
        value(t, "cove_agent_rpc_duration_seconds_count", { ...pod, method: "ExecProcess" }) ?? 0;
      const exits = (t: string) => value(t, "cove_vm_exits_total", pod) ?? 0;

      const ex = await cd.ctr(
        [
          "task",
          "exec",
          "--exec-id",
          "io1",
          id,
          "/bin/sh",
          "-c",
          "dd if=/dev/zero of=/big bs=1M count=8 conv=fsync 2>&1; echo done",
        ],
        { timeoutMs: 120_000 },
      );
      assert.equal(ex.code, 0, `exec: ${ex.stdout}${ex.stderr}`);
      assert.match(ex.stdout, /done/);

      const second = await scrape();
      assert.ok(write(second) > write(first), `blk writes moved: ${write(first)} → ${write(second)}`);
      assert.ok(
        written(second) - written(first) >= 8 * 1024 * 1024,
        `8 MiB written: ${written(first)} → ${written(second)}`,
      );
      assert.ok(
        vsockTx(second) > vsockTx(first),
        "vsock bytes from the guest moved (the exec's output, the agent's answers)",
      );
      assert.ok(execs(second) >= execs(first) + 1, "the ExecProcess round trip was timed");
      if (backend === "qemu") {
        assert.ok((value(first, "cove_pod_host_pss_bytes", { ...pod, process: "vmm" }) ?? 0) > 0, "QEMU's PSS");
        assert.equal(samples(first, "cove_vm_exits_total", pod).length, 0, "the qemu backend reports no exits");
        assert.ok((value(second, "cove_vhost_user_kicks_total", { ...pod, device: "writable" }) ?? 0) > 0, "kicks");
      } else {
        assert.equal(
          samples(first, "cove_pod_host_pss_bytes", { ...pod, process: "vmm" }).length,
          0,
          "the VMM is the shim",
        );
        assert.ok(
          exits(second) > exits(first) && exits(first) > 0,
          `VM exits moved: ${exits(first)} → ${exits(second)}`,
        );
        assert.ok(
          samples(second, "cove_vm_exits_by_kind_total", pod).some((s) => s.value > 0),
          "exits by kind",
        );
        assert.ok(
          (value(second, "cove_vmm_userspace_exits_total", { ...pod, reason: "mmio" }) ?? 0) > 0,
          "MMIO exits reached the VMM (virtio-mmio register accesses)",
        );
      }
      const mib = (n: number | undefined) => `${Math.round((n ?? 0) / 1048576)} MiB`;
      t.diagnostic(
        `${backend}: boot ${value(second, "cove_pod_boot_seconds", pod)} s; guest RAM touched ${mib(value(second, "cove_pod_guest_ram_touched_bytes", pod))}; PSS shim ${mib(value(second, "cove_pod_host_pss_bytes", { ...pod, process: "shim" }))}, vmm ${mib(value(second, "cove_pod_host_pss_bytes", { ...pod, process: "vmm" }))}; exits ${exits(first)} → ${exits(second)}; scrape ${value(second, "cove_node_scrape_duration_seconds")} s; ${second.length} bytes of text`,
      );

      // `cove metrics` prints the same families.
      const once = await runCmd(COVE, ["metrics"], { timeoutMs: 30_000 });
      assert.equal(once.code, 0, once.stderr);
      const onceWritten = value(once.stdout, "cove_device_bytes_total", {
        ...pod,
        device: "writable",
        direction: "write",
      });
      assert.ok((onceWritten ?? 0) >= written(second), "cove metrics prints the pod's counters");
    });

    test("the socket goes with the pod", async () => {
      const dir = podDir(id);
      await cd.ctrOk(["task", "kill", "-s", "SIGKILL", id], { timeoutMs: 30_000 });
      await waitFor("the pod to stop", async () => /STOPPED/.test((await cd.ctrOk(["task", "ls"])).stdout), 60_000);
      await cd.ctrOk(["task", "rm", id], { timeoutMs: 60_000 });
      await cd.ctrOk(["container", "rm", id]);
      await waitFor("the VM work dir to go", () => !dir || podDir(id) === undefined, 30_000);
      const after = await scrape();
      assert.equal(samples(after, "cove_pod_info", pod).length, 0, "the pod is gone from the node's metrics");
    });
  });
}

if (process.env.COVE_METRICS_BACKEND === "embedded") {
  podMetricsSuite("embedded"); // inside the nested test host
} else {
  podMetricsSuite("qemu");
  if (direct) podMetricsSuite("embedded");
  else {
    const skip = nestedUnavailable() ?? requireIntegration([...needs, ADDON_NEED]);
    if (skip) console.error(`!!! SKIPPED embedded metrics test: ${skip}`);
    test("metrics on the embedded VMM pass inside the nested test host (this host's KVM is not hardware-backed)", {
      skip,
      timeout: 450_000,
    }, async () => {
      const r = await runNested(`node --import tsx --test --test-reporter=spec test/integration/metrics.test.ts 2>&1`, {
        timeoutMs: 420_000,
        memoryMiB: 3072,
        env: { COVE_METRICS_BACKEND: "embedded", COVE_TEST_KERNEL: kernel, COVE_TEST_IMAGE: image },
      });
      const why = `inner run: status ${r.status}${r.timedOut ? " (timed out)" : ""} after ${r.wallMs} ms\n${r.output.slice(-12000)}\nnested console:\n${r.console.slice(-3000)}`;
      assert.equal(r.status, 0, why);
      assert.match(r.output, /ℹ pass [1-9]/, why);
      assert.match(r.output, /ℹ fail 0/, why);
      assert.match(r.output, /ℹ skipped 0/, why);
      console.log(`nested host run: ${r.wallMs} ms; ${/embedded: boot [^\n]*/.exec(r.output)?.[0]}`);
    });
  }
}
