// The guest's log stream (vsock port 1026): what the agent sends and the shim reads. Shared by both
// sides. One record per line, each a JSON object in pino's shape:
//   {"level":30,"time":…,"msg":"container started","container":"<id>",…}        the agent's own lines
//   {"level":40,"src":"kernel","msg":"…","kseq":812,"kusec":1234567}             a /dev/kmsg record
// The shim connects (as Kata's runtime does to its agent's log port); the agent serves one reader
// at a time. docs/debugging.md has the why.

/** The agent's log port; 1024 is ttrpc, 1025 stdio, 1027 the debug console. */
export const LOG_PORT = 1026;
/** The longest line either side handles, in bytes; the agent cuts longer lines, the shim too. */
export const MAX_LOG_LINE = 8192;

/** pino's numeric levels. */
export const LEVELS = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 } as const;
export type LevelName = keyof typeof LEVELS;

export function isLevelName(s: string | undefined): s is LevelName {
  return s !== undefined && Object.hasOwn(LEVELS, s);
}

/** A kernel record's priority (syslog 0–7, /dev/kmsg) as a log level: KERN_INFO and KERN_DEBUG are
 * debug (a boot prints a few hundred of them), KERN_NOTICE info, KERN_WARNING warn, worse error. */
export function kernelLevel(priority: number): number {
  const p = priority & 7;
  if (p <= 3) return LEVELS.error;
  if (p === 4) return LEVELS.warn;
  if (p === 5) return LEVELS.info;
  return LEVELS.debug;
}
