// Running other programs: one CommandError that names the command, its exit status and what it
// printed, and the few ways cove runs a program (to completion synchronously for build and check
// tools, asynchronously with a timeout where the event loop must keep running, streaming lines for
// long builds).
import { execFile, spawn, spawnSync } from "node:child_process";

/** How much of a failed command's output its error message carries. */
const TAIL_LINES = 20;

export class CommandError extends Error {
  override name = "CommandError";
  constructor(
    readonly argv: string[],
    /** The exit status; null when a signal or the timeout ended it. */
    readonly status: number | null,
    /** What it printed on stderr (the tail of all its output, for streamed commands). */
    readonly stderr: string,
    cause?: unknown,
  ) {
    const tail = stderr.trim().split("\n").slice(-TAIL_LINES).join("\n");
    const why = status === null ? "killed" : `exit ${status}`;
    const detail = tail || (cause instanceof Error ? cause.message : "");
    super(
      `${argv.join(" ")} failed (${why})${detail ? `: ${detail}` : ""}`,
      cause === undefined ? undefined : { cause },
    );
  }
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

/** Runs a command to completion (blocking) and returns its stdout; CommandError with its output on failure. */
export function run(argv: string[], opts: RunOptions = {}): string {
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error("run: empty command");
  const r = spawnSync(cmd, args, { cwd: opts.cwd, env: opts.env, encoding: "utf8", maxBuffer: 64 << 20 });
  if (r.error) throw new Error(`cannot run ${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new CommandError(argv, r.status, `${r.stdout ?? ""}${r.stderr ?? ""}`);
  return r.stdout;
}

/** Runs a command without blocking the event loop; killed after timeoutMs. Resolves to its stdout. */
export function runAsync(argv: string[], opts: RunOptions & { timeoutMs: number }): Promise<string> {
  const [cmd, ...args] = argv;
  if (!cmd) return Promise.reject(new Error("runAsync: empty command"));
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { cwd: opts.cwd, env: opts.env, timeout: opts.timeoutMs, encoding: "utf8" },
      (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        const status = typeof err.code === "number" ? err.code : null;
        reject(new CommandError(argv, status, stderr, err));
      },
    );
  });
}

/** Runs a long command, calling onLine for each output line (stdout and stderr). */
export function runStreaming(argv: string[], onLine: (line: string) => void, opts: RunOptions = {}): Promise<void> {
  const [cmd, ...args] = argv;
  if (!cmd) return Promise.reject(new Error("runStreaming: empty command"));
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ["ignore", "pipe", "pipe"] });
    const tail: string[] = [];
    const feed = (stream: NodeJS.ReadableStream) => {
      let buf = "";
      stream.setEncoding("utf8");
      stream.on("data", (chunk: string) => {
        buf += chunk;
        let i = buf.indexOf("\n");
        while (i >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          tail.push(line);
          if (tail.length > 2 * TAIL_LINES) tail.shift();
          onLine(line);
          i = buf.indexOf("\n");
        }
      });
      stream.on("end", () => {
        if (buf) onLine(buf);
      });
    };
    feed(child.stdout);
    feed(child.stderr);
    child.on("error", (e) => reject(new Error(`cannot run ${cmd}: ${e.message}`)));
    child.on("close", (code, signal) => {
      if (code === 0) resolvePromise();
      else reject(new CommandError(argv, signal ? null : code, tail.join("\n")));
    });
  });
}

/** The installed Debian version of a package, or undefined when it is not installed. */
export function dpkgVersion(pkg: string): string | undefined {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query format syntax, not a template
  const r = spawnSync("dpkg-query", ["-W", "-f=${Status}\t${Version}", pkg], { encoding: "utf8" });
  if (r.status !== 0) return undefined;
  const [status, version] = r.stdout.split("\t");
  return status?.endsWith("installed") && !status.includes("not-installed") ? version : undefined;
}

/** The absolute path of a program on PATH, or undefined. */
export function which(name: string, path = process.env.PATH ?? ""): string | undefined {
  const r = spawnSync("sh", ["-c", 'command -v -- "$1"', "sh", name], {
    encoding: "utf8",
    env: { ...process.env, PATH: path },
  });
  const out = r.stdout.trim();
  return r.status === 0 && out.startsWith("/") ? out : undefined;
}
