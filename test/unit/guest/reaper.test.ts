// The PID-1 reaper, on the host: this process becomes a subreaper so an orphaned grandchild is
// re-parented to it, as orphans are to PID 1 in the guest.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { test } from "node:test";
import { Reaper } from "../../../agent/src/pid1/reaper.ts";
import { waitpidNoHang } from "../../../src/native/mount.ts";
import { setChildSubreaper } from "../../../src/native/process.ts";

async function until<T>(what: string, f: () => T | undefined, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("reaps an orphan re-parented to us, and leaves child_process children to libuv", async () => {
  setChildSubreaper();
  const reaper = new Reaper();
  const exits: { pid: number; exitCode: number | null }[] = [];
  reaper.on("exit", (e) => exits.push(e));

  // sh starts a background child that outlives it: the orphan exits 7 after sh is gone.
  const sh = spawn("sh", ["-c", "(sleep 0.3; exit 7) & echo $!"], { stdio: ["ignore", "pipe", "inherit"] });
  reaper.own(sh);
  let out = "";
  sh.stdout.on("data", (d: Buffer) => {
    out += d.toString();
  });
  const shCode = await new Promise<number | null>((r) => sh.on("exit", (c) => r(c)));
  assert.equal(shCode, 0, "libuv still reports the owned child's exit");
  const orphan = Number(out.trim());
  assert.ok(orphan > 0, `orphan pid from sh: ${out}`);

  const got = await until("the orphan to be reaped", () => {
    reaper.reap();
    return exits.find((e) => e.pid === orphan);
  });
  assert.equal(got.exitCode, 7);

  // An owned child that has exited is never reaped by the reaper, so libuv's 'exit' fires.
  const owned = spawn("sh", ["-c", "exit 3"], { stdio: "ignore" });
  reaper.own(owned);
  const code = await new Promise<number | null>((r) => owned.on("exit", (c) => r(c)));
  assert.equal(code, 3);
  assert.ok(!exits.some((e) => e.pid === owned.pid));
});

test("waitpidNoHang: null while running, throws for a pid that is not our child", async () => {
  const c = spawn("sleep", ["5"], { stdio: "ignore" });
  try {
    assert.equal(waitpidNoHang(c.pid!), null);
  } finally {
    c.kill("SIGKILL");
  }
  await new Promise((r) => c.on("exit", r));
  assert.throws(() => waitpidNoHang(1), /waitpid/);
});
