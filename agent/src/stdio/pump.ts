// Byte pumps between a process's stdio and a host connection, with backpressure both ways, and the
// end-of-stream rules the agent promises: output is complete (connection ended after the last byte)
// before WaitProcess answers; a pty master's EIO (the last slave fd closed) is its end of file.
import type { Socket } from "node:net";

/** Copies `src` to `dst`; resolves when `dst` got everything and its end, or went away. */
export function pumpOut(src: Socket, dst: Socket): Promise<void> {
  return new Promise((resolve) => {
    let finished = false;
    const done = () => {
      if (finished) return;
      finished = true;
      resolve();
    };
    const onData = (d: Buffer) => {
      if (!dst.write(d)) src.pause();
    };
    dst.on("drain", () => src.resume());
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      src.off("data", onData);
      if (!dst.destroyed && !dst.writableEnded) dst.end();
    };
    src.on("data", onData);
    src.once("end", end);
    src.on("error", end); // EIO on a pty master = end of file
    dst.once("finish", done);
    dst.once("close", () => {
      // The host went away: keep draining so the process never blocks on a full pipe.
      src.off("data", onData);
      src.resume();
      src.on("data", () => {});
      done();
    });
    dst.on("error", () => {});
    src.resume();
  });
}

/** Copies a host connection into a process's stdin; `onEnd` runs at the connection's end. */
export function pumpIn(src: Socket, dst: Socket, onEnd: () => void): void {
  src.on("data", (d: Buffer) => {
    if (dst.destroyed) return;
    if (!dst.write(d)) src.pause();
  });
  dst.on("drain", () => src.resume());
  src.once("end", onEnd);
  src.on("error", () => {});
  src.resume();
}
