// Honest accounting: a CRI pod's shim and VMM run in the pod's cgroup, so the node charges the pod
// for them (what Kata's `sandbox_cgroup_only` does). The cgroup is the sandbox's `linux.cgroupsPath`
// from containerd's CRI, under the pod cgroup kubelet made and limited to the pod's limits plus the
// RuntimeClass overhead (docs/density.md states the budget). Its two forms:
// - cgroupfs: a path, "/kubepods/burstable/pod<uid>/<sandbox id>";
// - systemd (containerd's CRI uses it when the parent is a slice, i.e. kubelet runs the systemd
//   driver): "kubepods-burstable-pod<uid>.slice:cri-containerd:<sandbox id>", which is the scope
//   cri-containerd-<id>.scope under the slice's expanded path (runc's naming). The directory is
//   made here, not through systemd's D-Bus API, so systemd does not know the scope as a unit.
// The shim joins before it starts the VMM, which inherits the cgroup. On cgroup v1 every hierarchy
// that accounts (not cpuset, whose empty cpus/mems would refuse the join, nor devices) is joined,
// with memory.move_charge_at_immigrate so the shim's pages move with it; on v2 the shim's pages
// from before the join stay charged where they were (a few MiB of Node start-up).
// When the shim exits it moves back to where it was and removes the directories it made. A failed
// join is a warning: the pod runs, charged as before.
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import { errorMessage } from "../common/errors.ts";
import type { Json } from "./oci.ts";
import { isSandboxContainer } from "./sandbox-container.ts";

/** A mounted cgroup hierarchy. */
export interface CgroupMount {
  /** Where it is mounted, e.g. /sys/fs/cgroup/memory (v1) or /sys/fs/cgroup (v2). */
  mountPoint: string;
  version: 1 | 2;
  /** v1: its controllers from the mount options (memory, cpu, name=systemd, …); v2: empty. */
  controllers: string[];
  /** The cgroup of this hierarchy that is mounted there ("/" outside a cgroup namespace). */
  root: string;
}

/** v1 hierarchies not joined: cpuset refuses tasks until cpus/mems are set, devices accounts nothing. */
const V1_SKIPPED = new Set(["cpuset", "devices"]);

const V1_CONTROLLERS = new Set([
  "cpu",
  "cpuacct",
  "cpuset",
  "memory",
  "devices",
  "freezer",
  "net_cls",
  "blkio",
  "perf_event",
  "net_prio",
  "hugetlb",
  "pids",
  "rdma",
  "misc",
]);

/** The cgroup hierarchies in a mountinfo text (/proc/self/mountinfo), each mount point once. */
export function parseCgroupMounts(mountinfo: string): CgroupMount[] {
  const out: CgroupMount[] = [];
  const seen = new Set<string>();
  for (const line of mountinfo.split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const pre = line.slice(0, sep).split(" ");
    const [fstype, , superOpts = ""] = line.slice(sep + 3).split(" ");
    const root = pre[3];
    const mountPoint = pre[4]?.replace(/\\040/g, " ");
    if (!root || !mountPoint || seen.has(mountPoint)) continue;
    if (fstype === "cgroup2") {
      out.push({ mountPoint, version: 2, controllers: [], root });
    } else if (fstype === "cgroup") {
      const controllers = superOpts.split(",").filter((o) => V1_CONTROLLERS.has(o) || o.startsWith("name="));
      out.push({ mountPoint, version: 1, controllers, root });
    } else continue;
    seen.add(mountPoint);
  }
  return out;
}

function invalid(cgroupsPath: string, why: string): Error {
  return new Error(`cgroupsPath ${JSON.stringify(cgroupsPath)}: ${why}`);
}

/** A systemd slice name as its path: "a-b-c.slice" → "a.slice/a-b.slice/a-b-c.slice"; "-.slice" → "". */
export function expandSlice(slice: string): string {
  if (!slice.endsWith(".slice") || slice.includes("/")) throw invalid(slice, "not a slice name");
  const name = slice.slice(0, -".slice".length);
  if (name === "-") return "";
  if (name === "" || name.startsWith("-") || name.endsWith("-") || name.includes("--"))
    throw invalid(slice, "malformed slice name");
  const parts = name.split("-");
  return parts.map((_, i) => `${parts.slice(0, i + 1).join("-")}.slice`).join("/");
}

/**
 * The cgroup a cgroupsPath names, relative to a hierarchy's root, without a leading slash: either
 * form (see the top of this file). Refuses "..", empty names and NUL.
 */
export function cgroupDirOf(cgroupsPath: string): string {
  if (cgroupsPath.includes("\0")) throw invalid(cgroupsPath, "NUL");
  let rel: string;
  const colon = cgroupsPath.split(":");
  if (colon.length === 3 && !cgroupsPath.startsWith("/")) {
    const [slice, prefix, name] = colon as [string, string, string];
    if (!name || name.includes("/")) throw invalid(cgroupsPath, "no unit name");
    const unit = name.endsWith(".slice") ? name : `${prefix ? `${prefix}-` : ""}${name}.scope`;
    rel = [expandSlice(slice || "-.slice"), unit].filter(Boolean).join("/");
  } else {
    rel = cgroupsPath.replace(/^\/+/, "").replace(/\/+$/, "");
  }
  const parts = rel.split("/");
  if (rel === "" || parts.some((p) => p === "" || p === "." || p === "..")) throw invalid(cgroupsPath, "bad path");
  return rel;
}

