// A ttrpc channel: frames over one Node Duplex (unix socket, vsock pipe, in-memory pair). Reading
// goes through the pure FrameDecoder; each outgoing frame is one pre-encoded buffer. Writes made
// in the same tick are corked together so that many small responses leave in one writev.
// Backpressure: while more than two maximum-size messages wait to be written (the peer is not
// reading), the channel stops reading from the peer, so a client that never reads its responses
// cannot keep the server buffering responses (requests already received in one chunk are still
// served; an in-flight cap would deadlock long polls such as Task.Wait).
import type { Duplex } from "node:stream";
import { DEFAULT_MAX_MESSAGE_SIZE, FrameDecoder, type FrameHeader, HEADER_LENGTH } from "./frame.ts";

export interface ChannelEvents {
  frame(header: FrameHeader, payload: Uint8Array): void;
  oversize(header: FrameHeader): void;
  /** Called exactly once, when the stream ends, errors or is closed locally. */
  close(err: Error | undefined): void;
}

export class Channel {
  readonly maxMessageSize: number;
  private readonly decoder: FrameDecoder;
  private isClosed = false;
  private corked = false;
  private readPaused = false;
  private readonly pauseAt: number;
  private readonly resumeReading = () => {
    this.readPaused = false;
    if (!this.isClosed) this.stream.resume();
  };
  private readonly uncork = () => {
    this.corked = false;
    if (!this.isClosed) this.stream.uncork();
  };

  constructor(
    private readonly stream: Duplex,
    private readonly events: ChannelEvents,
    maxMessageSize: number = DEFAULT_MAX_MESSAGE_SIZE,
  ) {
    this.maxMessageSize = maxMessageSize;
    this.pauseAt = Math.max(2 * maxMessageSize, 64 * 1024);
    this.decoder = new FrameDecoder(
      {
        frame: (h, p) => this.events.frame(h, p),
        oversize: (h) => this.events.oversize(h),
      },
      maxMessageSize,
    );
    stream.on("data", (chunk: Buffer) => {
      if (this.isClosed) return;
      try {
        this.decoder.push(chunk);
      } catch (err) {
        // Only a bug in a frame consumer can get here: the connection state is unknown, so drop it.
        this.close(err instanceof Error ? err : new Error(String(err)));
      }
    });
    stream.on("end", () => this.finish(undefined));
    stream.on("error", (err: Error) => this.finish(err));
    stream.on("close", () => this.finish(undefined));
    if (stream.destroyed) queueMicrotask(() => this.finish(undefined));
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** True if `frame` (header included) fits the size limit. */
  fits(frame: Uint8Array): boolean {
    return frame.length - HEADER_LENGTH <= this.maxMessageSize;
  }

  /** Writes one whole frame. Returns false if the channel is closed. */
  send(frame: Uint8Array): boolean {
    if (this.isClosed) return false;
    if (!this.corked) {
      this.corked = true;
      this.stream.cork();
      process.nextTick(this.uncork);
    }
    this.stream.write(frame);
    if (!this.readPaused && this.stream.writableLength > this.pauseAt) {
      // The write above returned false (writableLength > highWaterMark), so 'drain' will come.
      this.readPaused = true;
      this.stream.pause();
      this.stream.once("drain", this.resumeReading);
    }
    return true;
  }

  close(err?: Error): void {
    this.finish(err);
  }

  private finish(err: Error | undefined): void {
    if (this.isClosed) return;
    this.isClosed = true;
    // Flush what was queued this tick (e.g. the last responses) before tearing the stream down.
    if (this.corked) {
      this.corked = false;
      this.stream.uncork();
    }
    // ttrpc has no graceful close: like the Go implementation, end of stream ends the connection.
    this.stream.destroy();
    this.events.close(err);
  }
}
