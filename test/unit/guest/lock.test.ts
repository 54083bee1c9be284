// The cross-process lock (src/guest/lock.ts): flock-based, so a crashed holder's lock is free at
// once and two waiters never both take it over.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { test } from "node:test";
import { acquireLock } from "../../../src/guest/lock.ts";

const LOCK_TS = resolve("src/guest/lock.ts");

/**
 * A process that takes the lock, records its critical section in `log` (enter/leave lines, and
 * "OVERLAP" if another holder's marker file is there), holds it for holdMs, then releases it —
 * or, with holdMs < 0, prints "held" and waits to be killed while holding it (its lock file stays,
 * as after a crash). Prints "waiting"
 * when it finds the lock held.
 */
const said = (c: ChildProcess, word: string) =>
  new Promise<void>((r) => c.stdout!.on("data", (d: Buffer) => d.toString().includes(word) && r()));

function locker(lock: string, log: string, holdMs: number): ChildProcess {
  const src = `
    import { acquireLock } from ${JSON.stringify(LOCK_TS)};
    import { appendFileSync, openSync, closeSync, rmSync } from "node:fs";
    const release = await acquireLock(${JSON.stringify(lock)}, () => console.log("waiting"), { timeoutMs: 30000, pollMs: 20 });
    const marker = ${JSON.stringify(`${lock}.inside`)};
    appendFileSync(${JSON.stringify(log)}, "enter " + process.pid + "\\n");
    if (${holdMs} < 0) { console.log("held"); setInterval(() => {}, 1000); }
    else {
      try { closeSync(openSync(marker, "wx")); } catch { appendFileSync(${JSON.stringify(log)}, "OVERLAP\\n"); }
      await new Promise((r) => setTimeout(r, ${holdMs}));
      appendFileSync(${JSON.stringify(log)}, "leave " + process.pid + "\\n");
      rmSync(marker, { force: true });
      release();
    }`;
  return spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", src], {
    stdio: ["ignore", "pipe", "inherit"],
  });
}

const exited = (c: ChildProcess) =>
  new Promise<number | null>((r) => (c.exitCode !== null ? r(c.exitCode) : c.on("exit", (code) => r(code))));

test("acquireLock: a second acquirer waits for a live holder and gets the lock once it is released", async () => {
  const dir = mkdtempSync(join(tmpdir(), "cove-lock-"));
  try {
    const path = join(dir, "build.lock");
    // A file left by an old pid-file holder, or by a crashed one: nobody holds it, so it is free.
    writeFileSync(path, "999999999");
    const release = await acquireLock(path, () => assert.fail("should not wait: nobody holds the lock"), 5_000);
    assert.equal(readFileSync(path, "utf8"), String(process.pid));
    let waitedFor = 0;
    const second = acquireLock(path, (pid) => (waitedFor = pid), { timeoutMs: 10_000, pollMs: 20 });
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(waitedFor, process.pid, "the waiter names the holder");
    release();
    release(); // twice is harmless
    const release2 = await second;
    release2();
    assert.ok(!existsSync(path), "a released lock leaves no file");
    await assert.rejects(
      (async () => {
        const r = await acquireLock(path, () => {}, 1_000);
        try {
          await acquireLock(path, () => {}, { timeoutMs: 100, pollMs: 20 });
        } finally {
          r();
        }
      })(),
      /timed out waiting for the lock/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("acquireLock: a holder killed with SIGKILL frees the lock, and of two waiters one holds it at a time", async () => {
  const dir = mkdtempSync(join(tmpdir(), "cove-lock-"));
  try {
    const lock = join(dir, "layer.lock");
    const log = join(dir, "log");
    writeFileSync(log, "");
    const holder = locker(lock, log, -1);
    await said(holder, "held");
    // Two waiters line up behind the holder, then the holder crashes, leaving its file and pid.
    const a = locker(lock, log, 300);
    const b = locker(lock, log, 300);
    await Promise.all([said(a, "waiting"), said(b, "waiting")]);
    assert.equal(readFileSync(log, "utf8").trim().split("\n").length, 1, "nobody entered while the holder lived");
    holder.kill("SIGKILL");
    await exited(holder);
    assert.deepEqual(await Promise.all([exited(a), exited(b)]), [0, 0]);
    const lines = readFileSync(log, "utf8").trim().split("\n").slice(1);
    assert.ok(!lines.includes("OVERLAP"), `two holders at once:\n${lines.join("\n")}`);
    // enter A, leave A, enter B, leave B (in either order of A and B).
    assert.equal(lines.length, 4);
    assert.match(lines[0]!, /^enter (\d+)$/);
    assert.equal(lines[1], lines[0]!.replace("enter", "leave"));
    assert.match(lines[2]!, /^enter (\d+)$/);
    assert.equal(lines[3], lines[2]!.replace("enter", "leave"));
    assert.notEqual(lines[0], lines[2]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
