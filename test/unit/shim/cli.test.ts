// The binary as containerd runs it: `start` prints only the address (here in the 2.3 form, with
// BootstrapParams on stdin choosing the socket dir and a BootstrapResult on stdout), `delete`
// prints only a DeleteResponse, bad flags exit 2. Run from source; the daemon it spawns is shut down (or killed) before the test ends.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { test } from "node:test";
import { messageType } from "../../../src/proto/root.ts";
import { connectUnix } from "../../../src/ttrpc/index.ts";

const MAIN = resolve("src/shim/main.ts");
const TSX = import.meta.resolve("tsx");

function shim(args: string[], cwd: string, input: Uint8Array = new Uint8Array(), env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, ["--import", TSX, MAIN, ...args], {
    cwd,
    input,
    timeout: 30_000,
    env: { ...process.env, ...env },
  });
}

function encode(name: string, obj: Record<string, unknown>): Uint8Array {
  const T = messageType(name);
  return T.encode(T.fromObject(obj)).finish();
}

/** The address in a BootstrapResult, what containerd 2.3 decodes `start`'s stdout as first. */
function resultAddress(stdout: Uint8Array): string {
  const T = messageType("containerd.runtime.bootstrap.v1.BootstrapResult");
  const r = T.toObject(T.decode(stdout)) as { version: number; address: string; protocol: string };
  assert.equal(r.version, 3);
  assert.equal(r.protocol, "ttrpc");
  return r.address;
}

function processesMentioning(s: string): number[] {
  return readdirSync("/proc")
    .filter((n) => /^\d+$/.test(n))
    .filter((n) => {
      try {
        return readFileSync(`/proc/${n}/cmdline`, "utf8").includes(s);
      } catch {
        return false;
      }
    })
    .map(Number);
}

test("start prints only the address, delete prints only a DeleteResponse, bad flags exit 2", async () => {
  const root = mkdtempSync(join(tmpdir(), "cove-cli-"));
  try {
    const bundle = join(root, "t1");
    mkdirSync(bundle);
    writeFileSync(join(bundle, "config.json"), "{}");
    const sockDir = join(root, "sockets");
    const params = encode("containerd.runtime.bootstrap.v1.BootstrapParams", {
      instance_id: "t1",
      namespace: "default",
      socket_dir: sockDir,
    });
    const r = shim(["-namespace", "default", "-address", join(root, "c.sock"), "-id", "t1", "start"], bundle, params);
    assert.equal(r.status, 0, r.stderr.toString());
    assert.equal(r.stderr.toString(), "", "nothing on stderr");
    const out = resultAddress(r.stdout);
    assert.match(out, new RegExp(`^unix://${sockDir}/[0-9a-f]{64}$`), "stdout is exactly the BootstrapResult");

    const c = await connectUnix(out, { timeoutMs: 10_000 });
    try {
      const S = "containerd.task.v2.Task";
      const conn = await c.call<{ shim_pid: number }>(S, "Connect", { id: "t1" }, { timeoutMs: 10_000 });
      assert.ok(conn.shim_pid > 0);
      await c.call(S, "Shutdown", { id: "t1" }, { timeoutMs: 5000 });
    } finally {
      c.close();
    }

    const end = Date.now() + 5000;
    while (processesMentioning(sockDir).length > 0 && Date.now() < end) await new Promise((x) => setTimeout(x, 20));
    assert.deepEqual(processesMentioning(sockDir), [], "the daemon exits after Shutdown");
    assert.deepEqual(readdirSync(sockDir), [], "and removes its socket");

    const d = shim(
      ["-namespace", "default", "-address", join(root, "c.sock"), "-id", "t1", "-bundle", bundle, "delete"],
      bundle,
    );
    assert.equal(d.status, 0, d.stderr.toString());
    assert.equal(d.stderr.toString(), "");
    const T = messageType("containerd.task.v2.DeleteResponse");
    const resp = T.toObject(T.decode(d.stdout), { longs: Number }) as {
      exit_status: number;
      exited_at: { seconds: number };
    };
    assert.equal(resp.exit_status, 137);
    assert.ok(resp.exited_at.seconds > 0);

    const bad = shim(["-bogus", "start"], bundle);
    assert.equal(bad.status, 2);
    assert.equal(bad.stdout.length, 0);
    assert.match(bad.stderr.toString(), /flag provided but not defined: -bogus/);
  } finally {
    for (const pid of processesMentioning(root)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone
      }
    }
    rmSync(root, { recursive: true, force: true });
  }
});

