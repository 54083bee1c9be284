// Running a command to completion with a hard timeout, capturing its output. Every external tool the
// harness calls (ctr, containerd-shim-*, umount) goes through here so nothing can hang a test.
import { spawn } from "node:child_process";

export interface RunResult {
  /** Exit code, or null when killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface RunOptions {
  timeoutMs?: number;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Written to stdin, which is then closed (stdin is empty otherwise). */
  input?: string | Uint8Array;
}

/** Runs `cmd args…`; on timeout it SIGKILLs the whole process group and resolves with timedOut=true. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    // detached: its own process group, so a timeout kills grandchildren too.
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, detached: true });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    child.stdin.on("error", () => {}); // EPIPE when the command does not read stdin
    child.stdin.end(opts.input ?? "");
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        if (child.pid) process.kill(-child.pid, "SIGKILL");
      } catch {
        child.kill("SIGKILL");
      }
    }, timeoutMs);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${cmd}: ${e.message}`));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
        timedOut,
      });
    });
  });
}

/** Like run(), but throws (with the command's output) unless it exits 0. */
export async function runOk(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(describeFailure(`${cmd} ${args.join(" ")}`, r));
  return r;
}

export function describeFailure(what: string, r: RunResult): string {
  const how = r.timedOut ? "timed out" : r.signal ? `was killed by ${r.signal}` : `exited with ${r.code}`;
  return `${what} ${how}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;
}
