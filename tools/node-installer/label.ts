// The node installer's one call to the Kubernetes API: a JSON merge patch of the node's labels,
// over plain HTTPS with the pod's service-account token (no kubectl, no client library: the image
// carries only cove's payload). The label says that cove is installed on the node; the RuntimeClass
// schedules cove pods onto nodes carrying it (deploy/kubernetes/runtimeclass.yaml).
import { readFileSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";

/** The node label the installer sets to "true" and removes on uninstall. */
export const NODE_LABEL = "cove.io/runtime";
export const NODE_LABEL_VALUE = "true";
/** Where kubelet mounts the service account's token and the cluster CA in every container. */
export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

export interface ApiServer {
  /** https://host:port, no trailing slash. */
  url: string;
  token: string;
  /** The cluster CA (PEM) the server's certificate is checked against. */
  ca: Buffer;
}

/**
 * The API server as a pod sees it: KUBERNETES_SERVICE_HOST/PORT (set by kubelet in every
 * container) and the token and CA in the service account's directory. Undefined outside a pod.
 */
export function inClusterApi(env: NodeJS.ProcessEnv, saDir = SERVICE_ACCOUNT_DIR): ApiServer | undefined {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) return undefined;
  let token: string;
  let ca: Buffer;
  try {
    token = readFileSync(join(saDir, "token"), "utf8").trim();
    ca = readFileSync(join(saDir, "ca.crt"));
  } catch (e) {
    throw new Error(`KUBERNETES_SERVICE_HOST is set but the service account is unreadable: ${(e as Error).message}`);
  }
  const h = host.includes(":") ? `[${host}]` : host;
  return { url: `https://${h}:${port}`, token, ca };
}

interface Reply {
  status: number;
  body: string;
}

function patch(api: ApiServer, path: string, body: string, timeoutMs: number): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${api.url}${path}`,
      {
        method: "PATCH",
        ca: api.ca,
        headers: {
          authorization: `Bearer ${api.token}`,
          "content-type": "application/merge-patch+json",
          accept: "application/json",
          "content-length": Buffer.byteLength(body),
        },
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (c: Buffer) => {
          // A node object is a few KiB; keep at most 1 MiB of whatever comes back.
          if (size < 1 << 20) chunks.push(c);
          size += c.length;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no answer from ${api.url} in ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end(body);
  });
}

/** The API server's own words for a failed request (a metav1.Status), else the raw body. */
function statusMessage(r: Reply): string {
  try {
    const s = JSON.parse(r.body) as { message?: unknown };
    if (typeof s.message === "string") return s.message;
  } catch {
    // not JSON
  }
  return r.body.slice(0, 200);
}

export interface LabelOptions {
  /** Tries for a failure that may pass (no connection, 429, 5xx); default 5. */
  attempts?: number;
  /** Pause between tries; default 2000 ms. */
  retryMs?: number;
  timeoutMs?: number;
}

/**
 * Sets NODE_LABEL on the node (value "true"), or removes it (value null). A node that is gone
 * counts as unlabelled. Throws on a refusal (401/403: the RBAC in node-installer.yaml is missing).
 */
export async function setNodeLabel(
  api: ApiServer,
  node: string,
  value: string | null,
  opts: LabelOptions = {},
): Promise<void> {
  const body = JSON.stringify({ metadata: { labels: { [NODE_LABEL]: value } } });
  const path = `/api/v1/nodes/${encodeURIComponent(node)}`;
  const attempts = opts.attempts ?? 5;
  for (let i = 1; ; i++) {
    let why: string;
    const r = await patch(api, path, body, opts.timeoutMs ?? 10_000).catch((e: Error) => e);
    if (r instanceof Error) why = `PATCH ${path}: ${r.message}`;
    else {
      if (r.status >= 200 && r.status < 300) return;
      if (r.status === 404 && value === null) return;
      why = `PATCH ${path}: ${r.status} ${statusMessage(r)}`;
      if (r.status !== 429 && r.status < 500) throw new Error(why);
    }
    if (i >= attempts) throw new Error(`${why} (${attempts} tries)`);
    await new Promise((res) => setTimeout(res, opts.retryMs ?? 2000));
  }
}
