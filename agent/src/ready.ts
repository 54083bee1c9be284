// The one readiness line, printed on the console once the agent can serve:
//   cove-agent ready uptime_ms=<n> kernel_ms=<n> agent_ms=<n> mem_used_kib=<n>
// uptime_ms: guest uptime now; kernel_ms: uptime when the kernel started init (this process);
// agent_ms: uptime_ms − kernel_ms; mem_used_kib: MemTotal − MemAvailable. Plain text, not JSON, one
// write(2), so the VMM and tests can match the prefix `cove-agent ready uptime_ms=` on the serial line.
import { writeSync } from "node:fs";
import { memUsedKiB, processStartMs, uptimeMs } from "./pid1/stats.ts";

export const READY_PREFIX = "cove-agent ready";

export interface Readiness {
  uptime_ms: number;
  kernel_ms: number;
  agent_ms: number;
  mem_used_kib: number;
}

export function formatReady(r: Readiness): string {
  return `${READY_PREFIX} uptime_ms=${r.uptime_ms} kernel_ms=${r.kernel_ms} agent_ms=${r.agent_ms} mem_used_kib=${r.mem_used_kib}`;
}

/** Parses a readiness line (or a line containing one, e.g. with console noise before it). */
export function parseReady(line: string): Readiness | undefined {
  const m = /cove-agent ready uptime_ms=(\d+) kernel_ms=(\d+) agent_ms=(\d+) mem_used_kib=(\d+)/.exec(line);
  if (!m) return undefined;
  return { uptime_ms: Number(m[1]), kernel_ms: Number(m[2]), agent_ms: Number(m[3]), mem_used_kib: Number(m[4]) };
}

export function announceReady(): Readiness {
  const uptime = Math.round(uptimeMs());
  const kernel = Math.round(processStartMs());
  const r: Readiness = { uptime_ms: uptime, kernel_ms: kernel, agent_ms: uptime - kernel, mem_used_kib: memUsedKiB() };
  writeSync(1, `${formatReady(r)}\n`);
  return r;
}
