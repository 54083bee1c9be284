// `cove`: the operator's command line (bundled to dist/cove.cjs; bin/cove).
import { errorMessage } from "../common/errors.ts";
import { findCommand, UsageError } from "./command.ts";
import { COMMANDS } from "./commands.ts";
import { overview } from "./help.ts";

async function main(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv[0] === "--help" || argv[0] === "-h") {
    process.stdout.write(overview(COMMANDS));
    return argv.length === 0 ? 2 : 0;
  }
  const found = findCommand(COMMANDS, argv);
  if (!found) {
    process.stderr.write(`cove: unknown command: ${argv.join(" ")}\n\n${overview(COMMANDS)}`);
    return 2;
  }
  if (found.rest.includes("--help") || found.rest.includes("-h")) {
    process.stdout.write(`${found.cmd.usage}\n`);
    return 0;
  }
  try {
    return await found.cmd.run(found.rest);
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      process.stderr.write(`cove ${found.cmd.path.join(" ")}: ${errorMessage(e)}\n\n${found.cmd.usage}\n`);
      return 2;
    }
    process.stderr.write(`cove ${found.cmd.path.join(" ")}: ${errorMessage(e)}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`cove: ${String(e)}\n`);
    process.exitCode = 1;
  },
);
