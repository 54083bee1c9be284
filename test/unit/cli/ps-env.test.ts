// `cove ps` from pod run state (pod.json per VM work dir), `cove env` / `cove check` reading the
// config the shim reads (containerd's ConfigPath first), and the host checks on fake host files.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, test } from "node:test";
import { gzipSync } from "node:zlib";
import { containerdConfigPath, effectiveConfig } from "../../../src/cli/effective-config.ts";
import { coveEnv, formatEnv } from "../../../src/cli/env.ts";
import {
  cgroupCheck,
  type HostPaths,
  hostChecks,
  moduleState,
  tcCheck,
  tunCheck,
} from "../../../src/cli/host-checks.ts";
import { formatRows, formatUptime, podRows } from "../../../src/cli/ps.ts";
import { defaultConfig } from "../../../src/config/config.ts";
import { POD_STATE_FILE, type PodRunState, PodRunStateFile, parsePodState } from "../../../src/sandbox/run-state.ts";

let d: string;
beforeEach(() => {
  d = mkdtempSync(join(tmpdir(), "cove-ps-"));
});
afterEach(() => rmSync(d, { recursive: true, force: true }));

const state = (o: Partial<PodRunState> = {}): PodRunState => ({
  id: "a".repeat(64),
  namespace: "k8s.io",
  bundle: "/run/containerd/io.containerd.runtime.v2.task/k8s.io/aaaa",
  shimPid: 100,
  vmmPid: 100,
  backend: "embedded",
  accel: "kvm",
  vcpus: 1,
  memoryMib: 256,
  startedAt: "2026-12-05T00:00:00.000Z",
  bootMs: 900,
  containers: ["a".repeat(64)],
  ...o,
});

/** A fake /proc: the pids alive with their PSS. */
function fakeProc(pss: Record<number, number>): string {
  const proc = join(d, "proc");
  for (const [pid, kb] of Object.entries(pss)) {
    mkdirSync(join(proc, pid), { recursive: true });
    writeFileSync(join(proc, pid, "smaps_rollup"), `00400000-7fff [rollup]\nRss: 999 kB\nPss:  ${kb} kB\n`);
  }
  return proc;
}

test("pod.json follows the container table, and nothing recreates a torn-down work dir", () => {
  const work = join(d, "vm", "0123");
  mkdirSync(work, { recursive: true });
  const f = new PodRunStateFile(work, state({ containers: [] }));
  f.setContainers(["pod", "app"]);
  const rows = podRows(join(d, "vm"), Date.parse("2026-12-05T00:01:05Z"), fakeProc({ 100: 204800 })).rows;
  assert.deepEqual(rows[0]!.containers, ["pod", "app"]);
  rmSync(work, { recursive: true });
  f.setContainers(["pod"]);
  assert.deepEqual(podRows(join(d, "vm")).rows, []);
});

test("cove ps: VMM pid, backend, guest and host memory (VMM + shim PSS on qemu), uptime, containers", () => {
  const vm = join(d, "vm");
  const put = (name: string, text: string) => {
    mkdirSync(join(vm, name), { recursive: true });
    writeFileSync(join(vm, name, POD_STATE_FILE), text);
  };
  put("1", JSON.stringify(state()));
  put("2", JSON.stringify(state({ id: "b".repeat(64), backend: "qemu", accel: "tcg", vmmPid: 201, shimPid: 200 })));
  put("3", JSON.stringify(state({ id: "c".repeat(64), shimPid: 300, vmmPid: 300 })));
  put("4", "{not json");
  mkdirSync(join(vm, "5"));
  const proc = fakeProc({ 100: 102400, 200: 51200, 201: 153600 });
  const { rows, problems } = podRows(vm, Date.parse("2026-12-05T01:02:03Z"), proc);
  assert.equal(rows.length, 3);
  assert.equal(rows[0]!.hostPssKib, 102400, "embedded: the shim is the VMM, counted once");
  assert.equal(rows[1]!.hostPssKib, 204800, "qemu: QEMU and the shim");
  assert.equal(rows[2]!.alive, false);
  assert.equal(rows[2]!.hostPssKib, undefined);
  assert.equal(rows[0]!.uptimeSec, 3723);
  assert.equal(problems.length, 2, problems.join("\n"));
  assert.match(problems.join("\n"), /no pod.json/);
  const out = formatRows(rows);
  assert.match(out, /^POD +NAMESPACE +VMM PID +BACKEND +VCPUS +GUEST MEM +HOST PSS +UPTIME +CONTAINERS$/m);
  assert.match(out, /^aaaaaaaaaaaa +k8s\.io +100 +embedded\/kvm +1 +256 MiB +100 MiB +1h02m +1: aaaaaaaaaaaa$/m);
  assert.match(out, /^bbbbbbbbbbbb .* 201 +qemu\/tcg .* 200 MiB /m);
  assert.match(out, /300 \(shim gone\)/);
});

