// A pod's metrics, read from the running VM when scraped: its size and boot time, the guest RAM it
// touched and the host PSS of its processes, VM exits (embedded VMM), and every virtio device's
// counters. A PodSource is what the registry reads; src/metrics/pod-source.ts makes one from a
// running pod VM, tests make fakes. The pod's labels (pod, namespace, backend) are the served
// registry's default labels, so every series of the shim carries them.
import { Counter, Gauge, type Registry } from "prom-client";
import type { BlkMetrics } from "../virtio/blk/metrics.ts";
import type { NetMetrics } from "../virtio/net/metrics.ts";
import type { VsockMetrics } from "../virtio/vsock/metrics.ts";
import type { ExitTotals } from "./exits.ts";
import type { MemorySample } from "./proc-memory.ts";

export interface PodLabels {
  pod: string;
  namespace: string;
  backend: string;
}

export interface PodInfo extends PodLabels {
  /** kvm or tcg, when known. */
  accel?: string;
  vcpus: number;
  memoryMib: number;
  /** ms since the epoch when the VM was ready. */
  startedAtMs: number;
  bootMs: number;
}

export interface DeviceCounters {
  blk: { id: string; m: BlkMetrics }[];
  net: { id: string; m: NetMetrics }[];
  vsock?: { m: VsockMetrics; connections: number };
  /** The qemu backend's vhost-user servers, by device id. */
  vhostUser: { id: string; kicks: number; calls: number }[];
}

export interface PodSource {
  info: PodInfo;
  containers(): number;
  devices(): DeviceCounters;
  /** undefined where the backend cannot say (qemu). */
  exits(): ExitTotals | undefined;
  memory(): Promise<MemorySample>;
}

/** A counter mirroring a value kept elsewhere: set from its source on every scrape. */
function mirror<L extends string>(
  reg: Registry,
  name: string,
  help: string,
  labelNames: L[],
  read: () => Iterable<[Record<L, string>, number]>,
): void {
  new Counter<L>({
    name,
    help,
    labelNames,
    registers: [reg],
    collect() {
      this.reset();
      for (const [labels, v] of read()) this.inc(labels, Math.max(0, v));
    },
  });
}

function gauge<L extends string>(
  reg: Registry,
  name: string,
  help: string,
  labelNames: L[],
  read: () => Iterable<[Record<L, string>, number]> | Promise<Iterable<[Record<L, string>, number]>>,
): void {
  new Gauge<L>({
    name,
    help,
    labelNames,
    registers: [reg],
    async collect() {
      this.reset();
      for (const [labels, v] of await read()) this.set(labels, v);
    },
  });
}

function* deviceRequests(d: DeviceCounters): Generator<[Record<"device" | "type" | "op", string>, number]> {
  for (const { id, m } of d.blk) {
    const ops: [string, number][] = [
      ["read", m.reads],
      ["write", m.writes],
      ["flush", m.flushes],
      ["discard", m.discards],
      ["write_zeroes", m.writeZeroes],
      ["get_id", m.getIds],
      ["unsupported", m.unsupported],
    ];
    for (const [op, v] of ops) yield [{ device: id, type: "blk", op }, v];
  }
  for (const { id, m } of d.net) {
    yield [{ device: id, type: "net", op: "rx" }, m.rxFrames];
    yield [{ device: id, type: "net", op: "tx" }, m.txFrames];
  }
  if (d.vsock) {
    yield [{ device: "vsock", type: "vsock", op: "rx" }, d.vsock.m.rxPackets];
    yield [{ device: "vsock", type: "vsock", op: "tx" }, d.vsock.m.txPackets];
  }
}

function* deviceBytes(d: DeviceCounters): Generator<[Record<"device" | "type" | "direction", string>, number]> {
  for (const { id, m } of d.blk) {
    yield [{ device: id, type: "blk", direction: "read" }, m.bytesRead];
    yield [{ device: id, type: "blk", direction: "write" }, m.bytesWritten];
  }
  for (const { id, m } of d.net) {
    yield [{ device: id, type: "net", direction: "rx" }, m.rxBytes];
    yield [{ device: id, type: "net", direction: "tx" }, m.txBytes];
  }
  if (d.vsock) {
    yield [{ device: "vsock", type: "vsock", direction: "rx" }, d.vsock.m.rxBytes];
    yield [{ device: "vsock", type: "vsock", direction: "tx" }, d.vsock.m.txBytes];
  }
}

function* deviceErrors(d: DeviceCounters): Generator<[Record<"device" | "type" | "kind", string>, number]> {
  for (const { id, m } of d.blk) {
    yield [{ device: id, type: "blk", kind: "io" }, m.ioErrors];
    yield [{ device: id, type: "blk", kind: "invalid" }, m.invalid];
  }
  for (const { id, m } of d.net) {
    yield [{ device: id, type: "net", kind: "rx_dropped" }, m.rxDropped];
    yield [{ device: id, type: "net", kind: "tx_invalid" }, m.txInvalid];
    yield [{ device: id, type: "net", kind: "tx_error" }, m.txErrors];
  }
  if (d.vsock) {
    const m = d.vsock.m;
    yield [{ device: "vsock", type: "vsock", kind: "invalid" }, m.invalid];
    yield [{ device: "vsock", type: "vsock", kind: "refused" }, m.connectionsRefused];
    yield [{ device: "vsock", type: "vsock", kind: "resets_dropped" }, m.resetsDropped];
  }
}

