// The virtio-blk device (virtio 1.2 §5.2): state, features, config space, and the request
// loop. Requests run concurrently (several in flight per queue) and complete in any order.
// A disk slot can start empty and get media later (capacity change + config interrupt): the
// way a container added to a running pod gets its disk without hotplug.
import { errorMessage } from "../../common/errors.ts";
import { RateLimitedLog } from "../../common/rate-limited-log.ts";
import {
  type ActivateContext,
  bit,
  DeviceBase,
  type InterruptSink,
  readConfigWindow,
  VIRTIO_F_RING_EVENT_IDX,
  VIRTIO_F_RING_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_BLOCK,
  type VirtioDevice,
} from "../device.ts";
import { GuestError } from "../errors.ts";
import { defaultLogger, type Logger } from "../log.ts";
import type { DescriptorChain } from "../queue/chain.ts";
import type { Queue } from "../queue/queue.ts";
import { BlkBacking } from "./backing.ts";
import { type Extent, ExtentMap } from "./extents.ts";
import { BlkMetrics } from "./metrics.ts";
import {
  type BlkRequest,
  parseRequest,
  SECTOR_SIZE,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  WRITE_ZEROES_FLAG_UNMAP,
} from "./request.ts";

export const VIRTIO_BLK_F_SEG_MAX = 2n;
export const VIRTIO_BLK_F_RO = 5n;
export const VIRTIO_BLK_F_BLK_SIZE = 6n;
export const VIRTIO_BLK_F_FLUSH = 9n;
export const VIRTIO_BLK_F_MQ = 12n;
export const VIRTIO_BLK_F_DISCARD = 13n;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14n;

/**
 * Requests taken off one queue per event-loop turn; the rest wait for the next turn (setImmediate),
 * so a guest that keeps its ring full cannot starve the loop. Each start is a parse plus, for a
 * page-cache hit, one inline copy of at most 256 KiB (see backing.ts).
 */
export const BLK_BATCH = 64;

/** struct virtio_blk_config up to write_zeroes_may_unmap + padding (secure-erase fields zero). */
export const BLK_CONFIG_SIZE = 64;
const MAX_DISCARD_SECTORS = 1 << 22; // 2 GiB per segment
const MAX_DISCARD_SEGMENTS = 1;

export interface BlkOptions {
  /** Backing file or block device; undefined = an empty slot (capacity 0) for later media. */
  path?: string;
  /**
   * A disk of extents (ExtentMap) instead of one file: starts empty, files are added and removed
   * while the guest runs (addExtent/removeExtent). Excludes `path`.
   */
  extents?: boolean;
  readOnly?: boolean;
  /** Up to 20 bytes returned by GET_ID (the guest's /sys/block/vdX/serial). */
  serial?: string;
  queueSize?: number;
  numQueues?: number;
  logger?: Logger;
}

