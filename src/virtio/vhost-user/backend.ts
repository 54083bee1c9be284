// A vhost-user backend ("slave", QEMU is the frontend): serves one VirtioDevice over a Unix
// socket. QEMU shares guest RAM as memfds (SET_MEM_TABLE, mapped here), tells us where the
// rings are in its own address space (SET_VRING_ADDR, translated to guest physical through the
// memory table), and passes eventfds: kick (guest → us, watched on the event loop) and call
// (us → guest interrupt). Config space goes through GET_CONFIG/SET_CONFIG; a config change
// (blk capacity) is announced on the slave channel.
import { existsSync, fstatSync, unlinkSync } from "node:fs";
import { bindPrivate } from "../../common/private-socket.ts";
import { RateLimitedLog } from "../../common/rate-limited-log.ts";
import { eventfdRead, eventfdWrite } from "../../native/eventfd.ts";
import { closeFd, recvWithFds, sendWithFds, unixAccept, unixListen } from "../../native/fdpass.ts";
import { mapFd, unmap } from "../../native/kvm.ts";
import { type FdPoll, POLL_READABLE, POLL_WRITABLE, pollFd } from "../../native/poll.ts";
import { type ActivateContext, bit, type InterruptSink, type VirtioDevice } from "../device.ts";
import { defaultLogger, type Logger } from "../log.ts";
import { GuestMemory, type MemoryRegion } from "../memory.ts";
import { Queue } from "../queue/queue.ts";
import {
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  HEADER_SIZE,
  MAX_MESSAGE_FDS,
  MAX_PAYLOAD,
  ProtocolFeature,
  REQ_NAMES,
  Req,
  SLAVE_CONFIG_CHANGE_MSG,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_VERSION,
  VRING_IDX_MASK,
  VRING_NOFD_MASK,
} from "./messages.ts";

export interface VhostUserOptions {
  /** Number of rings the frontend drives (vsock: 2 — QEMU keeps the event queue itself). */
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

const OFFERED_PROTOCOL =
  bit(ProtocolFeature.MQ) |
  bit(ProtocolFeature.REPLY_ACK) |
  bit(ProtocolFeature.SLAVE_REQ) |
  bit(ProtocolFeature.CONFIG);

export class VhostUserBackend {
  private listenFd = -1;
  private listenPoll: FdPoll | undefined;
  private connFd = -1;
  private connPoll: FdPoll | undefined;
  private slaveFd = -1;
  private readonly rings: Vring[];
  private mem: GuestMemory | undefined;
  /** The current table's mmaps: unmapped when the table is replaced or the frontend goes, once no
   * operation holds the memory (never left to the garbage collector, which may keep them for long). */
  private mappings: ArrayBuffer[] = [];
  /** Errors a frontend can provoke per message or per kick (bad fds): rate-limited. */
  private readonly peerError: RateLimitedLog;
  private features = 0n;
  private protocolFeatures = 0n;
  private protocolNegotiated = false;
  private active = false;
  private readonly log: Logger;
  // Message assembly: header first (with any fds), then the payload.
  private hdr = Buffer.alloc(HEADER_SIZE);
  private payload = Buffer.alloc(0);
  private got = 0;
  private inPayload = false;
  private fds: number[] = [];
  private outbox: Buffer[] = [];
  /** Resolves when the frontend disconnects (QEMU exited or closed the device). */
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
  }

  listen(): void {
    if (existsSync(this.socketPath)) unlinkSync(this.socketPath);
    // QEMU runs as root: nobody else may connect and pose as the frontend.
    this.listenFd = bindPrivate(this.socketPath, () => unixListen(this.socketPath, 1));
    this.listenPoll = pollFd(this.listenFd, POLL_READABLE, () => this.onAccept());
  }

