// Finding (and removing) what a test leaves behind: processes, shim sockets, mounts and files.
// Everything here reads /proc and the filesystem directly, so it sees leftovers no matter which
// process created them. Used by the containerd harness's stop() and by tests that assert "nothing
// left behind".
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { join, resolve } from "node:path";

/** containerd 1.6/1.7 hard-code this directory for shim sockets, whatever its `state` is. */
export const SHIM_SOCKET_DIR = "/run/containerd/s";

export interface ProcessInfo {
  pid: number;
  /** argv from /proc/<pid>/cmdline (empty for zombies and kernel threads). */
  argv: string[];
  /** One-letter state from /proc/<pid>/stat (R, S, D, Z, ...). */
  state: string;
  /** Working directory, when readable. */
  cwd?: string;
}

function readProcess(pid: number): ProcessInfo | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`);
    const argv = raw.length ? raw.toString("utf8").replace(/\0$/, "").split("\0") : [];
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The comm field is parenthesised and may contain spaces; the state follows the last ')'.
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    let cwd: string | undefined;
    try {
      cwd = readlinkSync(`/proc/${pid}/cwd`);
    } catch {
      cwd = undefined;
    }
    return { pid, argv, state, cwd };
  } catch {
    return undefined; // exited while we looked
  }
}

/** Every process on the machine except this one. */
export function listProcesses(): ProcessInfo[] {
  const out: ProcessInfo[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === process.pid) continue;
    const p = readProcess(pid);
    if (p) out.push(p);
  }
  return out;
}

/** Live (non-zombie) processes for which `pred` holds. */
export function processesMatching(pred: (p: ProcessInfo) => boolean): ProcessInfo[] {
  return listProcesses().filter((p) => p.state !== "Z" && pred(p));
}

/** Processes with an argv element containing `needle` (e.g. a socket path, a task id, a binary). */
export function processesWithArg(needle: string): ProcessInfo[] {
  return processesMatching((p) => p.argv.some((a) => a.includes(needle)));
}

/** Processes whose working directory is `dir` or below it (shims run with cwd = the bundle). */
export function processesWithCwdUnder(dir: string): ProcessInfo[] {
  const base = resolve(dir);
  return processesMatching((p) => p.cwd !== undefined && (p.cwd === base || p.cwd.startsWith(`${base}/`)));
}

function alive(pid: number): boolean {
  const p = readProcess(pid);
  return p !== undefined && p.state !== "Z";
}

/** SIGKILLs the given processes and waits (bounded) until they are gone; returns pids still alive. */
export async function killProcesses(pids: number[], timeoutMs = 5000): Promise<number[]> {
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  const deadline = Date.now() + timeoutMs;
  let left = pids.filter(alive);
  while (left.length && Date.now() < deadline) {
    await sleep(50);
    left = left.filter(alive);
  }
  return left;
}

/** The socket path the runc-style shim address scheme gives: sha256(<containerd address>/<ns>/<grouping>). */
export function shimSocketPath(containerdAddress: string, namespace: string, grouping: string): string {
  const hex = createHash("sha256")
    .update(join(containerdAddress, namespace, grouping))
    .digest("hex");
  return join(SHIM_SOCKET_DIR, hex);
}

/** Entries of /run/containerd/s (full paths). */
export function shimSockets(): string[] {
  if (!existsSync(SHIM_SOCKET_DIR)) return [];
  return readdirSync(SHIM_SOCKET_DIR).map((n) => join(SHIM_SOCKET_DIR, n));
}

export interface MountEntry {
  id: number;
  parentId: number;
  mountPoint: string;
  fsType: string;
  source: string;
}

/** mountinfo escapes space, tab, newline and backslash as \ooo octal. */
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)));
}

/** Parses /proc/<pid>/mountinfo text (see proc(5)). Malformed lines are skipped. */
export function parseMountInfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const fields = line.split(" ");
    const sep = fields.indexOf("-");
    if (sep < 6 || fields.length < sep + 3) continue;
    out.push({
      id: Number(fields[0]),
      parentId: Number(fields[1]),
      mountPoint: unescapeMountField(fields[4]!),
      fsType: fields[sep + 1]!,
      source: unescapeMountField(fields[sep + 2]!),
    });
  }
  return out;
}

/** Mounts (in this process's mount namespace) at `path` or below it, deepest first. */
export function mountsUnder(path: string): MountEntry[] {
  const base = resolve(path);
  return parseMountInfo(readFileSync("/proc/self/mountinfo", "utf8"))
    .filter((m) => m.mountPoint === base || m.mountPoint.startsWith(`${base}/`))
    .sort((a, b) => b.mountPoint.length - a.mountPoint.length || b.id - a.id);
}

/** Lazily unmounts everything at or below `path` (deepest first); returns mount points still there. */
export function unmountUnder(path: string): string[] {
  for (let round = 0; round < 5; round++) {
    const mounts = mountsUnder(path);
    if (mounts.length === 0) return [];
    for (const m of mounts) {
      try {
        execFileSync("umount", ["-l", m.mountPoint], { stdio: "ignore", timeout: 5000 });
      } catch {
        // raced with someone else's unmount, or busy; the next round retries
      }
    }
  }
  return mountsUnder(path).map((m) => m.mountPoint);
}

/** Every file, symlink and directory under `dir`, as paths relative to it (no symlinks followed). */
export function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      return;
    }
    for (const name of names.sort()) {
      const p = join(d, name);
      const r = rel ? `${rel}/${name}` : name;
      out.push(r);
      try {
        if (lstatSync(p).isDirectory()) walk(p, r);
      } catch {
        // vanished
      }
    }
  };
  if (existsSync(dir)) walk(dir, "");
  return out;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `check` until it returns a truthy value or `timeoutMs` passes (then throws naming `what`). */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs: number,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}
