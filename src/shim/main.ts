// containerd-shim-cove-v2: `start` and `delete` run as short commands; without an action the binary
// is the serving daemon. Each path loads only what it needs (start must be quick).
import { readFileSync } from "node:fs";
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
    process.stderr.write("-info is not supported by containerd-shim-cove-v2\n");
    return 1;
  }
  switch (flags.action) {
    case "start": {
      const { start } = await import("./manager.ts");
      const address = await start(flags, { stdin: readStdin(), cwd: process.cwd() });
      process.stdout.write(address);
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
