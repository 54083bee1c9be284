import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { describe, test } from "node:test";
import {
  CLONE_NEWIPC,
  CLONE_NEWPID,
  CLONE_NEWUTS,
  holderBinary,
  spawnNamespaceHolder,
} from "../../../../src/native/process.ts";

const root = process.getuid?.() === 0;

describe("spawnNamespaceHolder (the pod's shared namespaces in the guest)", {
  skip: root ? false : "needs root (new namespaces)",
}, () => {
  test("a child in new pid/ipc/uts namespaces, holding none of our fds, gone on SIGKILL", async () => {
    const shmmax = readFileSync("/proc/sys/kernel/shmmax", "utf8").trim();
    const { pid, errors } = spawnNamespaceHolder(CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS, [
      ["/proc/sys/kernel/shmmax", "12345678"],
      ["/proc/sys/kernel/no-such-sysctl", "1"],
    ]);
    try {
      assert.deepEqual(errors, [0, 2], "written inside; ENOENT for the unknown one");
      assert.equal(readFileSync("/proc/sys/kernel/shmmax", "utf8").trim(), shmmax, "ours untouched");
      assert.ok(pid > 1);
      for (const ns of ["ipc", "uts", "pid"])
        assert.notEqual(readlinkSync(`/proc/${pid}/ns/${ns}`), readlinkSync(`/proc/self/ns/${ns}`), ns);
      // PID 1 in its own PID namespace (NSpid: <outer> 1).
      const nspid = /^NSpid:\s+(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]?.split(/\s+/);
      assert.deepEqual(nspid, [String(pid), "1"]);
      assert.deepEqual(readdirSync(`/proc/${pid}/fd`), [], "no fds of ours");
      // It runs the holder's own program, not a copy of this process: a few KiB, not Node's heap.
      assert.equal(readlinkSync(`/proc/${pid}/exe`), holderBinary());
      assert.equal(readFileSync(`/proc/${pid}/comm`, "utf8").trim(), "cove-holder");
      const rssKiB = Number(/^Rss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1]);
      assert.ok(rssKiB > 0 && rssKiB <= 64, `holder RSS ${rssKiB} KiB`);
      assert.throws(() => spawnNamespaceHolder(0x10000000), /only CLONE_NEWPID/, "CLONE_NEWUSER refused");
      assert.throws(() => spawnNamespaceHolder(CLONE_NEWIPC, [["/etc/passwd", "x"]]), /under \/proc\/sys/);
      assert.throws(
        () => spawnNamespaceHolder(CLONE_NEWIPC, [["/proc/sys/../../etc/passwd", "x"]]),
        /under \/proc\/sys/,
      );
    } finally {
      process.kill(pid, "SIGKILL");
    }
    // A zombie (nobody here reaps it) or gone: either way it no longer runs.
    for (let i = 0; i < 50; i++) {
      let state = "";
      try {
        state = /^State:\s+(\S)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? "";
      } catch {
        return;
      }
      if (state === "Z") return;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.fail("the holder outlived SIGKILL");
  });

  test("a holder program that cannot be run: an error naming it, and no holder left", () => {
    assert.throws(
      () => spawnNamespaceHolder(CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS, [], "/nonexistent/cove-holder"),
      (e: Error & { code?: string }) => e.code === "ENOENT" && /exec \/nonexistent\/cove-holder/.test(e.message),
    );
    assert.throws(() => spawnNamespaceHolder(CLONE_NEWPID, [], "cove-holder"), /absolute/);
  });

  test("as PID 1 of its PID namespace it reaps the orphans reparented to it", async () => {
    const { pid } = spawnNamespaceHolder(CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS);
    const children = () =>
      readdirSync("/proc")
        .filter((d) => /^\d+$/.test(d))
        .flatMap((d) => {
          try {
            const st = readFileSync(`/proc/${d}/status`, "utf8");
            return /^PPid:\s+(\d+)$/m.exec(st)?.[1] === String(pid) ? [/^State:\s+(\S)/m.exec(st)?.[1] ?? "?"] : [];
          } catch {
            return [];
          }
        });
    try {
      // sh starts sleep in the background and exits: sleep is orphaned inside the holder's namespace.
      execFileSync("nsenter", ["-t", String(pid), "-p", "--", "sh", "-c", "sleep 2 & exit 0"], {
        stdio: "ignore", // a pipe would be held by sleep, and this would wait for it to end
      });
      const now = children();
      assert.equal(now.length, 1, "the orphan is the holder's child now");
      assert.notEqual(now[0], "Z", "and still running");
      for (let i = 0; i < 200 && children().length > 0; i++) await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(children(), [], "reaped, not left a zombie");
    } finally {
      process.kill(pid, "SIGKILL");
    }
  });
});

describe("spawnNamespaceHolder returns only once the holder holds none of our fds", {
  skip: root ? false : "needs root (new namespaces)",
}, () => {
  test("200 holders without writes, under CPU load from a busy sibling: no fds each time", async () => {
    // The race this guards: the holder used to close its inherited fds only after reporting, and
    // with nothing to report the caller returned at once, so a look at /proc/<pid>/fd under load
    // still found the agent's fds there.
    const busy = spawn(process.execPath, ["-e", "for(;;){}"], { stdio: "ignore" });
    try {
      for (let i = 0; i < 200; i++) {
        const { pid } = spawnNamespaceHolder(CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS);
        try {
          assert.deepEqual(readdirSync(`/proc/${pid}/fd`), [], `holder ${i} (pid ${pid}) still holds fds`);
        } finally {
          process.kill(pid, "SIGKILL");
        }
      }
    } finally {
      busy.kill("SIGKILL");
    }
  });
});
