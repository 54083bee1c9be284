// A PodSource with plain counters a test can bump, for the registry and endpoint tests.
import type { PodSource } from "../../../src/metrics/pod.ts";
import { BlkMetrics } from "../../../src/virtio/blk/metrics.ts";
import { NetMetrics } from "../../../src/virtio/net/metrics.ts";
import { VsockMetrics } from "../../../src/virtio/vsock/metrics.ts";

export function fakePod(id = "pod-1", backend = "embedded") {
  const root = new BlkMetrics();
  const net0 = new NetMetrics();
  const vsock = new VsockMetrics();
  const src: PodSource = {
    info: {
      pod: id,
      namespace: "k8s.io",
      backend,
      accel: "kvm",
      vcpus: 2,
      memoryMib: 512,
      startedAtMs: 1_700_000_000_000,
      bootMs: 1234,
    },
    containers: () => 2,
    devices: () => ({
      blk: [{ id: "root", m: root }],
      net: [{ id: "net0", m: net0 }],
      vsock: { m: vsock, connections: 3 },
      vhostUser: backend === "qemu" ? [{ id: "root", kicks: 7, calls: 5 }] : [],
    }),
    exits: () =>
      backend === "embedded"
        ? {
            all: 10,
            byKind: new Map([
              ["io", 4],
              ["mmio", 3],
            ]),
            userspace: new Map([["io", 4]]),
          }
        : undefined,
    memory: async () => {
      return {
        guestTouchedBytes: 100 * 1024 * 1024,
        shimPssBytes: 50 * 1024 * 1024,
        ...(backend === "qemu" ? { vmmPssBytes: 150 * 1024 * 1024 } : {}),
      };
    },
  };
  return { src, root, net0, vsock };
}
