// The virtio-vsock device (virtio 1.2 §5.10): rx (device → guest), tx (guest → device) and
// event queues, stream connections with credit-based flow control, and the host-side API:
// connect(port) → Duplex for in-process users (the shim's agent channel), listen(port) for
// guest-initiated connections, and an `acceptor` fallback (hybrid vsock's `<uds>_<port>`).

import { errorMessage } from "../../common/errors.ts";
import { RateLimitedLog } from "../../common/rate-limited-log.ts";
import {
  bit,
  DeviceBase,
  readConfigWindow,
  VIRTIO_F_RING_EVENT_IDX,
  VIRTIO_F_RING_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_VSOCK,
  type VirtioDevice,
} from "../device.ts";
import { defaultLogger, type Logger } from "../log.ts";
import { gather, scatter } from "../queue/chain.ts";
import { CONN_BUF_ALLOC, Connection, type ConnOwner, type VsockStream } from "./connection.ts";
import { VsockMetrics } from "./metrics.ts";
import {
  decodeHeader,
  encodeHeader,
  HDR_SIZE,
  HOST_CID,
  MAX_PAYLOAD,
  OP_CREDIT_REQUEST,
  OP_CREDIT_UPDATE,
  OP_NAMES,
  OP_REQUEST,
  OP_RESPONSE,
  OP_RST,
  OP_RW,
  OP_SHUTDOWN,
  SHUTDOWN_RCV,
  SHUTDOWN_SEND,
  TYPE_STREAM,
  type VsockHeader,
} from "./packet.ts";

export const RX_QUEUE = 0;
export const TX_QUEUE = 1;
export const EVENT_QUEUE = 2;

// Per-pod limits (docs/security.md): a hostile guest may hit them, never go past them.
/** Descriptor chains taken from each ring per event-loop turn; the rest waits for setImmediate. */
export const VSOCK_BATCH = 128;
/** Open connections (either direction); a guest REQUEST beyond it gets RST. */
export const MAX_CONNECTIONS = 1024;
/** RSTs waiting for an rx buffer: RSTs answering a guest's stray packets are dropped beyond it, RSTs
 * ending a connection beyond MAX_PENDING_RST + MAX_CONNECTIONS (a guest that posts no rx buffers
 * while it opens and ends connections; it then learns of their end when it next uses them). */
export const MAX_PENDING_RST = 256;

export interface VsockOptions {
  guestCid: number;
  queueSize?: number;
  logger?: Logger;
}

/** Handles a guest-initiated connection to a host port; resolve to undefined to refuse it. */
export type VsockAcceptor = (port: number) => Promise<((stream: VsockStream) => void) | undefined>;

