// A lock file shared across processes (two `cove guest build` runs must not share one kbuild
// directory; two shims must not convert one layer twice). The lock is flock(2) on the file: the
// kernel drops it when its holder exits or crashes, so a stale lock needs no takeover (a pid-file
// takeover lets two waiters each "take over" the same stale lock). The holder's pid is written into
// the file only to say whom a waiter waits for.
//
// The holder unlinks the file before it lets go. A waiter that opened the old file may then lock an
// inode that no longer has the name, so after locking it checks that the path still names the inode
// it holds, and starts again if not: at any time at most one process holds the lock on the file the
// path names.
import { closeSync, fstatSync, ftruncateSync, openSync, readFileSync, rmSync, statSync, writeSync } from "node:fs";
import { tryLock } from "../native/flock.ts";

export interface LockOptions {
  /** Give up (throw) after this long; default one hour. */
  timeoutMs?: number;
  /** How often a waiter tries again; default 500 ms. */
  pollMs?: number;
}

/** Whether the path names the very file open as fd. */
function sameFile(fd: number, path: string): boolean {
  try {
    const a = fstatSync(fd);
    const b = statSync(path);
    return a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false; // unlinked meanwhile
  }
}

function holderOf(fd: number): number {
  try {
    return Number(readFileSync(fd, "utf8").trim()) || 0;
  } catch {
    return 0;
  }
}

/** Waits (polling) until the lock is ours; returns the release function. */
export async function acquireLock(
  path: string,
  onWait: (holder: number) => void,
  opts: LockOptions | number = {},
): Promise<() => void> {
  const { timeoutMs = 3_600_000, pollMs = 500 } = typeof opts === "number" ? { timeoutMs: opts } : opts;
  const end = Date.now() + timeoutMs;
  let told = false;
  for (;;) {
    const fd = openSync(path, "a+", 0o644);
    let ours = false;
    try {
      if (tryLock(fd) && sameFile(fd, path)) {
        ftruncateSync(fd, 0);
        writeSync(fd, String(process.pid));
        ours = true;
        let released = false;
        return () => {
          if (released) return;
          released = true;
          rmSync(path, { force: true }); // before the close: see the comment at the top
          closeSync(fd);
        };
      }
      if (!sameFile(fd, path)) continue; // released (and unlinked) meanwhile: try the new file now
      if (!told) onWait(holderOf(fd));
      told = true;
    } finally {
      if (!ours) closeSync(fd);
    }
    if (Date.now() > end) throw new Error(`timed out waiting for the lock ${path}`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
