// Judges two probes (run.ts) of the same container under runc and under cove: every difference is
// either explained by an entry of EXPLAINED (each one a row of docs/container-view.md, by its id)
// or reported. The cgroup rows cannot be compared with runc on a cgroup v1 host: cgroupV2Problems()
// checks cove's against what runc gives on a cgroup v2 host instead.
import type { Probe } from "./run.ts";

export type Via = "ctr" | "cri";

export interface Difference {
  section: string;
  /** The line's key in a keyed section (a mount point, a /dev path, a variable, a limit). */
  key?: string;
  runc: string;
  cove: string;
}

export interface Explained {
  /** Row id in docs/container-view.md. */
  id: string;
  section: string | RegExp;
  /** Only lines whose key matches (keyed sections). */
  key?: RegExp;
  /** Only through this client (ctr's and CRI's specs differ). */
  via?: Via;
  why: string;
}

/** Sections compared line by line, keyed by what names the line. */
const KEYS: Record<string, (line: string) => string> = {
  mounts: (l) => l.split(" ")[0]!,
  dev: (l) => l.split(" ")[0]!,
  env: (l) => l.split("=")[0]!,
  status: (l) => l.split(":")[0]!,
  limits: (l) => l.replace(/ (unlimited|\d+) .*$/, ""),
};

const CGROUP_SECTIONS = /^cgroup($|_|:)/;

/** The differences cove may show, each with its reason; the same rows are in docs/container-view.md. */
export const EXPLAINED: readonly Explained[] = [
  { id: "kernel", section: /^(kernel|boot_id)$/, why: "the guest's own kernel and boot" },
  {
    id: "cgroup-v1-host",
    section: CGROUP_SECTIONS,
    why: "the host is cgroup v1: runc's side is a v1 view; cove's is checked against runc's v2 view instead",
  },
  { id: "cgroup-v1-host", section: "mounts", key: /^\/sys\/fs\/cgroup(\/|$)/, why: "as above, for the mounts" },
  {
    id: "rootfs",
    section: "mounts",
    key: /^\/$/,
    why: "the overlay's layers are the guest's block devices, not the host's snapshot directories",
  },
  {
    id: "etc-files",
    section: "mounts",
    key: /^\/etc\/(hosts|hostname|resolv\.conf)$/,
    via: "cri",
    why: "the pod's /etc files live on a guest tmpfs, not on the host's disk",
  },
  {
    id: "sysfs",
    section: "mounts",
    key: /^\/sys(\/firmware)?$/,
    why: "containers share the VM's network namespace, so crun binds the guest's sysfs (its superblock rw) instead of a fresh read-only one; /sys/firmware is masked by crun's empty tmpfs",
  },
  {
    id: "proc-masks",
    section: "mounts",
    key: /^\/proc\/(acpi|keys|timer_list|sysrq-trigger|bus|fs|irq|sys|kcore|latency_stats|scsi)$/,
    why: "crun (the guest's runtime) masks files with the guest's /dev/null and remounts read-only paths with MS_RDONLY only; the guest kernel has no /proc/acpi, the host's no /proc/sysrq-trigger",
  },
  {
    id: "rlimits-ram",
    section: "limits",
    key: /^Max (processes|pending signals)$/,
    why: "the kernel sizes RLIMIT_NPROC and RLIMIT_SIGPENDING from RAM: the guest's, not the host's",
  },
  {
    id: "rlimit-nofile",
    section: "limits",
    key: /^Max open files$/,
    via: "cri",
    why: "a CRI spec sets no RLIMIT_NOFILE, so runc passes on containerd's own; in the guest the agent's applies",
  },
  {
    id: "hostname-ctr",
    section: "hostname",
    via: "ctr",
    why: "runc leaves the host's name; the guest is named after the container",
  },
  { id: "dev-core", section: "dev", key: /^\/dev\/core$/, why: "crun adds the /dev/core → /proc/kcore link" },
  {
    id: "dev-null-owner",
    section: "dev",
    key: /^\/dev\/null$/,
    why: "crun gives the container's stdio to its user, stdin = the container's own /dev/null when none is attached (mode 0666 either way)",
  },
  {
    id: "etc-hosts",
    section: "etc_hosts",
    via: "cri",
    why: "containerd copies the host's /etc/hosts into a pod without kubelet's hosts file; cove writes the pod's own (localhost, the pod's hostname)",
  },
  { id: "vm-size", section: /^(nproc|meminfo)$/, why: "the VM's vCPUs and RAM (sized from the pod), not the host's" },
];

function keyed(section: string, lines: string[]): Map<string, string> {
  const key = KEYS[section]!;
  const out = new Map<string, string>();
  for (const l of lines) {
    const k = key(l);
    out.set(k, out.has(k) ? `${out.get(k)}\n${l}` : l);
  }
  return out;
}

