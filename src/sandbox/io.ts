// Copies a process's stdio between containerd's side (FIFOs or file:// paths, as ctr and CRI give
// them, opened by src/shim/stdio.ts) and the agent's stdio streams. Output: agent stream → FIFO, and
// the exit is reported only after every byte reached the FIFO. Stdin: FIFO → agent stream; we hold a
// writer on the FIFO ourselves so that a client that has not opened its end yet is not mistaken for
// EOF; CloseIO drops it, and the agent sees EOF once the client's writer is gone and the pipe is
// drained.
import { closeSync, createWriteStream, fstatSync } from "node:fs";
import { Socket } from "node:net";
import type { Duplex, Writable } from "node:stream";
import type { Logger } from "pino";
import { openStdio, type StdioPaths } from "../shim/stdio.ts";
import type { StdioStream } from "./agent/index.ts";

export type { StdioPaths };

const FLUSH_WAIT_MS = 10_000;

/** A stream writing to an output fd: a socket for a FIFO, a file stream for anything else. */
function outputStream(fd: number): Writable {
  if (!fstatSync(fd).isFIFO()) return createWriteStream("", { fd, autoClose: true });
  return new Socket({ fd, readable: false, writable: true });
}

export class ProcessIo {
  private readonly fds: number[] = [];
  private stdinHold?: number;
  private stdinSource?: Socket;
  private readonly sinks: Writable[] = [];
  private readonly flushed: Promise<void>[] = [];
  private readonly agentStreams: Duplex[] = [];

  /** Which streams the agent should attach. */
  readonly want: { stdin: boolean; stdout: boolean; stderr: boolean };

  constructor(
    readonly paths: StdioPaths,
    private readonly log: Logger,
  ) {
    this.want = { stdin: !!paths.stdin, stdout: !!paths.stdout, stderr: !!paths.stderr && !paths.terminal };
  }

  /** Opens containerd's side and connects it to the agent's streams (call before Start/Exec). */
  async attach(open: (stream: StdioStream) => Promise<Duplex>): Promise<void> {
    // Every fd goes to a stream (or to this.fds) before the first await, so close() frees them all.
    const fds = openStdio(this.paths);
    this.fds.push(...fds.keep);
    this.stdinHold = fds.stdinHold;
    const outputs: Array<[StdioStream, Writable]> = [];
    for (const stream of ["stdout", "stderr"] as const) {
      const fd = fds[stream];
      if (fd === undefined) continue;
      const sink = outputStream(fd);
      this.sinks.push(sink);
      sink.on("error", (e) => this.log.warn({ stream, err: e.message }, "stdio: writing to the client failed"));
      this.flushed.push(
        new Promise<void>((resolve) => {
          sink.once("finish", resolve);
          sink.once("close", resolve);
          sink.once("error", () => resolve());
        }),
      );
      outputs.push([stream, sink]);
    }
    if (fds.stdin !== undefined) this.stdinSource = new Socket({ fd: fds.stdin, readable: true, writable: false });
    try {
      for (const [stream, sink] of outputs) {
        const src = await open(stream);
        this.agentStreams.push(src);
        src.on("error", (e) => this.log.warn({ stream, err: e.message }, "stdio: agent stream failed"));
        src.pipe(sink);
      }
      const src = this.stdinSource;
      if (src) {
        const dst = await open("stdin");
        this.agentStreams.push(dst);
        dst.on("error", (e) => this.log.warn({ err: e.message }, "stdio: agent stdin failed"));
        src.on("error", (e) => this.log.warn({ err: e.message }, "stdio: reading stdin failed"));
        src.pipe(dst); // 'end' ends dst: a half-close, which is EOF for the process
      }
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** CloseIO(stdin): EOF once the client's own writer is closed and what it wrote is delivered. */
  closeStdin(): void {
    if (this.stdinHold !== undefined) {
      closeSync(this.stdinHold);
      this.stdinHold = undefined;
    } else this.stdinSource?.push(null);
  }

  /** Resolves when every output byte the agent sent has been written to containerd's side (bounded). */
  async outputDone(): Promise<void> {
    let t: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(this.flushed),
      new Promise<void>((r) => {
        t = setTimeout(() => {
          this.log.warn("stdio: output not flushed in time");
          r();
        }, FLUSH_WAIT_MS);
      }),
    ]);
    clearTimeout(t);
  }

  close(): void {
    for (const s of this.agentStreams.splice(0)) s.destroy();
    for (const s of this.sinks.splice(0)) s.destroy();
    this.stdinSource?.destroy();
    this.stdinSource = undefined;
    if (this.stdinHold !== undefined) closeSync(this.stdinHold);
    this.stdinHold = undefined;
    for (const fd of this.fds.splice(0)) {
      try {
        closeSync(fd);
      } catch {
        // already closed
      }
    }
  }
}
