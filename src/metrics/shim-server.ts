// The shim's metrics endpoint: HTTP on a Unix socket in the pod VM's work dir (root-only: the dir is
// 0700 and the socket 0600), scraped by `cove monitor` / `cove metrics`. GET /metrics is Prometheus
// text, GET /metrics.json prom-client's JSON (what the node endpoint aggregates). Bounded: a few
// connections at a time, short timeouts, no request body read.
import { chmodSync, unlinkSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { errorMessage } from "../common/errors.ts";

export const METRICS_SOCKET = "metrics.sock";
/** Concurrent scrapers; more are refused (the node endpoint uses one). */
const MAX_CONNECTIONS = 4;
const TIMEOUT_MS = 10_000;

export interface MetricsServer {
  readonly path: string;
  close(): Promise<void>;
}

export function metricsSocketPath(vmWorkDir: string): string {
  return join(vmWorkDir, METRICS_SOCKET);
}

export function handler(registry: Registry, log?: Logger) {
  return (req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse) => {
    const json = req.url === "/metrics.json";
    if (req.method !== "GET" || (req.url !== "/metrics" && !json)) {
      res.writeHead(404, { "content-type": "text/plain" }).end("GET /metrics or /metrics.json\n");
      return;
    }
    (json ? registry.getMetricsAsJSON().then((m) => JSON.stringify(m)) : registry.metrics()).then(
      (body) => res.writeHead(200, { "content-type": json ? "application/json" : registry.contentType }).end(body),
      (e: unknown) => {
        log?.warn({ err: errorMessage(e) }, "metrics: collecting failed");
        res.writeHead(500, { "content-type": "text/plain" }).end(`collecting metrics failed: ${errorMessage(e)}\n`);
      },
    );
  };
}

/** Serves `registry` on <vmWorkDir>/metrics.sock until close(). */
export async function serveMetrics(vmWorkDir: string, registry: Registry, log?: Logger): Promise<MetricsServer> {
  const path = metricsSocketPath(vmWorkDir);
  const server: Server = createServer(
    { requestTimeout: TIMEOUT_MS, headersTimeout: TIMEOUT_MS },
    handler(registry, log),
  );
  server.maxConnections = MAX_CONNECTIONS;
  server.keepAliveTimeout = 1000;
  try {
    unlinkSync(path);
  } catch {
    // none left over
  }
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => {
      server.off("error", reject);
      resolve();
    });
  });
  chmodSync(path, 0o600);
  server.unref();
  return {
    path,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
