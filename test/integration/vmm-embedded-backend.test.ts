// The embedded Hypervisor backend end to end: a Linux guest whose root disk, scratch disk and
// vsock are our virtio backends over our virtio-mmio transport, inside this process on KVM.
// From the host: a vsock echo with checksums, a guest command over vsock that reads and writes
// the scratch disk (checked on the host), then kill() leaves no vCPU thread behind.
// Where KVM is backed by hardware virtualization the tests run directly; on a PVM host (like the
// project's build machines) this file re-runs itself inside the nested test host.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { after, before, describe, it, test } from "node:test";
import { guestCmdline } from "../../src/guest/cmdline.ts";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { EmbeddedHypervisor, type EmbeddedVm } from "../../src/hypervisor/embedded/embedded.ts";
import { chooseAccel } from "../../src/hypervisor/qemu/accel.ts";
import { nestedUnavailable, runNested } from "../harness/nested.ts";
import { withTimeout } from "../harness/timeout.ts";
import { buildTestRoot, CMD_PORT, ECHO_PORT } from "./virtio-guest-root.ts";

const kernel = process.env.COVE_TEST_KERNEL ?? guestArtifacts().kernel;
const direct = chooseAccel().accel === "kvm";
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

function exchange(s: Duplex, input: Buffer | string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const out: Buffer[] = [];
    s.on("data", (d: Buffer) => out.push(d));
    s.on("error", reject);
    s.on("end", () => resolve(Buffer.concat(out)));
    s.end(input);
  });
}

const vcpuThreads = () =>
  readdirSync("/proc/self/task").filter((t) => {
    try {
      return readFileSync(`/proc/self/task/${t}/comm`, "utf8").startsWith("cove-vcpu");
    } catch {
      return false;
    }
  }).length;

if (!direct) {
  const skip =
    nestedUnavailable() ?? (existsSync(kernel) ? false : `no guest kernel at ${kernel} (run \`npm run guest\`)`);
  if (skip) console.error(`!!! SKIPPED embedded backend tests: ${skip}`);
  test("embedded backend tests pass inside the nested test host (this host's KVM is not hardware-backed)", {
    skip,
  }, async () => {
    const r = await runNested(
      `node --import tsx --test --test-reporter=spec test/integration/vmm-embedded-backend.test.ts 2>&1`,
      { timeoutMs: 600_000, env: { COVE_TEST_KERNEL: kernel } },
    );
    assert.equal(r.status, 0, `inner run failed:\n${r.output.slice(-6000)}\nconsole:\n${r.console.slice(-6000)}`);
    assert.match(r.output, /ℹ pass [1-9]/);
    assert.match(r.output, /ℹ fail 0/);
  });
} else {
  const skip = existsSync(kernel) ? false : `no guest kernel at ${kernel} (run \`npm run guest\`)`;
  if (skip) console.error(`!!! SKIPPED embedded backend tests: ${skip}`);
  describe("guest on the embedded VMM with our blk and vsock over virtio-mmio", { skip, timeout: 400_000 }, () => {
    const dir = mkdtempSync(join(tmpdir(), "cove-embedded-"));
    const scratch = join(dir, "scratch.img");
    let root: { image: string; cleanup: () => void } | undefined;
    let vm: EmbeddedVm | undefined;
    let consoleText = "";
    const threadsBefore = vcpuThreads();

    async function guestSh(script: string, ms = 60_000): Promise<string> {
      const s = await vm!.connectVsock(CMD_PORT, 10_000);
      return (await withTimeout(exchange(s, `${script}\n`), ms, `guest: ${script}`)).toString();
    }

    before(async () => {
      root = buildTestRoot();
      writeFileSync(scratch, randomBytes(4 << 20));
      vm = (await new EmbeddedHypervisor().start({
        id: "embedded-test",
        kernel,
        cmdline: guestCmdline(),
        memoryMiB: 256,
        vcpus: 1,
        disks: [
          { id: "root", path: root.image, readOnly: true },
          { id: "scratch", path: scratch },
        ],
        vsock: { guestCid: 3 },
        workDir: join(dir, "vm"),
      })) as EmbeddedVm;
      vm.console.on("data", (d: Buffer) => {
        consoleText += d.toString();
      });
      const deadline = Date.now() + 180_000;
      while (!consoleText.includes("COVE-TEST-GUEST-READY")) {
        if (Date.now() > deadline) throw new Error(`guest did not boot; console:\n${consoleText.slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      for (;;) {
        try {
          assert.match(await guestSh("echo up"), /up/);
          break;
        } catch (e) {
          if (Date.now() > deadline) throw e;
          await new Promise((r) => setTimeout(r, 300));
        }
      }
    });

    after(async () => {
      if (vm) await vm.kill();
      root?.cleanup();
      rmSync(dir, { recursive: true, force: true });
    });

    it("echoes 1 MiB over vsock with matching checksums", async () => {
      const data = randomBytes(1 << 20);
      const back = await withTimeout(exchange(await vm!.connectVsock(ECHO_PORT, 10_000), data), 120_000, "echo");
      assert.equal(back.length, data.length);
      assert.equal(sha(back), sha(data));
    });

    it("reads and writes the scratch disk from the guest, verified on the host", async () => {
      const out = await guestSh(
        [
          // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a template
          'for d in /sys/block/vd*; do [ "$(cat $d/serial)" = scratch ] && S=/dev/${d##*/}; done',
          "dd if=$S bs=4096 count=1 2>/dev/null | sha256sum",
          "echo cove-embedded-write | dd of=$S bs=512 seek=8 conv=fsync 2>/dev/null",
          "echo written",
        ].join("; "),
      );
      const host = readFileSync(scratch);
      assert.match(out, new RegExp(sha(host.subarray(0, 4096))), "guest read what the host wrote");
      assert.match(out, /written/);
      const written = "cove-embedded-write\n";
      assert.equal(host.subarray(8 * 512, 8 * 512 + written.length).toString(), written);
      // The transport saw the traffic and no device failed.
      for (const t of vm!.devices.transports) assert.equal(t.failed, undefined, t.device.name);
    });

    it("kill() stops the guest and joins every vCPU thread", async () => {
      assert.equal(vcpuThreads(), threadsBefore + 1);
      const exit = await vm!.kill();
      assert.equal(exit.signal, "SIGKILL");
      assert.equal(vcpuThreads(), threadsBefore);
      vm = undefined;
    });
  });
}
