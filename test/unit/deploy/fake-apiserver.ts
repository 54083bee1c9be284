// A fake Kubernetes API server for the node installer's label calls: HTTPS on 127.0.0.1 with a
// throwaway self-signed certificate (openssl), bearer-token checks, nodes kept in memory, JSON merge
// patches applied to their labels, and failures on demand. Used by the unit tests of the label
// client and by the install integration test (the installer container reaches it over the host's
// network).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface SeenRequest {
  method: string;
  path: string;
  contentType: string;
  authorization: string;
  body: string;
}

export interface FakeApiServer {
  host: string;
  port: number;
  /** The server certificate, which is its own CA (what a pod's ca.crt would be). */
  ca: Buffer;
  token: string;
  requests: SeenRequest[];
  /** Node name → labels. */
  nodes: Map<string, Record<string, string>>;
  /** Status codes to answer the next requests with, first first, before handling any. */
  failNext: number[];
  close(): Promise<void>;
}

/** A self-signed certificate for IP 127.0.0.1, made with openssl in a temporary directory. */
function selfSigned(): { key: Buffer; cert: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), "cove-fake-apiserver-"));
  try {
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=fake-apiserver",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-keyout",
        join(dir, "key.pem"),
        "-out",
        join(dir, "cert.pem"),
      ],
      { stdio: "pipe", timeout: 20_000 },
    );
    return { key: readFileSync(join(dir, "key.pem")), cert: readFileSync(join(dir, "cert.pem")) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function mergeLabels(labels: Record<string, string>, patch: unknown): void {
  const l = (patch as { metadata?: { labels?: Record<string, string | null> } }).metadata?.labels ?? {};
  for (const [k, v] of Object.entries(l)) {
    if (v === null) delete labels[k];
    else labels[k] = v;
  }
}

export async function startFakeApiServer(nodeNames: string[], token = "fake-token"): Promise<FakeApiServer> {
  const { key, cert } = selfSigned();
  const nodes = new Map(nodeNames.map((n) => [n, {} as Record<string, string>]));
  const requests: SeenRequest[] = [];
  const failNext: number[] = [];
  const server: Server = createServer({ key, cert }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const seen = {
        method: req.method ?? "",
        path: req.url ?? "",
        contentType: req.headers["content-type"] ?? "",
        authorization: req.headers.authorization ?? "",
        body: Buffer.concat(chunks).toString("utf8"),
      };
      requests.push(seen);
      const reply = (status: number, obj: unknown) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(obj));
      };
      const status = (code: number, message: string) =>
        reply(code, { kind: "Status", apiVersion: "v1", status: "Failure", message, code });
      const fail = failNext.shift();
      if (fail !== undefined) return status(fail, `injected ${fail}`);
      if (seen.authorization !== `Bearer ${token}`) return status(401, "Unauthorized");
      const m = /^\/api\/v1\/nodes\/([^/?]+)$/.exec(seen.path);
      if (!m || seen.method !== "PATCH") return status(405, `${seen.method} ${seen.path} not served`);
      if (seen.contentType !== "application/merge-patch+json") return status(415, `${seen.contentType}`);
      const name = decodeURIComponent(m[1]!);
      const labels = nodes.get(name);
      if (!labels) return status(404, `nodes "${name}" not found`);
      mergeLabels(labels, JSON.parse(seen.body));
      reply(200, { kind: "Node", apiVersion: "v1", metadata: { name, labels } });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    host: "127.0.0.1",
    port,
    ca: cert,
    token,
    requests,
    nodes,
    failNext,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
