// The transport-agnostic device contract (DESIGN decision 1): a backend sees guest memory, its
// queues, kicks and an interrupt sink. virtio-mmio (embedded VMM) and vhost-user (QEMU) both
// drive devices only through this interface.
import type { GuestMemory } from "./memory.ts";
import type { Queue } from "./queue/queue.ts";

export const VIRTIO_F_RING_INDIRECT_DESC = 28n;
export const VIRTIO_F_RING_EVENT_IDX = 29n;
export const VIRTIO_F_VERSION_1 = 32n;

export const VIRTIO_ID_BLOCK = 2;
export const VIRTIO_ID_VSOCK = 19;

/** Device status bit the device sets when it hit an error it cannot recover from without reset. */
export const VIRTIO_STATUS_DEVICE_NEEDS_RESET = 0x40;

export function bit(n: bigint): bigint {
  return 1n << n;
}

/** Where a device sends interrupts; the transport maps them to irqfd/MSI or vhost-user call fds. */
export interface InterruptSink {
  /** Used buffers were added to queue `index`. */
  queue(index: number): void;
  /** The configuration space changed (e.g. blk capacity). */
  config(): void;
}

export interface ActivateContext {
  mem: GuestMemory;
  /** Queues by index; a transport may leave a queue the driver did not set up undefined. */
  queues: (Queue | undefined)[];
  interrupt: InterruptSink;
  /** Negotiated feature bits. */
  features: bigint;
}

export interface VirtioDevice {
  readonly deviceType: number;
  readonly name: string;
  /** Maximum size of each queue; its length is the number of queues. */
  readonly queueMaxSizes: readonly number[];
  /** Feature bits offered to the driver (VIRTIO_F_VERSION_1 always included). */
  readonly features: bigint;
  readConfig(offset: number, length: number): Buffer;
  writeConfig(offset: number, data: Buffer): void;
  /** Called once the driver is DRIVER_OK (or vhost-user rings are started). */
  activate(ctx: ActivateContext): void;
  /** The driver kicked queue `index`. */
  notify(index: number): void;
  /** Stop all work and forget the queues; the device can be activated again afterwards. */
  reset(): void;
  /** Set when the guest broke the contract; the transport reports DEVICE_NEEDS_RESET. */
  readonly needsReset: string | undefined;
  /** Transport hook: called when needsReset becomes set. */
  onNeedsReset?: (reason: string) => void;
}

/** Checks the driver accepted VIRTIO_F_VERSION_1 (legacy drivers are refused) and nothing unknown. */
export function checkFeatures(offered: bigint, acked: bigint): string | undefined {
  if (!(acked & bit(VIRTIO_F_VERSION_1))) return "driver did not accept VIRTIO_F_VERSION_1";
  if (acked & ~offered) return `driver accepted unoffered features 0x${(acked & ~offered).toString(16)}`;
  return undefined;
}

/** Wires every present queue to the features the driver acked and to the device's fail(): one
 * place for what each device does on activation. A queue already broken fails the device at
 * once. `each` (optional) runs per queue right after its wiring, in queue order. */
export function wireQueues(ctx: ActivateContext, fail: (reason: string) => void, each?: (index: number) => void): void {
  const eventIdx = (ctx.features & bit(VIRTIO_F_RING_EVENT_IDX)) !== 0n;
  const indirect = (ctx.features & bit(VIRTIO_F_RING_INDIRECT_DESC)) !== 0n;
  ctx.queues.forEach((q, i) => {
    if (!q) return;
    q.eventIdx = eventIdx;
    q.indirect = indirect;
    q.onBroken = (reason) => fail(`queue ${i}: ${reason}`);
    if (q.broken) fail(`queue ${i}: ${q.broken}`);
    each?.(i);
  });
}

/** A driver's config-space read: `length` bytes of `config` from `offset`, zeros past its end or
 * for an offset outside it (a negative length reads nothing). */
export function readConfigWindow(config: Buffer, offset: number, length: number): Buffer {
  const out = Buffer.alloc(Math.max(0, length));
  if (out.length > 0 && offset >= 0 && offset < config.length) {
    config.copy(out, 0, offset, Math.min(config.length, offset + out.length));
  }
  return out;
}

/**
 * What blk, net and vsock share, as Firecracker's devices share a DeviceState and the VirtioDevice
 * trait's default methods: activation (the driver's features checked, every queue wired to them and
 * to fail()), the needs-reset latch the transport reads, and forgetting the activation on reset.
 * A device adds its own work through the hooks, and says how it logs a failure.
 */
export abstract class DeviceBase {
  abstract readonly features: bigint;
  /** Set when the guest broke the contract; the transport reports DEVICE_NEEDS_RESET. */
  needsReset: string | undefined;
  /** Transport hook: called when needsReset becomes set. */
  onNeedsReset?: (reason: string) => void;
  /** The current activation; undefined before activate() and after reset(). */
  protected ctx: ActivateContext | undefined;

  /** Called once the driver is DRIVER_OK (or vhost-user rings are started). */
  activate(ctx: ActivateContext): void {
    const bad = checkFeatures(this.features, ctx.features);
    if (bad) {
      this.fail(bad);
      return;
    }
    this.beforeWiring(ctx);
    this.ctx = ctx;
    this.needsReset = undefined;
    wireQueues(
      ctx,
      (reason) => this.fail(reason),
      (i) => this.queueWired(i),
    );
    this.activated(ctx);
  }

  /** Stop all work and forget the queues; the device can be activated again afterwards. */
  reset(): void {
    this.ctx = undefined;
    this.resetDevice();
  }

  /** The guest broke the contract: latched until the next activation, reported once. */
  protected fail(reason: string): void {
    if (this.needsReset) return;
    this.needsReset = reason;
    this.failed(reason);
    this.onNeedsReset?.(reason);
  }

  /** Before the activation is recorded and the queues wired (features are known to be fine). */
  protected beforeWiring(_ctx: ActivateContext): void {}
  /** Right after queue `index` is wired, in queue order. */
  protected queueWired(_index: number): void {}
  /** After every queue is wired. */
  protected activated(_ctx: ActivateContext): void {}
  /** The device's own reset work, after the activation is forgotten. */
  protected resetDevice(): void {}
  /** Logs the failure (rate-limited where a guest can repeat it) and stops what must stop. */
  protected abstract failed(reason: string): void;
}
