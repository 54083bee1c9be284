// The node endpoint's side of a shim's metrics socket: GET /metrics.json over HTTP on the Unix
// socket, with a deadline and a size bound, and the answer checked before it is aggregated (a shim
// of another cove version, or one cut off mid-answer, must not break the node's metrics).
import { request } from "node:http";

export const SCRAPE_TIMEOUT_MS = 3000;
/** A pod's JSON is ~60 KiB; this leaves room for many devices and methods. */
export const MAX_SCRAPE_BYTES = 4 * 1024 * 1024;
const MAX_METRICS = 256;
const MAX_VALUES = 10_000;
const MAX_LABEL_VALUE = 256;
const NAME = /^cove_[a-z0-9_]{1,100}$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]{0,63}$/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary"]);

/** One metric of prom-client's getMetricsAsJSON(), as checked here (what AggregatorRegistry.aggregate takes). */
export interface ScrapedMetric {
  name: string;
  help: string;
  type: string;
  values: { value: number; labels: Record<string, string | number>; metricName?: string }[];
  aggregator: "sum";
}

/** GETs `path` on a Unix socket: the body, or an error after timeoutMs or past maxBytes. */
export function getUnix(
  socketPath: string,
  path: string,
  timeoutMs = SCRAPE_TIMEOUT_MS,
  maxBytes = MAX_SCRAPE_BYTES,
): Promise<string> {
  return new Promise((resolve, reject) => {
    let failed = false;
    const fail = (e: Error) => {
      failed = true;
      reject(e);
      req.destroy();
    };
    const req = request({ socketPath, path }, (res) => {
      const chunks: Buffer[] = [];
      let total = 0;
      res.on("data", (d: Buffer) => {
        total += d.length;
        if (total > maxBytes) fail(new Error(`answer over ${maxBytes} bytes`));
        else chunks.push(d);
      });
      res.on("end", () => {
        if (failed) return;
        const body = Buffer.concat(chunks).toString("utf8");
        if (res.statusCode === 200) resolve(body);
        else reject(new Error(`HTTP ${res.statusCode}: ${body.slice(0, 200)}`));
      });
      res.on("error", reject);
    });
    const deadline = setTimeout(() => fail(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    req.on("close", () => clearTimeout(deadline));
    req.on("error", (e) => {
      if (!failed) reject(e);
    });
    req.end();
  });
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** prom-client's getMetricsAsJSON() output, checked: cove's metric names, known types, numeric values. */
export function parseScrape(body: string): ScrapedMetric[] {
  const v: unknown = JSON.parse(body);
  if (!Array.isArray(v) || v.length > MAX_METRICS) throw new Error("not a list of metrics");
  let values = 0;
  return v.map((m): ScrapedMetric => {
    if (!isRecord(m) || typeof m.name !== "string" || !NAME.test(m.name)) {
      throw new Error("a metric without a cove_ name");
    }
    if (typeof m.type !== "string" || !TYPES.has(m.type) || !Array.isArray(m.values)) {
      throw new Error(`${m.name}: bad type or values`);
    }
    values += m.values.length;
    if (values > MAX_VALUES) throw new Error("too many values");
    for (const x of m.values) {
      if (!isRecord(x) || typeof x.value !== "number" || !Number.isFinite(x.value) || !isRecord(x.labels)) {
        throw new Error(`${m.name}: a bad value`);
      }
      if (x.metricName !== undefined && (typeof x.metricName !== "string" || !NAME.test(x.metricName))) {
        throw new Error(`${m.name}: a bad sample name`);
      }
      for (const [k, l] of Object.entries(x.labels)) {
        const ok = LABEL.test(k) && (typeof l === "number" || (typeof l === "string" && l.length <= MAX_LABEL_VALUE));
        if (!ok) throw new Error(`${m.name}: a bad label`);
      }
    }
    return {
      name: m.name,
      help: typeof m.help === "string" ? m.help : "",
      type: m.type,
      values: m.values as ScrapedMetric["values"],
      aggregator: "sum",
    };
  });
}