  private onAccept(): void {
    for (;;) {
      const fd = unixAccept(this.listenFd);
      if (fd < 0) return;
      if (this.connFd >= 0) {
        this.log.warn("a second vhost-user frontend connected; dropping the first");
        this.disconnect();
      }
      this.connFd = fd;
      this.connPoll = pollFd(fd, POLL_READABLE, (status, events) => this.onConnReady(status, events));
      this.log.debug("frontend connected");
    }
  }

  private onConnReady(status: number, events: number): void {
    if (status < 0) {
      this.disconnect();
      return;
    }
    if (events & POLL_WRITABLE) this.flush();
    if (events & POLL_READABLE) this.readMessages();
  }

  private readMessages(): void {
    while (this.connFd >= 0) {
      const want = this.inPayload ? this.payload : this.hdr;
      let r: { bytes: number; fds: number[] } | null;
      try {
        r = recvWithFds(this.connFd, want.subarray(this.got));
      } catch (e) {
        // EMSGSIZE: more fds than any message carries (the native side closed them); or a socket
        // error. Either way this frontend is done: never an exception out of the poll callback.
        this.log.error({ err: (e as Error).message }, "vhost-user receive failed; closing the connection");
        this.disconnect();
        return;
      }
      if (r === null) return;
      this.fds.push(...r.fds);
      if (r.bytes === 0) {
        this.disconnect();
        return;
      }
      if (this.fds.length > MAX_MESSAGE_FDS) {
        // Fds sent a byte at a time along one message would otherwise pile up without bound.
        this.log.error({ fds: this.fds.length }, "vhost-user message with too many fds; closing the connection");
        this.disconnect();
        return;
      }
      this.got += r.bytes;
      if (this.got < want.length) continue;
      this.got = 0;
      if (!this.inPayload) {
        const size = this.hdr.readUInt32LE(8);
        if (size > MAX_PAYLOAD) {
          this.log.error({ size }, "vhost-user message too large; closing the connection");
          this.disconnect();
          return;
        }
        this.payload = Buffer.alloc(size);
        if (size > 0) {
          this.inPayload = true;
          continue;
        }
      }
      this.inPayload = false;
      const fds = this.fds;
      this.fds = [];
      const req = this.hdr.readUInt32LE(0);
      const flags = this.hdr.readUInt32LE(4);
      try {
        this.dispatch(req, flags, this.payload, fds);
      } catch (e) {
        // A malformed message from the frontend: log and fail it (REPLY_ACK), never crash.
        this.log.error({ req: REQ_NAMES[req] ?? req, err: (e as Error).message }, "vhost-user request failed");
        for (const fd of fds) safeClose(fd);
        if (flags & FLAG_NEED_REPLY) this.replyU64(req, 1n);
      }
    }
  }