function* deviceStalls(d: DeviceCounters): Generator<[Record<"device" | "type" | "kind", string>, number]> {
  for (const { id, m } of d.blk) yield [{ device: id, type: "blk", kind: "batch_deferred" }, m.deferredTurns];
  for (const { id, m } of d.net) {
    yield [{ device: id, type: "net", kind: "rx_no_buffers" }, m.rxNoBuffers];
    yield [{ device: id, type: "net", kind: "tx_blocked" }, m.txBlocked];
  }
  if (d.vsock) yield [{ device: "vsock", type: "vsock", kind: "rx_buffer_too_small" }, d.vsock.m.rxBuffersTooSmall];
}

function* inFlight(d: DeviceCounters): Generator<[Record<"device" | "type", string>, number]> {
  for (const { id, m } of d.blk) yield [{ device: id, type: "blk" }, m.inFlight];
  if (d.vsock) yield [{ device: "vsock", type: "vsock" }, d.vsock.connections];
}

/** Registers the pod's series in `reg` (their pod labels are the registry's defaults: ShimMetrics.withPod). */
export function registerPodMetrics(reg: Registry, src: PodSource): void {
  const { info } = src;
  const one = <T>(v: T): [Record<never, string>, T][] => [[{}, v]];
  gauge(reg, "cove_pod_info", "The pod's VM: always 1, its accelerator as a label", ["accel"], () => [
    [{ accel: info.accel ?? "" }, 1],
  ]);
  gauge(reg, "cove_pod_vcpus", "vCPUs of the pod's VM", [], () => one(info.vcpus));
  gauge(reg, "cove_pod_memory_bytes", "Guest RAM size of the pod's VM", [], () => one(info.memoryMib * 1024 * 1024));
  gauge(reg, "cove_pod_start_time_seconds", "When the pod's VM was ready (Unix time)", [], () =>
    one(info.startedAtMs / 1000),
  );
  gauge(reg, "cove_pod_boot_seconds", "From starting the VM to the guest agent's first answer", [], () =>
    one(info.bootMs / 1000),
  );
  gauge(reg, "cove_pod_containers", "Containers in the pod (the sandbox container included)", [], () =>
    one(src.containers()),
  );
  gauge(
    reg,
    "cove_pod_guest_ram_touched_bytes",
    "Guest RAM the guest has touched (resident in the VMM)",
    [],
    async () => {
      const m = await src.memory();
      return m.guestTouchedBytes === undefined ? [] : one(m.guestTouchedBytes);
    },
  );
  gauge(
    reg,
    "cove_pod_host_pss_bytes",
    "Host memory (PSS) of the pod's processes: the shim (with the VMM and guest RAM on the embedded backend), and QEMU's on the qemu backend",
    ["process"],
    async () => {
      const m = await src.memory();
      const out: [Record<"process", string>, number][] = [];
      if (m.shimPssBytes !== undefined) out.push([{ process: "shim" }, m.shimPssBytes]);
      if (m.vmmPssBytes !== undefined) out.push([{ process: "vmm" }, m.vmmPssBytes]);
      return out;
    },
  );
  // Only where the backend counts exits: a qemu pod has no such series rather than zeros.
  if (src.exits() !== undefined) registerExitMetrics(reg, src);
  registerDeviceMetrics(reg, src);
}

function registerExitMetrics(reg: Registry, src: PodSource): void {
  const one = <T>(v: T): [Record<never, string>, T][] => [[{}, v]];
  mirror(reg, "cove_vm_exits_total", "VM exits counted by KVM, all kinds (embedded VMM only)", [], () => {
    const all = src.exits()?.all;
    return all === undefined ? [] : one(all);
  });
  mirror(
    reg,
    "cove_vm_exits_by_kind_total",
    "VM exits by kind, from KVM's *_exits stats (embedded VMM only; kinds overlap, do not sum them)",
    ["kind"],
    () => [...(src.exits()?.byKind ?? [])].map(([kind, v]) => [{ kind }, v]),
  );
  mirror(
    reg,
    "cove_vmm_userspace_exits_total",
    "VM exits that reached the VMM's vCPU loop, by KVM exit reason (embedded VMM only)",
    ["reason"],
    () => [...(src.exits()?.userspace ?? [])].map(([reason, v]) => [{ reason }, v]),
  );
}

function registerDeviceMetrics(reg: Registry, src: PodSource): void {
  mirror(
    reg,
    "cove_device_requests_total",
    "virtio requests: blk by operation, net frames and vsock packets by direction",
    ["device", "type", "op"],
    () => deviceRequests(src.devices()),
  );
  mirror(
    reg,
    "cove_device_bytes_total",
    "virtio payload bytes: blk read/write, net and vsock rx (to the guest)/tx (from it)",
    ["device", "type", "direction"],
    () => deviceBytes(src.devices()),
  );
  mirror(
    reg,
    "cove_device_errors_total",
    "virtio requests failed or dropped, by kind",
    ["device", "type", "kind"],
    () => deviceErrors(src.devices()),
  );
  mirror(
    reg,
    "cove_device_stalls_total",
    "Times a device waited: on the guest (no rx buffers), the host (tap full) or its batch limit",
    ["device", "type", "kind"],
    () => deviceStalls(src.devices()),
  );
  gauge(
    reg,
    "cove_device_in_flight",
    "Requests in flight: blk requests on the host, vsock connections open",
    ["device", "type"],
    () => inFlight(src.devices()),
  );
  mirror(
    reg,
    "cove_vhost_user_kicks_total",
    "Queue kicks from QEMU to a vhost-user backend (qemu backend only)",
    ["device"],
    () => src.devices().vhostUser.map((v) => [{ device: v.id }, v.kicks]),
  );
  mirror(
    reg,
    "cove_vhost_user_calls_total",
    "Interrupts a vhost-user backend sent through QEMU (qemu backend only)",
    ["device"],
    () => src.devices().vhostUser.map((v) => [{ device: v.id }, v.calls]),
  );
}
