import { fn } from "./load.ts";

export const POLL_READABLE = 1;
export const POLL_WRITABLE = 2;

/** An fd watched on Node's event loop (libuv uv_poll); the callback does the non-blocking I/O. */
export interface FdPoll {
  update(events: number): void;
  stop(): void;
}

type Handle = object;

/**
 * Calls `onReady(status, events)` whenever `fd` is ready (status < 0 is a libuv error).
 * `keepAlive: false` lets the process exit while the poll is active (like socket.unref()).
 */
export function pollFd(
  fd: number,
  events: number,
  onReady: (status: number, events: number) => void,
  keepAlive = true,
): FdPoll {
  const h = fn<(fd: number, ev: number, cb: (s: number, e: number) => void, keep: boolean) => Handle>("pollStart")(
    fd,
    events,
    onReady,
    keepAlive,
  );
  let stopped = false;
  return {
    update(ev: number) {
      if (!stopped) fn<(h: Handle, ev: number) => void>("pollUpdate")(h, ev);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      fn<(h: Handle) => void>("pollStop")(h);
    },
  };
}