  private dispatch(req: number, flags: number, p: Buffer, fds: number[]): void {
    const name = REQ_NAMES[req] ?? `#${req}`;
    this.requests.set(name, (this.requests.get(name) ?? 0) + 1);
    this.log.debug({ req: name, size: p.length, fds: fds.length }, "vhost-user request");
    let replied = false;
    const need = (n: number) => {
      if (p.length < n) throw new Error(`${name}: payload of ${p.length} bytes, need ${n}`);
    };
    const ring = (i: number): Vring => {
      const r = this.rings[i];
      if (!r) throw new Error(`${name}: no ring ${i}`);
      return r;
    };
    switch (req) {
      case Req.GET_FEATURES:
        this.replyU64(req, this.device.features | bit(VHOST_USER_F_PROTOCOL_FEATURES));
        replied = true;
        break;
      case Req.SET_FEATURES:
        need(8);
        this.features = p.readBigUInt64LE(0) & ~bit(VHOST_USER_F_PROTOCOL_FEATURES);
        this.protocolNegotiated = (p.readBigUInt64LE(0) & bit(VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n;
        break;
      case Req.GET_PROTOCOL_FEATURES:
        this.replyU64(req, OFFERED_PROTOCOL);
        replied = true;
        break;
      case Req.SET_PROTOCOL_FEATURES:
        need(8);
        this.protocolFeatures = p.readBigUInt64LE(0) & OFFERED_PROTOCOL;
        break;
      case Req.SET_OWNER:
      case Req.RESET_OWNER:
        break;
      case Req.GET_QUEUE_NUM:
        this.replyU64(req, BigInt(this.rings.length));
        replied = true;
        break;
      case Req.SET_MEM_TABLE:
        // It owns the fds from here (it closes them, also when it fails).
        this.setMemTable(p, fds.splice(0));
        break;
      case Req.SET_VRING_NUM: {
        need(8);
        const r = ring(p.readUInt32LE(0));
        r.num = p.readUInt32LE(4);
        break;
      }
      case Req.SET_VRING_ADDR: {
        need(40);
        const r = ring(p.readUInt32LE(0));
        r.desc = p.readBigUInt64LE(8);
        r.used = p.readBigUInt64LE(16);
        r.avail = p.readBigUInt64LE(24);
        break;
      }
      case Req.SET_VRING_BASE: {
        need(8);
        ring(p.readUInt32LE(0)).base = p.readUInt32LE(4) & 0xffff;
        break;
      }
      case Req.GET_VRING_BASE: {
        need(8);
        const i = p.readUInt32LE(0);
        const base = this.stopRing(i);
        const out = Buffer.alloc(8);
        out.writeUInt32LE(i, 0);
        out.writeUInt32LE(base, 4);
        this.reply(req, out);
        replied = true;
        break;
      }
      case Req.SET_VRING_KICK:
      case Req.SET_VRING_CALL:
      case Req.SET_VRING_ERR: {
        need(8);
        const v = p.readBigUInt64LE(0);
        const r = ring(Number(v & VRING_IDX_MASK));
        const fd = v & VRING_NOFD_MASK ? undefined : fds.shift();
        if (req === Req.SET_VRING_KICK) {
          this.setKick(Number(v & VRING_IDX_MASK), r, fd);
        } else if (req === Req.SET_VRING_CALL) {
          if (r.callFd !== undefined) safeClose(r.callFd);
          r.callFd = fd;
        } else {
          if (r.errFd !== undefined) safeClose(r.errFd);
          r.errFd = fd;
        }
        break;
      }
      case Req.SET_VRING_ENABLE: {
        need(8);
        const i = p.readUInt32LE(0);
        ring(i).enabled = p.readUInt32LE(4) !== 0;
        this.maybeActivate();
        break;
      }
      case Req.GET_CONFIG: {
        need(12);
        const offset = p.readUInt32LE(0);
        const size = Math.min(p.readUInt32LE(4), MAX_PAYLOAD - 12);
        const out = Buffer.alloc(12 + size);
        p.copy(out, 0, 0, 12);
        this.device.readConfig(offset, size).copy(out, 12);
        this.reply(req, out);
        replied = true;
        break;
      }
      case Req.SET_CONFIG: {
        need(12);
        const offset = p.readUInt32LE(0);
        const size = p.readUInt32LE(4);
        need(12 + size);
        this.device.writeConfig(offset, Buffer.from(p.subarray(12, 12 + size)));
        break;
      }
      case Req.SET_SLAVE_REQ_FD: {
        const fd = fds.shift();
        if (fd === undefined) throw new Error("SET_SLAVE_REQ_FD without an fd");
        if (this.slaveFd >= 0) safeClose(this.slaveFd);
        this.slaveFd = fd;
        break;
      }
      case Req.RESET_DEVICE:
        this.resetRings();
        break;
      case Req.SET_VRING_ENDIAN:
      case Req.SET_LOG_BASE:
      case Req.SET_LOG_FD:
        // Little-endian only (VERSION_1); no dirty logging (no live migration): accept and ignore.
        break;
      default:
        this.log.warn({ req: name, size: p.length }, "unhandled vhost-user request");
        for (const fd of fds) safeClose(fd);
        fds = [];
        if (flags & FLAG_NEED_REPLY) {
          this.replyU64(req, 1n);
          replied = true;
        }
    }
    for (const fd of fds) safeClose(fd);
    if (!replied && flags & FLAG_NEED_REPLY && this.protocolFeatures & bit(ProtocolFeature.REPLY_ACK)) {
      this.replyU64(req, 0n);
    }
  }

  private setMemTable(p: Buffer, fds: number[]): void {
    const maps: ArrayBuffer[] = [];
    let adopted = false;
    try {
      if (p.length < 8) throw new Error("SET_MEM_TABLE: short payload");
      const n = p.readUInt32LE(0);
      if (n < 1 || n > 8 || p.length < 8 + 32 * n) throw new Error(`SET_MEM_TABLE: ${n} regions`);
      if (fds.length !== n) throw new Error(`SET_MEM_TABLE: ${n} regions but ${fds.length} fds`);
      const regions: MemoryRegion[] = [];
      for (let i = 0; i < n; i++) {
        const o = 8 + 32 * i;
        const gpa = Number(p.readBigUInt64LE(o));
        const size = Number(p.readBigUInt64LE(o + 8));
        const uva = p.readBigUInt64LE(o + 16);
        const off = Number(p.readBigUInt64LE(o + 24));
        // Touching a mapping past the end of its file is SIGBUS, not an exception: check first.
        const fileSize = fstatSync(fds[i]!).size;
        if (!Number.isSafeInteger(size) || !Number.isSafeInteger(off) || size <= 0 || off + size > fileSize)
          throw new Error(
            `SET_MEM_TABLE: region ${i} (${size} bytes at offset ${off}) exceeds its ${fileSize}-byte fd`,
          );
        const ab = mapFd(fds[i]!, size, off);
        maps.push(ab);
        regions.push({ guestAddr: gpa, bytes: Buffer.from(ab), userAddr: uva });
        this.log.debug({ gpa: gpa.toString(16), size, uva: uva.toString(16), off }, "guest memory region");
      }
      const mem = new GuestMemory(regions);
      const old = { mem: this.mem, maps: this.mappings };
      this.mem = mem;
      this.mappings = maps;
      adopted = true;
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
      this.release(old.mem, old.maps);
      for (const [i, r] of this.rings.entries()) if (r.started) this.buildQueue(i, r);
      if (wasActive) this.maybeActivate();
    } catch (e) {
      if (!adopted) for (const m of maps) unmap(m);
      throw e;
    } finally {
      for (const fd of fds) safeClose(fd); // the mappings stay valid without the fds
    }
  }

  /** Unmaps a table's mappings once no operation holds its memory (blk I/O on the thread pool). */
  private release(mem: GuestMemory | undefined, maps: ArrayBuffer[]): void {
    if (maps.length === 0) return;
    const unmapAll = () => {
      for (const m of maps) unmap(m);
    };
    if (!mem) unmapAll();
    else void mem.unheld().then(unmapAll);
  }

  private setKick(i: number, r: Vring, fd: number | undefined): void {
    r.kickPoll?.stop();
    if (r.kickFd !== undefined) safeClose(r.kickFd);
    r.kickPoll = undefined;
    r.kickFd = fd;
    if (fd !== undefined) {
      r.kickPoll = pollFd(fd, POLL_READABLE, (status) => {
        let n: number;
        try {
          if (status < 0) throw new Error(`poll error ${status}`);
          n = eventfdRead(fd);
        } catch (e) {
          // Not an eventfd we can read (the frontend passed something else): stop watching it.
          this.peerError.log({ ring: i, err: (e as Error).message }, "vhost-user kick fd unusable; ring stops");
          r.kickPoll?.stop();
          r.kickPoll = undefined;
          return;
        }
        this.metrics.kicks++;
        if (this.log.isLevelEnabled("trace"))
          this.log.trace(
            {
              ring: i,
              n,
              active: this.active,
              q: r.queue && {
                size: r.queue.size,
                d: r.queue.descTable,
                a: r.queue.availRing,
                u: r.queue.usedRing,
                na: r.queue.nextAvail,
                p: r.queue.pending(),
                b: r.queue.broken,
              },
            },
            "kick",
          );
        // Each device bounds its own work per call (a batch, then setImmediate).
        if (n > 0 && this.active) this.device.notify(i);
      });
    }
    // "If VHOST_USER_F_PROTOCOL_FEATURES has not been negotiated, the ring starts enabled."
    if (!this.protocolNegotiated) r.enabled = true;
    r.started = true;
    this.buildQueue(i, r);
    this.maybeActivate();
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
          this.peerError.log({ ring: i, err: (e as Error).message }, "vhost-user call fd unusable; dropped");
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

  /** Announces a config-space change to the frontend (it re-reads config and interrupts the guest). */
  configChanged(): void {
    if (this.slaveFd < 0) {
      this.log.warn("config changed but the frontend gave no slave channel");
      return;
    }
    const m = Buffer.alloc(HEADER_SIZE);
    m.writeUInt32LE(SLAVE_CONFIG_CHANGE_MSG, 0);
    m.writeUInt32LE(VHOST_USER_VERSION, 4);
    m.writeUInt32LE(0, 8);
    try {
      if (sendWithFds(this.slaveFd, m) !== m.length) this.log.warn("slave channel full; config change not sent");
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, "slave channel broken; config change not sent");
      safeClose(this.slaveFd);
      this.slaveFd = -1;
    }
  }

  /** GET_VRING_BASE: the ring stops; returns where the frontend should resume. */
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
      this.log.error({ err: (e as Error).message }, "device reset failed");
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

  private replyU64(req: number, v: bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(v, 0);
    this.reply(req, b);
  }

  private reply(req: number, payload: Buffer): void {
    const m = Buffer.alloc(HEADER_SIZE + payload.length);
    m.writeUInt32LE(req, 0);
    m.writeUInt32LE(VHOST_USER_VERSION | FLAG_REPLY, 4);
    m.writeUInt32LE(payload.length, 8);
    payload.copy(m, HEADER_SIZE);
    this.outbox.push(m);
    this.flush();
  }

  private flush(): void {
    while (this.outbox.length > 0 && this.connFd >= 0) {
      const m = this.outbox[0]!;
      let n: number;
      try {
        n = sendWithFds(this.connFd, m);
      } catch (e) {
        // EPIPE/ECONNRESET: the frontend is gone (MSG_NOSIGNAL: no SIGPIPE). Never a throw into
        // dispatch or the poll callback.
        this.log.debug({ err: (e as Error).message }, "vhost-user send failed; closing the connection");
        this.disconnect();
        return;
      }
      if (n < 0) {
        this.connPoll?.update(POLL_READABLE | POLL_WRITABLE);
        return;
      }
      if (n < m.length) this.outbox[0] = m.subarray(n);
      else this.outbox.shift();
    }
    this.connPoll?.update(POLL_READABLE);
  }

  private disconnect(): void {
    if (this.connFd < 0) return;
    this.log.debug("frontend disconnected");
    this.resetRings();
    this.connPoll?.stop();
    this.connPoll = undefined;
    safeClose(this.connFd);
    this.connFd = -1;
    if (this.slaveFd >= 0) safeClose(this.slaveFd);
    this.slaveFd = -1;
    for (const fd of this.fds.splice(0)) safeClose(fd);
    this.got = 0;
    this.inPayload = false;
    this.outbox = [];
    this.release(this.mem, this.mappings);
    this.mem = undefined;
    this.mappings = [];
    this.features = 0n;
    this.protocolFeatures = 0n;
    this.protocolNegotiated = false;
    try {
      this.onDisconnect?.();
    } catch (e) {
      this.log.error({ err: (e as Error).message }, "onDisconnect handler failed");
    }
  }

  /** Stops listening, drops the frontend and removes the socket file. */
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

function safeClose(fd: number): void {
  try {
    closeFd(fd);
  } catch {
    // already closed
  }
}
