// One front-end's connection: its socket on the event loop, messages read (reader.ts) and written
// (writer.ts), and the back-end channel it may hand us (SET_BACKEND_REQ_FD) for requests we send
// it. It never closes itself: when the socket ends or breaks it tells its owner, who tears down
// the device state first and then closes it.
import { errorMessage } from "../../common/errors.ts";
import { sendWithFds } from "../../native/fdpass.ts";
import { type FdPoll, POLL_READABLE, POLL_WRITABLE, pollFd } from "../../native/poll.ts";
import type { Logger } from "../log.ts";
import { safeClose } from "./fds.ts";
import { BACKEND_CONFIG_CHANGE_MSG, encodeMessage, type Message } from "./messages.ts";
import { MessageReader } from "./reader.ts";
import { MessageWriter } from "./writer.ts";

export interface ConnectionOwner {
  /** A complete message; the owner answers through send(). Must not throw. */
  onMessage(m: Message): void;
  /** The socket ended or broke: the owner should close this connection. */
  onEnd(): void;
}

export class FrontEndConnection {
  private readonly reader = new MessageReader();
  private readonly writer = new MessageWriter();
  private readonly poll: FdPoll;
  private closed = false;
  /** The back-end channel's socket, or -1. */
  private channelFd = -1;

  constructor(
    private readonly fd: number,
    private readonly log: Logger,
    private readonly owner: ConnectionOwner,
  ) {
    this.poll = pollFd(fd, POLL_READABLE, (status, events) => this.onReady(status, events));
  }

  private onReady(status: number, events: number): void {
    if (status < 0) {
      this.owner.onEnd();
      return;
    }
    if (events & POLL_WRITABLE) this.flush();
    if (events & POLL_READABLE) this.readMessages();
  }

  private readMessages(): void {
    while (!this.closed) {
      const r = this.reader.read(this.fd);
      if (r.kind === "wait") return;
      if (r.kind === "close") {
        if (r.error) this.log.error(r.fields ?? {}, r.error);
        this.owner.onEnd();
        return;
      }
      this.owner.onMessage(r.message);
    }
  }

  /** Queues a message for the front-end and sends what the socket takes now. */
  send(m: Buffer): void {
    if (this.closed) return;
    this.writer.push(m);
    this.flush();
  }

  private flush(): void {
    if (this.closed) return;
    let state: "done" | "blocked";
    try {
      state = this.writer.flush(this.fd);
    } catch (e) {
      // The front-end is gone. Never a throw into dispatch or the poll callback.
      this.log.debug({ err: errorMessage(e) }, "vhost-user send failed; closing the connection");
      this.owner.onEnd();
      return;
    }
    this.poll.update(state === "blocked" ? POLL_READABLE | POLL_WRITABLE : POLL_READABLE);
  }

  /** SET_BACKEND_REQ_FD: the socket on which we send requests to the front-end (it owns `fd` now). */
  setChannel(fd: number): void {
    if (this.channelFd >= 0) safeClose(this.channelFd);
    this.channelFd = fd;
  }

  /** Announces a config-space change to the front-end (it re-reads config and interrupts the guest). */
  configChanged(): void {
    if (this.channelFd < 0) {
      this.log.warn("config changed but the front-end gave no back-end channel");
      return;
    }
    const m = encodeMessage(BACKEND_CONFIG_CHANGE_MSG, 0);
    try {
      if (sendWithFds(this.channelFd, m) !== m.length) this.log.warn("back-end channel full; config change not sent");
    } catch (e) {
      this.log.warn({ err: errorMessage(e) }, "back-end channel broken; config change not sent");
      safeClose(this.channelFd);
      this.channelFd = -1;
    }
  }

  /** Stops watching the socket and closes it, the back-end channel and any fds of a partial message. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.poll.stop();
    safeClose(this.fd);
    if (this.channelFd >= 0) safeClose(this.channelFd);
    this.channelFd = -1;
    this.reader.discard();
    this.writer.clear();
  }
}
