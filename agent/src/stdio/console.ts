// The runtime's console socket: with process.terminal, crun/runc create the pty in the container and
// send its master fd over a Unix socket (SCM_RIGHTS) given as --console-socket. Node cannot receive
// fds, so the socket is the addon's (src/native/fdpass.ts) watched on the event loop.
import { rmSync } from "node:fs";
import { closeFd, recvWithFds, unixAccept, unixListen } from "../../../src/native/fdpass.ts";
import { type FdPoll, POLL_READABLE, pollFd } from "../../../src/native/poll.ts";

export interface ConsoleSocket {
  path: string;
  /** The pty master fd, once the runtime sent it. */
  master: Promise<number>;
  /** Stops listening (and closes a master nobody took). */
  close(): void;
}

export function listenConsole(path: string, timeoutMs = 60_000): ConsoleSocket {
  rmSync(path, { force: true });
  const lfd = unixListen(path, 1);
  const polls: FdPoll[] = [];
  let cfd = -1;
  let closed = false;
  let got: number | undefined;
  let resolveMaster!: (fd: number) => void;
  let rejectMaster!: (e: Error) => void;
  const master = new Promise<number>((res, rej) => {
    resolveMaster = res;
    rejectMaster = rej;
  });
  master.catch(() => {}); // the owner may never ask (runtime failed first)
  const timer = setTimeout(() => finish(new Error(`no pty from the runtime within ${timeoutMs} ms`)), timeoutMs);
  const finish = (err?: Error, fd?: number) => {
    if (closed) {
      if (fd !== undefined) closeFd(fd);
      return;
    }
    closed = true;
    clearTimeout(timer);
    for (const p of polls) p.stop();
    if (cfd >= 0) closeFd(cfd);
    closeFd(lfd);
    rmSync(path, { force: true });
    if (fd !== undefined) {
      got = fd;
      resolveMaster(fd);
    } else rejectMaster(err ?? new Error("console socket closed"));
  };
  polls.push(
    pollFd(lfd, POLL_READABLE, () => {
      if (cfd >= 0 || closed) return;
      const c = unixAccept(lfd);
      if (c < 0) return;
      cfd = c;
      const buf = Buffer.alloc(4096);
      polls.push(
        pollFd(c, POLL_READABLE, () => {
          if (closed) return;
          let r: ReturnType<typeof recvWithFds>;
          try {
            r = recvWithFds(c, buf);
          } catch (e) {
            finish(e as Error);
            return;
          }
          if (!r) return;
          const [fd, ...extra] = r.fds;
          for (const x of extra) closeFd(x);
          if (fd !== undefined) finish(undefined, fd);
          else if (r.bytes === 0) finish(new Error("runtime closed the console socket without sending a pty"));
        }),
      );
    }),
  );
  return {
    path,
    master,
    close: () => {
      if (!closed) finish(new Error("console socket closed"));
      else if (got !== undefined) {
        // taken by the caller through `master`; nothing to do
      }
    },
  };
}
