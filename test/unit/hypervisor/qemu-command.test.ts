// How the qemu backend starts QEMU: which binary ($COVE_QEMU > [qemu] binary > default), and under
// setpriv --pdeathsig KILL so that QEMU does not outlive a SIGKILLed shim (checked for real with a
// stand-in: a Node parent that spawns `sleep` the same way, then is SIGKILLed).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { QEMU_BINARY, qemuCommand, SETPRIV } from "../../../src/hypervisor/qemu/qemu.ts";

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe("qemuCommand", () => {
  it("runs QEMU under setpriv --pdeathsig KILL", () => {
    const c = qemuCommand(["-m", "64M"], { env: {}, setpriv: "/usr/bin/setpriv" });
    assert.equal(c.file, "/usr/bin/setpriv");
    assert.deepEqual(c.argv, ["--pdeathsig", "KILL", "--", QEMU_BINARY, "-m", "64M"]);
  });

  it("honours [qemu] binary, and $COVE_QEMU over it", () => {
    assert.equal(qemuCommand([], { binary: "/opt/q/qemu", env: {}, setpriv: null }).file, "/opt/q/qemu");
    assert.equal(
      qemuCommand([], { binary: "/opt/q/qemu", env: { COVE_QEMU: "/x/qemu" }, setpriv: null }).file,
      "/x/qemu",
    );
    assert.equal(qemuCommand([], { binary: "", env: {}, setpriv: null }).file, QEMU_BINARY);
    assert.deepEqual(qemuCommand(["-a"], { binary: "/opt/q/qemu", env: {}, setpriv: "/sp" }).argv, [
      "--pdeathsig",
      "KILL",
      "--",
      "/opt/q/qemu",
      "-a",
    ]);
  });

  it("the child dies when its spawning process is SIGKILLed", {
    skip: existsSync(SETPRIV) ? false : `${SETPRIV} missing (util-linux)`,
    timeout: 20_000,
  }, async () => {
    // The parent spawns `sleep` exactly like the backend spawns QEMU and prints its pid.
    const { file, argv } = qemuCommand(["1000"], { binary: "/bin/sleep", env: {} });
    const script = `const c=require("node:child_process").spawn(${JSON.stringify(file)},${JSON.stringify(argv)},{stdio:"ignore"});c.on("spawn",()=>console.log(c.pid));setInterval(()=>{},1000);`;
    const parent = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    let childPid = 0;
    try {
      childPid = await new Promise<number>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error("the parent did not report its child")), 10_000);
        parent.stdout!.once("data", (d: Buffer) => {
          clearTimeout(t);
          resolve(Number.parseInt(d.toString(), 10));
        });
      });
      assert.ok(childPid > 1 && alive(childPid), "the child runs");
      // Give setpriv time to exec (pdeathsig is set before exec; the race before it is tiny).
      const deadline0 = Date.now() + 5_000;
      while (Date.now() < deadline0) {
        if (readFileSync(`/proc/${childPid}/cmdline`, "utf8").startsWith("/bin/sleep")) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      parent.kill("SIGKILL");
      const deadline = Date.now() + 5_000;
      // A zombie still answers kill(0) until reaped by init: a Z state counts as dead.
      const state = () => {
        try {
          return readFileSync(`/proc/${childPid}/stat`, "utf8").split(") ")[1]?.[0] ?? "gone";
        } catch {
          return "gone";
        }
      };
      while (!["gone", "Z"].includes(state()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      const s = state();
      assert.ok(s === "gone" || s === "Z", `the child outlived its parent (state ${s})`);
    } finally {
      parent.kill("SIGKILL");
      if (childPid > 1 && alive(childPid)) process.kill(childPid, "SIGKILL");
    }
  });
});
