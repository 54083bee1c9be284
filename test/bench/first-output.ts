// What the end-to-end benches share: `ctr` timed to its first output byte, and the median.
import { spawn } from "node:child_process";
import type { Containerd } from "../harness/containerd.ts";

/** Runs ctr with `args` against cd; ms to the first stdout byte and to the exit, and the output. */
export function firstOutput(
  cd: Containerd,
  args: string[],
  timeoutMs = 300_000,
): Promise<{ firstMs: number; totalMs: number; out: string }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let first = 0;
    let out = "";
    const p = spawn(cd.ctrBin, ["-a", cd.address, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    p.stdout.on("data", (d: Buffer) => {
      if (!first) first = performance.now() - t0;
      out += d.toString();
    });
    p.stderr.on("data", (d: Buffer) => {
      out += d.toString();
    });
    p.on("exit", (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`ctr ${args.join(" ")} exited ${code}: ${out}`));
      else resolve({ firstMs: first, totalMs: performance.now() - t0, out });
    });
  });
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;
