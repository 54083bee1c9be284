// The containers' cgroups: the sandbox's cgroup root (controllers enabled), and what the agent reads
// back: pids, OOM kills and statistics shaped as io.containerd.cgroups.v2.Metrics. The guest runs
// cgroup v2; a cgroup v1 (hybrid) host, where the agent runs for tests, gets the same numbers from
// the v1 files where they exist.
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export type CgroupVersion = 1 | 2;

const V1_CONTROLLERS = ["memory", "pids", "cpu", "cpuacct", "cpuset", "blkio", "freezer", "devices"];
const MAX_U64 = "18446744073709551615";

function read(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

/** "key value" lines (memory.stat, cpu.stat, memory.events) → numbers. */
export function parseKeyValues(text: string | undefined): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of (text ?? "").split("\n")) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined && /^\d+$/.test(v)) m.set(k, Number(v));
  }
  return m;
}

/** A single-number file; "max" → the uint64 maximum (as containerd reports "no limit"); absent → 0. */
function num(text: string | undefined): number | string {
  const t = text?.trim();
  if (!t) return 0;
  if (t === "max") return MAX_U64;
  return /^\d+$/.test(t) ? Number(t) : 0;
}

/** io.stat lines "8:0 rbytes=1 wbytes=2 rios=3 wios=4 ..." → IOEntry objects. */
export function parseIoStat(text: string | undefined): Array<Record<string, number>> {
  const out: Array<Record<string, number>> = [];
  for (const line of (text ?? "").split("\n")) {
    const [dev, ...kv] = line.trim().split(/\s+/);
    const mm = /^(\d+):(\d+)$/.exec(dev ?? "");
    if (!mm) continue;
    const e: Record<string, number> = { major: Number(mm[1]), minor: Number(mm[2]) };
    for (const pair of kv) {
      const [k, v] = pair.split("=");
      if (k && v && ["rbytes", "wbytes", "rios", "wios"].includes(k)) e[k] = Number(v);
    }
    out.push(e);
  }
  return out;
}

const MEMORY_STAT_KEYS = [
  "anon",
  "file",
  "kernel_stack",
  "slab",
  "sock",
  "shmem",
  "file_mapped",
  "file_dirty",
  "file_writeback",
  "anon_thp",
  "inactive_anon",
  "active_anon",
  "inactive_file",
  "active_file",
  "unevictable",
  "slab_reclaimable",
  "slab_unreclaimable",
  "pgfault",
  "pgmajfault",
  "workingset_refault",
  "workingset_activate",
  "workingset_nodereclaim",
  "pgrefill",
  "pgscan",
  "pgsteal",
  "pgactivate",
  "pgdeactivate",
  "pglazyfree",
  "pglazyfreed",
  "thp_fault_alloc",
  "thp_collapse_alloc",
];

export class Cgroups {
  readonly version: CgroupVersion;

  constructor(readonly mount = "/sys/fs/cgroup") {
    this.version = existsSync(join(mount, "cgroup.controllers")) ? 2 : 1;
  }

  /** Directory of `path` (e.g. /cove/c1) for a v1 controller, or the v2 directory. */
  dir(path: string, controller = "memory"): string {
    return this.version === 2 ? join(this.mount, path) : join(this.mount, controller, path);
  }

  /** Creates the sandbox's cgroup root with every available controller enabled for its children. */
  setupRoot(root: string): void {
    if (this.version === 1) return; // the runtime creates v1 directories per controller itself
    const enableAll = (dir: string) => {
      const avail = (read(join(dir, "cgroup.controllers")) ?? "").trim().split(/\s+/).filter(Boolean);
      if (avail.length === 0) return;
      try {
        writeFileSync(join(dir, "cgroup.subtree_control"), avail.map((c) => `+${c}`).join(" "));
      } catch {
        // one at a time: a controller that cannot be enabled here must not block the others
        for (const c of avail) {
          try {
            writeFileSync(join(dir, "cgroup.subtree_control"), `+${c}`);
          } catch {}
        }
      }
    };
    enableAll(this.mount);
    const dir = join(this.mount, root);
    mkdirSync(dir, { recursive: true });
    enableAll(dir);
  }

  /** Removes the (empty) sandbox root; failures are returned, not thrown. */
  removeRoot(root: string): string[] {
    const dirs = this.version === 2 ? [join(this.mount, root)] : V1_CONTROLLERS.map((c) => join(this.mount, c, root));
    const failed: string[] = [];
    for (const d of dirs) {
      if (!existsSync(d)) continue;
      try {
        rmdirSync(d);
      } catch {
        failed.push(d);
      }
    }
    return failed;
  }

  pids(path: string): number[] {
    const text = read(join(this.dir(path, "pids"), "cgroup.procs")) ?? read(join(this.dir(path), "cgroup.procs")) ?? "";
    return text
      .split("\n")
      .filter((l) => /^\d+$/.test(l.trim()))
      .map(Number);
  }

