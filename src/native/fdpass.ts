import { fn } from "./load.ts";

/** A listening AF_UNIX stream socket (non-blocking). */
export function unixListen(path: string, backlog = 16): number {
  return fn<(p: string, b: number) => number>("unixListen")(path, backlog);
}

/** Connects to an AF_UNIX stream socket; the returned fd is non-blocking. */
export function unixConnect(path: string): number {
  return fn<(p: string) => number>("unixConnect")(path);
}

/** Accepts one pending connection, or returns -1 if none is pending. */
export function unixAccept(listenFd: number): number {
  return fn<(fd: number) => number>("unixAccept")(listenFd);
}

/** One recvmsg: bytes read (0 at EOF) and any fds passed with them; null if nothing to read. */
export function recvWithFds(fd: number, buf: Buffer): { bytes: number; fds: number[] } | null {
  const r = fn<(fd: number, b: Buffer) => [number, number[]] | null>("recvWithFds")(fd, buf);
  return r ? { bytes: r[0], fds: r[1] } : null;
}

/** One sendmsg with optional fds (SCM_RIGHTS); returns bytes sent, or -1 if the socket is full. */
export function sendWithFds(fd: number, buf: Buffer, fds: number[] = []): number {
  return fn<(fd: number, b: Buffer, f: number[]) => number>("sendWithFds")(fd, buf, fds);
}

export function closeFd(fd: number): void {
  fn<(fd: number) => void>("closeFd")(fd);
}
