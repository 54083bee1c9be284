// AF_VSOCK for Node (it knows only TCP and Unix sockets): the socket syscalls are in vsock.c; the
// fds are handed to libuv's pipe handle (process.binding('pipe_wrap'), which reads, writes and
// accepts on any stream socket) so that connections are ordinary net.Sockets.
import { Socket } from "node:net";
import { fn } from "./load.ts";
import { POLL_WRITABLE, pollFd } from "./poll.ts";

/** Any CID: what a guest listens on. 2 is the host, as seen from a guest. */
export const VMADDR_CID_ANY = 0xffffffff;
export const VMADDR_CID_HOST = 2;

interface PipeHandle {
  open(fd: number): number;
  listen(backlog: number): number;
  close(cb?: () => void): void;
  onconnection: ((status: number, client: PipeHandle | undefined) => void) | null;
  readonly fd: number;
}
interface PipeWrap {
  Pipe: new (type: number) => PipeHandle;
  constants: { SOCKET: number; SERVER: number };
}

function pipeWrap(): PipeWrap {
  // process.binding is deprecated but is the only way to wrap a foreign socket fd in Node 20.
  const binding = (process as unknown as { binding(name: string): unknown }).binding;
  return binding("pipe_wrap") as PipeWrap;
}

/** Wraps a connected stream fd (socket, pty master, pipe) in a net.Socket that owns it. */
export function socketFromFd(
  fd: number,
  opts: { allowHalfOpen?: boolean; readable?: boolean; writable?: boolean } = {},
): Socket {
  const { Pipe, constants } = pipeWrap();
  const h = new Pipe(constants.SOCKET);
  const r = h.open(fd);
  if (r !== 0) throw new Error(`cannot wrap fd ${fd} in a stream handle (libuv error ${r})`);
  // A one-way fd (a pipe end) must say so: reading a write-only handle fails and destroys the socket.
  return new Socket({
    handle: h,
    readable: opts.readable ?? true,
    writable: opts.writable ?? true,
    allowHalfOpen: opts.allowHalfOpen ?? true,
  } as never);
}

export interface VsockServer {
  readonly port: number;
  close(): Promise<void>;
}

/** Listens on AF_VSOCK port `port` (any CID); `onConnection` gets each accepted connection. */
export function listenVsock(port: number, onConnection: (s: Socket) => void, backlog = 128): VsockServer {
  const fd = fn<(port: number, backlog: number) => number>("vsockListen")(port, backlog);
  const { Pipe, constants } = pipeWrap();
  const h = new Pipe(constants.SERVER);
  let r = h.open(fd);
  if (r === 0) r = h.listen(backlog);
  if (r !== 0) {
    h.close();
    throw new Error(`vsock port ${port}: cannot listen through libuv (error ${r})`);
  }
  h.onconnection = (status, client) => {
    if (status !== 0 || !client) return; // e.g. EMFILE: the peer sees a reset and retries
    onConnection(new Socket({ handle: client, readable: true, writable: true, allowHalfOpen: true } as never));
  };
  return {
    port,
    close: () => new Promise((resolve) => h.close(() => resolve())),
  };
}

/** Connects to cid:port; resolves once connected (ETIMEDOUT/ECONNRESET etc. reject). */
export function connectVsock(cid: number, port: number, timeoutMs = 10_000): Promise<Socket> {
  const fd = fn<(cid: number, port: number) => number>("vsockConnect")(cid, port);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      poll.stop();
      fn<(fd: number) => void>("closeFd")(fd);
      reject(new Error(`vsock connect ${cid}:${port}: timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    const poll = pollFd(fd, POLL_WRITABLE, () => {
      poll.stop();
      clearTimeout(timer);
      const err = fn<(fd: number) => number>("socketError")(fd);
      if (err !== 0) {
        fn<(fd: number) => void>("closeFd")(fd);
        reject(new Error(`vsock connect ${cid}:${port}: errno ${err}`));
        return;
      }
      try {
        resolve(socketFromFd(fd));
      } catch (e) {
        reject(e);
      }
    });
  });
}

/** This machine's CID, or -1 without /dev/vsock. */
export function localCid(): number {
  return fn<() => number>("vsockLocalCid")();
}
