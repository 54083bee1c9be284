// Leak checks on this process's file descriptors, by identity rather than by count: Node and tsx
// open and close fds of their own in the background (module loading, tsx's cache and IPC socket,
// child-process pipes), so the number of open fds moves while a test runs whatever the code under
// test does.
import { readdirSync, readlinkSync } from "node:fs";

/** This process's open fds: "fd -> what it points at". */
export function openFds(): Set<string> {
  const out = new Set<string>();
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      out.add(`${fd} -> ${readlinkSync(`/proc/self/fd/${fd}`)}`);
    } catch {
      // closed between the listing and the readlink (the listing's own directory fd)
    }
  }
  return out;
}

/** The fds open now that were not open before (same number, same target) and whose target `ours` accepts. */
export function fdsOpenedSince(before: Set<string>, ours: (target: string) => boolean): string[] {
  return [...openFds()].filter((e) => !before.has(e) && ours(e.slice(e.indexOf(" -> ") + 4)));
}
