// Hybrid vsock (Firecracker's convention): a Unix socket on the host that reaches guest ports.
//  - host → guest: connect to <uds>, write `CONNECT <port>\n` (any case), read `OK <hostport>\n`,
//    then the socket is a raw byte stream to the guest's port.
//  - guest → host: a guest connection to host port P is forwarded to the Unix socket <uds>_<P>
//    when something listens there; otherwise the guest gets RST.
import { chmodSync, existsSync, unlinkSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import { errorMessage } from "../../common/errors.ts";
import { PRIVATE_SOCKET_MODE, underPrivateUmask } from "../../common/private-socket.ts";
import { defaultLogger, type Logger } from "../log.ts";
import type { VsockStream } from "./connection.ts";
import type { VsockDevice } from "./device.ts";

const MAX_LINE = 64;

export class HybridVsock {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly log: Logger;

  constructor(
    readonly device: VsockDevice,
    readonly udsPath: string,
    opts: { logger?: Logger; connectTimeoutMs?: number } = {},
  ) {
    this.log = (opts.logger ?? defaultLogger).child({ hybridVsock: udsPath });
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 10_000;
    device.acceptor = (port) => this.acceptFromGuest(port);
  }
  private readonly connectTimeoutMs: number;

  /** Starts listening on the Unix socket (a stale socket file is replaced). */
  async listen(): Promise<void> {
    if (existsSync(this.udsPath)) unlinkSync(this.udsPath);
    const server = createServer((s) => this.onClient(s));
    this.server = server;
    // The socket reaches the guest's ports: root only (0600), like the shim's own socket.
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      underPrivateUmask(() =>
        server.listen(this.udsPath, () => {
          server.off("error", reject);
          try {
            chmodSync(this.udsPath, PRIVATE_SOCKET_MODE);
            resolve();
          } catch (e) {
            reject(e);
          }
        }),
      );
    });
  }

  private onClient(sock: Socket): void {
    this.sockets.add(sock);
    sock.on("close", () => this.sockets.delete(sock));
    sock.on("error", () => {});
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const nl = buf.indexOf(0x0a);
      if (nl < 0) {
        if (buf.length > MAX_LINE) sock.destroy();
        return;
      }
      sock.off("data", onData);
      sock.pause();
      const line = buf.subarray(0, nl).toString("latin1").trim();
      const rest = buf.subarray(nl + 1);
      const m = /^connect\s+(\d{1,10})$/i.exec(line);
      const port = m ? Number(m[1]) : Number.NaN;
      if (!m || port > 0xffffffff) {
        this.log.debug({ line }, "hybrid vsock: bad request line");
        sock.destroy();
        return;
      }
      this.device.connect(port, this.connectTimeoutMs).then(
        (stream) => {
          if (sock.destroyed) {
            stream.destroy();
            return;
          }
          sock.write(`OK ${stream.localPort}\n`);
          if (rest.length) stream.write(rest);
          splice(sock, stream);
          sock.resume();
        },
        (e: unknown) => {
          this.log.debug({ port, err: errorMessage(e) }, "hybrid vsock: guest refused");
          sock.destroy();
        },
      );
    };
    sock.on("data", onData);
  }

  /** Guest → host: forwards to <uds>_<port> if someone listens there. */
  private acceptFromGuest(port: number): Promise<((s: VsockStream) => void) | undefined> {
    const path = `${this.udsPath}_${port}`;
    if (!existsSync(path)) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const sock = connect(path);
      const fail = () => resolve(undefined);
      sock.once("error", fail);
      sock.once("connect", () => {
        sock.off("error", fail);
        sock.on("error", () => {});
        this.sockets.add(sock);
        sock.on("close", () => this.sockets.delete(sock));
        resolve((stream) => splice(sock, stream));
      });
    });
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((r) => server.close(() => r()));
    if (existsSync(this.udsPath)) unlinkSync(this.udsPath);
    if (this.device.acceptor) this.device.acceptor = undefined;
  }
}

/** Joins two streams both ways, half-close included; an error or reset on either side ends both. */
export function splice(a: Duplex, b: Duplex): void {
  a.pipe(b);
  b.pipe(a);
  const kill = () => {
    a.destroy();
    b.destroy();
  };
  a.on("error", kill);
  b.on("error", kill);
  a.on("close", () => b.destroyed || b.end());
  b.on("close", () => a.destroyed || a.end());
}