test("pod.json from elsewhere is refused field by field; uptime reads like ps", () => {
  assert.throws(() => parsePodState(JSON.stringify({ ...state(), vmmPid: -1 })), /not a pod state/);
  assert.throws(() => parsePodState(JSON.stringify({ ...state(), containers: [1] })), /not a pod state/);
  assert.deepEqual([5, 65, 3600, 90061].map(formatUptime), ["5s", "1m05s", "1h00m", "1d01h"]);
});

function containerdConfig(configPath: string, version: 2 | 3): string {
  const f = join(d, "containerd.toml");
  const table =
    version === 3
      ? "plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.vm"
      : 'plugins."io.containerd.grpc.v1.cri".containerd.runtimes.vm';
  writeFileSync(
    f,
    `version = ${version}\n[${table}]\nruntime_type = "io.containerd.cove.v2"\n[${table}.options]\nConfigPath = "${configPath}"\n`,
  );
  return f;
}

test("the config the shim reads: containerd's ConfigPath, then $COVE_CONFIG, then the default file", () => {
  const mine = join(d, "mine.toml");
  writeFileSync(mine, `cache_dir = "${join(d, "cache")}"\nhypervisor = "qemu"\n`);
  for (const v of [2, 3] as const) {
    const ctd = containerdConfig(mine, v);
    assert.deepEqual(containerdConfigPath(ctd), { handler: "vm", path: mine });
    const e = effectiveConfig({ containerdConfig: ctd, env: {}, defaultPath: join(d, "none.toml") });
    assert.equal(e.config.cacheDir, join(d, "cache"));
    assert.equal(e.config.guest.kernel, join(d, "cache", "guest", "kernel"), "the guest follows cache_dir");
    assert.match(e.how, /ConfigPath of containerd's runtime "vm"/);
  }
  const env = { COVE_CONFIG: mine };
  assert.equal(effectiveConfig({ containerdConfig: join(d, "no.toml"), env }).how, "$COVE_CONFIG");
  const none = effectiveConfig({ containerdConfig: join(d, "no.toml"), env: {}, defaultPath: join(d, "none.toml") });
  assert.equal(none.config.source, "built-in defaults");
  writeFileSync(mine, "hypervisor = 3\n");
  assert.throws(() => effectiveConfig({ configPath: mine }), /must be a string/);
});

test("cove env: the backend auto picks and why, the guest artifacts behind the symlinks", () => {
  const cache = join(d, "cache");
  mkdirSync(join(cache, "image", "k1"), { recursive: true });
  mkdirSync(join(cache, "guest"));
  writeFileSync(join(cache, "image", "k1", "rootfs.erofs"), "x".repeat(2048));
  writeFileSync(join(cache, "image", "k1", "runtime-features.json"), "{}");
  symlinkSync("../image/k1/rootfs.erofs", join(cache, "guest", "rootfs.erofs"));
  const config = { ...defaultConfig(), cacheDir: cache };
  config.guest = {
    ...config.guest,
    kernel: join(cache, "guest", "kernel"),
    image: join(cache, "guest", "rootfs.erofs"),
  };
  const hw = coveEnv({ config, how: "test" }, { kvm: true, hwVirt: "vmx", pvm: false });
  assert.deepEqual(hw.backend, { kind: "embedded", accel: "kvm", reason: "auto: /dev/kvm is backed by vmx" });
  assert.equal(hw.guest.image.real, join(cache, "image", "k1", "rootfs.erofs"));
  assert.equal(hw.guest.runtimeFeatures.bytes, 2);
  assert.equal(hw.guest.kernel.bytes, undefined);
  const text = formatEnv(hw);
  assert.match(text, /^hypervisor +auto -> embedded \(kvm\): auto: \/dev\/kvm is backed by vmx$/m);
  assert.match(text, /^guest kernel +.*kernel \(missing\)$/m);
  assert.match(text, /^cache_dir +.*cache$/m);
  const pvm = coveEnv({ config, how: "test" }, { kvm: true, hwVirt: null, pvm: true });
  assert.equal("kind" in pvm.backend && pvm.backend.kind, "qemu");
  assert.match(formatEnv(pvm), /kvm_pvm is loaded\), so QEMU with TCG/);
  const refused = coveEnv(
    { config: { ...config, hypervisor: "embedded" }, how: "t" },
    { kvm: false, hwVirt: null, pvm: false },
  );
  assert.match(formatEnv(refused), /cannot run: hypervisor = "embedded" needs KVM/);
});

