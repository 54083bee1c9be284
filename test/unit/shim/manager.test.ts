// `start` and `delete` for real: start spawns the daemon (from source) on a temp socket dir, the
// daemon answers over ttrpc, Create fails with the missing-kernel error, Shutdown ends it, `delete`
// prints a DeleteResponse. Everything made here is removed, the daemon killed if still alive.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { test } from "node:test";
import { closeFd } from "../../../src/native/fdpass.ts";
import { messageType } from "../../../src/proto/root.ts";
import { addressPath } from "../../../src/shim/address.ts";
import { parseFlags } from "../../../src/shim/flags.ts";
import { deleteTask, listenOrReuse, mountsUnder, start } from "../../../src/shim/manager.ts";
import { Code, connectUnix, TtrpcError } from "../../../src/ttrpc/index.ts";

// The daemon runs with the bundle as cwd, so tsx is named by absolute URL.
const SELF = { command: process.execPath, args: ["--import", import.meta.resolve("tsx"), resolve("src/shim/main.ts")] };

function encode(name: string, obj: Record<string, unknown>): Uint8Array {
  const T = messageType(name);
  return T.encode(T.fromObject(obj)).finish();
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  return cond();
}

/** Daemons whose command line mentions dir (a safety net when the test failed before Connect). */
function daemonsUnder(dir: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, "utf8").includes(dir)) out.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

function makeBundle(root: string, id: string, annotations: Record<string, string>): string {
  const b = join(root, id);
  mkdirSync(join(b, "rootfs"), { recursive: true });
  writeFileSync(join(b, "config.json"), JSON.stringify({ ociVersion: "1.0.2", annotations }));
  assert.equal(spawnSync("mkfifo", [join(b, "log")]).status, 0);
  return b;
}

test("start → daemon → Create fails with the missing-kernel error → Shutdown → delete", async () => {
  const root = mkdtempSync(join(tmpdir(), "cove-mgr-"));
  const pids: number[] = [];
  const fds: number[] = [];
  try {
    const sockDir = join(root, "s");
    const cache = join(root, "cache");
    const cfg = join(root, "cove.toml");
    writeFileSync(cfg, `cache_dir = "${cache}"\n[log]\nlevel = "info"\n`);
    const pod = makeBundle(root, "pod1", { "io.kubernetes.cri.sandbox-id": "pod1" });
    const logFd = openSync(join(pod, "log"), constants.O_RDONLY | constants.O_NONBLOCK);
    fds.push(logFd);
    const stdin = encode("google.protobuf.Any", {
      type_url: "runtimeoptions.v1.Options",
      value: encode("runtimeoptions.v1.Options", { config_path: cfg }),
    });
    const flags = parseFlags(["-namespace", "k8s.io", "-address", "/x/containerd.sock", "-id", "pod1", "start"]);
    // As containerd 1.6 calls it (no MAX_SHIM_VERSION): the bare address.
    const answer = await start(flags, { stdin, cwd: pod, self: SELF, socketDir: sockDir, env: {} });
    const address = Buffer.from(answer).toString();
    assert.match(address, /^unix:\/\/.+\/s\/[0-9a-f]{64}$/);
    assert.equal(readFileSync(join(pod, "address"), "utf8"), address);
    assert.equal(statSync(addressPath(address)).mode & 0o777, 0o600);

    const c = await connectUnix(address, { timeoutMs: 10_000 });
    const S = "containerd.task.v2.Task";
    try {
      const conn = await c.call<{ shim_pid: number }>(S, "Connect", { id: "pod1" }, { timeoutMs: 10_000 });
      pids.push(conn.shim_pid);
      assert.notEqual(conn.shim_pid, process.pid);
      // Task API v3 (containerd 2.x) is served beside v2, same messages.
      const conn3 = await c.call<{ shim_pid: number }>("containerd.task.v3.Task", "Connect", { id: "pod1" });
      assert.equal(conn3.shim_pid, conn.shim_pid);

      // A container of the same pod reuses the running shim.
      const ctr = makeBundle(root, "c1", { "io.kubernetes.cri.sandbox-id": "pod1" });
      const f2 = parseFlags(["-namespace", "k8s.io", "-address", "/x/containerd.sock", "-id", "c1", "start"]);
      // As containerd 2.x calls it (MAX_SHIM_VERSION=2, a 2.x binary): version 3 in JSON.
      const again = await start(f2, {
        stdin: new Uint8Array(),
        cwd: ctr,
        self: SELF,
        socketDir: sockDir,
        env: { MAX_SHIM_VERSION: "2" },
        probeContainerd: () => 2,
      });
      assert.deepEqual(JSON.parse(Buffer.from(again).toString()), { version: 3, address, protocol: "ttrpc" });

      let err: unknown;
      try {
        await c.call(S, "Create", { id: "pod1", bundle: pod, rootfs: [] }, { timeoutMs: 10_000 });
      } catch (e) {
        err = e;
      }
      assert.ok(err instanceof TtrpcError, "Create must fail without a guest kernel");
      assert.equal(err.code, Code.FAILED_PRECONDITION);
      assert.ok(err.message.includes(join(cache, "guest", "kernel")), err.message);
      assert.ok(err.message.includes("cove guest build"), err.message);

      await assert.rejects(c.call(S, "Delete", { id: "pod1" }), (e: TtrpcError) => e.code === Code.NOT_FOUND);
      await c.call(S, "Shutdown", { id: "pod1" });
    } finally {
      c.close();
    }
    assert.ok(await until(() => !alive(pids[0]!), 5000), "daemon must exit after Shutdown");
    assert.equal(existsSync(addressPath(address)), false, "socket must be removed");

    const buf = Buffer.alloc(1 << 16);
    let n = 0;
    try {
      n = readSync(logFd, buf);
    } catch {
      // EAGAIN: nothing logged
    }
    const log = buf.subarray(0, n).toString("utf8");
    // At info, lifecycle RPCs are logged and queries (Connect) are not: they are debug lines.
    for (const m of ["Create", "Delete", "Shutdown"]) assert.match(log, new RegExp(`"method":"${m}"`));
    assert.doesNotMatch(log, /"method":"Connect"/);

    const out = await deleteTask(parseFlags(["-id", "pod1", "-bundle", pod, "delete"]), { cwd: pod });
    const T = messageType("containerd.task.v2.DeleteResponse");
    const d = T.toObject(T.decode(out), { longs: Number }) as { exit_status: number; exited_at: { seconds: number } };
    assert.equal(d.exit_status, 137);
    assert.ok(d.exited_at.seconds > 0);
    // Idempotent.
    await deleteTask(parseFlags(["-id", "pod1", "-bundle", pod, "delete"]), { cwd: pod });
  } finally {
    for (const fd of fds) closeSync(fd);
    for (const pid of [...pids, ...daemonsUnder(root)]) if (alive(pid)) process.kill(pid, "SIGKILL");
    rmSync(root, { recursive: true, force: true });
  }
});

