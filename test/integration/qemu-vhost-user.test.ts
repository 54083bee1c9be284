// The real thing: a Linux guest on the qemu backend (TCG here) whose root disk, scratch disk and
// vsock are our own virtio backends over vhost-user. From the host: vsock streams to guest ports
// (large transfer with checksums, many concurrent connections), a guest-initiated connection to
// the hybrid socket, and scratch-disk reads and writes from inside the guest checked on the host.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { after, before, describe, it } from "node:test";
import { guestCmdline } from "../../src/guest/cmdline.ts";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { QemuHypervisor } from "../../src/hypervisor/qemu/qemu.ts";
import type { RunningVm } from "../../src/hypervisor/types.ts";
import { retryUntil, waitForConsole } from "../harness/qemu-guest.ts";
import { withTimeout } from "../harness/timeout.ts";
import { buildTestRoot, CMD_PORT, ECHO_PORT } from "./virtio-guest-root.ts";

const kernel = process.env.COVE_TEST_KERNEL ?? guestArtifacts().kernel;
const skip = existsSync(kernel)
  ? false
  : `!!! SKIPPED: no guest kernel at ${kernel} (run \`npm run guest\`, or set COVE_TEST_KERNEL)`;
if (skip) console.error(skip);

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** Sends all of `input`, half-closes, and collects everything until the guest closes. */
function exchange(s: Duplex, input: Buffer | string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const out: Buffer[] = [];
    s.on("data", (d: Buffer) => out.push(d));
    s.on("error", reject);
    s.on("end", () => resolve(Buffer.concat(out)));
    s.end(input);
  });
}

describe("guest on qemu + our vhost-user blk and vsock", { skip, timeout: 300_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), "cove-qemu-vu-"));
  const scratch = join(dir, "scratch.img");
  const hybrid = join(dir, "hybrid.vsock");
  let root: { image: string; cleanup: () => void } | undefined;
  let vm: RunningVm | undefined;
  let consoleText = "";

  /** Runs a shell script in the guest over vsock and returns its output. */
  async function guestSh(script: string, ms = 60_000): Promise<string> {
    const s = await vm!.connectVsock(CMD_PORT, 10_000);
    return (await withTimeout(exchange(s, `${script}\n`), ms, `guest: ${script}`)).toString();
  }

  before(async () => {
    root = buildTestRoot();
    writeFileSync(scratch, randomBytes(32 << 20));
    vm = await new QemuHypervisor().start({
      id: "vu-test",
      kernel,
      cmdline: guestCmdline(),
      memoryMiB: 512,
      vcpus: 1,
      disks: [
        { id: "root", path: root.image, readOnly: true },
        { id: "scratch", path: scratch },
      ],
      vsock: { guestCid: 3, hybridSocket: hybrid },
      workDir: join(dir, "vm"),
    });
    vm.console.on("data", (d: Buffer) => {
      consoleText += d.toString();
    });
    // Boot: wait for the guest to say it is ready, then for its command port.
    const deadline = Date.now() + 120_000;
    await waitForConsole(() => consoleText, "COVE-TEST-GUEST-READY", deadline, "guest did not boot; console:");
    await retryUntil(async () => assert.match(await guestSh("echo up"), /up/), deadline);
  });

  after(async () => {
    if (vm) await vm.kill();
    root?.cleanup();
    rmSync(dir, { recursive: true, force: true });
    assert.equal(existsSync(join(dir, "vm", "vsock.sock")), false);
  });

  it("echoes a large transfer over vsock with matching checksums both ways", async () => {
    const data = randomBytes(8 << 20);
    const s = await vm!.connectVsock(ECHO_PORT, 10_000);
    const back = await withTimeout(exchange(s, data), 120_000, "8 MiB echo");
    assert.equal(back.length, data.length);
    assert.equal(sha(back), sha(data));
  });

  it("serves many concurrent connections", async () => {
    const n = 24;
    const inputs = Array.from({ length: n }, () => randomBytes(64 * 1024));
    const outs = await withTimeout(
      Promise.all(inputs.map(async (b) => exchange(await vm!.connectVsock(ECHO_PORT, 20_000), b))),
      120_000,
      "concurrent echoes",
    );
    for (const [i, o] of outs.entries()) assert.equal(sha(o), sha(inputs[i]!), `connection ${i}`);
  });

  it("accepts a guest-initiated connection on the hybrid socket <uds>_<port>", async () => {
    const got = new Promise<string>((resolve, reject) => {
      const srv = createServer((c) => {
        let t = "";
        c.on("data", (d: Buffer) => {
          t += d.toString();
        });
        c.on("end", () => {
          c.end("reply-from-host\n");
          srv.close();
          resolve(t);
        });
      });
      srv.on("error", reject);
      srv.listen(`${hybrid}_5000`);
    });
    const out = await guestSh("echo hello-from-guest | socat -t5 - VSOCK-CONNECT:2:5000");
    assert.equal((await withTimeout(got, 30_000, "guest connection")).trim(), "hello-from-guest");
    assert.match(out, /reply-from-host/);
  });

  it("reads and writes the scratch disk from the guest, verified on the host", async () => {
    const out = await guestSh(
      [
        // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell script, not a template
        'for d in /sys/block/vd*; do [ "$(cat $d/serial)" = scratch ] && S=/dev/${d##*/}; done',
        "echo DEV=$S",
        "dd if=$S bs=1M count=16 2>/dev/null | sha256sum",
        "dd if=/dev/urandom of=/tmp/w bs=1M count=8 2>/dev/null",
        "sha256sum /tmp/w",
        "dd if=/tmp/w of=$S bs=1M seek=16 conv=fsync 2>/dev/null && echo WROTE",
      ].join("\n"),
      120_000,
    );
    assert.match(out, /DEV=\/dev\/vd[a-z]/);
    const host = readFileSync(scratch);
    const sums = [...out.matchAll(/^([0-9a-f]{64})\s/gm)].map((m) => m[1]);
    assert.equal(sums.length, 2, out);
    assert.equal(sums[0], sha(host.subarray(0, 16 << 20)), "guest read = host file");
    assert.match(out, /WROTE/);
    assert.equal(sha(host.subarray(16 << 20, 24 << 20)), sums[1], "host file = what the guest wrote");
  });

  it("shuts down cleanly when the guest reboots (reboot=t, -no-reboot)", async () => {
    const s = await vm!.connectVsock(CMD_PORT, 10_000);
    s.on("error", () => {});
    s.end("reboot -f\n");
    const exit = await withTimeout(vm!.wait(), 30_000, "qemu exit");
    assert.equal(exit.code, 0);
    vm = undefined;
  });
});
