import { fn } from "./load.ts";

/**
 * flock(fd, LOCK_EX | LOCK_NB): true when the lock is now ours, false when another open file
 * description holds it. The kernel releases it when the fd is closed or its process dies.
 */
export function tryLock(fd: number): boolean {
  return fn<(fd: number) => boolean>("tryLock")(fd);
}
