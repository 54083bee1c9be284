// pino loggers for the shim daemon: JSON lines into the bundle's `log` FIFO, which containerd copies
// into its own log. Writing must never block the daemon: the FIFO is opened non-blocking and a line
// that does not fit (nobody reading, pipe full) is dropped and counted.
import { closeSync, constants, openSync, writeSync } from "node:fs";
import pino, { type Logger } from "pino";

export interface DropCountingDestination {
  write(line: string): void;
  dropped: number;
  close(): void;
}

/** A pino destination writing synchronously to fd; EAGAIN/EPIPE drop the line instead of blocking. */
export function fdDestination(fd: number, keep: number[] = []): DropCountingDestination {
  const d: DropCountingDestination = {
    dropped: 0,
    write(line: string) {
      try {
        writeSync(fd, line);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "EAGAIN" || code === "EPIPE" || code === "EBADF") d.dropped++;
        else throw e;
      }
    },
    close() {
      for (const f of [fd, ...keep]) {
        try {
          closeSync(f);
        } catch {
          // already closed
        }
      }
    },
  };
  return d;
}

/**
 * Opens a FIFO for logging without blocking: first a read end we keep (so opening the write end
 * non-blocking succeeds even before containerd opens its end, and writes never see EPIPE when it
 * reopens), then the O_WRONLY|O_NONBLOCK write end.
 */
export function openLogFifo(path: string): DropCountingDestination {
  const keep = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const fd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
    return fdDestination(fd, [keep]);
  } catch (e) {
    closeSync(keep);
    throw e;
  }
}

export function createLogger(opts: {
  level: string;
  destination?: { write(line: string): void };
  base?: Record<string, unknown>;
}): Logger {
  const dest = opts.destination ?? { write() {} };
  return pino(
    { level: opts.level, base: { pid: process.pid, ...opts.base }, timestamp: pino.stdTimeFunctions.isoTime },
    dest,
  );
}
