// A vhost-user back-end (QEMU is the front-end, in the spec's words): serves one VirtioDevice over a
// Unix socket. QEMU shares guest RAM as memfds (SET_MEM_TABLE, memory-table.ts), tells us where the
// rings are in its own address space (SET_VRING_ADDR, translated to guest physical through the
// memory table), and passes eventfds: kick (guest → us, watched on the event loop) and call (us →
// guest interrupt). Config space goes through GET_CONFIG/SET_CONFIG; a config change (blk
// capacity) is announced on the back-end channel. Framing is in reader.ts and writer.ts, the
// socket in connection.ts; here is the device state and one handler per request.
import { existsSync, unlinkSync } from "node:fs";
import { errorMessage } from "../../common/errors.ts";
import { bindPrivate } from "../../common/private-socket.ts";
import { RateLimitedLog } from "../../common/rate-limited-log.ts";
import { eventfdRead, eventfdWrite } from "../../native/eventfd.ts";
import { unixAccept, unixListen } from "../../native/fdpass.ts";
import { type FdPoll, POLL_READABLE, pollFd } from "../../native/poll.ts";
import { type ActivateContext, bit, type InterruptSink, type VirtioDevice } from "../device.ts";
import { defaultLogger, type Logger } from "../log.ts";
import type { GuestMemory } from "../memory.ts";
import { Queue } from "../queue/queue.ts";
import { FrontEndConnection } from "./connection.ts";
import { safeClose } from "./fds.ts";
import { mapMemoryTable, releaseTable } from "./memory-table.ts";
import {
  encodeMessage,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  MAX_PAYLOAD,
  type Message,
  ProtocolFeature,
  REQ_NAMES,
  Req,
  u64Payload,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VRING_IDX_MASK,
  VRING_NOFD_MASK,
} from "./messages.ts";

export interface VhostUserOptions {
  /** Number of rings the front-end drives (vsock: 2 — QEMU keeps the event queue itself). */
  queues?: number;
  logger?: Logger;
}

interface Vring {
  num: number;
  base: number;
  desc?: bigint;
  avail?: bigint;
  used?: bigint;
  kickFd?: number;
  kickPoll?: FdPoll;
  callFd?: number;
  errFd?: number;
  enabled: boolean;
  started: boolean;
  queue?: Queue;
}

/** What a request handler gets: the message's payload and its fds (a handler that keeps one takes it out). */
interface Request {
  name: string;
  p: Buffer;
  fds: number[];
}

/** A request's handler: the reply payload, or undefined when the request has none. */
type Handler = (r: Request) => Buffer | undefined;

const OFFERED_PROTOCOL =
  bit(ProtocolFeature.MQ) |
  bit(ProtocolFeature.REPLY_ACK) |
  bit(ProtocolFeature.BACKEND_REQ) |
  bit(ProtocolFeature.CONFIG);

function need(r: Request, n: number): void {
  if (r.p.length < n) throw new Error(`${r.name}: payload of ${r.p.length} bytes, need ${n}`);
}

export class VhostUserBackend {
  private listenFd = -1;
  private listenPoll: FdPoll | undefined;
  private conn: FrontEndConnection | undefined;
  private readonly rings: Vring[];
  private mem: GuestMemory | undefined;
  /** The current table's mmaps (memory-table.ts releases them). */
  private mappings: ArrayBuffer[] = [];
  /** Errors a front-end can provoke per message or per kick (bad fds): rate-limited. */
  private readonly peerError: RateLimitedLog;
  private features = 0n;
  private protocolFeatures = 0n;
  private protocolNegotiated = false;
  private active = false;
  private readonly log: Logger;
  private readonly handlers: Readonly<Record<number, Handler>>;
  /** Called when the front-end disconnects (QEMU exited or closed the device). */
  onDisconnect?: () => void;
  /** Counts of requests handled, by name (tests, debugging). */
  readonly requests = new Map<string, number>();
  /** Kicks taken, interrupts sent, and the time spent sending them (an eventfd write that wakes QEMU). */
  readonly metrics = { kicks: 0, calls: 0, callNs: 0 };

