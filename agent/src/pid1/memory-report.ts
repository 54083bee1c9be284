// The agent's own memory on request: SIGUSR2 makes it write its V8 heap statistics, per heap space,
// and process.memoryUsage() to a JSON file (written whole, then renamed). Nothing is kept or sampled
// in between, so it costs nothing until asked. Used to measure what the agent's heap takes in an
// idle pod (test/bench/guest-memory.bench.ts reads it through /proc/1/root).
import { renameSync, writeFileSync } from "node:fs";
import { getHeapSpaceStatistics, getHeapStatistics } from "node:v8";
import type { Logger } from "../log.ts";

export function memoryReport() {
  const kib = (n: number) => Math.round(n / 1024);
  const mu = process.memoryUsage();
  const h = getHeapStatistics();
  return {
    rssKiB: kib(mu.rss),
    heapTotalKiB: kib(mu.heapTotal),
    heapUsedKiB: kib(mu.heapUsed),
    externalKiB: kib(mu.external),
    arrayBuffersKiB: kib(mu.arrayBuffers),
    heapLimitKiB: kib(h.heap_size_limit),
    mallocedKiB: kib(h.malloced_memory),
    peakMallocedKiB: kib(h.peak_malloced_memory),
    physicalKiB: kib(h.total_physical_size),
    spaces: Object.fromEntries(
      getHeapSpaceStatistics().map((s) => [
        s.space_name,
        { sizeKiB: kib(s.space_size), usedKiB: kib(s.space_used_size), physicalKiB: kib(s.physical_space_size) },
      ]),
    ),
  };
}

/** On SIGUSR2, writes memoryReport() to `path`. */
export function installMemoryReport(log: Logger, path: string): void {
  process.on("SIGUSR2", () => {
    try {
      writeFileSync(`${path}.tmp`, JSON.stringify(memoryReport()));
      renameSync(`${path}.tmp`, path);
    } catch (err) {
      log.warn({ err }, "memory report");
    }
  });
}
