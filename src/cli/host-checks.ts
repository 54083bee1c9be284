// `cove check`'s host checks: what the runtime needs from this machine besides its own files — the
// backend the configuration picks (KVM with hardware virtualization for the embedded VMM, or QEMU),
// /dev/net/tun for the pod's taps, tc (with mirred redirects, u32 and the ingress qdisc) and nsenter
// for the pod network (src/network/), and cgroups.
import { existsSync, readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import { errorMessage } from "../common/errors.ts";
import { which } from "../common/exec.ts";
import type { CoveConfig } from "../config/config.ts";
import type { HostKvm } from "../hypervisor/host.ts";
import { chooseBackend } from "../hypervisor/select.ts";
import type { CheckResult } from "./check.ts";

export interface HostPaths {
  tun: string;
  cgroupRoot: string;
  /** /sys/module: a built-in or loaded module has a directory there. */
  sysModule: string;
  /** /lib/modules/<release>/modules.builtin and modules.dep list built-in and loadable modules. */
  libModules: string;
  /** The kernel's config: /proc/config.gz, /boot/config-<release>. */
  kernelConfigs: string[];
  path: string;
}

export function defaultHostPaths(env: NodeJS.ProcessEnv = process.env): HostPaths {
  let release = "";
  try {
    release = readFileSync("/proc/sys/kernel/osrelease", "utf8").trim();
  } catch {
    // unknown: module lookups below fall back to /sys/module only
  }
  return {
    tun: "/dev/net/tun",
    cgroupRoot: "/sys/fs/cgroup",
    sysModule: "/sys/module",
    libModules: `/lib/modules/${release}`,
    kernelConfigs: ["/proc/config.gz", `/boot/config-${release}`],
    path: `${env.PATH ?? ""}:/usr/sbin:/sbin`,
  };
}

/** The backend the `hypervisor` setting picks here; QEMU is required only when it is QEMU. */
export function backendChecks(config: CoveConfig, host: HostKvm, path: string): CheckResult[] {
  let kind: string;
  let detail: string;
  try {
    const c = chooseBackend(config.hypervisor, host);
    kind = c.kind;
    detail = `${config.hypervisor} -> ${c.kind} (${c.accel}): ${c.reason}`;
  } catch (e) {
    return [
      {
        name: "backend",
        ok: false,
        required: true,
        detail: errorMessage(e),
        fix: 'set hypervisor = "auto" in the cove config, or enable virtualization for this machine',
      },
    ];
  }
  const out: CheckResult[] = [{ name: "backend", ok: true, required: true, detail }];
  const bin = config.qemu.binary;
  const qemu = bin.includes("/") ? (existsSync(bin) ? bin : undefined) : which(bin, path);
  out.push(
    qemu
      ? { name: "qemu", ok: true, required: kind === "qemu", detail: qemu }
      : {
          name: "qemu",
          ok: false,
          required: kind === "qemu",
          detail: `${bin} not found${kind === "qemu" ? " (the chosen backend)" : ' (only needed for hypervisor = "qemu")'}`,
          fix: "apt-get install -y qemu-system-x86",
        },
  );
  return out;
}

/** The tc pieces the pod network uses: kernel module name and Kconfig symbol. */
export const TC_MODULES = [
  { module: "sch_ingress", symbol: "CONFIG_NET_SCH_INGRESS" },
  { module: "cls_u32", symbol: "CONFIG_NET_CLS_U32" },
  { module: "act_mirred", symbol: "CONFIG_NET_ACT_MIRRED" },
] as const;

const readOr = (path: string): string | undefined => {
  try {
    return path.endsWith(".gz") ? gunzipSync(readFileSync(path)).toString() : readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
};

/**
 * Whether a kernel module is there: loaded (/sys/module), listed as built in or loadable
 * (/lib/modules/<release>), or =y/=m in the kernel's config (/proc/config.gz, /boot/config-*).
 * "unknown" when this host offers none of those to look at.
 */
export function moduleState(m: { module: string; symbol: string }, p: HostPaths): "yes" | "no" | "unknown" {
  if (existsSync(`${p.sysModule}/${m.module}`)) return "yes";
  let looked = false;
  for (const f of ["modules.builtin", "modules.dep"]) {
    const text = readOr(`${p.libModules}/${f}`);
    if (text === undefined) continue;
    looked = true;
    if (new RegExp(`/${m.module}\\.ko(\\.[a-z]+)?:?`, "m").test(text)) return "yes";
  }
  for (const f of p.kernelConfigs) {
    const text = readOr(f);
    if (text === undefined) continue;
    looked = true;
    if (new RegExp(`^${m.symbol}=[ym]$`, "m").test(text)) return "yes";
  }
  return looked ? "no" : "unknown";
}

export function tunCheck(p: HostPaths): CheckResult {
  return existsSync(p.tun)
    ? { name: "tun", ok: true, required: true, detail: `${p.tun} (the pod's taps)` }
    : {
        name: "tun",
        ok: false,
        required: true,
        detail: `${p.tun} missing: pods with a network cannot get their taps`,
        fix: "modprobe tun",
      };
}

export function tcCheck(p: HostPaths): CheckResult {
  const name = "tc";
  const missing = ["tc", "nsenter"].filter((b) => !which(b, p.path));
  if (missing.length) {
    return {
      name,
      ok: false,
      required: true,
      detail: `${missing.join(" and ")} not on PATH (the pod network redirects with tc inside the pod's netns)`,
      fix: "apt-get install -y iproute2 util-linux",
    };
  }
  const states = TC_MODULES.map((m) => ({ ...m, state: moduleState(m, p) }));
  const mods = states.filter((m) => m.state === "no").map((m) => m.module);
  if (mods.length) {
    return {
      name,
      ok: false,
      required: true,
      detail: `kernel lacks ${mods.join(", ")} (ingress qdisc, u32 filter, mirred redirect)`,
      fix: `modprobe ${mods.join(" ")}  # or a kernel with them`,
    };
  }
  const unknown = states.filter((m) => m.state === "unknown").map((m) => m.module);
  if (unknown.length) {
    return {
      name,
      ok: false,
      required: false,
      detail: `tc, nsenter; cannot tell whether the kernel has ${unknown.join(", ")} (no module lists or kernel config to read)`,
    };
  }
  return { name, ok: true, required: true, detail: "tc, nsenter; ingress qdisc, u32 and mirred in the kernel" };
}

export function cgroupCheck(p: HostPaths): CheckResult {
  const name = "cgroups";
  try {
    const controllers = readFileSync(`${p.cgroupRoot}/cgroup.controllers`, "utf8").trim().split(/\s+/);
    const lack = ["cpu", "memory"].filter((c) => !controllers.includes(c));
    return lack.length
      ? {
          name,
          ok: false,
          required: false,
          detail: `cgroup v2 without ${lack.join(", ")}: pod overhead and limits are not enforced on the host`,
          fix: "enable the controllers (systemd.unified_cgroup_hierarchy=1, cgroup_enable=memory)",
        }
      : { name, ok: true, required: false, detail: `cgroup v2 (${controllers.join(" ")})` };
  } catch {
    return existsSync(`${p.cgroupRoot}/memory`)
      ? { name, ok: true, required: false, detail: "cgroup v1 (memory controller mounted)" }
      : {
          name,
          ok: false,
          required: false,
          detail: `no cgroup v2 or v1 memory hierarchy under ${p.cgroupRoot}`,
          fix: "mount cgroup2 on /sys/fs/cgroup",
        };
  }
}

export function hostChecks(config: CoveConfig, host: HostKvm, p: HostPaths = defaultHostPaths()): CheckResult[] {
  return [...backendChecks(config, host, p.path), tunCheck(p), tcCheck(p), cgroupCheck(p)];
}