test("start as bin/containerd-shim-cove-v2 runs it: the start process itself becomes the daemon", async () => {
  const root = mkdtempSync(join(tmpdir(), "cove-cli-"));
  try {
    const bundle = join(root, "t2");
    mkdirSync(bundle);
    writeFileSync(join(bundle, "config.json"), "{}");
    const sockDir = join(root, "sockets");
    const params = encode("containerd.runtime.bootstrap.v1.BootstrapParams", {
      instance_id: "t2",
      socket_dir: sockDir,
    });
    const args = ["-namespace", "default", "-address", join(root, "c.sock"), "-id", "t2", "start"];
    // As the wrapper does: detached with setsid -f, output read until the process lets go of it.
    const r = spawnSync("setsid", ["-f", process.execPath, "--import", TSX, MAIN, ...args], {
      cwd: bundle,
      input: params,
      timeout: 30_000,
      env: { ...process.env, COVE_START_BECOMES_DAEMON: "1" },
    });
    assert.equal(r.stderr.toString(), "");
    const address = resultAddress(r.stdout);
    assert.match(address, new RegExp(`^unix://${sockDir}/[0-9a-f]{64}$`));
    const daemons = processesMentioning(root);
    assert.equal(daemons.length, 1, "exactly one process: the daemon that ran start");

    const c = await connectUnix(address, { timeoutMs: 10_000 });
    try {
      const S = "containerd.task.v2.Task";
      const conn = await c.call<{ shim_pid: number }>(S, "Connect", { id: "t2" }, { timeoutMs: 10_000 });
      assert.equal(conn.shim_pid, daemons[0]);
      assert.equal(readFileSync(`/proc/${conn.shim_pid}/environ`, "utf8").includes("COVE_START_BECOMES_DAEMON"), true);
      // A second start for the same group finds the live shim and exits without serving.
      const again = spawnSync("setsid", ["-f", process.execPath, "--import", TSX, MAIN, ...args], {
        cwd: bundle,
        input: params,
        timeout: 30_000,
        env: { ...process.env, COVE_START_BECOMES_DAEMON: "1" },
      });
      assert.equal(resultAddress(again.stdout), address);
      await c.call(S, "Shutdown", { id: "t2" }, { timeoutMs: 5000 });
    } finally {
      c.close();
    }
    const end = Date.now() + 5000;
    while (processesMentioning(root).length > 0 && Date.now() < end) await new Promise((x) => setTimeout(x, 20));
    assert.deepEqual(processesMentioning(root), [], "daemon gone after Shutdown, the second start too");
    assert.deepEqual(readdirSync(sockDir), []);
  } finally {
    for (const pid of processesMentioning(root)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone
      }
    }
    rmSync(root, { recursive: true, force: true });
  }
});

test("bin/containerd-shim-cove-v2 passes every answer form through and turns anything else into an error", () => {
  const root = mkdtempSync(join(tmpdir(), "cove-wrap-"));
  try {
    mkdirSync(join(root, "bin"));
    mkdirSync(join(root, "dist"));
    copyFileSync(resolve("bin/containerd-shim-cove-v2"), join(root, "bin", "containerd-shim-cove-v2"));
    // Stands in for the bundle: prints the bytes it is given (hex in the environment).
    writeFileSync(
      join(root, "dist", "containerd-shim-cove-v2.cjs"),
      'process.stdout.write(Buffer.from(process.env.ANSWER_HEX, "hex"));\n',
    );
    const run = (answer: Uint8Array) =>
      spawnSync("sh", [join(root, "bin", "containerd-shim-cove-v2"), "-id", "x", "start"], {
        env: { ...process.env, ANSWER_HEX: Buffer.from(answer).toString("hex") },
        timeout: 30_000,
      });
    const a = "unix:///run/containerd/s/0123";
    const pb = encode("containerd.runtime.bootstrap.v1.BootstrapResult", { version: 3, address: a, protocol: "ttrpc" });
    for (const answer of [
      Buffer.from(a),
      Buffer.from(JSON.stringify({ version: 3, address: a, protocol: "ttrpc" })),
      pb,
    ]) {
      const w = run(answer);
      assert.equal(w.status, 0, w.stderr.toString());
      assert.deepEqual(Buffer.from(w.stdout), Buffer.from(answer));
    }
    const bad = run(Buffer.from("Error: something broke"));
    assert.equal(bad.status, 1);
    assert.match(bad.stderr.toString(), /something broke/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
