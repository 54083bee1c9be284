// `cove help [command]`.
import type { Command } from "./command.ts";
import { findCommand } from "./command.ts";

export function helpCommand(all: () => readonly Command[]): Command {
  return {
    path: ["help"],
    summary: "list the commands, or show one command's usage",
    usage: "cove help [command words]",
    async run(args) {
      if (args.length) {
        const found = findCommand(all(), args);
        if (!found) {
          process.stderr.write(`cove: no command ${args.join(" ")}\n`);
          return 2;
        }
        process.stdout.write(`${found.cmd.usage}\n`);
        return 0;
      }
      process.stdout.write(overview(all()));
      return 0;
    },
  };
}

export function overview(commands: readonly Command[]): string {
  const names = commands.map((c) => c.path.join(" "));
  const w = Math.max(...names.map((n) => n.length));
  const lines = commands.map((c, i) => `  ${names[i]!.padEnd(w)}  ${c.summary}`);
  return `usage: cove <command> [options]\n\ncommands:\n${lines.join("\n")}\n\n\`cove help <command>\` shows a command's options.\n`;
}
