// iproute2 (`ip`, `tc`) run inside a network namespace given by path (`ip -n` takes only names
// under /var/run/netns, so nsenter --net enters any path, e.g. /proc/<pid>/ns/net). Runs as a
// child process, never blocking the event loop; failures carry the command and its stderr.
import { runAsync } from "../common/exec.ts";

const TIMEOUT_MS = 10_000;

function run(argv: string[]): Promise<string> {
  return runAsync(argv, { timeoutMs: TIMEOUT_MS });
}

export class NetnsShell {
  constructor(
    /** Namespace path; undefined = the caller's own namespace. */
    readonly path: string | undefined,
  ) {}

  private argv(cmd: string, args: string[]): string[] {
    return this.path ? ["nsenter", `--net=${this.path}`, "--", cmd, ...args] : [cmd, ...args];
  }

  ip(...args: string[]): Promise<string> {
    return run(this.argv("ip", args));
  }

  /** `ip -j …` parsed (iproute2 prints nothing for an empty list). */
  async ipJson<T>(...args: string[]): Promise<T[]> {
    const out = await run(this.argv("ip", ["-j", ...args]));
    return out.trim() ? (JSON.parse(out) as T[]) : [];
  }

  tc(...args: string[]): Promise<string> {
    return run(this.argv("tc", args));
  }

  async tcJson<T>(...args: string[]): Promise<T[]> {
    const out = await run(this.argv("tc", ["-j", ...args]));
    return out.trim() ? (JSON.parse(out) as T[]) : [];
  }
}