  /** The file whose change signals an OOM kill (v2 memory.events; v1 memory.oom_control). */
  oomFile(path: string): string {
    return join(this.dir(path), this.version === 2 ? "memory.events" : "memory.oom_control");
  }

  /** How many processes the OOM killer killed in this cgroup so far. */
  oomKills(path: string): number {
    return parseKeyValues(read(this.oomFile(path))).get("oom_kill") ?? 0;
  }

  /** io.containerd.cgroups.v2.Metrics (plain object) for the cgroup at `path`. */
  stats(path: string): Record<string, unknown> {
    return this.version === 2 ? this.statsV2(path) : this.statsV1(path);
  }

  private statsV2(path: string): Record<string, unknown> {
    const d = join(this.mount, path);
    const f = (name: string) => read(join(d, name));
    const cpu = parseKeyValues(f("cpu.stat"));
    const mem = parseKeyValues(f("memory.stat"));
    const ev = parseKeyValues(f("memory.events"));
    const memory: Record<string, unknown> = {};
    for (const k of MEMORY_STAT_KEYS) memory[k] = mem.get(k) ?? 0;
    Object.assign(memory, {
      usage: num(f("memory.current")),
      usage_limit: num(f("memory.max")),
      swap_usage: num(f("memory.swap.current")),
      swap_limit: num(f("memory.swap.max")),
      max_usage: num(f("memory.peak")),
      swap_max_usage: num(f("memory.swap.peak")),
    });
    return {
      pids: { current: num(f("pids.current")), limit: num(f("pids.max")) },
      cpu: {
        usage_usec: cpu.get("usage_usec") ?? 0,
        user_usec: cpu.get("user_usec") ?? 0,
        system_usec: cpu.get("system_usec") ?? 0,
        nr_periods: cpu.get("nr_periods") ?? 0,
        nr_throttled: cpu.get("nr_throttled") ?? 0,
        throttled_usec: cpu.get("throttled_usec") ?? 0,
      },
      memory,
      io: { usage: parseIoStat(f("io.stat")) },
      memory_events: {
        low: ev.get("low") ?? 0,
        high: ev.get("high") ?? 0,
        max: ev.get("max") ?? 0,
        oom: ev.get("oom") ?? 0,
        oom_kill: ev.get("oom_kill") ?? 0,
      },
    };
  }

  private statsV1(path: string): Record<string, unknown> {
    const f = (ctrl: string, name: string) => read(join(this.mount, ctrl, path, name));
    const mem = parseKeyValues(f("memory", "memory.stat"));
    const oom = parseKeyValues(f("memory", "memory.oom_control"));
    const cpuStat = parseKeyValues(f("cpuacct", "cpuacct.stat"));
    const tick = 10_000; // USER_HZ (100) ticks → µs
    const throttle = parseKeyValues(f("cpu", "cpu.stat"));
    const limit = num(f("memory", "memory.limit_in_bytes"));
    return {
      pids: { current: num(f("pids", "pids.current")), limit: num(f("pids", "pids.max")) },
      cpu: {
        usage_usec: Math.floor(Number(num(f("cpuacct", "cpuacct.usage"))) / 1000),
        user_usec: (cpuStat.get("user") ?? 0) * tick,
        system_usec: (cpuStat.get("system") ?? 0) * tick,
        nr_periods: throttle.get("nr_periods") ?? 0,
        nr_throttled: throttle.get("nr_throttled") ?? 0,
        throttled_usec: Math.floor((throttle.get("throttled_time") ?? 0) / 1000),
      },
      memory: {
        anon: mem.get("rss") ?? 0,
        file: mem.get("cache") ?? 0,
        shmem: mem.get("shmem") ?? 0,
        file_mapped: mem.get("mapped_file") ?? 0,
        file_dirty: mem.get("dirty") ?? 0,
        file_writeback: mem.get("writeback") ?? 0,
        inactive_anon: mem.get("inactive_anon") ?? 0,
        active_anon: mem.get("active_anon") ?? 0,
        inactive_file: mem.get("inactive_file") ?? 0,
        active_file: mem.get("active_file") ?? 0,
        unevictable: mem.get("unevictable") ?? 0,
        pgfault: mem.get("pgfault") ?? 0,
        pgmajfault: mem.get("pgmajfault") ?? 0,
        usage: num(f("memory", "memory.usage_in_bytes")),
        // v1 reports "no limit" as a huge page-aligned number; containerd shows it as is.
        usage_limit: limit,
        max_usage: num(f("memory", "memory.max_usage_in_bytes")),
      },
      memory_events: { oom_kill: oom.get("oom_kill") ?? 0, oom: oom.get("under_oom") ?? 0 },
    };
  }
}
