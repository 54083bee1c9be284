// The agent's logger: pino, JSON lines, written synchronously to stdout (the guest console when
// the agent is PID 1), so nothing is lost when the VM powers off right after a line.
import pino from "pino";

export type Logger = pino.Logger;

export function createLogger(level = process.env.COVE_AGENT_LOG_LEVEL || "info"): Logger {
  return pino({ name: "cove-agent", level, base: { pid: process.pid } }, pino.destination({ dest: 1, sync: true }));
}
