// The node's metrics: every pod's (scraped from its shim's metrics socket, found through the pod
// VMs' pod.json) aggregated into one Prometheus text, plus what only the node knows: how many pods
// run, which could not be scraped, the layer cache's size, and layer conversions over the
// monitor's life (a shim's own counter ends with its pod; the monitor keeps the count of the pods
// that ended).
import { existsSync } from "node:fs";
import { join } from "node:path";
import { AggregatorRegistry, Counter, Gauge, Registry } from "prom-client";
import { errorMessage } from "../common/errors.ts";
import { readPodStates, VM_RUN_DIR } from "../sandbox/run-state.ts";
import { layerCacheSize } from "./cache-size.ts";
import { getUnix, parseScrape, type ScrapedMetric } from "./scrape.ts";
import { METRICS_SOCKET } from "./shim-server.ts";

/** Shims scraped at once. */
const SCRAPE_CONCURRENCY = 16;

export interface NodeOptions {
  runDir?: string;
  cacheDir: string;
  proc?: string;
  scrape?: (socketPath: string) => Promise<string>;
}

export interface PodScrape {
  pod: string;
  dir: string;
  metrics?: ScrapedMetric[];
  error?: string;
}

async function mapLimited<T, R>(items: T[], limit: number, f: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await f(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** Every pod whose shim still runs, scraped (or why not). */
export async function scrapePods(o: NodeOptions): Promise<PodScrape[]> {
  const proc = o.proc ?? "/proc";
  const scrape = o.scrape ?? ((p: string) => getUnix(p, "/metrics.json"));
  const pods = readPodStates(o.runDir ?? VM_RUN_DIR).filter(
    (e) => e.state && existsSync(join(proc, String(e.state.shimPid))),
  );
  return mapLimited(pods, SCRAPE_CONCURRENCY, async (e): Promise<PodScrape> => {
    const pod = e.state!.id;
    try {
      return { pod, dir: e.dir, metrics: parseScrape(await scrape(join(e.dir, METRICS_SOCKET))) };
    } catch (err) {
      return { pod, dir: e.dir, error: errorMessage(err) };
    }
  });
}

/** The sum of a scraped counter's samples (matching `labels`). */
function total(metrics: ScrapedMetric[], name: string, labels: Record<string, string> = {}): number {
  const m = metrics.find((x) => x.name === name);
  if (!m) return 0;
  return m.values
    .filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))
    .reduce((a, v) => a + v.value, 0);
}

/**
 * The node's view, kept across scrapes (`cove monitor`): layer conversions of pods seen before and
 * now gone stay in the node's total. Bounded by the pods running: a pod's entry goes with it.
 */
export class NodeMetrics {
  private readonly conversionsByPod = new Map<string, number>();
  private conversionsOfGonePods = 0;
  private scrapeFailures = 0;

  constructor(private readonly o: NodeOptions) {}

  /** One scrape of every pod, aggregated with the node's own series, as a registry. */
  async collect(): Promise<{ registry: Registry; pods: PodScrape[] }> {
    const t0 = performance.now();
    const [pods, cache] = await Promise.all([scrapePods(this.o), layerCacheSize(this.o.cacheDir)]);
    const ok = pods.filter((p) => p.metrics);
    this.scrapeFailures += pods.length - ok.length;
    const seen = new Map<string, number>();
    for (const p of ok) seen.set(p.pod, total(p.metrics!, "cove_layer_images_total", { result: "converted" }));
    for (const [pod, n] of this.conversionsByPod) if (!seen.has(pod)) this.conversionsOfGonePods += n;
    this.conversionsByPod.clear();
    for (const [pod, n] of seen) this.conversionsByPod.set(pod, n);
    const conversions = this.conversionsOfGonePods + [...seen.values()].reduce((a, b) => a + b, 0);

    const node = new Registry();
    const registers = [node];
    new Gauge({ name: "cove_node_pods", help: "Pod VMs whose shim runs on this node", registers }).set(pods.length);
    new Gauge({
      name: "cove_node_pods_unscraped",
      help: "Pod VMs whose shim did not answer this scrape (booting, or stuck)",
      registers,
    }).set(pods.length - ok.length);
    new Counter({
      name: "cove_node_scrape_failures_total",
      help: "Shim scrapes that failed since this endpoint started",
      registers,
    }).inc(this.scrapeFailures);
    new Counter({
      name: "cove_node_layer_conversions_total",
      help: "Layers converted to erofs images by this node's shims, since this endpoint started watching (pods that ended included)",
      registers,
    }).inc(conversions);
    new Gauge({ name: "cove_node_layer_cache_images", help: "erofs layer images in the layer cache", registers }).set(
      cache.images,
    );
    new Gauge({ name: "cove_node_layer_cache_bytes", help: "Disk space of the layer cache's images", registers }).set(
      cache.bytes,
    );
    new Gauge({
      name: "cove_node_scrape_duration_seconds",
      help: "How long this scrape of the node's shims took",
      registers,
    }).set((performance.now() - t0) / 1000);
    const podsRegistry: Registry = AggregatorRegistry.aggregate(ok.map((p) => p.metrics!));
    return { registry: Registry.merge([node, podsRegistry]), pods };
  }

  /** The node's Prometheus text. */
  async text(): Promise<string> {
    return (await this.collect()).registry.metrics();
  }
}
