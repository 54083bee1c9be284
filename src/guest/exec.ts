// Running host tools for the guest build: captured output, clear errors naming the command.
import { spawn, spawnSync } from "node:child_process";

export class CommandError extends Error {
  constructor(
    readonly argv: string[],
    readonly status: number | null,
    readonly output: string,
  ) {
    const tail = output.trim().split("\n").slice(-20).join("\n");
    super(
      `command failed (${status === null ? "killed" : `exit ${status}`}): ${argv.join(" ")}${tail ? `\n${tail}` : ""}`,
    );
  }
}

/** Runs a command to completion and returns its stdout; throws CommandError with stderr on failure. */
export function run(argv: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): string {
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error("run: empty command");
  const r = spawnSync(cmd, args, { cwd: opts.cwd, env: opts.env, encoding: "utf8", maxBuffer: 64 << 20 });
  if (r.error) throw new Error(`cannot run ${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new CommandError(argv, r.status, `${r.stdout ?? ""}${r.stderr ?? ""}`);
  return r.stdout;
}

/** Runs a long command, calling onLine for each output line (stdout and stderr). */
export function runStreaming(
  argv: string[],
  onLine: (line: string) => void,
  opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<void> {
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
          if (tail.length > 40) tail.shift();
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
