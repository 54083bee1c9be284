// Numbers the readiness line reports: how long the kernel and the agent took, and memory in use.
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";

/** Milliseconds since boot (CLOCK_MONOTONIC, which starts near zero when the guest kernel boots). */
export function uptimeMs(): number {
  return Number(process.hrtime.bigint() / 1000n) / 1000;
}

/** When this process started, in ms since boot: the moment the kernel handed over to init. */
export function processStartMs(): number {
  return uptimeMs() - performance.now();
}

/** MemTotal − MemAvailable from /proc/meminfo, in KiB ("memory in use"). */
export function memUsedKiB(meminfo = readFileSync("/proc/meminfo", "utf8")): number {
  const field = (name: string) => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(meminfo);
    if (!m?.[1]) throw new Error(`/proc/meminfo has no ${name}`);
    return Number(m[1]);
  };
  return field("MemTotal") - field("MemAvailable");
}