  constructor(
    readonly device: VirtioDevice,
    readonly socketPath: string,
    opts: VhostUserOptions = {},
  ) {
    const n = opts.queues ?? device.queueMaxSizes.length;
    this.rings = Array.from({ length: n }, () => ({ num: 0, base: 0, enabled: false, started: false }));
    this.log = (opts.logger ?? defaultLogger).child({ vhostUser: device.name });
    this.peerError = new RateLimitedLog(this.log, "error");
    device.onNeedsReset = (reason) =>
      this.log.error({ reason }, "device needs reset; its queues stop until the guest resets it");
    this.handlers = this.requestHandlers();
  }

  listen(): void {
    if (existsSync(this.socketPath)) unlinkSync(this.socketPath);
    // QEMU runs as root: nobody else may connect and pose as the front-end.
    this.listenFd = bindPrivate(this.socketPath, () => unixListen(this.socketPath, 1));
    this.listenPoll = pollFd(this.listenFd, POLL_READABLE, () => this.onAccept());
  }

  private onAccept(): void {
    for (;;) {
      const fd = unixAccept(this.listenFd);
      if (fd < 0) return;
      if (this.conn) {
        this.log.warn("a second vhost-user front-end connected; dropping the first");
        this.disconnect();
      }
      const conn: FrontEndConnection = new FrontEndConnection(fd, this.log, {
        onMessage: (m) => this.onMessage(m),
        onEnd: () => {
          if (this.conn === conn) this.disconnect();
        },
      });
      this.conn = conn;
      this.log.debug("front-end connected");
    }
  }

  /** One request: its handler, then REPLY_ACK if asked for; a malformed one is logged and failed, never a crash. */
  private onMessage({ req, flags, payload, fds }: Message): void {
    const name = REQ_NAMES[req] ?? `#${req}`;
    this.requests.set(name, (this.requests.get(name) ?? 0) + 1);
    this.log.debug({ req: name, size: payload.length, fds: fds.length }, "vhost-user request");
    try {
      const handler = this.handlers[req];
      let reply: Buffer | undefined;
      if (handler) reply = handler({ name, p: payload, fds });
      else {
        this.log.warn({ req: name, size: payload.length }, "unhandled vhost-user request");
        if (flags & FLAG_NEED_REPLY) reply = u64Payload(1n);
      }
      for (const fd of fds.splice(0)) safeClose(fd);
      if (reply) this.reply(req, reply);
      else if (flags & FLAG_NEED_REPLY && this.protocolFeatures & bit(ProtocolFeature.REPLY_ACK)) {
        this.reply(req, u64Payload(0n));
      }
    } catch (e) {
      this.log.error({ req: REQ_NAMES[req] ?? req, err: errorMessage(e) }, "vhost-user request failed");
      for (const fd of fds) safeClose(fd);
      if (flags & FLAG_NEED_REPLY) this.reply(req, u64Payload(1n));
    }
  }

  private reply(req: number, payload: Buffer): void {
    this.conn?.send(encodeMessage(req, FLAG_REPLY, payload));
  }

  private ring(r: Request, i: number): Vring {
    const ring = this.rings[i];
    if (!ring) throw new Error(`${r.name}: no ring ${i}`);
    return ring;
  }

