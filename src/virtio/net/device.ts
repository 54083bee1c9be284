// The virtio-net device (virtio 1.2 §5.1): one rx/tx queue pair over a NetHostEnd (a tap).
// rx (host end → guest) reads the tap only while the guest has buffers posted: the kernel's tap
// queue is the only buffer, so a guest that stops reading pushes back on the network instead of
// on our memory. At most one frame is held here, while it waits for enough mergeable buffers.
// tx (guest → host end) hands the guest's buffers to writev directly (no copy); a full tap
// pauses tx until it drains. Offloads: the guest's checksum/TSO features map to TUNSETOFFLOAD,
// and the virtio_net_hdr passes through to the tap as-is.
import { errorMessage } from "../../common/errors.ts";
import { TUN_F_CSUM, TUN_F_TSO_ECN, TUN_F_TSO4, TUN_F_TSO6 } from "../../native/tap.ts";
import {
  type ActivateContext,
  bit,
  DeviceBase,
  readConfigWindow,
  VIRTIO_F_RING_EVENT_IDX,
  VIRTIO_F_RING_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  type VirtioDevice,
} from "../device.ts";
import { defaultLogger, type Logger } from "../log.ts";
import { type DescriptorChain, scatter } from "../queue/chain.ts";
import type { Queue } from "../queue/queue.ts";
import {
  ETH_HLEN,
  encodeConfig,
  formatMac,
  MAX_FRAME_LEN,
  NET_HDR_SIZE,
  NUM_BUFFERS_OFFSET,
  parseMac,
  VIRTIO_ID_NET,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_ECN,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_STATUS,
} from "./header.ts";
import type { NetHostEnd } from "./host-end.ts";
import { NetMetrics } from "./metrics.ts";

export const RX_QUEUE = 0;
export const TX_QUEUE = 1;

/** Frames handled per event-loop turn and direction, so a busy link cannot starve the loop. */
export const NET_BATCH = 128;
/** How soon a frame waiting for more rx buffers than the guest posted looks again. */
const RX_RETRY_MS = 10;

export interface NetOptions {
  hostEnd: NetHostEnd;
  /** The guest's MAC (for a pod: the CNI interface's, so neighbours' ARP entries stay right). */
  mac: string;
  /** Offered as VIRTIO_NET_F_MTU when set (the CNI interface's MTU). */
  mtu?: number;
  queueSize?: number;
  /** Offer VIRTIO_NET_F_MRG_RXBUF (default true). */
  mergeable?: boolean;
  /** Offer the checksum/TSO offloads (default true). */
  offloads?: boolean;
  logger?: Logger;
}

