// `cove metrics` and `cove monitor`: the node's metrics (every pod's shim scraped through its
// metrics socket, plus the node's own: pods, layer conversions, the layer cache) as Prometheus
// text, printed once or served over HTTP for Prometheus (docs/metrics.md).
import { createServer } from "node:http";
import { parseArgs } from "node:util";
import { errorMessage } from "../common/errors.ts";
import { NodeMetrics } from "../metrics/node.ts";
import { VM_RUN_DIR } from "../sandbox/run-state.ts";
import { type Command, UsageError } from "./command.ts";
import { effectiveConfig } from "./effective-config.ts";

const COMMON_OPTIONS = { "run-dir": { type: "string" }, config: { type: "string" } } as const;

function parse<O extends Record<string, { type: "string" | "boolean" }>>(args: string[], options: O) {
  try {
    return parseArgs({ args, options: { ...COMMON_OPTIONS, ...options }, strict: true }).values;
  } catch (e) {
    throw new UsageError(errorMessage(e));
  }
}

function nodeMetrics(v: { "run-dir"?: string; config?: string }): NodeMetrics {
  const { config } = effectiveConfig(v.config ? { configPath: v.config } : {});
  return new NodeMetrics({ runDir: v["run-dir"] ?? VM_RUN_DIR, cacheDir: config.cacheDir });
}

const COMMON_USAGE = `  --run-dir DIR   where the pod VMs' work dirs are (default ${VM_RUN_DIR})
  --config FILE   the cove config to read cache_dir from (default: the one the shim reads, as cove env)`;

export const metricsCommand: Command = {
  path: ["metrics"],
  summary: "print the node's and every pod's metrics (Prometheus text)",
  usage: `cove metrics [--run-dir DIR] [--config FILE]

Scrapes every pod's shim on this host (its metrics socket, ${VM_RUN_DIR}/<vm>/metrics.sock) and prints
the pods' metrics with the node's own (pods, layer conversions, layer cache size) as Prometheus text:
what \`cove monitor\` serves. A shim that does not answer is named on stderr. Needs root.

${COMMON_USAGE}`,
  async run(args) {
    const v = parse(args, {});
    const { registry, pods } = await nodeMetrics(v).collect();
    process.stdout.write(await registry.metrics());
    for (const p of pods) if (p.error) process.stderr.write(`cove metrics: pod ${p.pod} (${p.dir}): ${p.error}\n`);
    return 0;
  },
};

/** host:port, :port or [v6]:port. */
export function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) throw new UsageError(`--listen ${s}: expected host:port`);
  return { host: m[1] ?? (m[2] || "0.0.0.0"), port };
}

export const monitorCommand: Command = {
  path: ["monitor"],
  summary: "serve the node's and every pod's metrics over HTTP for Prometheus",
  usage: `cove monitor --listen HOST:PORT [--run-dir DIR] [--config FILE]

Serves GET /metrics: on each request, every pod's shim on this host is scraped (in parallel, 3 s
each) and the result is what \`cove metrics\` prints. Concurrent requests share one scrape. Runs
until SIGTERM/SIGINT. Needs root (the shims' sockets are root's). Like kata-monitor: one endpoint
per node, the pods found through ${VM_RUN_DIR}/*/pod.json.

  --listen ADDR   address to serve on, e.g. 127.0.0.1:9464 or :9464 (all addresses)
${COMMON_USAGE}`,
  async run(args) {
    const v = parse(args, { listen: { type: "string" } });
    if (!v.listen) throw new UsageError("--listen is required");
    const { host, port } = parseListen(v.listen);
    const node = nodeMetrics(v);
    let pending: Promise<string> | undefined;
    const server = createServer({ requestTimeout: 30_000 }, (req, res) => {
      if (req.method !== "GET" || (req.url ?? "").split("?")[0] !== "/metrics") {
        res.writeHead(404, { "content-type": "text/plain" }).end("GET /metrics\n");
        return;
      }
      pending ??= node.text().finally(() => {
        pending = undefined;
      });
      pending.then(
        (text) => res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }).end(text),
        (e: unknown) => res.writeHead(500, { "content-type": "text/plain" }).end(`${errorMessage(e)}\n`),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => resolve());
    });
    const a = server.address();
    process.stderr.write(
      `cove monitor: serving /metrics on ${typeof a === "object" && a ? `${a.address}:${a.port}` : v.listen}\n`,
    );
    await new Promise<void>((resolve) => {
      for (const sig of ["SIGTERM", "SIGINT"] as const) process.once(sig, () => resolve());
    });
    server.close();
    return 0;
  },
};
