// The log port: the shim connects to vsock port 1026 (LOG_PORT; on a host, the Unix socket
// `<listen path>.log`) and reads the agent's and the kernel's log lines (log-sink.ts). One reader
// at a time: a second connection is closed at once while the first is open.
import { rmSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { listenVsock } from "../../src/native/vsock.ts";
import { LOG_PORT } from "../../src/sandbox/agent/log-format.ts";
import { type Logger, logSink } from "./log.ts";
import { followKmsg } from "./log-kmsg.ts";
import type { LogSink } from "./log-sink.ts";
import type { ListenSpec } from "./serve.ts";

export interface PortServer {
  close(): Promise<void>;
}

/** Listens on a vsock port, or on `<path><suffix>` for an agent on a host. */
export async function listenPort(
  spec: ListenSpec,
  port: number,
  suffix: string,
  onConn: (s: Socket) => void,
): Promise<PortServer> {
  if (spec.kind === "vsock") return listenVsock(port, onConn);
  const path = `${spec.path}${suffix}`;
  rmSync(path, { force: true });
  const srv = createServer({ allowHalfOpen: false }, onConn);
  await new Promise<void>((resolve, reject) => {
    srv.once("error", reject);
    srv.listen(path, () => resolve());
  });
  return { close: () => new Promise((r) => srv.close(() => r())) };
}

export function serveLogPort(sink: LogSink, spec: ListenSpec, log: Logger): Promise<PortServer> {
  return listenPort(spec, LOG_PORT, ".log", (s) => {
    s.on("error", () => {});
    if (!sink.attach(s)) {
      s.destroy();
      return;
    }
    s.resume(); // nothing is read from the shim; keep the stream flowing so close is seen
    s.on("close", () => sink.detach(s));
    log.debug("log reader attached");
  });
}

/** The log port, and in a guest the kernel's messages into the sink; failures are logged, not thrown. */
export function startLogPort(log: Logger, spec: ListenSpec, guest: boolean): void {
  if (guest) followKmsg(logSink, log);
  serveLogPort(logSink, spec, log).catch((err: unknown) =>
    log.error({ err }, "cannot serve the log port: log lines stay on the console"),
  );
}