  private requestHandlers(): Record<number, Handler> {
    const accept: Handler = () => undefined;
    return {
      [Req.GET_FEATURES]: () => u64Payload(this.device.features | bit(VHOST_USER_F_PROTOCOL_FEATURES)),
      [Req.SET_FEATURES]: (r) => {
        need(r, 8);
        const v = r.p.readBigUInt64LE(0);
        this.features = v & ~bit(VHOST_USER_F_PROTOCOL_FEATURES);
        this.protocolNegotiated = (v & bit(VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n;
        return undefined;
      },
      [Req.GET_PROTOCOL_FEATURES]: () => u64Payload(OFFERED_PROTOCOL),
      [Req.SET_PROTOCOL_FEATURES]: (r) => {
        need(r, 8);
        this.protocolFeatures = r.p.readBigUInt64LE(0) & OFFERED_PROTOCOL;
        return undefined;
      },
      [Req.SET_OWNER]: accept,
      [Req.RESET_OWNER]: accept,
      [Req.GET_QUEUE_NUM]: () => u64Payload(BigInt(this.rings.length)),
      // It owns the fds from here (it closes them, also when it fails).
      [Req.SET_MEM_TABLE]: (r) => this.setMemTable(r.p, r.fds.splice(0)),
      [Req.SET_VRING_NUM]: (r) => {
        need(r, 8);
        this.ring(r, r.p.readUInt32LE(0)).num = r.p.readUInt32LE(4);
        return undefined;
      },
      [Req.SET_VRING_ADDR]: (r) => {
        need(r, 40);
        const ring = this.ring(r, r.p.readUInt32LE(0));
        ring.desc = r.p.readBigUInt64LE(8);
        ring.used = r.p.readBigUInt64LE(16);
        ring.avail = r.p.readBigUInt64LE(24);
        return undefined;
      },
      [Req.SET_VRING_BASE]: (r) => {
        need(r, 8);
        this.ring(r, r.p.readUInt32LE(0)).base = r.p.readUInt32LE(4) & 0xffff;
        return undefined;
      },
      [Req.GET_VRING_BASE]: (r) => {
        need(r, 8);
        const i = r.p.readUInt32LE(0);
        const out = Buffer.alloc(8);
        out.writeUInt32LE(i, 0);
        out.writeUInt32LE(this.stopRing(i), 4);
        return out;
      },
      [Req.SET_VRING_KICK]: (r) => this.setVringFd(r, (i, ring, fd) => this.setKick(i, ring, fd)),
      [Req.SET_VRING_CALL]: (r) =>
        this.setVringFd(r, (_i, ring, fd) => {
          if (ring.callFd !== undefined) safeClose(ring.callFd);
          ring.callFd = fd;
        }),
      [Req.SET_VRING_ERR]: (r) =>
        this.setVringFd(r, (_i, ring, fd) => {
          if (ring.errFd !== undefined) safeClose(ring.errFd);
          ring.errFd = fd;
        }),
      [Req.SET_VRING_ENABLE]: (r) => {
        need(r, 8);
        this.ring(r, r.p.readUInt32LE(0)).enabled = r.p.readUInt32LE(4) !== 0;
        this.maybeActivate();
        return undefined;
      },
      [Req.GET_CONFIG]: (r) => {
        need(r, 12);
        const offset = r.p.readUInt32LE(0);
        const size = Math.min(r.p.readUInt32LE(4), MAX_PAYLOAD - 12);
        const out = Buffer.alloc(12 + size);
        r.p.copy(out, 0, 0, 12);
        this.device.readConfig(offset, size).copy(out, 12);
        return out;
      },
      [Req.SET_CONFIG]: (r) => {
        need(r, 12);
        const offset = r.p.readUInt32LE(0);
        const size = r.p.readUInt32LE(4);
        need(r, 12 + size);
        this.device.writeConfig(offset, Buffer.from(r.p.subarray(12, 12 + size)));
        return undefined;
      },
      [Req.SET_BACKEND_REQ_FD]: (r) => {
        const fd = r.fds.shift();
        if (fd === undefined) throw new Error("SET_BACKEND_REQ_FD without an fd");
        if (this.conn) this.conn.setChannel(fd);
        else safeClose(fd);
        return undefined;
      },
      [Req.RESET_DEVICE]: () => {
        this.resetRings();
        return undefined;
      },
      // Little-endian only (VERSION_1); no dirty logging (no live migration): accept and ignore.
      [Req.SET_VRING_ENDIAN]: accept,
      [Req.SET_LOG_BASE]: accept,
      [Req.SET_LOG_FD]: accept,
    };
  }

  /** SET_VRING_KICK/CALL/ERR: ring index in the low bits, and an fd unless the no-fd bit says polling. */
  private setVringFd(r: Request, set: (i: number, ring: Vring, fd: number | undefined) => void): undefined {
    need(r, 8);
    const v = r.p.readBigUInt64LE(0);
    const i = Number(v & VRING_IDX_MASK);
    const ring = this.ring(r, i);
    set(i, ring, v & VRING_NOFD_MASK ? undefined : r.fds.shift());
    return undefined;
  }

  private setMemTable(p: Buffer, fds: number[]): undefined {
    try {
      const { mem, maps } = mapMemoryTable(p, fds, this.log);
      const old = { mem: this.mem, maps: this.mappings };
      this.mem = mem;
      this.mappings = maps;
      // Rings keep their indexes but must use the new mappings; the device lets go of the old
      // ones first, then they are released (before anything below can throw and skip it).
      const wasActive = this.active;
      if (wasActive) {
        this.resetDevice();
        this.active = false;
      }
      for (const r of this.rings) {
        if (r.queue) r.base = r.queue.nextAvail;
        r.queue = undefined;
      }
      releaseTable(old.mem, old.maps);
      for (const [i, r] of this.rings.entries()) if (r.started) this.buildQueue(i, r);
      if (wasActive) this.maybeActivate();
    } finally {
      for (const fd of fds) safeClose(fd); // the mappings stay valid without the fds
    }
    return undefined;
  }

  private setKick(i: number, r: Vring, fd: number | undefined): void {
    r.kickPoll?.stop();
    if (r.kickFd !== undefined) safeClose(r.kickFd);
    r.kickPoll = undefined;
    r.kickFd = fd;
    if (fd !== undefined) r.kickPoll = pollFd(fd, POLL_READABLE, (status) => this.onKick(i, r, fd, status));
    // "If VHOST_USER_F_PROTOCOL_FEATURES has not been negotiated, the ring starts enabled."
    if (!this.protocolNegotiated) r.enabled = true;
    r.started = true;
    this.buildQueue(i, r);
    this.maybeActivate();
  }

  private onKick(i: number, r: Vring, fd: number, status: number): void {
    let n: number;
    try {
      if (status < 0) throw new Error(`poll error ${status}`);
      n = eventfdRead(fd);
    } catch (e) {
      // Not an eventfd we can read (the front-end passed something else): stop watching it.
      this.peerError.log({ ring: i, err: errorMessage(e) }, "vhost-user kick fd unusable; ring stops");
      r.kickPoll?.stop();
      r.kickPoll = undefined;
      return;
    }
    this.metrics.kicks++;
    if (this.log.isLevelEnabled("trace")) {
      const q = r.queue;
      this.log.trace(
        {
          ring: i,
          n,
          active: this.active,
          q: q && {
            size: q.size,
            d: q.descTable,
            a: q.availRing,
            u: q.usedRing,
            na: q.nextAvail,
            p: q.pending(),
            b: q.broken,
          },
        },
        "kick",
      );
    }
    // Each device bounds its own work per call (a batch, then setImmediate).
    if (n > 0 && this.active) this.device.notify(i);
  }

  private buildQueue(i: number, r: Vring): void {
    if (!this.mem || r.desc === undefined || r.avail === undefined || r.used === undefined) return;
    const tr = (uva: bigint, what: string): number => {
      const g = this.mem!.userToGuest(uva);
      if (g === undefined)
        throw new Error(`ring ${i} ${what} address 0x${uva.toString(16)} is not in the memory table`);
      return g;
    };
    r.queue = new Queue(
      this.mem,
      {
        size: r.num,
        descTable: tr(r.desc, "descriptor"),
        availRing: tr(r.avail, "avail"),
        usedRing: tr(r.used, "used"),
        nextAvail: r.base,
        nextUsed: r.base,
      },
      this.device.queueMaxSizes[i] ?? 256,
    );
  }

  private maybeActivate(): void {
    if (this.active || !this.mem) return;
    if (!this.rings.every((r) => r.started && r.enabled && r.queue)) return;
    const ctx: ActivateContext = {
      mem: this.mem,
      queues: this.rings.map((r) => r.queue),
      interrupt: this.interruptSink(),
      features: this.features,
    };
    this.active = true;
    this.log.debug({ features: this.features.toString(16) }, "device activated");
    this.device.activate(ctx);
  }

  private interruptSink(): InterruptSink {
    return {
      queue: (i) => {
        const r = this.rings[i];
        const fd = r?.callFd;
        if (fd === undefined) return;
        const t0 = process.hrtime.bigint();
        try {
          eventfdWrite(fd);
        } catch (e) {
          // A call fd we cannot write (not an eventfd): the device must not see a throw mid-ring.
          this.peerError.log({ ring: i, err: errorMessage(e) }, "vhost-user call fd unusable; dropped");
          safeClose(fd);
          r!.callFd = undefined;
          return;
        }
        this.metrics.calls++;
        this.metrics.callNs += Number(process.hrtime.bigint() - t0);
      },
      config: () => this.configChanged(),
    };
  }

  /** Announces a config-space change to the front-end (it re-reads config and interrupts the guest). */
  configChanged(): void {
    if (this.conn) this.conn.configChanged();
    else this.log.warn("config changed but the front-end gave no back-end channel");
  }

  /** GET_VRING_BASE: the ring stops; returns where the front-end should resume. */
  private stopRing(i: number): number {
    const r = this.rings[i];
    if (!r) return 0;
    const base = r.queue ? r.queue.nextAvail : r.base;
    if (this.active) {
      this.resetDevice();
      this.active = false;
    }
    r.kickPoll?.stop();
    r.kickPoll = undefined;
    if (r.kickFd !== undefined) safeClose(r.kickFd);
    r.kickFd = undefined;
    r.started = false;
    r.queue = undefined;
    r.base = base;
    return base;
  }

  /** A device reset runs from poll callbacks and the disconnect path: a throw there would leave
   * the event loop and crash the shim, so it is logged instead (the rings stop either way). */
  private resetDevice(): void {
    try {
      this.device.reset();
    } catch (e) {
      this.log.error({ err: errorMessage(e) }, "device reset failed");
    }
  }

  private resetRings(): void {
    for (let i = 0; i < this.rings.length; i++) this.stopRing(i);
    for (const r of this.rings) {
      if (r.callFd !== undefined) safeClose(r.callFd);
      if (r.errFd !== undefined) safeClose(r.errFd);
      Object.assign(r, { num: 0, base: 0, enabled: false, callFd: undefined, errFd: undefined });
    }
  }

  private disconnect(): void {
    const conn = this.conn;
    if (!conn) return;
    this.log.debug("front-end disconnected");
    this.resetRings();
    conn.close();
    this.conn = undefined;
    releaseTable(this.mem, this.mappings);
    this.mem = undefined;
    this.mappings = [];
    this.features = 0n;
    this.protocolFeatures = 0n;
    this.protocolNegotiated = false;
    try {
      this.onDisconnect?.();
    } catch (e) {
      this.log.error({ err: errorMessage(e) }, "onDisconnect handler failed");
    }
  }

  /** Stops listening, drops the front-end and removes the socket file. */
  close(): void {
    this.disconnect();
    this.listenPoll?.stop();
    this.listenPoll = undefined;
    if (this.listenFd >= 0) safeClose(this.listenFd);
    this.listenFd = -1;
    if (existsSync(this.socketPath)) unlinkSync(this.socketPath);
  }

  /** Whether the device is currently running (all rings started and enabled). */
  get running(): boolean {
    return this.active;
  }
  get guestMemory(): GuestMemory | undefined {
    return this.mem;
  }
}
