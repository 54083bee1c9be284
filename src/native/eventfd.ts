import { fn } from "./load.ts";

/** A non-blocking, close-on-exec eventfd. */
export function eventfdCreate(): number {
  return fn<() => number>("eventfdCreate")();
}

/** Reads and clears the counter; 0 if it was not signalled. */
export function eventfdRead(fd: number): number {
  return fn<(fd: number) => number>("eventfdRead")(fd);
}

/** Signals the eventfd (adds 1). */
export function eventfdWrite(fd: number): void {
  fn<(fd: number) => void>("eventfdWrite")(fd);
}
