// Writes vhost-user messages to the front-end's socket without blocking: what the socket does not
// take now waits, in order, until it is writable again.
import { sendWithFds } from "../../native/fdpass.ts";

export class MessageWriter {
  private outbox: Buffer[] = [];

  push(m: Buffer): void {
    this.outbox.push(m);
  }

  /**
   * Sends what the socket takes: "done" when nothing is left, "blocked" when the rest must wait for
   * the socket to become writable. Throws when the socket is broken (EPIPE, ECONNRESET; no SIGPIPE).
   */
  flush(fd: number): "done" | "blocked" {
    while (this.outbox.length > 0) {
      const m = this.outbox[0]!;
      const n = sendWithFds(fd, m);
      if (n < 0) return "blocked";
      if (n < m.length) this.outbox[0] = m.subarray(n);
      else this.outbox.shift();
    }
    return "done";
  }

  clear(): void {
    this.outbox = [];
  }
}