export class NetDevice extends DeviceBase implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_NET;
  readonly name: string;
  readonly queueMaxSizes: number[];
  readonly features: bigint;
  readonly metrics = new NetMetrics();
  readonly mac: Buffer;
  readonly mtu: number;
  private readonly hostEnd: NetHostEnd;
  private readonly log: Logger;
  private mergeable = false;
  private guestCsum = false;
  /** The tap offloads of this activation (TUN_F_*). */
  private offload = 0;
  private linkUp = true;
  /** One frame read from the host end and not yet delivered (waiting for rx buffers). */
  private pendingRx: Buffer | undefined;
  /** A tx chain the host end was too full to take; retried when it becomes writable. */
  private pendingTx: DescriptorChain | undefined;
  private readonly rxBuf = Buffer.alloc(NET_HDR_SIZE + MAX_FRAME_LEN + 1);
  private wantRead = false;
  private wantWrite = false;
  private rxScheduled = false;
  private rxRetry: NodeJS.Timeout | undefined;
  private txScheduled = false;

  constructor(opts: NetOptions) {
    super();
    this.hostEnd = opts.hostEnd;
    this.mac = parseMac(opts.mac);
    if (this.mac[0]! & 1) throw new Error(`MAC ${opts.mac} is a multicast address`);
    const mtu = opts.mtu ?? 0;
    if (!Number.isInteger(mtu) || mtu < 0 || (mtu > 0 && mtu < 68) || mtu > 65535) {
      throw new Error(`invalid MTU ${opts.mtu} (68 … 65535)`);
    }
    this.mtu = mtu;
    this.name = `virtio-net(${formatMac(this.mac)})`;
    this.log = (opts.logger ?? defaultLogger).child({ device: this.name });
    this.queueMaxSizes = [opts.queueSize ?? 1024, opts.queueSize ?? 1024];
    let f =
      bit(VIRTIO_F_VERSION_1) |
      bit(VIRTIO_F_RING_EVENT_IDX) |
      bit(VIRTIO_F_RING_INDIRECT_DESC) |
      bit(VIRTIO_NET_F_MAC) |
      bit(VIRTIO_NET_F_STATUS);
    if (mtu) f |= bit(VIRTIO_NET_F_MTU);
    if (opts.mergeable ?? true) f |= bit(VIRTIO_NET_F_MRG_RXBUF);
    if (opts.offloads ?? true) {
      // guest → tap: the tap takes partial checksums and GSO frames described by the header.
      f |= bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_TSO6);
      f |= bit(VIRTIO_NET_F_HOST_ECN);
      // tap → guest: enabled on the tap with TUNSETOFFLOAD once the guest accepts them.
      f |= bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6);
      f |= bit(VIRTIO_NET_F_GUEST_ECN);
    }
    this.features = f;
    this.hostEnd.onReady((r, w) => {
      if (w) this.processTx();
      if (r) this.processRx();
    });
  }

  readConfig(offset: number, length: number): Buffer {
    const c = encodeConfig({ mac: this.mac, mtu: this.mtu, linkUp: this.linkUp });
    return readConfigWindow(c, offset, length);
  }

  writeConfig(offset: number, data: Buffer): void {
    // The MAC is writable only for legacy drivers (VERSION_1 drivers use the control queue).
    this.log.debug({ offset, len: data.length }, "ignored config write");
  }

  protected override beforeWiring(ctx: ActivateContext): void {
    const has = (b: bigint) => (ctx.features & bit(b)) !== 0n;
    this.mergeable = has(VIRTIO_NET_F_MRG_RXBUF);
    this.guestCsum = has(VIRTIO_NET_F_GUEST_CSUM);
    // TSO without checksum offload is meaningless (the kernel refuses it, §5.1.3.1 forbids it).
    let off = 0;
    if (this.guestCsum) {
      off |= TUN_F_CSUM;
      if (has(VIRTIO_NET_F_GUEST_TSO4)) off |= TUN_F_TSO4;
      if (has(VIRTIO_NET_F_GUEST_TSO6)) off |= TUN_F_TSO6;
      if (off & (TUN_F_TSO4 | TUN_F_TSO6) && has(VIRTIO_NET_F_GUEST_ECN)) off |= TUN_F_TSO_ECN;
    }
    try {
      this.hostEnd.setOffload(off);
    } catch (e) {
      this.log.warn({ err: errorMessage(e), offload: off }, "could not set tap offloads");
    }
    this.offload = off;
  }

  protected override activated(ctx: ActivateContext): void {
    this.log.debug({ features: `0x${ctx.features.toString(16)}`, offload: this.offload }, "virtio-net activated");
    this.processTx();
    this.processRx();
  }

  protected override resetDevice(): void {
    clearTimeout(this.rxRetry);
    this.rxRetry = undefined;
    this.pendingRx = undefined;
    this.pendingTx = undefined;
    this.watch(false, false);
  }

  /** Detaches from the host end and closes it (the tap disappears). */
  close(): void {
    this.reset();
    this.hostEnd.close();
  }

  protected failed(reason: string): void {
    this.log.error({ reason }, "guest broke the virtio-net contract; device needs reset");
    this.watch(false, false);
  }

  notify(index: number): void {
    if (index === TX_QUEUE) this.processTx();
    else if (index === RX_QUEUE) this.processRx();
  }

  private watch(readable: boolean, writable: boolean): void {
    if (readable === this.wantRead && writable === this.wantWrite) return;
    this.wantRead = readable;
    this.wantWrite = writable;
    this.hostEnd.want(readable, writable);
  }

  private queue(i: number): Queue | undefined {
    const q = this.ctx?.queues[i];
    return q && !q.broken && !this.needsReset ? q : undefined;
  }

  // ---- guest → host end (tx) ------------------------------------------------------------------

  private processTx(): void {
    this.txScheduled = false;
    const ctx = this.ctx;
    const q = this.queue(TX_QUEUE);
    if (!ctx || !q) return;
    let used = false;
    let budget = NET_BATCH;
    outer: for (;;) {
      q.disableNotification();
      for (;;) {
        const chain = this.pendingTx ?? q.pop();
        this.pendingTx = undefined;
        if (!chain) break;
        if (budget-- === 0) {
          this.pendingTx = chain;
          this.scheduleTx();
          break outer;
        }
        const r = this.transmit(chain);
        if (r === "blocked") {
          this.pendingTx = chain;
          this.metrics.txBlocked++;
          this.watch(this.wantRead, true);
          break outer;
        }
        q.addUsed(chain.head, 0);
        used = true;
      }
      if (q.broken || !q.enableNotification()) break;
    }
    if (!this.pendingTx && this.wantWrite) this.watch(this.wantRead, false);
    if (used && q.needsNotification()) ctx.interrupt.queue(TX_QUEUE);
  }

  /** Sends one guest frame; malformed or refused frames are dropped (the guest gets the buffer back). */
  private transmit(chain: DescriptorChain): "sent" | "dropped" | "blocked" {
    const len = chain.readableLen;
    if (chain.writableLen > 0 || len < NET_HDR_SIZE + ETH_HLEN || len > NET_HDR_SIZE + MAX_FRAME_LEN) {
      this.metrics.txInvalid++;
      this.log.debug({ len, writable: chain.writableLen }, "malformed tx frame dropped");
      return "dropped";
    }
    let n: number;
    try {
      n = this.hostEnd.send(chain.readable);
    } catch (e) {
      // The kernel validates the header (e.g. a bogus GSO type): the frame is lost, as on a wire.
      this.metrics.txErrors++;
      this.log.debug({ err: errorMessage(e), len }, "tap refused a tx frame");
      return "dropped";
    }
    if (n < 0) return "blocked";
    this.metrics.txFrames++;
    this.metrics.txBytes += len - NET_HDR_SIZE;
    return "sent";
  }

  private scheduleTx(): void {
    if (this.txScheduled) return;
    this.txScheduled = true;
    setImmediate(() => this.processTx());
  }

  // ---- host end → guest (rx) ------------------------------------------------------------------

  private processRx(): void {
    this.rxScheduled = false;
    const ctx = this.ctx;
    const q = this.queue(RX_QUEUE);
    if (!ctx || !q) return;
    let used = false;
    let budget = NET_BATCH;
    for (;;) {
      if (budget-- === 0) {
        this.scheduleRx();
        break;
      }
      if (!this.pendingRx) {
        // Read only when the guest has somewhere to put the frame.
        if (q.pending() === 0) {
          if (q.broken) return;
          if (q.enableNotification()) continue;
          this.metrics.rxNoBuffers++;
          this.watch(false, this.wantWrite);
          break;
        }
        let n: number;
        try {
          n = this.hostEnd.recv([this.rxBuf]);
        } catch (e) {
          this.log.warn({ err: errorMessage(e) }, "tap read failed");
          this.watch(false, this.wantWrite);
          break;
        }
        if (n < 0) {
          this.watch(true, this.wantWrite);
          break;
        }
        if (n < NET_HDR_SIZE + ETH_HLEN || n >= this.rxBuf.length) {
          this.metrics.rxDropped++;
          continue;
        }
        this.pendingRx = this.rxBuf.subarray(0, n);
      }
      const r = this.deliver(q, this.pendingRx);
      if (r === "wait") {
        if (q.broken) return;
        // The frame needs more buffers than are posted. Retry only if more arrived meanwhile:
        // "any pending" would retry the same too-few buffers forever (a guest-made spin).
        const had = q.pending();
        if (q.enableNotification() && q.pending() > had) continue;
        this.metrics.rxNoBuffers++;
        this.watch(false, this.wantWrite);
        // An EVENT_IDX driver is not asked to kick for buffers it adds behind those already
        // posted (avail_event is where we stopped), so look again shortly rather than never.
        if (had > 0) this.scheduleRxRetry();
        break;
      }
      this.pendingRx = undefined;
      if (r === "delivered") used = true;
      if (q.broken) return;
    }
    if (used && q.needsNotification()) ctx.interrupt.queue(RX_QUEUE);
  }

  /**
   * Places one frame (header + Ethernet frame) in the guest's rx buffers: one chain, or with
   * mergeable buffers as many as it takes (num_buffers says how many). If the ring runs out
   * mid-frame, the chains taken are given back untouched and the frame waits.
   */
  private deliver(q: Queue, frame: Buffer): "delivered" | "dropped" | "wait" {
    const chains: DescriptorChain[] = [];
    let room = 0;
    while (room < frame.length) {
      if (!this.mergeable && chains.length === 1) break;
      if (chains.length === q.size) break; // the whole ring cannot hold it
      const c = q.pop();
      if (!c) {
        unpop(q, chains.length);
        return "wait";
      }
      if (c.readableLen > 0 || c.writableLen < NET_HDR_SIZE) {
        q.markBroken(`virtio-net rx buffer of ${c.writableLen} writable/${c.readableLen} readable bytes`);
        return "dropped";
      }
      chains.push(c);
      room += c.writableLen;
    }
    if (room < frame.length) {
      // Without mergeable buffers every buffer must hold a whole frame; this one cannot.
      unpop(q, chains.length);
      this.metrics.rxDropped++;
      return "dropped";
    }
    frame.writeUInt16LE(chains.length, NUM_BUFFERS_OFFSET);
    // Flags the driver did not negotiate must not reach it (the tap sets DATA_VALID freely).
    if (!this.guestCsum) frame[0] = 0;
    let off = 0;
    for (const c of chains) {
      const n = Math.min(c.writableLen, frame.length - off);
      scatter(c.writable, frame.subarray(off, off + n));
      q.addUsed(c.head, n);
      off += n;
    }
    this.metrics.rxFrames++;
    this.metrics.rxBuffers += chains.length;
    this.metrics.rxBytes += frame.length - NET_HDR_SIZE;
    return "delivered";
  }

  private scheduleRxRetry(): void {
    if (this.rxRetry) return;
    this.rxRetry = setTimeout(() => {
      this.rxRetry = undefined;
      this.processRx();
    }, RX_RETRY_MS);
    this.rxRetry.unref();
  }

  private scheduleRx(): void {
    if (this.rxScheduled) return;
    this.rxScheduled = true;
    setImmediate(() => this.processRx());
  }

  /** Link state as the guest sees it in the status field; a change raises a config interrupt. */
  setLinkUp(up: boolean): void {
    if (up === this.linkUp) return;
    this.linkUp = up;
    this.ctx?.interrupt.config();
  }
}

/** Gives the last `n` popped chains back to the ring (they were not used; the driver still owns them). */
function unpop(q: Queue, n: number): void {
  q.nextAvail = (q.nextAvail - n) & 0xffff;
}