/** Every difference between the two probes, section by section (keyed sections line by line). */
export function differences(runc: Probe, cove: Probe): Difference[] {
  const out: Difference[] = [];
  for (const section of new Set([...runc.keys(), ...cove.keys()])) {
    const r = runc.get(section) ?? [];
    const c = cove.get(section) ?? [];
    if (KEYS[section]) {
      const rk = keyed(section, r);
      const ck = keyed(section, c);
      for (const key of new Set([...rk.keys(), ...ck.keys()])) {
        const a = rk.get(key) ?? "(none)";
        const b = ck.get(key) ?? "(none)";
        if (a !== b) out.push({ section, key, runc: a, cove: b });
      }
    } else if (r.join("\n") !== c.join("\n")) {
      out.push({ section, runc: r.join("\n") || "(none)", cove: c.join("\n") || "(none)" });
    }
  }
  return out;
}

export function explanation(d: Difference, via: Via): Explained | undefined {
  return EXPLAINED.find(
    (e) =>
      (typeof e.section === "string" ? e.section === d.section : e.section.test(d.section)) &&
      (!e.key || (d.key !== undefined && e.key.test(d.key))) &&
      (!e.via || e.via === via),
  );
}

/** Splits the differences into explained (with their entry) and unexplained. */
export function judge(
  runc: Probe,
  cove: Probe,
  via: Via,
): { explained: Array<[Difference, Explained]>; unexplained: Difference[] } {
  const explained: Array<[Difference, Explained]> = [];
  const unexplained: Difference[] = [];
  for (const d of differences(runc, cove)) {
    const e = explanation(d, via);
    if (e) explained.push([d, e]);
    else unexplained.push(d);
  }
  return { explained, unexplained };
}

export function formatDifference(d: Difference): string {
  const where = d.key === undefined ? d.section : `${d.section} ${d.key}`;
  return `${where}\n    runc: ${d.runc.replace(/\n/g, "\n          ")}\n    cove: ${d.cove.replace(/\n/g, "\n          ")}`;
}

export interface CgroupLimits {
  memoryBytes?: number;
  cpuQuota?: number;
  cpuPeriod?: number;
  cpuShares?: number;
  pids?: number;
}

/** runc's cpu.weight for OCI cpu shares (libcontainer ConvertCPUSharesToCgroupV2Value; crun agrees). */
export function sharesToWeight(shares: number): number {
  return 1 + Math.floor(((shares - 2) * 9999) / 262142);
}

/**
 * What runc shows a non-privileged container on a cgroup v2 host (runc 1.1: its own cgroup
 * namespace, a read-only cgroup2 mount of its cgroup; fs2 writes memory.max, cpu.max
 * "<quota> <period>", cpu.weight from the shares and pids.max), checked on cove's probe.
 */
export function cgroupV2Problems(cove: Probe, limits: CgroupLimits): string[] {
  const problems: string[] = [];
  const one = (s: string) => (cove.get(s) ?? []).join("\n");
  const expect = (what: string, got: string, want: string) => {
    if (got !== want) problems.push(`${what}: ${JSON.stringify(got)}, runc on cgroup v2: ${JSON.stringify(want)}`);
  };
  expect("/proc/self/cgroup", one("cgroup"), "0::/");
  const mounts = (cove.get("mounts") ?? []).filter((l) => /^\/sys\/fs\/cgroup(\/| )/.test(l));
  expect(
    "cgroup mounts",
    mounts.map((l) => l.split(" ").slice(0, 3).join(" ")).join("\n"),
    "/sys/fs/cgroup cgroup2 ro,nosuid,nodev,noexec,relatime",
  );
  expect("writable", one("cgroup_writable"), "no");
  for (const f of ["cgroup.controllers", "memory.max", "cpu.max", "pids.max", "cpu.weight"])
    if (!(cove.get("cgroup_files") ?? []).includes(f)) problems.push(`${f} missing from /sys/fs/cgroup`);
  expect("memory.max", one("cgroup:memory.max"), limits.memoryBytes ? String(limits.memoryBytes) : "max");
  expect(
    "cpu.max",
    one("cgroup:cpu.max"),
    `${limits.cpuQuota && limits.cpuQuota > 0 ? limits.cpuQuota : "max"} ${limits.cpuPeriod ?? 100000}`,
  );
  expect("pids.max", one("cgroup:pids.max"), limits.pids ? String(limits.pids) : "max");
  expect("cpu.weight", one("cgroup:cpu.weight"), String(limits.cpuShares ? sharesToWeight(limits.cpuShares) : 100));
  return problems;
}