test("a stale socket (its server died) is replaced; a live one is reported as existing", async () => {
  const root = mkdtempSync(join(tmpdir(), "cove-mgr-"));
  try {
    const path = join(root, "sock");
    const r = spawnSync(process.execPath, [
      "-e",
      `require("net").createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, "SIGKILL"))`,
    ]);
    assert.equal(r.signal, "SIGKILL");
    assert.ok(existsSync(path), "the dead server left its socket file");
    const first = await listenOrReuse(path);
    assert.equal(first.kind, "listening");
    try {
      assert.equal((await listenOrReuse(path)).kind, "existing");
    } finally {
      if (first.kind === "listening") closeFd(first.fd);
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("delete finds mounts left under the bundle's rootfs, deepest first", async () => {
  const info = [
    "22 1 8:1 / / rw - ext4 /dev/sda1 rw",
    "30 22 0:40 / /b/t1/rootfs rw - overlay overlay rw",
    "31 30 0:41 / /b/t1/rootfs/proc rw - proc proc rw",
    "32 22 0:42 / /b/t1/rootfs2 rw - tmpfs tmpfs rw",
    "33 22 0:43 / /b/t1/rootfs/with\\040space rw - tmpfs tmpfs rw",
  ].join("\n");
  assert.deepEqual(mountsUnder("/b/t1/rootfs", info), ["/b/t1/rootfs/with space", "/b/t1/rootfs/proc", "/b/t1/rootfs"]);
  const root = mkdtempSync(join(tmpdir(), "cove-mgr-"));
  try {
    const unmounted: string[] = [];
    const out = await deleteTask(parseFlags(["-id", "t1", "-bundle", root, "delete"]), {
      cwd: root,
      unmount: (p) => unmounted.push(p),
    });
    assert.deepEqual(unmounted, [], "nothing is mounted under a fresh bundle");
    assert.ok(out.length > 0);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
