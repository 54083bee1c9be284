// What the density bench reads about memory: a process's PSS and USS (smaps_rollup), a process tree
// from /proc, the host's MemAvailable, and a guest's /proc/meminfo plus its processes' RSS as a
// container in the guest's root PID namespace sees them.
import { readdirSync, readFileSync } from "node:fs";

export interface ProcMem {
  /** Proportional set size, MiB: shared pages divided among the processes that map them. */
  pss: number;
  /** Unique set size, MiB: private pages only (what killing the process frees). */
  uss: number;
  /** PSS of the guest RAM this process maps (the memfd QEMU and the shim's vhost-user backends share), MiB. */
  guest: number;
}

const kb = (text: string, key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0);

/** Guest RAM mappings: QEMU's memory-backend-memfd, which the shim maps too for its vhost-user devices. */
const GUEST_RAM = /memory-backend|^\/memfd:/;

/**
 * PSS and USS of a process in MiB, guest RAM apart (zeros when it has gone): the guest RAM pages are
 * shared between QEMU and the shim, so their PSS would otherwise be split between the two. The
 * embedded VMM maps guest RAM anonymously: an unnamed mapping of exactly `guestMib` is guest RAM.
 */
export function procMem(pid: number, guestMib = 0): ProcMem {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/smaps`, "utf8");
  } catch {
    return { pss: 0, uss: 0, guest: 0 };
  }
  const m = { pss: 0, uss: 0, guest: 0 };
  let guestRam = false;
  for (const line of text.split("\n")) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const mib = (Number.parseInt(head[2]!, 16) - Number.parseInt(head[1]!, 16)) / 1048576;
      guestRam = GUEST_RAM.test(head[3]!) || (guestMib > 0 && head[3] === "" && mib === guestMib);
      continue;
    }
    const f = /^(Pss|Private_Clean|Private_Dirty):\s+(\d+) kB/.exec(line);
    if (!f) continue;
    const mib = Number(f[2]) / 1024;
    if (f[1] === "Pss") {
      if (guestRam) m.guest += mib;
      else m.pss += mib;
    } else if (!guestRam) m.uss += mib;
  }
  return m;
}

/** The host's MemAvailable, MiB. */
export function memAvailableMib(): number {
  return kb(readFileSync("/proc/meminfo", "utf8"), "MemAvailable") / 1024;
}

/** pid → parent pid, for every process now. */
function parents(): Map<number, number> {
  const m = new Map<number, number>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      // Fields after the parenthesised comm: state, ppid, ...
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      m.set(Number(name), ppid);
    } catch {
      // exited while we looked
    }
  }
  return m;
}

/** Every descendant of `root` (not root itself). */
export function descendants(root: number): number[] {
  const ppid = parents();
  const out: number[] = [];
  let frontier = [root];
  while (frontier.length) {
    const next: number[] = [];
    for (const [pid, parent] of ppid) if (frontier.includes(parent)) next.push(pid);
    out.push(...next);
    frontier = next;
  }
  return out;
}

/** The first argv element of a process ("" when gone). */
export function exeOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0] ?? "";
  } catch {
    return "";
  }
}

/**
 * Run in a container of the guest's root PID namespace: the guest's meminfo, then one line per
 * process, `proc <pid> <comm> <RssAnon kB> <RssFile kB>`.
 */
export const GUEST_MEM_SCRIPT =
  "cat /proc/meminfo; for d in /proc/[0-9]*; do " +
  'c=$(cat $d/comm 2>/dev/null) || continue; a=$(sed -n "s/^RssAnon:[[:space:]]*\\([0-9]*\\).*/\\1/p" $d/status); ' +
  'f=$(sed -n "s/^RssFile:[[:space:]]*\\([0-9]*\\).*/\\1/p" $d/status); ' +
  '[ -n "$a" ] && echo "proc ${d#/proc/} $c $a $f"; done; true';

export interface GuestMem {
  /** MemTotal − MemFree: guest RAM the guest holds now (pages it touched and freed may still be resident on the host). */
  used: number;
  /** Page cache + buffers. */
  cache: number;
  /** Anonymous pages of every guest process. */
  anon: number;
  /** The rest: slab, page tables, kernel stacks, the kernel's own allocations. */
  kernel: number;
  /** The agent's anonymous RSS (its V8 heap and malloc arenas), MiB; NaN when not seen. */
  agentAnon: number;
  /** Anonymous RSS of the guest's other system processes (the namespace holder, …), MiB. */
  otherSystemAnon: number;
  total: number;
}

/** Parses GUEST_MEM_SCRIPT's output; `ownComms` are the container's own processes (not the guest's system). */
export function parseGuestMem(out: string, ownComms: string[]): GuestMem {
  const mib = (k: string) => kb(out, k) / 1024;
  const total = mib("MemTotal");
  const used = total - mib("MemFree");
  const cache = mib("Cached") + mib("Buffers");
  const anon = mib("AnonPages");
  let agentAnon = Number.NaN;
  let otherSystemAnon = 0;
  for (const line of out.split("\n")) {
    const m = /^proc (\d+) (\S+) (\d+) (\d+)$/.exec(line);
    if (!m) continue;
    const [, pid, comm, anonKb] = m;
    if (ownComms.includes(comm!)) continue;
    if (pid === "1") agentAnon = Number(anonKb) / 1024;
    else otherSystemAnon += Number(anonKb) / 1024;
  }
  return { used, cache, anon, kernel: used - cache - anon, agentAnon, otherSystemAnon, total };
}
