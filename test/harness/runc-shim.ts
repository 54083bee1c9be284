// Runs containerd's Go shim (containerd-shim-runc-v2, Go ttrpc) standalone as a ttrpc peer: the
// daemon half only (no `start`, no containerd), serving on a socket in a temp dir given with
// -socket. It needs a `log` FIFO in its bundle (cwd) with a reader, and a config.json.
// Used by the interop test and by test/bench/ttrpc.bench.ts.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectUnix } from "../../src/ttrpc/index.ts";

export const RUNC_SHIM_BIN = "/usr/bin/containerd-shim-runc-v2";

/** Why the Go shim cannot run here, or undefined if it can. */
export function runcShimUnavailable(): string | undefined {
  if (!existsSync(RUNC_SHIM_BIN)) return `${RUNC_SHIM_BIN} is not installed (apt-get install containerd)`;
  if (process.getuid?.() !== 0) return "containerd-shim-runc-v2 needs root";
  return undefined;
}

export interface RuncShim {
  socket: string;
  pid: number;
  stop(): Promise<void>;
}

function exited(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    child.once("exit", () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

export async function startRuncShim(timeoutMs = 5000): Promise<RuncShim> {
  const dir = mkdtempSync(join(tmpdir(), "cove-runc-shim-"));
  const bundle = join(dir, "bundle");
  const socket = join(dir, "shim.sock");
  execFileSync("mkdir", ["-p", bundle]);
  writeFileSync(join(bundle, "config.json"), JSON.stringify({ ociVersion: "1.0.2", annotations: {} }));
  execFileSync("mkfifo", [join(bundle, "log")]);
  // A reader for the log FIFO in its own process: opening a FIFO blocks until the writer comes.
  const logReader = spawn("cat", [join(bundle, "log")], { stdio: ["ignore", "ignore", "ignore"] });
  const child = spawn(
    RUNC_SHIM_BIN,
    [
      "-namespace",
      "cove-ttrpc-test",
      "-address",
      join(dir, "containerd.sock"),
      "-publish-binary",
      "/bin/true",
      "-id",
      "t1",
      "-socket",
      socket,
    ],
    {
      cwd: bundle,
      env: { ...process.env, TTRPC_ADDRESS: join(dir, "containerd.sock.ttrpc") },
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  let stderr = "";
  child.stderr!.on("data", (c: Buffer) => {
    stderr += c.toString();
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      if (!(await exited(child, 3000))) {
        child.kill("SIGKILL");
        await exited(child, 3000);
      }
    }
    logReader.kill("SIGKILL");
    await exited(logReader, 3000);
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      await stop();
      throw new Error(`containerd-shim-runc-v2 exited early (${child.exitCode ?? child.signalCode}): ${stderr.trim()}`);
    }
    if (existsSync(socket)) {
      try {
        const c = await connectUnix(socket, { timeoutMs: 500 });
        c.close();
        break;
      } catch {
        // not accepting yet
      }
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`containerd-shim-runc-v2 did not serve ${socket} within ${timeoutMs} ms: ${stderr.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  return { socket, pid: child.pid!, stop };
}