/** The cgroup path a CRI sandbox spec gives the pod, or undefined (not a CRI sandbox, or none given). */
export function podCgroupsPath(oci: Json): string | undefined {
  if (!isSandboxContainer(oci)) return undefined;
  const linux = oci.linux;
  if (typeof linux !== "object" || linux === null || Array.isArray(linux)) return undefined;
  const p = (linux as Json).cgroupsPath;
  return typeof p === "string" && p !== "" ? p : undefined;
}

/** This process's cgroup in each hierarchy, from /proc/self/cgroup: "memory" / "name=systemd" / "" (v2) → path. */
export function parseProcCgroup(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.split("\n")) {
    const a = line.indexOf(":");
    const b = line.indexOf(":", a + 1);
    if (a < 0 || b < 0) continue;
    for (const c of line.slice(a + 1, b).split(",")) m.set(c, line.slice(b + 1));
  }
  return m;
}

/** Host access, so unit tests can run on a fake cgroupfs. */
export interface CgroupHost {
  mounts: () => CgroupMount[];
  /** /proc/self/cgroup's text. */
  ownCgroups: () => string;
  pid: number;
}

export const realCgroupHost: CgroupHost = {
  mounts: () => parseCgroupMounts(readFileSync("/proc/self/mountinfo", "utf8")),
  ownCgroups: () => readFileSync("/proc/self/cgroup", "utf8"),
  pid: process.pid,
};

export interface PodCgroup {
  /** The pod cgroup's directory in each joined hierarchy. */
  dirs: string[];
  /** Moves this process back where it was and removes the directories it made (idempotent). */
  leave(log?: Logger): void;
}

/**
 * rmdir that waits a little while the cgroup still has a task: the VMM, killed just before the shim
 * exits, may not have left yet (at exit there is no event loop to wait on, so it sleeps).
 */
function rmdirSettled(dir: string): void {
  for (let i = 0; ; i++) {
    try {
      rmdirSync(dir);
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return;
      if (code !== "EBUSY" || i >= 50) throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
    }
  }
}

function keyOf(m: CgroupMount): string {
  return m.version === 2 ? "" : (m.controllers.find((c) => c.startsWith("name=")) ?? m.controllers[0] ?? "");
}

/**
 * Moves this process (and so everything it starts later: the VMM) into the pod's cgroup in every
 * hierarchy it accounts in. Undefined when the spec gives none; throws when a join fails, having
 * undone what it did.
 */
export function joinCgroup(cgroupsPath: string, host: CgroupHost = realCgroupHost): PodCgroup {
  const rel = cgroupDirOf(cgroupsPath);
  const own = parseProcCgroup(host.ownCgroups());
  const joined: { dir: string; back: string; made: string[] }[] = [];
  const leave = (log?: Logger) => {
    for (const j of joined.splice(0).reverse()) {
      try {
        writeFileSync(join(j.back, "cgroup.procs"), String(host.pid));
        for (const d of j.made.reverse()) rmdirSettled(d);
      } catch (e) {
        log?.warn({ cgroup: j.dir, err: errorMessage(e) }, "pod cgroup: could not leave or remove");
      }
    }
  };
  try {
    for (const m of host.mounts()) {
      if (m.version === 1 && (m.controllers.length === 0 || m.controllers.some((c) => V1_SKIPPED.has(c)))) continue;
      // A hierarchy mounted at a cgroup other than its root (a cgroup namespace, a container) holds
      // paths relative to that: the CRI's path is from the hierarchy's root, as seen there.
      const dir = join(m.mountPoint, rel);
      const made: string[] = [];
      let at = m.mountPoint;
      for (const part of rel.split("/")) {
        at = join(at, part);
        if (existsSync(at)) continue;
        mkdirSync(at);
        made.push(at);
      }
      const ownPath = own.get(keyOf(m)) ?? "/";
      const back = join(m.mountPoint, ownPath.startsWith(m.root) ? ownPath.slice(m.root.length) : "");
      if (m.controllers.includes("memory")) {
        // Deprecated upstream but still honoured on v1: the shim's pages follow it into the pod.
        try {
          writeFileSync(join(dir, "memory.move_charge_at_immigrate"), "3");
        } catch {
          // a kernel without it: only new pages are charged to the pod
        }
      }
      try {
        writeFileSync(join(dir, "cgroup.procs"), String(host.pid));
      } catch (e) {
        for (const d of made.reverse()) rmdirSync(d);
        throw e;
      }
      joined.push({ dir, back, made });
    }
  } catch (e) {
    leave();
    throw e;
  }
  return { dirs: joined.map((j) => j.dir), leave };
}

/**
 * The hook pod boot calls first: joins the CRI sandbox's cgroup when it names one, and leaves it
 * when the shim exits. A failure is logged, and the pod boots charged as before.
 */
export function joinPodCgroup(oci: Json, log: Logger, host: CgroupHost = realCgroupHost): PodCgroup | undefined {
  const path = podCgroupsPath(oci);
  if (path === undefined) return undefined;
  try {
    const cg = joinCgroup(path, host);
    if (cg.dirs.length === 0) {
      log.warn(
        { cgroupsPath: path },
        "pod cgroup: no cgroup hierarchy mounted here; the shim and VMM are not charged to the pod",
      );
      return undefined;
    }
    process.once("exit", () => cg.leave());
    log.info({ cgroupsPath: path, dirs: cg.dirs }, "pod cgroup: the shim and its VMM run in the pod's cgroup");
    return cg;
  } catch (e) {
    log.warn(
      { cgroupsPath: path, err: errorMessage(e) },
      "pod cgroup: could not join the pod's cgroup; the shim and VMM stay charged where they run",
    );
    return undefined;
  }
}
