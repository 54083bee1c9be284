// containerd-shim-cove-v2 driven by a real containerd 1.6 through `ctr run`. Until the pod VM
// exists, Create must fail the way it fails for a user with no guest kernel: a clear error (naming
// the missing file and the command that builds it) that reaches ctr, after which containerd runs
// its cleanup (Delete, Shutdown, the `delete` binary) and nothing is left behind.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { COVE_RUNTIME_TYPE, Containerd, REPO_ROOT } from "../harness/containerd.ts";
import { BUSYBOX_IMAGE_REF, buildImage, busyboxImage, importImage } from "../harness/image.ts";
import { filesUnder, mountsUnder, processesWithArg, processesWithCwdUnder, waitFor } from "../harness/processes.ts";
import { requireIntegration } from "../harness/skip.ts";

const SHIM_BUNDLE = join(REPO_ROOT, "dist", "containerd-shim-cove-v2.cjs");
const skip = requireIntegration([
  { path: SHIM_BUNDLE, why: "the bundled shim (npm run build; npm test builds first)" },
]);

/** The JSON lines the shim logged (pino, via the bundle's log FIFO into containerd's log) for one task id. */
function shimRpcs(cd: Containerd, id: string): { method: string; msg: string }[] {
  const out: { method: string; msg: string }[] = [];
  for (const line of cd.log().split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      const o = JSON.parse(line) as { method?: unknown; id?: unknown; msg?: unknown };
      if (typeof o.method === "string" && o.id === id) out.push({ method: o.method, msg: String(o.msg ?? "") });
    } catch {
      // a containerd line, or a partial write; not ours
    }
  }
  return out;
}

/** Asserts nothing of task `id` survives: no shim process, socket, mount, bundle or work dir. */
async function assertNothingLeft(cd: Containerd, id: string): Promise<void> {
  const bundle = cd.bundleDir(id);
  const socket = cd.shimSocketPath(id);
  await waitFor(
    `the shim for ${id} to exit and its bundle and socket to go`,
    () => processesWithArg(cd.address).length === 0 && !existsSync(bundle) && !existsSync(socket),
    15_000,
  );
  assert.deepEqual(
    processesWithArg(cd.address).map((p) => p.argv.join(" ")),
    [],
    "no shim process",
  );
  assert.deepEqual(
    processesWithCwdUnder(cd.dir).map((p) => p.argv.join(" ")),
    [],
    "no process (shim, VMM, helper) running in a bundle",
  );
  assert.equal(existsSync(socket), false, `shim socket ${socket} removed`);
  assert.deepEqual(mountsUnder(cd.dir), [], "no mounts under containerd's dirs");
  assert.deepEqual(filesUnder(bundle), [], "no bundle files");
  assert.equal(existsSync(join(cd.root, "io.containerd.runtime.v2.task", "default", id)), false, "no work dir");
  const tasks = await cd.ctrOk(["tasks", "ls", "-q"]);
  assert.equal(tasks.stdout.trim(), "", "containerd has no task left");
  const containers = await cd.ctrOk(["containers", "ls", "-q"]);
  assert.equal(containers.stdout.trim(), "", "ctr run --rm removed the container");
}

describe("containerd-shim-cove-v2 under ctr run", { skip, timeout: 180_000 }, () => {
  let cd: Containerd;
  let configPath: string;
  let missingKernel: string;

  before(async () => {
    cd = await Containerd.start({ traceShims: true });
    await importImage(cd, await buildImage(busyboxImage(), join(cd.dir, "images")));
    const coveDir = join(cd.dir, "cove");
    mkdirSync(coveDir);
    missingKernel = join(coveDir, "no-such-dir", "vmlinux");
    configPath = join(coveDir, "cove.toml");
    writeFileSync(
      configPath,
      `cache_dir = "${join(coveDir, "cache")}"\n\n[guest]\nkernel = "${missingKernel}"\nimage = "${join(coveDir, "no-such-dir", "rootfs.erofs")}"\n`,
    );
  });

  after(async () => {
    await cd?.stop();
  });

  test("a missing guest kernel fails the run with a clear error, and containerd cleans up fully", async () => {
    const r = await cd.ctr(
      [
        "run",
        "--rm",
        "--runtime",
        COVE_RUNTIME_TYPE,
        "--runtime-config-path",
        configPath,
        BUSYBOX_IMAGE_REF,
        "t1",
        "/bin/echo",
        "hi",
      ],
      { timeoutMs: 60_000 },
    );
    assert.equal(r.timedOut, false, "ctr returned");
    assert.notEqual(r.code, 0, "ctr run failed");
    const out = r.stdout + r.stderr;
    assert.doesNotMatch(out, /^hi$/m, "the command did not run");
    assert.ok(out.includes(missingKernel), `ctr's output names the missing kernel ${missingKernel}:\n${out}`);
    assert.match(out, /cove guest build|npm run guest/, "ctr's output says how to build the guest");

    await assertNothingLeft(cd, "t1");

    // containerd's side of the cleanup, from the shim's own RPC log (info level, method + id)...
    const methods = shimRpcs(cd, "t1").map((x) => x.method);
    const create = methods.indexOf("Create");
    assert.ok(create >= 0, `shim logged Create: ${methods.join(",")}`);
    const del = methods.indexOf("Delete", create);
    assert.ok(del > create, `containerd called Delete after the failed Create: ${methods.join(",")}`);
    assert.ok(methods.indexOf("Shutdown", del) > del, `then Shutdown: ${methods.join(",")}`);
    assert.ok(!methods.includes("Start"), "Start was never called");
    // ...and the binary invocations recorded by the harness's wrapper: start, then delete, for t1.
    const calls = cd.shimCalls().filter((c) => c.id === "t1");
    assert.deepEqual(
      calls.map((c) => c.action),
      ["start", "delete"],
      `shim binary calls: ${JSON.stringify(calls)}`,
    );
    assert.equal(calls[0]!.cwd, cd.bundleDir("t1"), "start runs in the bundle");
    // containerd logs that it ran the shim cleanup after the connection closed.
    assert.match(cd.log(), /cleaning up dead shim/);
  });

  test("with no runtime config path the default config applies and the error is still clear", async () => {
    const r = await cd.ctr(
      ["run", "--rm", "--runtime", COVE_RUNTIME_TYPE, BUSYBOX_IMAGE_REF, "t2", "/bin/echo", "hi"],
      {
        timeoutMs: 60_000,
      },
    );
    assert.equal(r.timedOut, false, "ctr returned");
    const out = r.stdout + r.stderr;
    if (r.code === 0) {
      // A machine with a built guest: then the VM path ran the command.
      assert.match(out, /^hi$/m);
    } else {
      // Whatever the machine has, the error must say what is wrong: a guest artifact, the config, or the VM.
      assert.match(out, /cove/i, `the error comes from cove:\n${out}`);
      assert.match(out, /kernel|image|config|VM|hypervisor|qemu|kvm/i, `the error names its cause:\n${out}`);
      assert.doesNotMatch(out, /exit status \d+\s*$/, "not just a bare exit status");
    }
    await assertNothingLeft(cd, "t2");
  });
});
