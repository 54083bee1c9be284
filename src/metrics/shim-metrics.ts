// The metrics a shim keeps for its one pod: a prom-client registry per shim process. Everything in
// it is either a value the shim reads when scraped (devices, exits, memory: src/metrics/pod.ts) or
// counted here as it happens (agent round trips, layer images). Labels come from cove's own code or
// from containerd (pod id, namespace), never from the guest: the guest can bump a counter but never
// add a series.
import { Counter, Histogram, Registry } from "prom-client";
import { type PodSource, registerPodMetrics } from "./pod.ts";

/** Round-trip buckets (s): a syscall in a KVM guest (~1 ms) up to a container create under TCG. */
export const AGENT_RPC_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
/** Layer conversions (s): mkfs.erofs of a small layer up to a big one on a loaded host. */
export const LAYER_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export interface LayerImageResult {
  built: boolean;
  ms: number;
}

export class ShimMetrics {
  readonly registry = new Registry();
  private readonly agentRpc: Histogram<"method">;
  private readonly agentFailures: Counter<"method">;
  private readonly layerImages: Counter<"result">;
  private readonly layerSeconds: Histogram;
  /** Method names seen; bounded by the agent client's own method table, checked here again. */
  private readonly methods = new Set<string>();

  constructor(private readonly maxMethods = 64) {
    const registers = [this.registry];
    this.agentRpc = new Histogram({
      name: "cove_agent_rpc_duration_seconds",
      help: "Round trip of the shim's calls to the guest agent (long polls excluded), by method",
      labelNames: ["method"],
      buckets: AGENT_RPC_BUCKETS,
      registers,
    });
    this.agentFailures = new Counter({
      name: "cove_agent_rpc_failures_total",
      help: "Calls to the guest agent that failed (error from the agent, deadline, connection lost), by method",
      labelNames: ["method"],
      registers,
    });
    this.layerImages = new Counter({
      name: "cove_layer_images_total",
      help: "Read-only layer images this pod's shim needed: converted now (mkfs.erofs) or found in the cache",
      labelNames: ["result"],
      registers,
    });
    this.layerSeconds = new Histogram({
      name: "cove_layer_conversion_seconds",
      help: "Time to convert one layer to an erofs image (conversions only, cache hits excluded)",
      buckets: LAYER_BUCKETS,
      registers,
    });
  }

  /** One agent call's round trip. A method outside the first maxMethods seen is not recorded. */
  observeAgentCall(method: string, seconds: number, ok: boolean): void {
    if (!this.methods.has(method)) {
      if (this.methods.size >= this.maxMethods) return;
      this.methods.add(method);
    }
    this.agentRpc.observe({ method }, seconds);
    if (!ok) this.agentFailures.inc({ method });
  }

  /**
   * The registry to serve once the pod VM is ready: this process's series and the pod's, every one
   * labelled with the pod (pod, namespace, backend).
   */
  withPod(src: PodSource): Registry {
    const pod = new Registry();
    registerPodMetrics(pod, src);
    const all = Registry.merge([this.registry, pod]);
    all.setDefaultLabels({ pod: src.info.pod, namespace: src.info.namespace, backend: src.info.backend });
    return all;
  }

  recordLayerImages(images: readonly LayerImageResult[]): void {
    for (const i of images) {
      this.layerImages.inc({ result: i.built ? "converted" : "cached" });
      if (i.built) this.layerSeconds.observe(i.ms / 1000);
    }
  }
}

/** This process's metrics (one pod per shim). */
export const shimMetrics = new ShimMetrics();
