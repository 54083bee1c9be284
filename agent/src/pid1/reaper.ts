// PID 1 inherits every orphan and must reap it. Node has no waitpid(-1), and reaping with -1 would
// steal the exit status of children libuv spawned (child_process), whose 'exit' would then never
// fire. So on SIGCHLD the reaper scans /proc for zombies whose parent is this process and reaps
// each by pid, skipping the pids child_process owns (registered with own()).
import type { ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { readdirSync, readFileSync } from "node:fs";
import { type ChildExit, waitpidNoHang } from "../../../src/native/mount.ts";

/** State and parent pid from /proc/<pid>/stat ("pid (comm) S ppid ..."; comm may hold spaces and parens). */
export function parseStat(stat: string): { state: string; ppid: number } | undefined {
  const close = stat.lastIndexOf(")");
  if (close < 0) return undefined;
  const fields = stat.slice(close + 2).split(" ");
  const state = fields[0];
  const ppid = Number(fields[1]);
  if (!state || !Number.isInteger(ppid)) return undefined;
  return { state, ppid };
}

export interface ReaperEvents {
  exit: [ChildExit];
}

export class Reaper extends EventEmitter<ReaperEvents> {
  private readonly owned = new Set<number>();
  private started = false;

  constructor(
    private readonly procDir = "/proc",
    private readonly self = process.pid,
  ) {
    super();
  }

  /** Marks a child_process child as libuv's to reap (call in the same tick as spawn). */
  own(child: ChildProcess): void {
    const pid = child.pid;
    if (pid === undefined) return;
    this.owned.add(pid);
    child.once("exit", () => this.owned.delete(pid));
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    process.on("SIGCHLD", () => this.reap());
    this.reap(); // orphans that died before the handler existed
  }

  /** Zombie children of this process that nobody else reaps. */
  zombies(): number[] {
    const out: number[] = [];
    for (const name of readdirSync(this.procDir)) {
      if (!/^[0-9]+$/.test(name)) continue;
      const pid = Number(name);
      if (this.owned.has(pid)) continue;
      let stat: string;
      try {
        stat = readFileSync(`${this.procDir}/${name}/stat`, "utf8");
      } catch {
        continue; // gone meanwhile
      }
      const s = parseStat(stat);
      if (s?.state === "Z" && s.ppid === this.self) out.push(pid);
    }
    return out;
  }

  /** Reaps every unowned zombie child, emitting 'exit' for each; returns them. */
  reap(): ChildExit[] {
    const reaped: ChildExit[] = [];
    for (const pid of this.zombies()) {
      let r: ChildExit | null;
      try {
        r = waitpidNoHang(pid);
      } catch {
        continue; // already reaped by someone else (ECHILD)
      }
      if (r) {
        reaped.push(r);
        this.emit("exit", r);
      }
    }
    return reaped;
  }
}
