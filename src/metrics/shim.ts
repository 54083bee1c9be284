// What the shim calls: once its pod VM is ready, register the pod's series and serve them on the
// VM work dir's metrics socket; at teardown, stop serving. Metrics never fail the pod: a socket
// that cannot be bound is logged and the pod runs without.
import type { Logger } from "pino";
import { errorMessage } from "../common/errors.ts";
import type { RunningVm } from "../hypervisor/types.ts";
import type { PodRunState } from "../sandbox/run-state.ts";
import { podSource } from "./pod-source.ts";
import { shimMetrics } from "./shim-metrics.ts";
import { type MetricsServer, serveMetrics } from "./shim-server.ts";

export interface PodMetricsHandle {
  close(): Promise<void>;
}

export function startPodMetrics(o: {
  workDir: string;
  /** What pod.json says of the pod. */
  state: PodRunState;
  vm: RunningVm;
  containers: () => number;
  log: Logger;
}): PodMetricsHandle {
  const s = o.state;
  const info = {
    pod: s.id,
    namespace: s.namespace,
    backend: s.backend,
    ...(s.accel ? { accel: s.accel } : {}),
    vcpus: s.vcpus,
    memoryMib: s.memoryMib,
    startedAtMs: Date.parse(s.startedAt),
    bootMs: s.bootMs,
  };
  const reg = shimMetrics.withPod(podSource(info, o.vm, o.containers));
  const serving: Promise<MetricsServer | undefined> = serveMetrics(o.workDir, reg, o.log).then(
    (s) => {
      o.log.debug({ socket: s.path }, "pod metrics served");
      return s;
    },
    (e: unknown) => {
      o.log.warn({ err: errorMessage(e) }, "pod metrics: cannot serve the metrics socket (the pod runs without)");
      return undefined;
    },
  );
  return {
    close: async () => {
      await (await serving)?.close();
    },
  };
}
