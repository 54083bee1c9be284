// The agent's logger: pino, JSON lines, into the log sink (log-sink.ts): the shim's log port once
// the shim reads it, the console (stdout, synchronous) before that, and fatal lines always, so
// nothing is lost when the VM powers off right after a line. The level comes from the environment
// on a host (COVE_AGENT_LOG_LEVEL) and from the kernel command line in a guest (cove.log_level=,
// set from the shim's [log] level), applied once /proc is mounted.
import { writeSync } from "node:fs";
import pino from "pino";
import { isLevelName, LEVELS } from "../../src/sandbox/agent/log-format.ts";
import { LogSink } from "./log-sink.ts";

export type Logger = pino.Logger;

/** The agent's one sink (the log port attaches to it; kernel records go into it too). */
export const logSink = new LogSink((line) => writeSync(1, line));

const LEVEL_OF_LINE = /^\{"level":(\d+)/;

export function createLogger(level = process.env.COVE_AGENT_LOG_LEVEL || "info", sink = logSink): Logger {
  return pino(
    { name: "cove-agent", level: isLevelName(level) ? level : "info", base: { pid: process.pid } },
    {
      write(line: string) {
        const n = Number(LEVEL_OF_LINE.exec(line)?.[1] ?? 0);
        sink.write(line, { console: true, always: n >= LEVELS.fatal });
      },
    },
  );
}

/** Applies cove.log_level from the kernel command line, if it names a level. */
export function applyLogLevel(log: Logger, cmdline: Map<string, string>): void {
  const want = cmdline.get("cove.log_level");
  if (want === undefined) return;
  if (isLevelName(want)) log.level = want;
  else log.warn({ cove_log_level: want }, "unknown cove.log_level on the kernel command line: kept the default");
}
