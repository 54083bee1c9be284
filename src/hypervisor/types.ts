// The Hypervisor interface the sandbox calls: start a VM from a config, then talk to it through
// its console, its vsock (agent channel) and its disks, and stop it. Backends: qemu (here) and
// the embedded VMM.
import type { Duplex, Readable } from "node:stream";
import type { Logger } from "pino";
import type { NetHostEnd } from "../virtio/net/host-end.ts";

export interface DiskConfig {
  /** Stable name used for media changes (e.g. "root", "ctr-1"). */
  id: string;
  /** File or block device; undefined = an empty slot whose media is inserted later. */
  path?: string;
  /** A disk of extents: starts empty; files are added as extents while the guest runs (no path). */
  extents?: boolean;
  readOnly?: boolean;
  /** What the guest sees in /sys/block/vdX/serial (≤ 20 bytes); defaults to id. */
  serial?: string;
}

export interface NetConfig {
  /** Stable name used in socket names and logs (e.g. "net0"). */
  id: string;
  /** The host end (a tap in the pod's netns); owned by the caller, who closes it after the VM is gone. */
  hostEnd: NetHostEnd;
  /** The MAC the guest NIC gets: the pod interface's own, so CNI's ARP/neighbour state stays right. */
  mac: string;
  /** The pod interface's MTU (virtio-net's host_mtu); 0 = not offered. */
  mtu: number;
}

export interface VmConfig {
  /** Used in file names and logs. */
  id: string;
  kernel: string;
  cmdline: string;
  memoryMiB: number;
  vcpus: number;
  /** In order: the first is /dev/vda. */
  disks: DiskConfig[];
  vsock: {
    guestCid: number;
    /** Hybrid vsock Unix socket (CONNECT <port>), optional; guest connections to host port P go to <path>_P. */
    hybridSocket?: string;
  };
  /** virtio-net NICs, in order. Only for a backend whose `nets` capability is true. */
  nets?: NetConfig[];
  /** Directory for sockets and logs (created; files removed at exit). */
  workDir: string;
  /** Also append the serial console to this file. */
  consoleLog?: string;
  logger?: Logger;
}

/** Where a file sits on a disk of extents: 512-byte sectors, and the partition number the guest gives it. */
export interface ExtentPlace {
  start: number;
  sectors: number;
  index: number;
}

export interface VmExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface RunningVm {
  readonly pid: number;
  /** The guest's serial console output. */
  readonly console: Readable;
  /** Opens a stream to a guest vsock port (rejects with ECONNREFUSED / ETIMEDOUT). */
  connectVsock(port: number, timeoutMs?: number): Promise<Duplex>;
  /** Accepts guest connections to host vsock port `port`; returns a function that stops listening. */
  listenVsock(port: number, onStream: (s: Duplex) => void): () => void;
  /** Inserts, replaces or ejects (undefined) the media of a disk slot; the guest sees a capacity change. */
  changeMedia(diskId: string, path: string | undefined): Promise<void>;
  /** Adds a file to a disk of extents (the disk grows as needed; the guest sees a capacity change). */
  addExtent(diskId: string, path: string): Promise<ExtentPlace>;
  /** Takes an extent (by its partition number) off a disk of extents; the guest must have let go of it. */
  removeExtent(diskId: string, index: number): Promise<void>;
  /** Waits up to timeoutMs for the guest to exit on its own, then terminates QEMU. */
  stop(timeoutMs?: number): Promise<VmExit>;
  kill(): Promise<VmExit>;
  wait(): Promise<VmExit>;
}

export interface Hypervisor {
  readonly name: string;
  /** True if start() serves VmConfig.nets; the sandbox gives other backends no NIC (and says so). */
  readonly nets?: boolean;
  /** How many virtio devices (disks + NICs + vsock) one VM can have; undefined = no fixed limit. */
  readonly maxDevices?: number;
  start(config: VmConfig): Promise<RunningVm>;
}
