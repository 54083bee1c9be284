// The OCI runtime in the guest (crun, or runc), driven through its command line. Every child is
// registered with the PID-1 reaper in the same tick as spawn, so the reaper never steals its
// status. Errors come from the runtime's JSON log (--log, --log-format=json), not from stderr,
// because a runtime's stderr during `create`/`exec` is the container's stderr.
import { type StdioOptions, spawn } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../log.ts";
import type { Reaper } from "../pid1/reaper.ts";

export interface RuntimeResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  /** The runtime's own error messages (log file + stderr when it was not the container's). */
  error: string;
}

export class RuntimeError extends Error {
  constructor(
    readonly command: string,
    readonly detail: string,
  ) {
    super(`${command}: ${detail}`);
    this.name = "RuntimeError";
  }
}

export interface OciRuntimeOptions {
  /** Runtime binary (crun or runc, looked up in PATH). */
  binary: string;
  /** The runtime's state directory (--root). */
  root: string;
  /** Where per-call JSON logs go. */
  logDir: string;
  reaper: Reaper;
  log: Logger;
  timeoutMs?: number;
}

let seq = 0;

export class OciRuntime {
  constructor(private readonly o: OciRuntimeOptions) {}

  get name(): string {
    return this.o.binary;
  }

  /** Runs the runtime; resolves with its result (never rejects on a non-zero exit). */
  run(args: string[], opts: { stdio?: StdioOptions; cwd?: string } = {}): Promise<RuntimeResult> {
    const logFile = join(this.o.logDir, `rt-${process.pid}-${++seq}.json`);
    const argv = ["--root", this.o.root, `--log=${logFile}`, "--log-format=json", ...args];
    if (this.o.binary.endsWith("crun")) argv[2] = `--log=file:${logFile}`;
    const stdio: StdioOptions = opts.stdio ?? ["ignore", "pipe", "pipe"];
    const captureStderr = Array.isArray(stdio) && stdio[2] === "pipe";
    return new Promise((resolve) => {
      const child = spawn(this.o.binary, argv, { stdio, cwd: opts.cwd });
      this.o.reaper.own(child);
      let out = "";
      let err = "";
      child.stdout?.setEncoding("utf8").on("data", (d: string) => {
        if (out.length < 1 << 20) out += d;
      });
      if (captureStderr)
        child.stderr?.setEncoding("utf8").on("data", (d: string) => {
          if (err.length < 1 << 16) err += d;
        });
      const timer = setTimeout(() => child.kill("SIGKILL"), this.o.timeoutMs ?? 60_000);
      let settled = false;
      const done = (code: number | null, signal: NodeJS.Signals | null, spawnErr?: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const logText = readLog(logFile);
        rmSync(logFile, { force: true });
        const error = [spawnErr?.message, logText, err.trim()].filter(Boolean).join("; ");
        this.o.log.debug({ args, code, signal, error: error || undefined }, "oci runtime");
        resolve({ code, signal, stdout: out, error });
      };
      child.on("error", (e) => done(null, null, e));
      child.on("close", (code, signal) => done(code, signal));
    });
  }

  /** Runs and throws RuntimeError unless it exited 0. */
  async must(args: string[], opts: { stdio?: StdioOptions; cwd?: string } = {}): Promise<RuntimeResult> {
    const r = await this.run(args, opts);
    if (r.code !== 0) {
      const why = r.error || (r.signal ? `killed by ${r.signal}` : `exit status ${r.code}`);
      throw new RuntimeError(`${this.o.binary} ${args[0]}`, why);
    }
    return r;
  }

  /** `<runtime> --version`, first line. */
  async version(): Promise<string> {
    const r = await this.run(["--version"]);
    return r.stdout.split("\n")[0]?.trim() || this.o.binary;
  }
}

/** The messages of a runtime JSON log (one object per line: {level, msg}); plain lines kept as is. */
export function readLog(file: string): string {
  if (!existsSync(file)) return "";
  const msgs: string[] = [];
  for (const line of readFileSync(file, "utf8").split("\n")) {
    if (!line.trim()) continue;
    try {
      const o = JSON.parse(line) as { msg?: string; level?: string };
      if (o.level && !["error", "fatal", "panic", "warning"].includes(o.level)) continue;
      if (o.msg) msgs.push(o.msg);
    } catch {
      msgs.push(line.trim());
    }
  }
  return msgs.join("; ");
}

/** Reads the pid a runtime wrote with --pid-file. */
export function readPidFile(file: string): number {
  const pid = Number(readFileSync(file, "utf8").trim());
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`pid file ${file} holds no pid`);
  return pid;
}
