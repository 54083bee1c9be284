// Pseudo-terminal helpers from pty.c. The pty itself comes from the OCI runtime (console socket);
// these set its window size and open ptys for tests.
import { fn } from "./load.ts";

export function setWinsize(masterFd: number, rows: number, cols: number): void {
  fn<(fd: number, r: number, c: number) => void>("ptySetWinsize")(masterFd, rows, cols);
}

export function getWinsize(fd: number): { rows: number; cols: number } {
  const [rows, cols] = fn<(fd: number) => [number, number]>("ptyGetWinsize")(fd);
  return { rows, cols };
}

/** A new pty pair: [master (non-blocking), slave], both close-on-exec. */
export function openPty(): { master: number; slave: number } {
  const [master, slave] = fn<() => [number, number]>("openPty")();
  return { master, slave };
}

export function setNonBlocking(fd: number, on = true): void {
  fn<(fd: number, on: boolean) => void>("setNonBlocking")(fd, on);
}

/** pipe2(O_CLOEXEC) → [read end, write end]; `size` > 0 asks for that pipe buffer size (best effort). */
export function makePipe(size = 0): { read: number; write: number } {
  const [read, write] = fn<(size: number) => [number, number]>("makePipe")(size);
  return { read, write };
}
