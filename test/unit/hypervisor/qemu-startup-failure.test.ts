// QEMU that dies at startup (a VM config it refuses, a wrong `[qemu] binary`) must fail the pod
// cleanly: the backend's cleanup resets devices the guest never activated, a connect to the agent
// already waiting on vsock is rejected with a clear error, and nothing is thrown out of the event
// loop (this used to crash the shim with an uncaught "vsock device reset"). No QEMU needed: the
// "QEMU" here is a script that complains on stderr and exits 1.
import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { QemuHypervisor } from "../../../src/hypervisor/qemu/qemu.ts";
import { withTimeout } from "../../harness/timeout.ts";

const dir = mkdtempSync(join(tmpdir(), "cove-qemu-fail-"));
const uncaught: Error[] = [];
const onUncaught = (e: Error) => uncaught.push(e);
const savedEnv = process.env.COVE_QEMU;
before(() => {
  process.prependListener("uncaughtException", onUncaught);
  // $COVE_QEMU would win over the binary under test.
  delete process.env.COVE_QEMU;
});
after(() => {
  process.off("uncaughtException", onUncaught);
  if (savedEnv !== undefined) process.env.COVE_QEMU = savedEnv;
  rmSync(dir, { recursive: true, force: true });
});

function fakeQemu(delayS: number): string {
  const p = join(dir, `qemu-fail-${delayS}`);
  writeFileSync(
    p,
    `#!/bin/sh\nsleep ${delayS}\necho "qemu-system-x86_64: -device vhost-user-vsock-device: refused" >&2\nexit 1\n`,
  );
  chmodSync(p, 0o755);
  return p;
}

describe("qemu backend: QEMU exits at startup", () => {
  it("rejects a pending vsock connect, cleans up its sockets, and throws nothing uncaught", async () => {
    const workDir = join(dir, "vm1");
    const hv = new QemuHypervisor({ accel: "tcg", reason: "test" }, { binary: fakeQemu(0.3) });
    const vm = await hv.start({
      id: "fail1",
      kernel: "/nonexistent/vmlinux",
      cmdline: "console=ttyS0",
      memoryMiB: 64,
      vcpus: 1,
      disks: [],
      vsock: { guestCid: 3, hybridSocket: join(workDir, "hv.sock") },
      workDir,
    });
    assert.ok(existsSync(join(workDir, "vsock.sock")), "the vhost-user vsock socket was listening");
    // What the sandbox does while the guest boots: dial the agent.
    const pending = vm.connectVsock(1024, 10_000);
    await assert.rejects(withTimeout(pending, 5000, "connectVsock"), (e: NodeJS.ErrnoException) => {
      assert.equal(e.code, "ECONNRESET");
      assert.match(e.message, /guest port 1024/);
      return true;
    });
    const exit = await withTimeout(vm.wait(), 5000, "vm.wait");
    assert.equal(exit.code, 1);
    assert.match((vm as unknown as { stderr: () => string }).stderr(), /refused/);
    // Killing or stopping an exited VM again is harmless.
    assert.deepEqual(await vm.kill(), exit);
    assert.ok(!existsSync(join(workDir, "vsock.sock")), "vsock socket removed");
    assert.ok(!existsSync(join(workDir, "hv.sock")), "hybrid socket removed");
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(uncaught, []);
  });

  it("a connect made after QEMU is gone fails within its timeout instead of hanging", async () => {
    const workDir = join(dir, "vm2");
    const hv = new QemuHypervisor({ accel: "tcg", reason: "test" }, { binary: fakeQemu(0) });
    const vm = await hv.start({
      id: "fail2",
      kernel: "/nonexistent/vmlinux",
      cmdline: "console=ttyS0",
      memoryMiB: 64,
      vcpus: 1,
      disks: [],
      vsock: { guestCid: 3 },
      workDir,
    });
    await withTimeout(vm.wait(), 5000, "vm.wait");
    await assert.rejects(withTimeout(vm.connectVsock(1024, 300), 3000, "connectVsock"), /vsock connect/);
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(uncaught, []);
  });
});
