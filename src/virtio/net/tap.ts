// A tap device as a virtio-net device's host end: the fd from tapOpen (created inside the pod's network
// namespace), watched on Node's event loop. Reads and writes are non-blocking syscalls made
// only when libuv says the fd is ready, so the loop never waits on the network.
import { closeFd } from "../../native/fdpass.ts";
import { type FdPoll, POLL_READABLE, POLL_WRITABLE, pollFd } from "../../native/poll.ts";
import { tapOpen, tapReadv, tapSetOffload, tapWritev } from "../../native/tap.ts";
import { NET_HDR_SIZE } from "./header.ts";
import type { NetHostEnd } from "./host-end.ts";

export interface TapOptions {
  /** Interface name inside the namespace ("%d" lets the kernel number it). */
  name: string;
  /** Path of the network namespace (e.g. /var/run/netns/cni-…); undefined = the shim's own. */
  netns?: string;
}

export class Tap implements NetHostEnd {
  private poll: FdPoll | undefined;
  private events = 0;
  private cb: ((readable: boolean, writable: boolean) => void) | undefined;
  private closed = false;

  private constructor(
    readonly fd: number,
    readonly name: string,
  ) {}

  /** Creates the tap with the virtio 1.0 header size, so guest headers pass through untouched. */
  static open(opts: TapOptions): Tap {
    const t = tapOpen(opts.name, opts.netns ?? null, NET_HDR_SIZE);
    return new Tap(t.fd, t.name);
  }

  /** Adopts an fd opened elsewhere (it must already have IFF_VNET_HDR and a 12-byte header). */
  static fromFd(fd: number, name: string): Tap {
    return new Tap(fd, name);
  }

  recv(bufs: Buffer[]): number {
    return tapReadv(this.fd, bufs);
  }

  send(bufs: Buffer[]): number {
    return tapWritev(this.fd, bufs);
  }

  setOffload(flags: number): void {
    tapSetOffload(this.fd, flags);
  }

  onReady(cb: (readable: boolean, writable: boolean) => void): void {
    this.cb = cb;
  }

  want(readable: boolean, writable: boolean): void {
    if (this.closed) return;
    const ev = (readable ? POLL_READABLE : 0) | (writable ? POLL_WRITABLE : 0);
    if (ev === this.events) return;
    this.events = ev;
    if (!this.poll) {
      if (ev === 0) return;
      this.poll = pollFd(this.fd, ev, (status, got) => {
        // An error on a tap fd is unrecoverable polling state; report it as readiness so the
        // device's next syscall surfaces the real errno.
        if (status < 0) this.cb?.(true, true);
        else this.cb?.((got & POLL_READABLE) !== 0, (got & POLL_WRITABLE) !== 0);
      });
    } else this.poll.update(ev);
  }

  /** Stops watching and closes the fd: the kernel removes the tap with its last fd. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.poll?.stop();
    this.poll = undefined;
    closeFd(this.fd);
  }
}