export class BlkDevice extends DeviceBase implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_BLOCK;
  readonly name: string;
  readonly queueMaxSizes: number[];
  readonly features: bigint;
  readonly readOnly: boolean;
  readonly metrics = new BlkMetrics();
  private backing: BlkBacking | ExtentMap | undefined;
  private serial: Buffer;
  private log: Logger;
  /** A guest breaks the contract, resets and breaks it again at will: one rate-limited source. */
  private failLog: RateLimitedLog;
  private ioErrorLog: RateLimitedLog;
  private idle: (() => void)[] = [];
  /** Bumped on reset, so completions of an earlier activation are dropped. */
  private generation = 0;
  /**
   * Per queue of this activation: the descriptor heads whose request is in flight. The driver may
   * not make a chain available again before the device returned it (§2.7.13): one that does is
   * refused, so a queue never has more requests in flight than its ring has entries.
   */
  private heads: Set<number>[] = [];
  /** Queues with a turn already scheduled (their batch ran out). */
  private scheduled = new Set<number>();
  /** drain() in progress: no new request starts until the in-flight ones are back. */
  private quiesced = 0;

  private constructor(opts: BlkOptions, backing: BlkBacking | ExtentMap | undefined) {
    super();
    this.readOnly = opts.readOnly ?? false;
    this.backing = backing;
    const nq = opts.numQueues ?? 1;
    this.queueMaxSizes = Array.from({ length: nq }, () => opts.queueSize ?? 1024);
    this.serial = Buffer.alloc(VIRTIO_BLK_ID_BYTES);
    Buffer.from(opts.serial ?? "", "utf8").copy(this.serial, 0, 0, VIRTIO_BLK_ID_BYTES);
    this.name = `virtio-blk(${opts.serial ?? opts.path ?? "empty"})`;
    this.log = (opts.logger ?? defaultLogger).child({ device: this.name });
    this.failLog = new RateLimitedLog(this.log, "error");
    this.ioErrorLog = new RateLimitedLog(this.log, "warn");
    let f =
      bit(VIRTIO_F_VERSION_1) |
      bit(VIRTIO_F_RING_INDIRECT_DESC) |
      bit(VIRTIO_F_RING_EVENT_IDX) |
      bit(VIRTIO_BLK_F_SEG_MAX) |
      bit(VIRTIO_BLK_F_BLK_SIZE) |
      bit(VIRTIO_BLK_F_FLUSH);
    if (this.readOnly) f |= bit(VIRTIO_BLK_F_RO);
    else f |= bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_WRITE_ZEROES);
    if (nq > 1) f |= bit(VIRTIO_BLK_F_MQ);
    this.features = f;
  }

  static async create(opts: BlkOptions): Promise<BlkDevice> {
    if (opts.extents) {
      if (opts.path) throw new Error("a disk of extents has no path");
      return new BlkDevice(opts, new ExtentMap(opts.readOnly ?? false));
    }
    const backing = opts.path ? await BlkBacking.open(opts.path, opts.readOnly ?? false) : undefined;
    return new BlkDevice(opts, backing);
  }

  /** Capacity in 512-byte sectors (a partial last sector is not exposed). */
  get capacity(): number {
    return this.backing ? Math.floor(this.backing.size / SECTOR_SIZE) : 0;
  }

  /** Requests served on the event loop from the page cache (RWF_NOWAIT) vs. through the thread pool. */
  get ioPath(): { hits: number; misses: number } | undefined {
    return this.backing?.nowait;
  }

  get path(): string | undefined {
    return this.backing instanceof BlkBacking ? this.backing.path : undefined;
  }

  private extentMap(): ExtentMap {
    if (!(this.backing instanceof ExtentMap)) throw new Error(`${this.name} is not a disk of extents`);
    return this.backing;
  }

  /**
   * Adds a file as an extent (the disk grows when it lands past the end: the guest hears of it
   * through a configuration-change interrupt) and returns where it is.
   */
  async addExtent(path: string): Promise<Extent> {
    const map = this.extentMap();
    const before = map.size;
    const ext = await map.add(path);
    if (map.size !== before) this.configChanged();
    return ext;
  }

  /** Removes an extent (by partition number) once no request is in flight; the guest let go of it first. */
  async removeExtent(index: number): Promise<void> {
    const map = this.extentMap();
    const ext = map.list().find((e) => e.index === index);
    if (!ext) return;
    await this.drain();
    await map.remove(ext);
  }

  readConfig(offset: number, length: number): Buffer {
    const c = Buffer.alloc(BLK_CONFIG_SIZE);
    c.writeBigUInt64LE(BigInt(this.capacity), 0);
    c.writeUInt32LE(Math.max(1, this.queueMaxSizes[0]! - 2), 12); // seg_max: header and status take two
    c.writeUInt32LE(SECTOR_SIZE, 20); // blk_size
    c.writeUInt16LE(this.queueMaxSizes.length, 34); // num_queues
    c.writeUInt32LE(MAX_DISCARD_SECTORS, 36);
    c.writeUInt32LE(MAX_DISCARD_SEGMENTS, 40);
    c.writeUInt32LE(1, 44); // discard_sector_alignment
    c.writeUInt32LE(MAX_DISCARD_SECTORS, 48);
    c.writeUInt32LE(MAX_DISCARD_SEGMENTS, 52);
    c.writeUInt8(1, 56); // write_zeroes_may_unmap
    return readConfigWindow(c, offset, length);
  }

  writeConfig(offset: number, data: Buffer): void {
    // Only `writeback` (CONFIG_WCE) is writable, and we do not offer it: ignore, as the spec allows.
    this.log.debug({ offset, len: data.length }, "ignored config write");
  }

  protected override beforeWiring(ctx: ActivateContext): void {
    this.heads = ctx.queues.map(() => new Set());
  }

  /** Requests the driver queued before DRIVER_OK are served at once. */
  protected override queueWired(index: number): void {
    this.notify(index);
  }

  protected override resetDevice(): void {
    this.generation++;
    this.heads = [];
  }

  /**
   * The bound on requests in flight for the whole device: its rings' sizes. Requests of an earlier
   * activation still on the thread pool count too, so a guest that resets in a loop while its
   * disk is slow cannot pile up work either.
   */
  private get inFlightLimit(): number {
    return this.queueMaxSizes.reduce((a, b) => a + b, 0);
  }

  protected failed(reason: string): void {
    this.failLog.log({ reason }, "guest broke the virtio-blk contract; device needs reset");
  }

  notify(index: number): void {
    const ctx = this.ctx;
    const q = ctx?.queues[index];
    const heads = this.heads[index];
    // A kick while a turn is scheduled adds nothing: that turn looks at the ring anyway.
    if (!ctx || !q || !heads || q.broken || this.quiesced || this.scheduled.has(index)) return;
    // Take up to BLK_BATCH requests, then re-arm notifications and look again if the driver raced
    // us. A full batch or the in-flight bound leaves the rest in the ring, notifications off: the
    // next turn (or the completion that frees a slot) comes back for them.
    let taken = 0;
    try {
      for (;;) {
        q.disableNotification();
        for (;;) {
          if (this.metrics.inFlight >= this.inFlightLimit) return; // complete() resumes
          if (taken === BLK_BATCH) {
            if (q.pending() === 0) break;
            this.metrics.deferredTurns++;
            this.schedule(index);
            return;
          }
          const chain = q.pop();
          if (!chain) break;
          taken++;
          this.start(ctx, q, heads, index, chain);
        }
        if (q.broken || !q.enableNotification()) return;
      }
    } finally {
      this.metrics.maxBatch = Math.max(this.metrics.maxBatch, taken);
    }
  }

  /** Runs notify(index) on the next turn (once, however often it is asked). */
  private schedule(index: number): void {
    if (this.scheduled.has(index)) return;
    this.scheduled.add(index);
    setImmediate(() => {
      this.scheduled.delete(index);
      this.notify(index);
    });
  }

  private start(ctx: ActivateContext, q: Queue, heads: Set<number>, index: number, chain: DescriptorChain): void {
    let req: BlkRequest;
    try {
      if (heads.has(chain.head)) throw new GuestError(`descriptor head ${chain.head} made available while in flight`);
      req = parseRequest(chain, MAX_DISCARD_SEGMENTS);
    } catch (e) {
      if (!(e instanceof GuestError)) throw e;
      this.metrics.invalid++;
      q.markBroken(e.message);
      return;
    }
    const gen = this.generation;
    const t0 = process.hrtime.bigint();
    heads.add(chain.head);
    this.metrics.inFlight++;
    this.metrics.maxInFlight = Math.max(this.metrics.maxInFlight, this.metrics.inFlight);
    // The request's buffers are views into guest RAM that the thread pool writes or reads: RAM
    // stays mapped until the request is back (GuestMemory.hold).
    const release = ctx.mem.hold();
    this.execute(req)
      .then(
        (r) => ({ status: r.status, written: r.written }),
        (e: unknown) => {
          this.metrics.ioErrors++;
          this.ioErrorLog.log({ err: errorMessage(e), type: req.type, sector: req.sector }, "blk I/O error");
          return { status: VIRTIO_BLK_S_IOERR, written: 0 };
        },
      )
      .then((r) => {
        heads.delete(chain.head);
        this.complete(ctx.interrupt, q, index, gen, chain.head, req, r.status, r.written, t0);
      })
      .finally(release);
  }

  private complete(
    irq: InterruptSink,
    q: Queue,
    index: number,
    gen: number,
    head: number,
    req: BlkRequest,
    status: number,
    written: number,
    t0: bigint,
  ): void {
    const wasFull = this.metrics.inFlight >= this.inFlightLimit;
    this.metrics.inFlight--;
    if (this.metrics.inFlight === 0) for (const f of this.idle.splice(0)) f();
    if (wasFull) this.resume();
    if (gen !== this.generation || q.broken) return; // reset meanwhile: the ring is not ours any more
    req.status[0] = status;
    q.addUsed(head, written + 1);
    if (q.needsNotification()) irq.queue(index);
    this.metrics.completed++;
    this.metrics.serviceNs += Number(process.hrtime.bigint() - t0);
  }

  /** Comes back (next turn) for requests left in the rings while the device could not take them. */
  private resume(): void {
    const n = this.ctx?.queues.length ?? 0;
    for (let i = 0; i < n; i++) this.schedule(i);
  }

  /** Checks [sector, sector+bytes) is inside the disk. */
  private inRange(sector: number, bytes: number): boolean {
    return sector <= this.capacity && bytes <= (this.capacity - sector) * SECTOR_SIZE;
  }

  private async execute(req: BlkRequest): Promise<{ status: number; written: number }> {
    const b = this.backing;
    const IOERR = { status: VIRTIO_BLK_S_IOERR, written: 0 };
    switch (req.type) {
      case VIRTIO_BLK_T_IN: {
        this.metrics.reads++;
        if (!b || req.dataLen % SECTOR_SIZE || !this.inRange(req.sector, req.dataLen)) return IOERR;
        await b.readInto(req.data, req.sector * SECTOR_SIZE, this.metrics.inFlight === 1);
        this.metrics.bytesRead += req.dataLen;
        return { status: VIRTIO_BLK_S_OK, written: req.dataLen };
      }
      case VIRTIO_BLK_T_OUT: {
        this.metrics.writes++;
        if (!b || this.readOnly || req.dataLen % SECTOR_SIZE || !this.inRange(req.sector, req.dataLen)) return IOERR;
        await b.writeFrom(req.data, req.sector * SECTOR_SIZE, this.metrics.inFlight === 1);
        this.metrics.bytesWritten += req.dataLen;
        return { status: VIRTIO_BLK_S_OK, written: 0 };
      }
      case VIRTIO_BLK_T_FLUSH:
        this.metrics.flushes++;
        if (b && !this.readOnly) await b.flush();
        return { status: VIRTIO_BLK_S_OK, written: 0 };
      case VIRTIO_BLK_T_GET_ID: {
        this.metrics.getIds++;
        const n = Math.min(VIRTIO_BLK_ID_BYTES, req.dataLen);
        let copied = 0;
        for (const d of req.data) {
          if (copied >= n) break;
          copied += this.serial.copy(d, 0, copied, n);
        }
        return { status: VIRTIO_BLK_S_OK, written: n };
      }
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES: {
        const zero = req.type === VIRTIO_BLK_T_WRITE_ZEROES;
        if (zero) this.metrics.writeZeroes++;
        else this.metrics.discards++;
        if (!b || this.readOnly) return { status: VIRTIO_BLK_S_UNSUPP, written: 0 };
        for (const s of req.segments) {
          if (s.sectors > MAX_DISCARD_SECTORS || !this.inRange(s.sector, s.sectors * SECTOR_SIZE)) return IOERR;
          // Discard takes no flags; write-zeroes only UNMAP (§5.2.6.2).
          if ((zero && s.flags & ~WRITE_ZEROES_FLAG_UNMAP) || (!zero && s.flags)) {
            return { status: VIRTIO_BLK_S_UNSUPP, written: 0 };
          }
          if (zero) await b.writeZeroes(s.sector * SECTOR_SIZE, s.sectors * SECTOR_SIZE, (s.flags & 1) !== 0);
          else await b.discard(s.sector * SECTOR_SIZE, s.sectors * SECTOR_SIZE);
        }
        return { status: VIRTIO_BLK_S_OK, written: 0 };
      }
      default:
        this.metrics.unsupported++;
        return { status: VIRTIO_BLK_S_UNSUPP, written: 0 };
    }
  }

  /**
   * Resolves when no request is in flight. No new request starts meanwhile (a guest that keeps
   * its queue busy cannot hold the drain off); those the guest posted are taken afterwards.
   */
  async drain(): Promise<void> {
    if (this.metrics.inFlight === 0) return;
    this.quiesced++;
    try {
      await new Promise<void>((r) => this.idle.push(r));
    } finally {
      if (--this.quiesced === 0) this.resume();
    }
  }

  /**
   * Inserts, replaces or (path undefined) ejects the media, then tells the guest through a
   * configuration-change interrupt; the guest driver re-reads the capacity.
   */
  async changeMedia(path: string | undefined): Promise<void> {
    if (this.backing instanceof ExtentMap) throw new Error(`${this.name} is a disk of extents: add or remove extents`);
    const next = path ? await BlkBacking.open(path, this.readOnly) : undefined;
    await this.drain();
    const prev = this.backing;
    this.backing = next;
    await prev?.close();
    this.configChanged();
  }

  /** The backing grew or shrank underneath (e.g. truncate): re-read its size and tell the guest. */
  async resize(): Promise<void> {
    if (this.backing instanceof BlkBacking) await this.backing.refreshSize();
    this.configChanged();
  }

  /** Where config changes go when the device is not active (vhost-user sends a back-end channel message). */
  onConfigChange?: () => void;

  private configChanged(): void {
    this.metrics.configChanges++;
    if (this.ctx) this.ctx.interrupt.config();
    else this.onConfigChange?.();
  }

  async close(): Promise<void> {
    this.reset();
    this.failLog.close();
    this.ioErrorLog.close();
    await this.drain();
    await this.backing?.close();
    this.backing = undefined;
  }
}
