// The guest kernel's messages into the agent's log sink: /dev/kmsg read without blocking, on the
// event loop (uv_poll, no thread-pool thread parked in read(2)). Opening it starts at the oldest
// record the kernel still has, so the boot's messages come too. Records below the agent's level
// are skipped (kernelLevel in log-format.ts maps the kernel's priorities). Kernel records never go
// to the console from here: the kernel prints there itself, by its own console level.
import { closeSync, constants, openSync, readSync } from "node:fs";
import { errorMessage } from "../../src/common/errors.ts";
import { type FdPoll, POLL_READABLE, pollFd } from "../../src/native/poll.ts";
import { kernelLevel, LEVELS } from "../../src/sandbox/agent/log-format.ts";
import type { Logger } from "./log.ts";
import type { LogSink } from "./log-sink.ts";

export interface KmsgRecord {
  /** syslog priority: facility << 3 | level. */
  priority: number;
  seq: number;
  /** Microseconds since boot. */
  usec: number;
  msg: string;
}

/** Records read per event-loop turn (the rest wait for the next poll callback). */
const RECORDS_PER_TURN = 256;
/** The kernel's largest record (CONSOLE_EXT_LOG_MAX). */
const RECORD_MAX = 8192;

/** One /dev/kmsg record: `<prio>,<seq>,<usec>,<flags>[,…];<message>\n` plus ` KEY=value` lines. */
export function parseKmsg(record: string): KmsgRecord | undefined {
  const semi = record.indexOf(";");
  if (semi < 0) return undefined;
  const [p, s, u] = record.slice(0, semi).split(",");
  const priority = Number(p);
  const seq = Number(s);
  const usec = Number(u);
  if (![priority, seq, usec].every((n) => Number.isSafeInteger(n) && n >= 0)) return undefined;
  const nl = record.indexOf("\n", semi);
  return { priority, seq, usec, msg: record.slice(semi + 1, nl < 0 ? undefined : nl) };
}

/** The line the sink gets for a record. */
export function kmsgLine(r: KmsgRecord, now = Date.now()): string {
  return `${JSON.stringify({ level: kernelLevel(r.priority), time: now, src: "kernel", msg: r.msg, kseq: r.seq, kusec: r.usec })}\n`;
}

/** Follows /dev/kmsg into the sink until stopped; undefined (and a warning) when it cannot be opened. */
export function followKmsg(sink: LogSink, log: Logger, path = "/dev/kmsg"): { stop(): void } | undefined {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    log.warn({ path, err: errorMessage(e) }, "cannot read the kernel's messages");
    return undefined;
  }
  const buf = Buffer.alloc(RECORD_MAX);
  let poll: FdPoll | undefined;
  const onReadable = () => {
    for (let n = 0; n < RECORDS_PER_TURN; n++) {
      let got: number;
      try {
        got = readSync(fd, buf, 0, buf.length, null);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "EPIPE") continue; // records were overwritten before we read them: go on
        if (code === "EAGAIN") return;
        log.warn({ err: errorMessage(e) }, "reading /dev/kmsg failed: kernel messages stop here");
        stop();
        return;
      }
      if (got <= 0) return;
      const r = parseKmsg(buf.toString("utf8", 0, got));
      if (!r) continue;
      const level = kernelLevel(r.priority);
      if (level < (LEVELS[log.level as keyof typeof LEVELS] ?? LEVELS.info)) continue;
      sink.write(kmsgLine(r), { console: false });
    }
  };
  const stop = () => {
    poll?.stop();
    poll = undefined;
    try {
      closeSync(fd);
    } catch {
      // closed already
    }
  };
  // keepAlive false: the kernel's messages never keep the agent's event loop alive on their own.
  poll = pollFd(fd, POLL_READABLE, (status) => (status < 0 ? stop() : onReadable()), false);
  onReadable();
  return { stop };
}
