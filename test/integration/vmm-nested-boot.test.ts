// The embedded VMM against a genuine /dev/kvm: inside the nested test host (test/harness/nested.ts)
// it boots the real guest kernel with the real guest image on our virtio-blk over our virtio-mmio
// transport, to the agent's readiness line; a guest panic reboots (reboot=t → triple fault) and
// ends the run; the build's uncompressed vmlinux boots too (ELF loader). (vCPU-thread teardown on
// genuine KVM: vmm-embedded-backend.test.ts; the MSI path end to end: msi-nested.test.ts.)
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { describe, test } from "node:test";
import { guestCmdline } from "../../src/guest/cmdline.ts";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { nestedUnavailable, runNested } from "../harness/nested.ts";

const guest = guestArtifacts();
const skip =
  nestedUnavailable() ??
  (!existsSync(guest.kernel) || !existsSync(guest.vmlinux) || !existsSync(guest.rootfs)
    ? `guest kernel/vmlinux/image missing (${guest.kernel}, ${guest.vmlinux}, ${guest.rootfs}): run \`npm run guest\` first`
    : false);
if (skip) console.error(`SKIPPING embedded VMM nested tests: ${skip}`);

const GUEST_CMDLINE = guestCmdline({ extra: "printk.time=1" });

function runResult(output: string): { result: string; ms: number; exits: Record<string, number> } {
  const line = output.split("\n").find((l) => l.startsWith('{"result":'));
  assert.ok(line, `vmm-run.ts printed no result line; output tail:\n${output.slice(-3000)}`);
  return JSON.parse(line);
}

describe("embedded VMM in the nested test host", { skip }, () => {
  test("boots the guest kernel and image to agent-ready (virtio-blk over virtio-mmio)", async () => {
    const r = await runNested(
      `node --import tsx tools/vmm-run.ts --timeout 150 --disk ${guest.rootfs}:ro --cmdline "${GUEST_CMDLINE}" --until "cove-agent ready" 2>&1`,
      { timeoutMs: 280_000 },
    );
    assert.equal(
      r.status,
      0,
      `vmm-run.ts failed:\n${r.output.slice(-4000)}\nnested console:\n${r.console.slice(-2000)}`,
    );
    assert.match(r.output, /virtio-mmio: Registering device virtio-mmio\.0 at 0xd0000000-0xd0001fff, IRQ 5/);
    assert.match(r.output, /virtio_blk virtio0: \[vda\] \d+ 512-byte logical blocks/);
    assert.match(r.output, /VFS: Mounted root \(erofs filesystem\) readonly/);
    assert.match(r.output, /cove-agent ready uptime_ms=\d+/);
    assert.match(r.output, /found SMP MP-table at \[mem 0x0009fc00/);
    const res = runResult(r.output);
    assert.equal(res.result, "until");
    assert.ok((res.exits["6"] ?? 0) > 0, "MMIO exits (device registers) reached the VMM");
  });

  test("boots the same build's uncompressed vmlinux (ELF segments, entered at startup_64) to agent-ready", async () => {
    const r = await runNested(
      `node --import tsx tools/vmm-run.ts --timeout 150 --kernel ${guest.vmlinux} --disk ${guest.rootfs}:ro --cmdline "${GUEST_CMDLINE}" --until "cove-agent ready" 2>&1`,
      { timeoutMs: 280_000 },
    );
    assert.equal(
      r.status,
      0,
      `vmm-run.ts failed:\n${r.output.slice(-4000)}\nnested console:\n${r.console.slice(-2000)}`,
    );
    assert.match(r.output, /"kernel":"vmlinux"/, "the ELF loader took it");
    assert.match(r.output, /Linux version 6\.1\./);
    assert.match(r.output, /cove-agent ready uptime_ms=\d+/);
    assert.equal(runResult(r.output).result, "until");
  });

  test("a guest panic reboots (reboot=t): triple fault → KVM_EXIT_SHUTDOWN ends the run", async () => {
    const r = await runNested(
      `node --import tsx tools/vmm-run.ts --timeout 150 --cmdline "root=/dev/nothing-here" 2>&1`,
      { timeoutMs: 280_000 },
    );
    assert.equal(r.status, 0, r.output.slice(-3000));
    assert.match(r.output, /Kernel panic - not syncing/);
    assert.equal(runResult(r.output).result, "shutdown");
  });

  test("two vCPUs: the BSP starts the AP through the in-kernel LAPIC (MP table), both come up", async () => {
    const r = await runNested(
      `node --import tsx tools/vmm-run.ts --vcpus 2 --timeout 150 --disk ${guest.rootfs}:ro --cmdline "${GUEST_CMDLINE}" --until "cove-agent ready" 2>&1`,
      { timeoutMs: 280_000, cpus: 2 },
    );
    assert.equal(r.status, 0, r.output.slice(-3000));
    assert.match(r.output, /smp: Brought up 1 node, 2 CPUs/);
    assert.equal(runResult(r.output).result, "until");
  });
});