export class VsockDevice extends DeviceBase implements VirtioDevice, ConnOwner {
  readonly deviceType = VIRTIO_ID_VSOCK;
  readonly name = "virtio-vsock";
  readonly queueMaxSizes: number[];
  readonly features = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_RING_INDIRECT_DESC) | bit(VIRTIO_F_RING_EVENT_IDX);
  readonly guestCid: bigint;
  readonly metrics = new VsockMetrics();
  /** Fallback for guest-initiated connections to ports nobody listens on in-process. */
  acceptor: VsockAcceptor | undefined;
  private readonly conns = new Map<string, Connection>();
  private readonly listeners = new Map<number, (s: VsockStream) => void>();
  /** RSTs to send, by "hostPort:guestPort" (one per pair: a second would say nothing new). */
  private readonly rsts = new Map<string, { hostPort: number; guestPort: number }>();
  /** Connections with something to send, in round-robin order. */
  private readonly ready = new Set<Connection>();
  private pumpScheduled = false;
  private txScheduled = false;
  private nextPort = 49152;
  private readonly log: Logger;
  /** Warnings the guest provokes at will (wrong CIDs, credit violations): rate-limited. */
  private readonly guestWarn: RateLimitedLog;

  constructor(opts: VsockOptions) {
    super();
    if (!Number.isInteger(opts.guestCid) || opts.guestCid < 3 || opts.guestCid >= 0xffffffff) {
      throw new Error(`invalid guest CID ${opts.guestCid} (3 … 2^32-2)`);
    }
    this.guestCid = BigInt(opts.guestCid);
    this.queueMaxSizes = [opts.queueSize ?? 1024, opts.queueSize ?? 1024, opts.queueSize ?? 1024];
    this.log = (opts.logger ?? defaultLogger).child({ device: this.name, cid: opts.guestCid });
    this.guestWarn = new RateLimitedLog(this.log, "warn");
  }

  readConfig(offset: number, length: number): Buffer {
    const c = Buffer.alloc(8);
    c.writeBigUInt64LE(this.guestCid, 0);
    return readConfigWindow(c, offset, length);
  }

  writeConfig(): void {
    // guest_cid is read-only for the driver.
  }

  /** Packets the driver queued before DRIVER_OK are taken at once; then whatever waits to be sent. */
  protected override activated(): void {
    this.notify(TX_QUEUE);
    this.schedulePump();
  }

  /** Device reset: every connection is gone (the guest forgot them too). Harmless on a device
   * never activated (QEMU died at startup) and when repeated. Only streams already handed to a
   * consumer get an error; a destroy(err) on any other would be an 'error' nobody listens to. */
  protected override resetDevice(): void {
    this.rsts.clear();
    this.ready.clear();
    const conns = [...this.conns.values()];
    this.conns.clear();
    for (const c of conns) {
      if (c.state === "connecting") {
        // The pending connect() rejects; its stream was never handed out.
        c.onEstablished?.(
          connReset(`vsock connect to guest port ${c.guestPort}: device reset before the guest answered`),
        );
        c.close();
        c.stream.destroy();
      } else if (c.state === "accepting") {
        // Waiting for the acceptor: go() sees the state and hands nothing out.
        c.state = "closed";
        c.stream.destroy();
      } else c.close(connReset("vsock device reset"));
    }
  }

  protected failed(reason: string): void {
    this.log.error({ reason }, "guest broke the virtio-vsock contract; device needs reset");
  }

  notify(index: number): void {
    if (index === TX_QUEUE) this.processTx();
    else if (index === RX_QUEUE) this.schedulePump();
    // The event queue only carries TRANSPORT_RESET (migration), which we never send.
  }

  // ---- host API ------------------------------------------------------------------------------

  /** Opens a stream to a port the guest listens on (ECONNREFUSED if it does not, ETIMEDOUT). */
  connect(port: number, timeoutMs = 10_000): Promise<VsockStream> {
    if (this.conns.size >= MAX_CONNECTIONS) {
      return Promise.reject(
        Object.assign(new Error(`vsock connect to guest port ${port}: ${MAX_CONNECTIONS} connections open`), {
          code: "EAGAIN",
        }),
      );
    }
    const hostPort = this.allocPort(port >>> 0);
    const c = new Connection(this, hostPort, port >>> 0, "connecting");
    this.conns.set(c.key, c);
    this.metrics.connectionsCreated++;
    return new Promise<VsockStream>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (c.state !== "connecting") return;
        this.abort(c);
        reject(Object.assign(new Error(`vsock connect to guest port ${port}: timed out`), { code: "ETIMEDOUT" }));
      }, timeoutMs);
      c.onEstablished = (err) => {
        c.onEstablished = undefined;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve(c.stream);
      };
      c.controlToSend = OP_REQUEST;
      this.wake(c);
    });
  }

  /** Accepts guest connections to host port `port` in-process. Returns a function that stops listening. */
  listen(port: number, onStream: (s: VsockStream) => void): () => void {
    if (this.listeners.has(port)) throw new Error(`vsock host port ${port} already has a listener`);
    this.listeners.set(port, onStream);
    return () => this.listeners.delete(port);
  }

  get connectionCount(): number {
    return this.conns.size;
  }

  /** RSTs waiting for rx buffers (≤ MAX_PENDING_RST + MAX_CONNECTIONS). */
  get pendingResets(): number {
    return this.rsts.size;
  }

  private allocPort(guestPort: number): number {
    for (let i = 0; i < 1 << 20; i++) {
      const p = this.nextPort;
      this.nextPort = this.nextPort >= 0x7fffffff ? 49152 : this.nextPort + 1;
      // An RST still queued for this pair would reset the new connection.
      if (this.listeners.has(p) || this.rsts.has(`${p}:${guestPort}`)) continue;
      let used = false;
      for (const c of this.conns.values()) if (c.hostPort === p) used = true;
      if (!used) return p;
    }
    throw new Error("no free vsock host port");
  }

  // ---- ConnOwner ----------------------------------------------------------------------------

  wake(c: Connection): void {
    if (c.state === "closed") return;
    this.ready.add(c);
    this.schedulePump();
  }

  abort(c: Connection): void {
    if (c.state === "closed") return;
    const wasConnecting = c.state === "connecting";
    this.forget(c);
    c.close();
    if (!wasConnecting || c.requestSent) this.rst(c.hostPort, c.guestPort, true);
  }

  private forget(c: Connection): void {
    this.conns.delete(c.key);
    this.ready.delete(c);
  }

  // ---- guest → host (tx queue) ----------------------------------------------------------------

  /** At most VSOCK_BATCH packets per call; a fuller ring continues on the next turn (setImmediate),
   * so a guest that keeps the ring full cannot starve the event loop. */
  private processTx(): void {
    this.txScheduled = false;
    const ctx = this.ctx;
    const q = ctx?.queues[TX_QUEUE];
    if (!ctx || !q || q.broken) return;
    let used = false;
    let budget = VSOCK_BATCH;
    outer: for (;;) {
      q.disableNotification();
      for (;;) {
        if (budget === 0) {
          this.scheduleTx();
          break outer;
        }
        const chain = q.pop();
        if (!chain) break;
        budget--;
        used = true;
        if (chain.readableLen < HDR_SIZE) {
          q.markBroken(`vsock tx packet of ${chain.readableLen} bytes, shorter than the header`);
          return;
        }
        const hb = Buffer.alloc(HDR_SIZE);
        gather(chain.readable, hb);
        const h = decodeHeader(hb);
        if (h.len > MAX_PAYLOAD || h.len > chain.readableLen - HDR_SIZE) {
          q.markBroken(`vsock tx packet claims ${h.len} payload bytes, has ${chain.readableLen - HDR_SIZE}`);
          return;
        }
        // Copy the payload out: the descriptor goes back to the guest right away.
        const payload = Buffer.allocUnsafe(h.op === OP_RW ? h.len : 0);
        if (payload.length) gather(chain.readable, payload, HDR_SIZE);
        q.addUsed(chain.head, 0);
        this.metrics.rxPackets++;
        this.handle(h, payload);
        if (this.ctx !== ctx) return; // a handler reset the device
      }
      if (q.broken || !q.enableNotification()) break;
    }
    if (used && q.needsNotification()) ctx.interrupt.queue(TX_QUEUE);
  }

  private scheduleTx(): void {
    if (this.txScheduled) return;
    this.txScheduled = true;
    setImmediate(() => this.processTx());
  }

  private handle(h: VsockHeader, payload: Buffer): void {
    if (h.srcCid !== this.guestCid || h.dstCid !== BigInt(HOST_CID)) {
      this.metrics.invalid++;
      this.guestWarn.log({ src: String(h.srcCid), dst: String(h.dstCid) }, "vsock packet with wrong CIDs dropped");
      return;
    }
    const key = `${h.dstPort}:${h.srcPort}`;
    const c = this.conns.get(key);
    if (h.type !== TYPE_STREAM) {
      if (h.op !== OP_RST) this.rst(h.dstPort, h.srcPort);
      return;
    }
    if (c) {
      c.peerBufAlloc = h.bufAlloc;
      c.peerFwdCnt = h.fwdCnt;
    }
    switch (h.op) {
      case OP_REQUEST:
        if (c) {
          this.rst(h.dstPort, h.srcPort);
          this.abort(c);
          return;
        }
        this.accept(h);
        return;
      case OP_RST:
        this.metrics.resetsReceived++;
        if (!c) return;
        this.forget(c);
        if (c.state === "connecting") {
          this.metrics.connectionsRefused++;
          c.onEstablished?.(
            Object.assign(new Error(`vsock connect to guest port ${c.guestPort}: connection refused`), {
              code: "ECONNREFUSED",
            }),
          );
          c.close();
        } else c.close(c.peerShutdown === 3 ? undefined : connReset("vsock connection reset by the guest"));
        return;
    }
    if (!c) {
      this.rst(h.dstPort, h.srcPort);
      return;
    }
    switch (h.op) {
      case OP_RESPONSE:
        if (c.state !== "connecting") {
          this.rst(h.dstPort, h.srcPort);
          this.abort(c);
          return;
        }
        c.state = "established";
        this.metrics.connectionsOpened++;
        c.onEstablished?.();
        this.wake(c);
        return;
      case OP_RW:
        if (c.state !== "established" || c.peerShutdown & SHUTDOWN_SEND) {
          this.abort(c);
          return;
        }
        // The guest may not send more than we advertised: buffered + new ≤ buf_alloc.
        if (c.buffered() + payload.length > CONN_BUF_ALLOC) {
          this.metrics.invalid++;
          this.guestWarn.log({ port: h.srcPort }, "guest exceeded its vsock credit; resetting the connection");
          this.abort(c);
          return;
        }
        this.metrics.rxBytes += payload.length;
        c.receive(payload);
        this.wake(c);
        return;
      case OP_CREDIT_UPDATE:
        // The new window (if any) came with the header above; creditRequestSent stays as it is.
        this.wake(c);
        return;
      case OP_CREDIT_REQUEST:
        c.creditUpdateWanted = true;
        this.wake(c);
        return;
      case OP_SHUTDOWN:
        c.peerShutdown |= h.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
        if (c.peerShutdown & SHUTDOWN_SEND) c.deliver();
        if (c.peerShutdown & SHUTDOWN_RCV) {
          // The guest will not read any more: what we still hold for it can never be delivered.
          for (const w of c.txQueue.splice(0)) w.done();
          c.txQueued = 0;
        }
        if (c.peerShutdown === (SHUTDOWN_RCV | SHUTDOWN_SEND)) {
          // Full shutdown: the receiver answers with RST (as Linux does) and the connection is over.
          this.forget(c);
          this.rst(c.hostPort, c.guestPort, true);
          c.close();
        }
        return;
      default:
        this.metrics.invalid++;
        this.guestWarn.log({ op: h.op }, "unknown vsock op; resetting the connection");
        this.abort(c);
    }
  }

  /** A guest REQUEST: an in-process listener, else the acceptor (hybrid socket), else RST. */
  private accept(h: VsockHeader): void {
    const port = h.dstPort;
    // The guest starts over on this pair: an RST still queued for an older connection would reset it.
    this.rsts.delete(`${port}:${h.srcPort}`);
    if (this.conns.size >= MAX_CONNECTIONS) {
      this.metrics.connectionsRefused++;
      this.guestWarn.log({ port, limit: MAX_CONNECTIONS }, "vsock connection limit reached; guest REQUEST refused");
      this.rst(port, h.srcPort);
      return;
    }
    const c = new Connection(this, port, h.srcPort, "accepting");
    c.peerBufAlloc = h.bufAlloc;
    c.peerFwdCnt = h.fwdCnt;
    this.conns.set(c.key, c);
    this.metrics.connectionsCreated++;
    const local = this.listeners.get(port);
    const go = (handler: ((s: VsockStream) => void) | undefined) => {
      if (c.state !== "accepting") return;
      if (!handler) {
        this.forget(c);
        c.close();
        this.metrics.connectionsRefused++;
        // A refusal answers the guest's REQUEST like any stray packet: a guest that floods
        // refused ports without rx buffers gets the stray limit, not the one for connections.
        this.rst(port, h.srcPort);
        return;
      }
      c.state = "established";
      this.metrics.connectionsOpened++;
      c.controlToSend = OP_RESPONSE;
      this.wake(c);
      handler(c.stream);
    };
    if (local) go(local);
    else if (this.acceptor) {
      this.acceptor(port).then(go, (e: unknown) => {
        this.log.debug({ port, err: errorMessage(e) }, "vsock acceptor refused");
        go(undefined);
      });
    } else go(undefined);
  }

  /**
   * Queues an RST for the pair. `owed` RSTs end a connection we knew; the others answer a guest's
   * stray packets, which it may send without end while posting no rx buffers. Past their limits
   * (MAX_PENDING_RST, and MAX_PENDING_RST + MAX_CONNECTIONS for owed ones) they are dropped and counted.
   */
  private rst(hostPort: number, guestPort: number, owed = false): void {
    const key = `${hostPort}:${guestPort}`;
    if (this.rsts.has(key)) return;
    if (this.rsts.size >= MAX_PENDING_RST + (owed ? MAX_CONNECTIONS : 0)) {
      this.metrics.resetsDropped++;
      return;
    }
    this.rsts.set(key, { hostPort, guestPort });
    this.schedulePump();
  }

  // ---- host → guest (rx queue) --------------------------------------------------------------

  /** The pump runs on its own turn (setImmediate): many wakes in one turn make one pump. */
  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  private hasWork(): boolean {
    if (this.rsts.size > 0) return true;
    for (const c of this.ready) {
      if (c.wantsToSend()) return true;
      this.ready.delete(c);
    }
    return false;
  }

  /**
   * Fills guest rx buffers with RSTs first, then each connection's next packet round-robin; at
   * most VSOCK_BATCH buffers per turn.
   */
  private pump(): void {
    const ctx = this.ctx;
    const q = ctx?.queues[RX_QUEUE];
    if (!ctx || !q || q.broken) return;
    let used = false;
    let budget = VSOCK_BATCH;
    const hdr = Buffer.alloc(HDR_SIZE);
    while (this.hasWork()) {
      if (budget === 0) {
        this.schedulePump();
        break;
      }
      const chain = q.pop();
      if (!chain) {
        // Out of rx buffers: ask for a kick, unless buffers arrived meanwhile.
        if (q.broken || !q.enableNotification()) break;
        continue;
      }
      budget--;
      if (chain.writableLen < HDR_SIZE || chain.readableLen > 0) {
        q.markBroken(`vsock rx buffer of ${chain.writableLen} writable/${chain.readableLen} readable bytes`);
        return;
      }
      const room = chain.writableLen - HDR_SIZE;
      let h: VsockHeader;
      let payload: Buffer | undefined;
      const rst = this.rsts.values().next().value;
      if (rst) {
        this.rsts.delete(`${rst.hostPort}:${rst.guestPort}`);
        this.metrics.resetsSent++;
        h = this.header(rst.hostPort, rst.guestPort, OP_RST, 0, 0, undefined);
      } else {
        const c = this.ready.values().next().value as Connection;
        const next = this.nextPacket(c, room);
        if (!next) {
          // Data waits for a buffer with room for it: a header-only buffer would carry an empty
          // RW, and a guest posting only those would get empty RWs at full speed. Give it back.
          q.nextAvail = (q.nextAvail - 1) & 0xffff;
          this.metrics.rxBuffersTooSmall++;
          break;
        }
        this.ready.delete(c);
        h = next.h;
        payload = next.payload;
        if (c.wantsToSend()) this.ready.add(c);
      }
      encodeHeader(h, hdr);
      scatter(chain.writable, hdr);
      if (payload) scatter(chain.writable, payload, HDR_SIZE);
      q.addUsed(chain.head, HDR_SIZE + (payload?.length ?? 0));
      this.metrics.txPackets++;
      used = true;
    }
    if (used && q.needsNotification()) ctx.interrupt.queue(RX_QUEUE);
  }

  /** The packet `c` sends next into a buffer with `room` payload bytes (undefined: data needs room). */
  private nextPacket(c: Connection, room: number): { h: VsockHeader; payload?: Buffer } | undefined {
    const send = (op: number, flags = 0, payload?: Buffer) => ({
      h: this.header(c.hostPort, c.guestPort, op, flags, payload?.length ?? 0, c),
      payload,
    });
    if (c.controlToSend !== 0) {
      const op = c.controlToSend;
      c.controlToSend = 0;
      if (op === OP_REQUEST) c.requestSent = true;
      return send(op);
    }
    if (c.txQueued > 0 && c.peerCredit() > 0) {
      if (room === 0) return undefined;
      const payload = c.takeTx(Math.min(room, c.peerCredit(), MAX_PAYLOAD));
      this.metrics.txBytes += payload.length;
      return send(OP_RW, 0, payload);
    }
    if (c.txQueued > 0 && !c.creditRequestSent) {
      c.creditRequestSent = true;
      return send(OP_CREDIT_REQUEST);
    }
    if (c.creditUpdateWanted) {
      this.metrics.creditUpdatesSent++;
      return send(OP_CREDIT_UPDATE);
    }
    const flags = c.shutdownToSend;
    c.shutdownToSend = 0;
    return send(OP_SHUTDOWN, flags);
  }

  private header(
    hostPort: number,
    guestPort: number,
    op: number,
    flags: number,
    len: number,
    c: Connection | undefined,
  ): VsockHeader {
    if (c) {
      // fwd_cnt rides along in every header: any packet is a credit update.
      c.lastFwdCntSent = c.fwdCnt;
      c.creditUpdateWanted = false;
    }
    if (this.log.isLevelEnabled("trace")) this.log.trace({ op: OP_NAMES[op], hostPort, guestPort, len }, "vsock tx");
    return {
      srcCid: BigInt(HOST_CID),
      dstCid: this.guestCid,
      srcPort: hostPort,
      dstPort: guestPort,
      len,
      type: TYPE_STREAM,
      op,
      flags,
      bufAlloc: CONN_BUF_ALLOC,
      fwdCnt: c?.fwdCnt ?? 0,
    };
  }
}

function connReset(msg: string): Error {
  return Object.assign(new Error(msg), { code: "ECONNRESET" });
}
