// Test plumbing: an in-memory connected Duplex pair, and a raw peer that speaks frames directly
// (to send what a well-behaved client never would) and collects decoded responses.
import { Duplex } from "node:stream";
import { decodeResponse, type ResponseEnvelope } from "../../../src/ttrpc/envelope.ts";
import { FrameDecoder, type FrameHeader } from "../../../src/ttrpc/frame.ts";

class End extends Duplex {
  peer!: End;
  override _read(): void {}
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (!this.peer.destroyed) this.peer.push(chunk);
    cb();
  }
  override _final(cb: (err?: Error | null) => void): void {
    if (!this.peer.destroyed) this.peer.push(null);
    cb();
  }
  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // Like a socket: the other side sees end-of-stream, then closes.
    if (!this.peer.destroyed) {
      this.peer.push(null);
      this.peer.destroy();
    }
    cb(err);
  }
}

export function duplexPair(): [Duplex, Duplex] {
  const a = new End();
  const b = new End();
  a.peer = b;
  b.peer = a;
  return [a, b];
}

export interface RawResponse {
  header: FrameHeader;
  response: ResponseEnvelope;
}

/** The client side of a connection, bytes in and decoded responses out. */
export class RawPeer {
  readonly responses: RawResponse[] = [];
  readonly other: FrameHeader[] = [];
  private waiters: Array<() => void> = [];
  private readonly decoder = new FrameDecoder({
    frame: (header, payload) => {
      if (header.type === 2) this.responses.push({ header, response: decodeResponse(Uint8Array.from(payload)) });
      else this.other.push(header);
      for (const w of this.waiters.splice(0)) w();
    },
    oversize: (header) => this.other.push(header),
  });
  ended = false;

  constructor(readonly stream: Duplex) {
    stream.on("data", (c: Buffer) => this.decoder.push(c));
    stream.on("end", () => {
      this.ended = true;
      for (const w of this.waiters.splice(0)) w();
    });
    stream.on("error", () => {});
  }

  write(bytes: Uint8Array): void {
    this.stream.write(bytes);
  }

  /** Resolves when `n` responses have arrived in total; rejects after timeoutMs. */
  async waitResponses(n: number, timeoutMs = 2000): Promise<RawResponse[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.responses.length < n) {
      const left = deadline - Date.now();
      if (left <= 0 || this.ended) throw new Error(`waited for ${n} responses, got ${this.responses.length}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.responses.slice(0, n);
  }
}

export { prng } from "../../harness/prng.ts";
