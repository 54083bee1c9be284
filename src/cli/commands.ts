// Every `cove` command. To add one: write src/cli/<name>.ts exporting a Command, list it here.
import { cacheGcCommand, cacheLsCommand, cachePruneCommand } from "./cache.ts";
import { checkCommand } from "./check.ts";
import type { Command } from "./command.ts";
import { envCommand } from "./env.ts";
import { execCommand } from "./exec.ts";
import { guestBuild } from "./guest.ts";
import { helpCommand } from "./help.ts";
import { installCommand } from "./install.ts";
import { metricsCommand, monitorCommand } from "./metrics.ts";
import { psCommand } from "./ps.ts";
import { uninstallCommand } from "./uninstall.ts";

export const COMMANDS: readonly Command[] = [
  guestBuild,
  checkCommand,
  installCommand,
  uninstallCommand,
  psCommand,
  envCommand,
  cacheLsCommand,
  cachePruneCommand,
  cacheGcCommand,
  execCommand,
  metricsCommand,
  monitorCommand,
  helpCommand(() => COMMANDS),
];
