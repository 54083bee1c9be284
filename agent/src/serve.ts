// Where the agent listens. In the guest: ttrpc on vsock port 1024, stdio on 1025. On a host (tests,
// benchmarks): `unix:<path>` for ttrpc and `<path>.stdio` for stdio.
import { rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { listenVsock } from "../../src/native/vsock.ts";
import { AGENT_SERVICE, AGENT_VSOCK_PORT, STDIO_VSOCK_PORT } from "../../src/proto/agent.ts";
import { TtrpcServer } from "../../src/ttrpc/index.ts";
import type { Agent } from "./agent.ts";
import { agentService } from "./api/service.ts";
import type { Logger } from "./log.ts";
import { serveStdio } from "./stdio/server.ts";

export type ListenSpec = { kind: "vsock"; port: number; stdioPort: number } | { kind: "unix"; path: string };

/** Parses `vsock`, `vsock:<port>` (stdio on port+1) or `unix:<path>`. */
export function parseListen(s: string | undefined): ListenSpec {
  if (!s || s === "vsock") return { kind: "vsock", port: AGENT_VSOCK_PORT, stdioPort: STDIO_VSOCK_PORT };
  if (s.startsWith("vsock:")) {
    const port = Number(s.slice(6));
    if (!Number.isInteger(port) || port <= 0 || port >= 0xffffffff) throw new Error(`bad vsock port in ${s}`);
    return { kind: "vsock", port, stdioPort: port + 1 };
  }
  if (s.startsWith("unix:")) {
    const path = s.slice(5);
    if (!path.startsWith("/")) throw new Error(`unix socket path must be absolute: ${s}`);
    return { kind: "unix", path };
  }
  throw new Error(`--listen must be vsock[:port] or unix:<path>, not ${s}`);
}

export interface Listening {
  close(): Promise<void>;
}

export async function serve(agent: Agent, spec: ListenSpec, log: Logger): Promise<Listening> {
  const server = new TtrpcServer({ logger: log });
  server.registerService(AGENT_SERVICE, agentService(agent));
  const onRpc = (s: Socket) => {
    s.on("error", () => {});
    server.serve(s);
  };
  const onStdio = (s: Socket) => serveStdio(agent, s, log);
  if (spec.kind === "vsock") {
    const a = listenVsock(spec.port, onRpc);
    const b = listenVsock(spec.stdioPort, onStdio);
    log.info({ port: spec.port, stdioPort: spec.stdioPort }, "listening on vsock");
    return {
      close: async () => {
        await Promise.all([a.close(), b.close(), server.close()]);
      },
    };
  }
  const listen = (path: string, fn: (s: Socket) => void) =>
    new Promise<Server>((resolve, reject) => {
      rmSync(path, { force: true });
      const srv = createServer({ allowHalfOpen: true }, fn);
      srv.once("error", reject);
      srv.listen(path, () => resolve(srv));
    });
  const a = await listen(spec.path, onRpc);
  const b = await listen(`${spec.path}.stdio`, onStdio);
  log.info({ path: spec.path, stdio: `${spec.path}.stdio` }, "listening on unix sockets");
  return {
    close: async () => {
      await Promise.all([new Promise((r) => a.close(r)), new Promise((r) => b.close(r)), server.close()]);
    },
  };
}
