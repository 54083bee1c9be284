// rtnetlink sockets (NETLINK_ROUTE) from Node: open (optionally inside another network namespace),
// send one datagram, receive one datagram. Messages are built and parsed in TypeScript
// (agent/src/network/rtnetlink.ts); this file only moves bytes.
import { fn } from "./load.ts";

/**
 * A NETLINK_ROUTE socket bound to the namespace at `netns` (null: the caller's), made on a helper
 * thread that enters the namespace. Blocking, close-on-exec, with extended acks requested and a
 * receive timeout of `timeoutMs` (a receive that waits longer throws EAGAIN). Close with
 * fs.closeSync.
 */
export function netlinkOpen(netns: string | null, timeoutMs = 5000): number {
  return fn<(ns: string | null, t: number) => number>("netlinkOpen")(netns, timeoutMs);
}

/** Sends one datagram (one or more netlink messages) to the kernel; returns the bytes sent. */
export function netlinkSend(fd: number, msg: Uint8Array): number {
  return fn<(fd: number, m: Uint8Array) => number>("netlinkSend")(fd, msg);
}

/**
 * Receives one datagram from the kernel into `buf`; returns its length. Throws EMSGSIZE if it did
 * not fit, EAGAIN after the socket's receive timeout.
 */
export function netlinkRecv(fd: number, buf: Uint8Array): number {
  return fn<(fd: number, b: Uint8Array) => number>("netlinkRecv")(fd, buf);
}