function hostPaths(): HostPaths {
  return {
    tun: join(d, "tun"),
    cgroupRoot: join(d, "cgroup"),
    sysModule: join(d, "module"),
    libModules: join(d, "lib-modules"),
    kernelConfigs: [join(d, "config.gz")],
    path: "/usr/sbin:/usr/bin:/sbin:/bin",
  };
}

test("host checks: tun, tc modules (loaded, listed or configured; unknown is a warning), cgroups, backend", () => {
  const p = hostPaths();
  assert.equal(tunCheck(p).ok, false);
  writeFileSync(p.tun, "");
  assert.equal(tunCheck(p).ok, true);

  const m = { module: "act_mirred", symbol: "CONFIG_NET_ACT_MIRRED" };
  assert.equal(moduleState(m, p), "unknown");
  const tc = tcCheck(p);
  assert.equal(tc.ok, false);
  assert.equal(tc.required, false, `unknown is a warning: ${tc.detail}`);
  writeFileSync(
    p.kernelConfigs[0]!,
    gzipSync("CONFIG_NET_SCH_INGRESS=y\nCONFIG_NET_CLS_U32=m\n# CONFIG_NET_ACT_MIRRED is not set\n"),
  );
  assert.equal(moduleState(m, p), "no");
  const lacking = tcCheck(p);
  assert.equal(lacking.required, true);
  assert.match(lacking.detail, /lacks act_mirred$|lacks act_mirred \(/);
  mkdirSync(join(p.sysModule, "act_mirred"), { recursive: true });
  assert.equal(tcCheck(p).ok, true);

  assert.equal(cgroupCheck(p).ok, false);
  mkdirSync(p.cgroupRoot);
  writeFileSync(join(p.cgroupRoot, "cgroup.controllers"), "cpuset cpu io pids\n");
  assert.match(cgroupCheck(p).detail, /without memory/);
  writeFileSync(join(p.cgroupRoot, "cgroup.controllers"), "cpuset cpu io memory pids\n");
  assert.equal(cgroupCheck(p).ok, true);

  const config = { ...defaultConfig(), qemu: { ...defaultConfig().qemu, binary: join(d, "no-qemu") } };
  const onHw = hostChecks(config, { kvm: true, hwVirt: "svm", pvm: false }, p);
  const qemu = onHw.find((c) => c.name === "qemu")!;
  assert.deepEqual([qemu.ok, qemu.required], [false, false], "the embedded VMM needs no QEMU");
  const onPvm = hostChecks(config, { kvm: true, hwVirt: null, pvm: true }, p);
  assert.deepEqual(
    onPvm.filter((c) => c.name === "qemu").map((c) => [c.ok, c.required]),
    [[false, true]],
    "TCG needs QEMU",
  );
  const embedded = hostChecks({ ...config, hypervisor: "embedded" }, { kvm: false, hwVirt: null, pvm: false }, p);
  assert.equal(embedded.find((c) => c.name === "backend")!.ok, false);
});
