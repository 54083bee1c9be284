// What every backend's running VM shares: the guest's devices are cove's own (src/virtio), served
// in this process — vsock for the agent, blk disks whose media can change, NICs — and the VM's end
// is a promise. Backends add how the VM lives (a QEMU child, or vCPU threads here) and how it stops.
import type { Duplex, PassThrough } from "node:stream";
import type { BlkDevice } from "../virtio/blk/device.ts";
import type { NetDevice } from "../virtio/net/device.ts";
import type { VsockDevice } from "../virtio/vsock/device.ts";
import type { ExtentPlace, RunningVm, VmExit } from "./types.ts";

export interface VmDevices {
  vsock: VsockDevice;
  /** By disk id (the slot's id). */
  disks: Map<string, BlkDevice>;
  nets: ReadonlyMap<string, NetDevice>;
}

export abstract class DeviceVm implements RunningVm {
  constructor(
    readonly console: PassThrough,
    protected readonly dev: VmDevices,
    protected readonly exited: Promise<VmExit>,
  ) {}

  abstract get pid(): number;
  abstract stop(timeoutMs?: number): Promise<VmExit>;
  abstract kill(): Promise<VmExit>;

  connectVsock(port: number, timeoutMs?: number): Promise<Duplex> {
    return this.dev.vsock.connect(port, timeoutMs);
  }

  listenVsock(port: number, onStream: (s: Duplex) => void): () => void {
    return this.dev.vsock.listen(port, onStream);
  }

  async changeMedia(diskId: string, path: string | undefined): Promise<void> {
    await this.disk(diskId).changeMedia(path);
  }

  async addExtent(diskId: string, path: string): Promise<ExtentPlace> {
    const e = await this.disk(diskId).addExtent(path);
    return { start: e.start / 512, sectors: e.length / 512, index: e.index };
  }

  async removeExtent(diskId: string, index: number): Promise<void> {
    await this.disk(diskId).removeExtent(index);
  }

  private disk(id: string): BlkDevice {
    const d = this.dev.disks.get(id);
    if (!d) throw new Error(`no disk ${id}`);
    return d;
  }

  wait(): Promise<VmExit> {
    return this.exited;
  }

  /** Device metrics (tests, benchmarks). */
  get devices(): VmDevices {
    return this.dev;
  }

  /** The exit, or undefined once `ms` passed first. */
  protected exitWithin(ms: number): Promise<VmExit | undefined> {
    let t: NodeJS.Timeout | undefined;
    return Promise.race([
      this.exited,
      new Promise<undefined>((r) => {
        t = setTimeout(() => r(undefined), ms);
        t.unref();
      }),
    ]).finally(() => clearTimeout(t));
  }
}
