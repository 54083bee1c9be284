// The guest agent as PID 1 of a real microVM (qemu backend under TCG, our vhost-user blk + vsock),
// driven from the host with the shim's AgentClient over vsock (ttrpc on 1024, stdio on 1025): the
// container rootfs is a busybox erofs image attached as a second virtio-blk disk (serial "bb").
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { guestCmdline } from "../../src/guest/cmdline.ts";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { QemuHypervisor } from "../../src/hypervisor/qemu/qemu.ts";
import type { RunningVm } from "../../src/hypervisor/types.ts";
import { AgentClient, vsockDialer } from "../../src/sandbox/agent/index.ts";
import { Code, TtrpcError } from "../../src/ttrpc/index.ts";
import { waitForConsole } from "../harness/qemu-guest.ts";
import { withTimeout } from "../harness/timeout.ts";
import { busyboxErofs, hostAgentSkip, ociSpec, readAll } from "./agent-harness.ts";

const art = guestArtifacts();
const skip =
  hostAgentSkip() ||
  (!existsSync(art.kernel) || !existsSync(art.rootfs)
    ? `!!! SKIPPED: no guest kernel/image at ${art.kernel}, ${art.rootfs} (run \`npm run guest\`)`
    : false);
if (skip) console.error(skip);

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("agent inside the microVM (qemu, vsock)", { skip, timeout: 600_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), "cove-agent-vm-"));
  const bb = join(dir, "bb.erofs");
  let vm: RunningVm | undefined;
  let c: AgentClient;
  let consoleText = "";
  const rootfs = { lower: ["bb"] };

  async function run(id: string, args: string[], opts: { stdin?: boolean } = {}) {
    await c.createContainer({
      container_id: id,
      spec: ociSpec(args),
      rootfs,
      stdio: { stdout: true, stderr: true, stdin: !!opts.stdin },
    });
    const out = readAll(await c.openStdio(id, "", "stdout"));
    const err = readAll(await c.openStdio(id, "", "stderr"));
    const stdin = opts.stdin ? await c.openStdio(id, "", "stdin") : undefined;
    await c.startContainer(id);
    return { out, err, stdin };
  }

  before(async () => {
    busyboxErofs(bb);
    vm = await new QemuHypervisor().start({
      id: "agent-vm",
      kernel: art.kernel,
      cmdline: guestCmdline({ quiet: true, hostname: "agent-vm" }),
      memoryMiB: 512,
      vcpus: 1,
      disks: [
        { id: "root", path: art.rootfs, readOnly: true },
        { id: "bb", path: bb, readOnly: true },
      ],
      vsock: { guestCid: 3, hybridSocket: join(dir, "hybrid.vsock") },
      workDir: join(dir, "vm"),
    });
    vm.console.on("data", (d: Buffer) => {
      consoleText += d.toString();
    });
    const deadline = Date.now() + 180_000;
    await waitForConsole(() => consoleText, "cove-agent ready", deadline, "guest did not become ready:");
    c = await AgentClient.connect(vsockDialer((port) => vm!.connectVsock(port, 10_000)));
  });

  after(async () => {
    c?.close();
    if (vm) await vm.kill();
    rmSync(dir, { recursive: true, force: true });
  });

  it("answers Check over vsock and creates the sandbox from the bb disk", async () => {
    const r = await withTimeout(c.check(), 30_000, "Check");
    assert.match(r.runtime, /crun|runc/);
    await withTimeout(
      c.createSandbox({
        hostname: "pod-vm",
        storages: [{ id: "bb", source: "serial:bb", fstype: "erofs", options: ["ro"] }],
      }),
      60_000,
      "CreateSandbox",
    );
  });

  it("runs a container: output, exit code, hostname, cgroup v2 stats", async () => {
    const { out, err } = await run("c1", [
      "/bin/sh",
      "-c",
      "echo hello-from-vm; hostname; cat /proc/self/cgroup; echo to-stderr >&2; sleep 1; exit 4",
    ]);
    const m = (await c.statsContainer("c1")) as { memory: { usage: number }; pids: { current: number } };
    assert.ok(m.memory.usage > 0 && m.pids.current >= 1, JSON.stringify(m).slice(0, 300));
    const w = await withTimeout(c.waitProcess("c1"), 120_000, "wait c1");
    assert.equal(w.exit_status, 4);
    const text = (await out).toString();
    assert.match(text, /^hello-from-vm\n/);
    // cgroup v2, in its own cgroup namespace (the stats above read its cgroup, /cove/c1 in the guest)
    assert.match(text, /^0::\/$/m, "the container's own cgroup namespace");
    assert.equal((await err).toString(), "to-stderr\n");
    await c.removeContainer("c1");
    await assert.rejects(c.stateContainer("c1"), (e: unknown) => e instanceof TtrpcError && e.code === Code.NOT_FOUND);
  });

  it("honours an OCI runtime spec 1.2.1 (as containerd 2.x writes): its version kept, a relative mount destination", async () => {
    const spec = ociSpec(["/bin/sh", "-c", "grep ' /data/scratch ' /proc/mounts"]) as Record<string, unknown>;
    spec.ociVersion = "1.2.1";
    // Spec 1.2: a relative destination means relative to "/"; crun 1.8.1 refused any 1.2 spec.
    spec.mounts = [...(spec.mounts as object[]), { destination: "data/scratch", type: "tmpfs", source: "tmpfs" }];
    await c.createContainer({ container_id: "v12", spec, rootfs, stdio: { stdout: true, stderr: true } });
    const out = readAll(await c.openStdio("v12", "", "stdout"));
    const err = readAll(await c.openStdio("v12", "", "stderr"));
    await c.startContainer("v12");
    const w = await withTimeout(c.waitProcess("v12"), 120_000, "wait v12");
    assert.equal(w.exit_status, 0, `stderr: ${(await err).toString()}`);
    assert.match((await out).toString(), /^tmpfs \/data\/scratch tmpfs /);
    await c.removeContainer("v12");
  });

  it("refuses a spec field the guest cannot honour with INVALID_ARGUMENT naming it", async () => {
    const spec = ociSpec(["/bin/true"]);
    spec.ociVersion = "1.3.0";
    spec.linux.netDevices = { eth9: { name: "eth9" } };
    await assert.rejects(
      c.createContainer({ container_id: "v13", spec, rootfs, stdio: {} }),
      (e: unknown) =>
        e instanceof TtrpcError && e.code === Code.INVALID_ARGUMENT && /linux\.netDevices/.test(e.message),
    );
    await assert.rejects(c.stateContainer("v13"), (e: unknown) => e instanceof TtrpcError && e.code === Code.NOT_FOUND);
  });

  it("streams 16 MiB of output with a matching checksum, and stdin in", async () => {
    const { out, err } = await run("big", [
      "/bin/sh",
      "-c",
      "head -c 16777216 /dev/urandom > /tmp/b; sha256sum /tmp/b >&2; cat /tmp/b",
    ]);
    await withTimeout(c.waitProcess("big"), 300_000, "wait big");
    const data = await out;
    assert.equal(data.length, 16 << 20);
    assert.equal(sha(data), (await err).toString().split(/\s/)[0]);
    await c.removeContainer("big");
  });

  it("execs with stdin, and with a terminal", async () => {
    await run("box", ["/bin/sleep", "1000"]);
    const eo = readAll(await c.openStdio("box", "e1", "stdout"));
    const ei = await c.openStdio("box", "e1", "stdin");
    await c.execProcess({
      container_id: "box",
      exec_id: "e1",
      process: { args: ["/bin/sh", "-c", "sha256sum; exit 6"], cwd: "/", env: ["PATH=/bin"] },
      stdio: { stdin: true, stdout: true },
    });
    const input = Buffer.alloc(1 << 20, "cove");
    ei.end(input);
    assert.equal((await withTimeout(c.waitProcess("box", "e1"), 120_000, "wait e1")).exit_status, 6);
    assert.equal((await eo).toString(), `${sha(input)}  -\n`);

    const to = readAll(await c.openStdio("box", "t1", "stdout"));
    const ti = await c.openStdio("box", "t1", "stdin");
    await c.execProcess({
      container_id: "box",
      exec_id: "t1",
      process: { args: ["/bin/sh"], cwd: "/", env: ["PATH=/bin", "TERM=xterm"], terminal: true },
      stdio: { stdin: true, stdout: true },
    });
    await c.resizeTty({ containerId: "box", execId: "t1", rows: 33, cols: 99 });
    ti.write("stty size; exit 3\n");
    assert.equal((await withTimeout(c.waitProcess("box", "t1"), 120_000, "wait t1")).exit_status, 3);
    assert.match((await to).toString(), /33 99/);

    await c.pauseContainer("box");
    assert.equal((await c.stateContainer("box")).status, "paused");
    await c.resumeContainer("box");
    await c.removeContainer("box", true);
  });

  it("DestroySandbox leaves nothing", async () => {
    await withTimeout(c.destroySandbox(), 60_000, "DestroySandbox");
    const r = await c.check();
    assert.equal(r.sandbox, false);
    assert.equal(r.containers, 0);
  });
});
