// A `cove` subcommand. Each lives in its own file and is listed once in commands.ts.

export interface Command {
  /** The words that select it, e.g. ["guest", "build"]. */
  path: string[];
  /** One line for `cove help`. */
  summary: string;
  /** Full usage text for `cove help <command>` and `--help`. */
  usage: string;
  /** Runs with the arguments after the command words; resolves to the process exit code. */
  run(args: string[]): Promise<number>;
}

/** The command whose path is the longest prefix of argv, and the remaining arguments. */
export function findCommand(
  commands: readonly Command[],
  argv: string[],
): { cmd: Command; rest: string[] } | undefined {
  let best: Command | undefined;
  for (const c of commands) {
    if (c.path.every((w, i) => argv[i] === w) && (!best || c.path.length > best.path.length)) best = c;
  }
  return best ? { cmd: best, rest: argv.slice(best.path.length) } : undefined;
}

/** Thrown for bad arguments: main prints the message and the command's usage, exit 2. */
export class UsageError extends Error {}
