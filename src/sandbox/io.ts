// Copies a process's stdio between containerd's side (FIFOs or file:// paths, as ctr and CRI give
// them) and the agent's stdio streams. Output: agent stream → FIFO, and the exit is reported only
// after every byte reached the FIFO. Stdin: FIFO → agent stream; we hold a writer on the FIFO
// ourselves so that a client that has not opened its end yet is not mistaken for EOF; CloseIO drops
// it, and the agent sees EOF once the client's writer is gone and the pipe is drained.
import { closeSync, constants, createWriteStream, fstatSync, mkdirSync, openSync } from "node:fs";
import { Socket } from "node:net";
import { dirname } from "node:path";
import type { Duplex, Writable } from "node:stream";
import type { Logger } from "pino";
import { errorMessage, WrongStateError } from "../common/errors.ts";
import { parseStdioUri } from "../shim/stdio.ts";
import type { StdioStream } from "./agent/index.ts";

export interface StdioPaths {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

const FLUSH_WAIT_MS = 10_000;

function failOpen(what: string, path: string, e: unknown): WrongStateError {
  return new WrongStateError(`cannot open ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? errorMessage(e)}`);
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

  private openOutput(what: string, uri: string): Writable {
    const t = parseStdioUri(uri);
    try {
      if (t.kind === "file") {
        mkdirSync(dirname(t.path), { recursive: true });
        const fd = openSync(t.path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o644);
        return createWriteStream("", { fd, autoClose: true });
      }
      // A read end of our own first (kept until the end), so the write end opens at once and a
      // write never fails with EPIPE while the client's reader is away.
      this.fds.push(openSync(t.path, constants.O_RDONLY | constants.O_NONBLOCK));
      const fd = openSync(t.path, constants.O_WRONLY | constants.O_NONBLOCK);
      if (!fstatSync(fd).isFIFO()) return createWriteStream("", { fd, autoClose: true });
      return new Socket({ fd, readable: false, writable: true });
    } catch (e) {
      throw failOpen(what, t.path, e);
    }
  }

  /** Opens containerd's side and connects it to the agent's streams (call before Start/Exec). */
  async attach(open: (stream: StdioStream) => Promise<Duplex>): Promise<void> {
    try {
      for (const stream of ["stdout", "stderr"] as const) {
        if (!this.want[stream]) continue;
        const sink = this.openOutput(stream, this.paths[stream]);
        this.sinks.push(sink);
        sink.on("error", (e) => this.log.warn({ stream, err: e.message }, "stdio: writing to the client failed"));
        const src = await open(stream);
        this.agentStreams.push(src);
        this.flushed.push(
          new Promise<void>((resolve) => {
            sink.once("finish", resolve);
            sink.once("close", resolve);
            sink.once("error", () => resolve());
          }),
        );
        src.on("error", (e) => this.log.warn({ stream, err: e.message }, "stdio: agent stream failed"));
        src.pipe(sink);
      }
      if (this.want.stdin) {
        const t = parseStdioUri(this.paths.stdin);
        let fd: number;
        try {
          fd = openSync(t.path, constants.O_RDONLY | constants.O_NONBLOCK);
          if (fstatSync(fd).isFIFO()) this.stdinHold = openSync(t.path, constants.O_WRONLY | constants.O_NONBLOCK);
        } catch (e) {
          throw failOpen("stdin", t.path, e);
        }
        const src = new Socket({ fd, readable: true, writable: false });
        this.stdinSource = src;
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
