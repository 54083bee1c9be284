// containerd-shim-cove-v2: `start` and `delete` run as short commands; without an action the binary
// is the serving daemon. Each path loads only what it needs (start must be quick).
import { closeSync, openSync, readFileSync, writeSync } from "node:fs";
import { FlagError, parseFlags } from "./flags.ts";
import { VERSION } from "./version.ts";

function readStdin(): Uint8Array {
  if (process.stdin.isTTY) return new Uint8Array();
  try {
    return readFileSync(0);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EAGAIN" || code === "EOF" || code === "EBADF") return new Uint8Array();
    throw e;
  }
}

/**
 * Set by bin/containerd-shim-cove-v2 when it ran us detached (setsid -f) with stdout/stderr on a pipe
 * it reads to EOF: this process binds the socket, prints the address, lets go of stdio and serves,
 * so a pod's shim costs one Node start-up instead of two.
 */
const BECOME_DAEMON = "COVE_START_BECOMES_DAEMON";

/** Points fds 0–2 at /dev/null (closing the wrapper's pipe, so its read ends), without Node streams. */
function releaseStdio(): void {
  for (const fd of [0, 1, 2]) {
    closeSync(fd);
    // The lowest free fd is the one just closed.
    const got = openSync("/dev/null", fd === 0 ? "r" : "w");
    if (got !== fd) throw new Error(`reopening fd ${fd} on /dev/null gave fd ${got}`);
  }
}

async function startAndBecomeDaemon(flags: ReturnType<typeof parseFlags>): Promise<number> {
  delete process.env[BECOME_DAEMON];
  const { planStart, raiseOomScore } = await import("./manager.ts");
  const plan = await planStart(flags, { stdin: readStdin(), cwd: process.cwd() });
  writeSync(1, plan.answer);
  releaseStdio();
  if (plan.listenFd === undefined) return 0; // a live shim already serves this pod
  raiseOomScore("self");
  const { serve } = await import("./daemon.ts");
  await serve(plan.daemonFlags, plan.listenFd);
  return -1;
}

async function main(): Promise<number> {
  let flags: ReturnType<typeof parseFlags>;
  try {
    flags = parseFlags(process.argv.slice(2));
  } catch (e) {
    if (e instanceof FlagError) {
      process.stderr.write(`${e.message}\n`);
      return 2;
    }
    throw e;
  }
  if (flags.version) {
    process.stdout.write(`containerd-shim-cove-v2:\n  Version:  ${VERSION}\n  Runtime:  node ${process.version}\n`);
    return 0;
  }
  if (flags.info) {
    const { runtimeInfo } = await import("./info.ts");
    writeSync(1, runtimeInfo(readStdin()));
    return 0;
  }
  switch (flags.action) {
    case "start": {
      if (process.env[BECOME_DAEMON] === "1") return startAndBecomeDaemon(flags);
      const { start } = await import("./manager.ts");
      const answer = await start(flags, { stdin: readStdin(), cwd: process.cwd() });
      process.stdout.write(answer);
      return 0;
    }
    case "delete": {
      const { deleteTask } = await import("./manager.ts");
      const out = await deleteTask(flags, { cwd: process.cwd() });
      process.stdout.write(out);
      return 0;
    }
    case "serve": {
      const { serve } = await import("./daemon.ts");
      await serve(flags);
      return -1; // the daemon exits by itself (Shutdown, SIGTERM)
    }
  }
}

main().then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (e: unknown) => {
    process.stderr.write(`containerd-shim-cove-v2: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
