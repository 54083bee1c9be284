// A lock file shared across processes (two `cove guest build` runs must not share one kbuild
// directory). O_EXCL create with our pid inside; a lock whose owner is gone is taken over.
import { closeSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Waits (polling) until the lock is ours; returns the release function. */
export async function acquireLock(path: string, onWait: (holder: number) => void, timeoutMs = 3_600_000) {
  const end = Date.now() + timeoutMs;
  let told = false;
  for (;;) {
    try {
      const fd = openSync(path, "wx");
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => rmSync(path, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    let holder = 0;
    try {
      holder = Number(readFileSync(path, "utf8")) || 0;
    } catch {
      continue; // released meanwhile
    }
    if (!holder || !alive(holder)) {
      rmSync(path, { force: true }); // stale: its owner died
      continue;
    }
    if (!told) onWait(holder);
    told = true;
    if (Date.now() > end) throw new Error(`timed out waiting for ${path} (held by pid ${holder})`);
    await new Promise((r) => setTimeout(r, 500));
  }
}
