// Boots the guest kernel with the guest image as root disk in QEMU microvm under TCG (QEMU's own
// virtio-blk), waits for the agent's readiness line, and checks that the agent ends the VM cleanly.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { test } from "node:test";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { bootGuest } from "../harness/qemu-boot.ts";

const BUILD = "npm run guest   (or: node dist/cove.cjs guest build)";

test("guest boots to the agent's readiness line and shuts down cleanly (QEMU microvm, TCG)", async () => {
  const a = guestArtifacts();
  for (const p of [a.kernel, a.rootfs]) assert.ok(existsSync(p), `${p} missing: build the guest first with: ${BUILD}`);

  const r = await bootGuest({
    kernel: a.kernel,
    rootfs: a.rootfs,
    memMiB: 512,
    cmdline: "cove.shutdown_after_ready=1 cove.hostname=cove-test cove.selftest=1",
    // TCG on a shared 2-core machine: boot-to-ready is a few seconds; allow a lot more.
    timeoutMs: 120_000,
    exitTimeoutMs: 30_000,
  });
  const tail = `\n--- serial (last 40 lines) ---\n${r.serial.slice(-40).join("\n")}`;

  assert.equal(r.timedOut, false, `QEMU was killed after the timeout${tail}`);
  assert.ok(r.ready, `no readiness line${tail}`);
  assert.ok(r.ready.uptime_ms > 0, `uptime ${r.ready.uptime_ms}${tail}`);
  assert.ok(r.ready.kernel_ms > 0 && r.ready.kernel_ms <= r.ready.uptime_ms, `kernel_ms ${r.ready.kernel_ms}${tail}`);
  assert.equal(r.ready.agent_ms, r.ready.uptime_ms - r.ready.kernel_ms);
  assert.ok(r.ready.mem_used_kib > 1024 && r.ready.mem_used_kib < 512 * 1024, `mem ${r.ready.mem_used_kib}${tail}`);
  assert.equal(
    r.serial.filter((l) => l.includes("cove-agent ready uptime_ms=")).length,
    1,
    `exactly one readiness line${tail}`,
  );

  // PID-1 duties: the agent's startup log names what it mounted and the hostname it set.
  const up = r.serial.map((l) => l.slice(l.indexOf("{"))).find((l) => l.includes('"pid1 up"'));
  assert.ok(up, `no "pid1 up" log line${tail}`);
  const info = JSON.parse(up) as { pid: number; mounts: string[]; hostname: string };
  assert.equal(info.pid, 1);
  assert.equal(info.hostname, "cove-test");
  for (const m of ["/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/run", "/tmp", "/sys/fs/cgroup"])
    assert.ok(info.mounts.includes(m), `${m} not mounted (have ${info.mounts.join(" ")})${tail}`);

  // The image's OCI runtime runs in the guest (all its libraries made it into the image).
  const self = r.serial.find((l) => l.includes('"selftest'));
  assert.ok(self?.includes('"selftest ok"'), `runtime self-test: ${self ?? "no selftest line"}${tail}`);
  assert.match(self ?? "", /"version":"(crun|runc) version/);

  // A clean end: the agent asked for it, the kernel restarted (reboot=t), QEMU (-no-reboot) exited 0.
  assert.ok(
    r.serial.some((l) => l.includes("cove.shutdown_after_ready")),
    `no shutdown log line${tail}`,
  );
  assert.ok(!r.serial.some((l) => /Kernel panic|Attempted to kill init/.test(l)), `kernel panic${tail}`);
  assert.equal(r.signal, null, `QEMU killed by ${r.signal}${tail}`);
  assert.equal(r.exitCode, 0, `QEMU exit code ${r.exitCode}${tail}`);
});
