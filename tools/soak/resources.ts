// What the soak run counts between cycles: everything a pod's life may leave behind on the host, as
// numbers that must come back to where they started once the pods are gone, and containerd's PSS,
// which is only reported as a trend. Read from /proc and the filesystem directly.
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { filesUnder, mountsUnder, processesMatching, processesWithArg } from "../../test/harness/processes.ts";

export interface Where {
  /** containerd's pid, gRPC socket, temp dir and state dir. */
  containerdPid: number;
  address: string;
  dir: string;
  state: string;
  /** cove's cache dir (layer images, their records, the pods' holds). */
  cacheDir: string;
  /** Where cove keeps pod VM work dirs. */
  runDir: string;
}

/** The series that must return to their baseline, in print order. */
export const COUNTABLE = [
  "containerd fds",
  "mounts",
  "tap fds",
  "netns",
  "/run/cove entries",
  "state files",
  "cache files",
  "shims",
  "VMMs",
] as const;
export type Countable = (typeof COUNTABLE)[number];
export type Sample = Record<Countable, number> & { "containerd PSS KiB": number };

function count(f: () => number): number {
  try {
    return f();
  } catch {
    return 0; // the dir or process is not there: nothing of it
  }
}

function entriesUnder(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    n++;
    if (e.isDirectory()) n += count(() => entriesUnder(`${dir}/${e.name}`));
  }
  return n;
}

/** Processes of this containerd's pods: its shims, and what runs in their bundle dirs (QEMU). */
function podProcesses(w: Where) {
  const shims = processesWithArg(w.address).filter((p) => p.pid !== w.containerdPid);
  const vmms = processesMatching((p) => /qemu-system/.test(p.argv[0] ?? "") && (p.cwd ?? "").startsWith(w.dir));
  return { shims, vmms };
}

/** Open fds on /dev/net/tun: each is a live tap (a tap without a persistent flag dies with its fd). */
function tapFds(pids: number[]): number {
  let n = 0;
  for (const pid of pids) {
    let fds: string[] = [];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      // exited
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`) === "/dev/net/tun") n++;
      } catch {
        // closed meanwhile
      }
    }
  }
  return n;
}

/** CRI's pinned pod netns (/run/netns/cni-*) and the distinct netns the pods' processes are in. */
function netns(pids: number[]): number {
  const pinned = count(() => readdirSync("/run/netns").filter((n) => n.startsWith("cni-")).length);
  const inodes = new Set<string>();
  for (const pid of pids) {
    try {
      inodes.add(readlinkSync(`/proc/${pid}/ns/net`));
    } catch {
      // exited
    }
  }
  const host = readlinkSync("/proc/self/ns/net");
  inodes.delete(host);
  return pinned + inodes.size;
}

function pssKib(pid: number): number {
  const m = /^Pss:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
  return m ? Number(m[1]) : 0;
}

export function sample(w: Where): Sample {
  const { shims, vmms } = podProcesses(w);
  const pids = [...shims, ...vmms].map((p) => p.pid);
  return {
    "containerd fds": count(() => readdirSync(`/proc/${w.containerdPid}/fd`).length),
    // Pods' netns are CRI's /run/netns/cni-*; other names there are other programs' (unit tests).
    mounts:
      mountsUnder(w.dir).length +
      mountsUnder(w.runDir).length +
      mountsUnder("/run/netns").filter((m) => /^\/run\/netns\/cni-/.test(m.mountPoint)).length,
    "tap fds": tapFds(pids),
    netns: netns(pids),
    "/run/cove entries": count(() => entriesUnder(w.runDir)),
    "state files": count(() => filesUnder(w.state).length),
    "cache files": count(() => entriesUnder(w.cacheDir)),
    shims: shims.length,
    VMMs: vmms.length,
    "containerd PSS KiB": count(() => pssKib(w.containerdPid)),
  };
}

/** The countable series that differ from the baseline: "name: baseline → now". */
export function differences(baseline: Sample, now: Sample): string[] {
  return COUNTABLE.filter((k) => now[k] !== baseline[k]).map((k) => `${k}: ${baseline[k]} → ${now[k]}`);
}
