// Faults under ctr: the guest kernel panics, the VM is killed, the shim is SIGKILLed, containerd
// restarts. In each case containerd sees the task exit (or re-attaches after its restart),
// `ctr task rm` + `container rm` succeed, and no shim, VMM, mount or VM work dir is left.
//
// "The agent dies" has no separate test: the agent is the guest's PID 1, which the kernel protects
// from every signal sent from inside the guest (SIGNAL_UNKILLABLE), so no container can kill it;
// when it does die (a crash, a fatal V8 error) the kernel panics ("Attempted to kill init"), which
// is the panic path tested here (panic=-1 + reboot=t + QEMU -no-reboot end the VM).
import assert from "node:assert/strict";
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { VM_RUN_DIR } from "../../src/sandbox/pod.ts";
import { COVE_RUNTIME_TYPE, Containerd, containerdUnderTest, REPO_ROOT } from "../harness/containerd.ts";
import { BUSYBOX_IMAGE_REF, buildImage, busyboxImage, importImage } from "../harness/image.ts";
import { mountsUnder, processesWithArg, processesWithCwdUnder, waitFor } from "../harness/processes.ts";
import { requireIntegration } from "../harness/skip.ts";

const art = guestArtifacts();
const skip = requireIntegration([
  { path: join(REPO_ROOT, "dist", "containerd-shim-cove-v2.cjs"), why: "the bundled shim (npm test builds first)" },
  { path: art.kernel, why: "the guest kernel (npm run guest)" },
  { path: art.rootfs, why: "the guest image (npm run guest)" },
  { path: "/usr/bin/qemu-system-x86_64", why: "QEMU (qemu-system-x86)" },
]);

const vmDirs = () => {
  try {
    return readdirSync(VM_RUN_DIR);
  } catch {
    return [];
  }
};

describe(`faults: containerd sees the exit and nothing leaks (containerd ${containerdUnderTest()})`, {
  skip,
  timeout: 600_000,
}, () => {
  let cd: Containerd;
  let configPath: string;

  before(async () => {
    cd = await Containerd.start({});
    await importImage(cd, await buildImage(busyboxImage(), join(cd.dir, "images")));
    const coveDir = join(cd.dir, "cove");
    mkdirSync(coveDir);
    configPath = join(coveDir, "cove.toml");
    writeFileSync(
      configPath,
      `cache_dir = "${join(coveDir, "cache")}"\n\n[guest]\nkernel = "${art.kernel}"\nimage = "${art.rootfs}"\n\n[pod]\nwritable_layer_mib = 64\n`,
    );
  });

  after(async () => {
    await cd?.stop();
  });

  const runDetached = (id: string, extra: string[] = []) =>
    cd.ctrOk(
      [
        "run",
        "-d",
        ...extra,
        "--runtime",
        COVE_RUNTIME_TYPE,
        "--runtime-config-path",
        configPath,
        BUSYBOX_IMAGE_REF,
        id,
        "sleep",
        "100000",
      ],
      { timeoutMs: 180_000 },
    );
  const qemus = () => processesWithCwdUnder(cd.dir).filter((p) => /qemu-system/.test(p.argv[0] ?? ""));
  const status = async (id: string) =>
    new RegExp(`^${id}\\s+\\d+\\s+(\\w+)`, "m").exec((await cd.ctrOk(["task", "ls"])).stdout)?.[1];

  async function removeAndCheck(id: string, before: string[]) {
    // After a dead shim containerd may already have dropped the task itself.
    if (await status(id)) await cd.ctrOk(["task", "rm", "-f", id], { timeoutMs: 30_000 });
    await cd.ctrOk(["container", "rm", id]);
    await waitFor(
      `everything of ${id} to go`,
      () => processesWithArg(cd.address).length === 0 && qemus().length === 0,
      20_000,
    );
    assert.deepEqual(mountsUnder(cd.dir), []);
    assert.deepEqual(
      vmDirs().filter((d) => !before.includes(d)),
      [],
      "no VM work dir left",
    );
  }

  test("the VM is killed: the task exits", async () => {
    const before = vmDirs();
    await runDetached("f1");
    const [vmm] = qemus();
    assert.ok(vmm, "a VMM runs");
    process.kill(vmm.pid, "SIGKILL");
    await waitFor("f1 to be reported stopped", async () => (await status("f1")) === "STOPPED", 30_000);
    await removeAndCheck("f1", before);
  });

  test("the guest kernel panics: the VM ends and the task exits", async () => {
    const before = vmDirs();
    await runDetached("f0", ["--privileged"]);
    assert.equal(qemus().length, 1, "a VMM runs");
    // /proc/sysrq-trigger is writable in a privileged container (CONFIG_MAGIC_SYSRQ in the guest).
    const r = await cd.ctr(
      ["task", "exec", "--exec-id", "crash", "f0", "/bin/sh", "-c", "echo c > /proc/sysrq-trigger"],
      {
        timeoutMs: 60_000,
      },
    );
    assert.notEqual(r.code, 0, `the exec cannot finish normally in a crashing guest: ${r.stdout}${r.stderr}`);
    await waitFor("the VM to end after the panic", () => qemus().length === 0, 60_000);
    await waitFor("f0 to be reported stopped", async () => (await status("f0")) === "STOPPED", 30_000);
    await removeAndCheck("f0", before);
  });

  test("containerd restarts: it re-attaches, the task still answers, then exits on kill", async () => {
    const before = vmDirs();
    await runDetached("f4");
    const shimsBefore = processesWithArg(cd.address).map((p) => p.pid);
    await cd.restart();
    assert.deepEqual(
      processesWithArg(cd.address).map((p) => p.pid),
      shimsBefore,
      "the shim and the VM survive containerd's restart",
    );
    assert.equal(await status("f4"), "RUNNING");
    const e = await cd.ctrOk(["task", "exec", "--exec-id", "after", "f4", "/bin/echo", "still here"], {
      timeoutMs: 60_000,
    });
    assert.equal(e.stdout.trim(), "still here");
    await cd.ctrOk(["task", "kill", "-s", "SIGKILL", "f4"]);
    await waitFor("f4 to be reported stopped", async () => (await status("f4")) === "STOPPED", 30_000);
    await removeAndCheck("f4", before);
  });

  test("the shim is SIGKILLed: containerd sees the exit, QEMU dies with it (pdeathsig), `delete` cleans up", async () => {
    const before = vmDirs();
    await runDetached("f3");
    const shims = processesWithArg(cd.address).filter((p) => !/qemu/.test(p.argv[0] ?? ""));
    assert.equal(shims.length, 1, `one shim: ${shims.map((p) => p.argv.join(" ")).join("\n")}`);
    process.kill(shims[0]!.pid, "SIGKILL");
    await waitFor(
      "f3 to be reported stopped",
      async () => {
        const s = await status("f3");
        return s === "STOPPED" || s === "UNKNOWN" || s === undefined;
      },
      30_000,
    );
    await waitFor("the orphaned VM to be stopped", () => qemus().length === 0, 30_000);
    await removeAndCheck("f3", before);
  });
});
