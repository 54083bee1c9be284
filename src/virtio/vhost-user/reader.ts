// Reads vhost-user messages off the front-end's socket: the 12-byte header (with any fds), then the
// payload it announces. The front-end is untrusted: its sizes and fd counts are bounded, and a
// message may arrive in pieces (fds along any of them), so partial state is kept between reads.
import { recvWithFds } from "../../native/fdpass.ts";
import { safeClose } from "./fds.ts";
import { HEADER_SIZE, MAX_MESSAGE_FDS, MAX_PAYLOAD, type Message } from "./messages.ts";

export type ReadResult =
  | { kind: "message"; message: Message }
  /** Nothing more to read now: wait until the socket is readable. */
  | { kind: "wait" }
  /** The connection is done: the front-end closed it (no error), or it broke the protocol. */
  | { kind: "close"; error?: string; fields?: Record<string, unknown> };

export class MessageReader {
  private readonly hdr = Buffer.alloc(HEADER_SIZE);
  private payload = Buffer.alloc(0);
  private got = 0;
  private inPayload = false;
  private fds: number[] = [];

  /** The next complete message from `fd`, or why there is none. */
  read(fd: number): ReadResult {
    for (;;) {
      const want = this.inPayload ? this.payload : this.hdr;
      let r: { bytes: number; fds: number[] } | null;
      try {
        r = recvWithFds(fd, want.subarray(this.got));
      } catch (e) {
        // EMSGSIZE: more fds than any message carries (the native side closed them); or a socket
        // error. Either way this front-end is done.
        return { kind: "close", error: "vhost-user receive failed; closing the connection", fields: { err: msg(e) } };
      }
      if (r === null) return { kind: "wait" };
      this.fds.push(...r.fds);
      if (r.bytes === 0) return { kind: "close" };
      if (this.fds.length > MAX_MESSAGE_FDS) {
        // Fds sent a byte at a time along one message would otherwise pile up without bound.
        return {
          kind: "close",
          error: "vhost-user message with too many fds; closing the connection",
          fields: { fds: this.fds.length },
        };
      }
      this.got += r.bytes;
      if (this.got < want.length) continue;
      this.got = 0;
      if (!this.inPayload) {
        const size = this.hdr.readUInt32LE(8);
        if (size > MAX_PAYLOAD) {
          return { kind: "close", error: "vhost-user message too large; closing the connection", fields: { size } };
        }
        this.payload = Buffer.alloc(size);
        if (size > 0) {
          this.inPayload = true;
          continue;
        }
      }
      this.inPayload = false;
      const fds = this.fds;
      this.fds = [];
      const message = { req: this.hdr.readUInt32LE(0), flags: this.hdr.readUInt32LE(4), payload: this.payload, fds };
      return { kind: "message", message };
    }
  }

  /** Forgets a message not yet complete and closes the fds that came with it. */
  discard(): void {
    for (const fd of this.fds.splice(0)) safeClose(fd);
    this.got = 0;
    this.inPayload = false;
  }
}

function msg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
