// The vsock device state machine under a hostile guest and a busy host: packets of any op, type,
// CID, ports, credit and length, in batches of any size; rx buffers of any shape (header-only
// ones included) or none; host connects, listens, an acceptor that answers late, writes, reads,
// ends and destroys; device resets and re-activation; garbage in the rings. Kicks arrive the way
// the event loop delivers them (each in its own setImmediate), so a reset racing a stream's
// hand-over is seen as production sees it.
// Invariants, besides the framework's: chains per ring per turn ≤ VSOCK_BATCH; connections ≤
// MAX_CONNECTIONS; pending RSTs ≤ MAX_PENDING_RST + MAX_CONNECTIONS; what the device writes is a
// well-formed packet addressed to the guest that fits its buffer; no empty RW; at most one
// CREDIT_REQUEST per RW sent on a connection (plus one); guest data buffered ≤ CONN_BUF_ALLOC.
import { pino } from "pino";
import { LOG_BURST } from "../../src/common/rate-limited-log.ts";
import { bit, VIRTIO_F_VERSION_1 } from "../../src/virtio/device.ts";
import { CONN_BUF_ALLOC, type Connection, type VsockStream } from "../../src/virtio/vsock/connection.ts";
import { MAX_CONNECTIONS, MAX_PENDING_RST, VSOCK_BATCH, VsockDevice } from "../../src/virtio/vsock/device.ts";
import {
  decodeHeader,
  encodeHeader,
  HDR_SIZE,
  OP_CREDIT_REQUEST,
  OP_NAMES,
  OP_REQUEST,
  OP_RESPONSE,
  OP_RST,
  OP_RW,
  OP_SHUTDOWN,
} from "../../src/virtio/vsock/packet.ts";
import { TestDriver } from "../unit/virtio/driver.ts";
import {
  type Fuzzer,
  type FuzzOptions,
  type FuzzReport,
  GuardedMemory,
  type Recorder,
  type Rng,
  runCases,
} from "./fuzz.ts";
import { countPopsPerTurn } from "./turns.ts";

const CID = 42;
const REGION = 512 * 1024;
const LISTENED = 1025;
const ACCEPTED = 7000;
/** Log lines written, per case: what a guest can make the shim write. */

/** One case's world: the device, the guest's two rings, the host's streams. */
class World {
  /** Log lines this case's device wrote (its own logger: a rate limiter's count line from an
   * earlier case's device, due when that interval ends, must not count here). */
  logLines = 0;
  readonly dev = new VsockDevice({
    guestCid: CID,
    logger: pino({ level: "warn" }, { write: () => void this.logLines++ }),
  });
  rx!: TestDriver;
  tx!: TestDriver;
  readonly streams: VsockStream[] = [];
  /** Port pairs the guest has seen or used (hostPort, guestPort). */
  readonly pairs: [number, number][] = [[LISTENED, 3000]];
  /** Per pair: RWs and CREDIT_REQUESTs the device sent. */
  readonly sent = new Map<string, { rw: number; creditRequests: number }>();
  /** rx buffer sizes by head (payload room). */
  readonly rooms = new Map<number, number>();
  /** Descriptors the guest has handed to the device and not got back, per ring (the test driver
   * reuses descriptors in order, so it must not hand out more than the ring holds). */
  readonly outstanding = { rx: 0, tx: 0 };
  readonly descs = { rx: new Map<number, number>(), tx: new Map<number, number>() };
  /** The guest wrote garbage into the rx ring: what comes back no longer matches our buffers. */
  rxTainted = false;
  /** Host connects not yet settled: after the final reset, none may be left. */
  readonly connects = new Set<Promise<void>>();
  readonly pendingAccepts: ((h: ((s: VsockStream) => void) | undefined) => void)[] = [];
  bytes = 0;

  constructor(
    readonly g: GuardedMemory,
    readonly rng: Rng,
    readonly rec: Recorder,
  ) {
    this.dev.listen(LISTENED, (s) => this.adopt(s));
    this.dev.acceptor = () =>
      new Promise((resolve) => {
        if (rng.chance(0.5)) resolve(rng.chance(0.7) ? (s) => this.adopt(s) : undefined);
        else this.pendingAccepts.push(resolve);
      });
    this.activate(rng.pick([16, 64, 256]));
  }

  activations = 0;

  activate(size: number): void {
    this.activations++;
    this.g.mem.slice(0, 2 * REGION).fill(0);
    this.rx = new TestDriver(size, 0, this.g.mem, 0);
    this.tx = new TestDriver(size, 0, this.g.mem, REGION);
    this.rooms.clear();
    this.bytes = 0;
    this.outstanding.rx = this.outstanding.tx = 0;
    this.descs.rx.clear();
    this.descs.tx.clear();
    this.rxTainted = false;
    const rxq = this.rx.queue();
    const txq = this.tx.queue();
    countPopsPerTurn(rxq, this.rec, "rxChainsPerTurn", VSOCK_BATCH);
    countPopsPerTurn(txq, this.rec, "txChainsPerTurn", VSOCK_BATCH);
    this.dev.activate({
      mem: this.g.mem,
      queues: [rxq, txq, undefined],
      interrupt: { queue: () => {}, config: () => {} },
      features: bit(VIRTIO_F_VERSION_1),
    });
  }

  /** A stream handed to the host side; sometimes its consumer never listens for errors. */
  adopt(s: VsockStream): void {
    this.streams.push(s);
    if (this.rng.chance(0.5)) s.on("error", () => {});
    if (this.rng.chance(0.5)) s.resume();
  }

  /** Room for the TestDriver's bump allocator in each region (it never frees within a case). */
  spend(n: number): boolean {
    if (this.bytes + n > REGION / 2) return false;
    this.bytes += n + 64;
    return true;
  }

  /** Adds a chain if the ring has descriptors for it; returns its head. */
  add(ring: "rx" | "tx", readable: Buffer[], writable: number[]): number | undefined {
    const d = ring === "rx" ? this.rx : this.tx;
    const n = readable.length + writable.length;
    if (this.outstanding[ring] + n > d.size) return undefined;
    const head = d.add(readable, writable);
    this.outstanding[ring] += n;
    this.descs[ring].set(head, n);
    return head;
  }

  /** Used entries of a ring, with their descriptors given back to the guest. */
  used(ring: "rx" | "tx"): { head: number; len: number }[] {
    const out = (ring === "rx" ? this.rx : this.tx).takeUsed();
    for (const u of out) {
      this.outstanding[ring] -= this.descs[ring].get(u.head) ?? 0;
      this.descs[ring].delete(u.head);
    }
    return out;
  }
}

async function kick(w: World, queue: number): Promise<void> {
  await new Promise<void>((r) =>
    setImmediate(() => {
      w.dev.notify(queue);
      r();
    }),
  );
}

function guestPacket(w: World): void {
  const { rng, rec } = w;
  const op = rng.weighted({
    [OP_REQUEST]: 3,
    [OP_RESPONSE]: 3,
    [OP_RST]: 3,
    [OP_SHUTDOWN]: 2,
    [OP_RW]: 5,
    6: 2, // CREDIT_UPDATE
    [OP_CREDIT_REQUEST]: 2,
    0: 0.5, // unknown ops
    9: 0.5,
  } as Record<string, number>);
  const opNum = Number(op);
  rec.op(`guest ${OP_NAMES[opNum] ?? "unknown op"}`);
  const [hostPort, guestPort] = rng.chance(0.85)
    ? rng.pick(w.pairs)
    : [rng.pick([LISTENED, ACCEPTED, rng.u32()]), rng.u16()];
  if (opNum === OP_REQUEST && rng.chance(0.5)) w.pairs.push([rng.pick([LISTENED, ACCEPTED]), 3000 + rng.int(64)]);
  const payloadLen = opNum === OP_RW ? rng.pick([0, 1, 100, 4096, rng.int(70_000)]) : rng.chance(0.05) ? 8 : 0;
  if (!w.spend(HDR_SIZE + payloadLen)) return;
  const hdr = encodeHeader({
    srcCid: rng.chance(0.97) ? BigInt(CID) : rng.u64(),
    dstCid: rng.chance(0.97) ? 2n : rng.u64(),
    srcPort: guestPort,
    dstPort: hostPort,
    len: rng.chance(0.97) ? payloadLen : rng.edgy(),
    type: rng.chance(0.95) ? 1 : rng.u16(),
    op: opNum,
    flags: opNum === OP_SHUTDOWN ? rng.int(4) : rng.chance(0.05) ? rng.u32() : 0,
    bufAlloc: rng.chance(0.7) ? rng.pick([0, 1000, 65536, 262144]) : rng.edgy(),
    fwdCnt: rng.edgy(),
  });
  const payload = rng.bytes(Math.min(payloadLen, 64)); // content does not matter; length does
  const data = payloadLen > 0 ? [hdr, Buffer.concat([payload, Buffer.alloc(payloadLen - payload.length)])] : [hdr];
  // Sometimes the header itself is split across descriptors.
  if (rng.chance(0.1)) {
    const cut = rng.range(1, HDR_SIZE - 1);
    data.splice(0, 1, hdr.subarray(0, cut), hdr.subarray(cut));
  }
  w.add("tx", data, []);
}

function postRx(w: World, n: number): void {
  for (let i = 0; i < n; i++) {
    const room = w.rng.pick([0, 0, 1, 16, 4096, 4096, w.rng.int(70_000)]);
    if (!w.spend(HDR_SIZE + room)) return;
    const shape = w.rng.int(3);
    const lens = shape === 0 ? [HDR_SIZE + room] : shape === 1 ? [HDR_SIZE, room] : [20, HDR_SIZE - 20 + room];
    const head = w.add(
      "rx",
      [],
      lens.filter((l) => l > 0),
    );
    if (head === undefined) return;
    w.rooms.set(head, room);
  }
}

/** Reads what the device wrote into rx buffers and checks each packet. */
function collect(w: World): void {
  w.used("tx");
  for (const u of w.used("rx")) {
    if (w.rxTainted) continue;
    const buf = w.rx.written(u.head);
    if (buf.length < HDR_SIZE) {
      w.rec.violate(`rx used entry ${u.head} is not one of our buffers`);
      continue;
    }
    const h = decodeHeader(buf);
    const room = w.rooms.get(u.head);
    w.rec.op(`device ${OP_NAMES[h.op] ?? `op ${h.op}`}`);
    if (u.len !== HDR_SIZE + h.len) w.rec.violate(`used length ${u.len} for a ${h.len}-byte packet`);
    if (room !== undefined && h.len > room) w.rec.violate(`packet of ${h.len} bytes in a buffer with room for ${room}`);
    if (h.op === OP_RW && h.len === 0) w.rec.violate("empty RW packet");
    if (h.srcCid !== 2n || h.dstCid !== BigInt(CID)) w.rec.violate(`packet from ${h.srcCid} to ${h.dstCid}`);
    if (!OP_NAMES[h.op]) w.rec.violate(`device sent op ${h.op}`);
    const key = `${h.srcPort}:${h.dstPort}`;
    // A connection starts with a REQUEST or RESPONSE; counts are per connection, not per pair.
    const fresh = h.op === OP_REQUEST || h.op === OP_RESPONSE;
    const s = (!fresh && w.sent.get(key)) || { rw: 0, creditRequests: 0 };
    if (h.op === OP_RW) s.rw++;
    if (h.op === OP_CREDIT_REQUEST) s.creditRequests++;
    if (h.op === OP_RST) w.sent.delete(key);
    else w.sent.set(key, s);
    w.rec.bounded("creditRequestsBeyondRwPlusOne", s.creditRequests - s.rw - 1, 0);
    if (h.op === OP_REQUEST && w.rng.chance(0.9)) w.pairs.push([h.srcPort, h.dstPort]);
  }
}

function hostAction(w: World): void {
  const { rng, rec, dev } = w;
  const s = w.streams.length > 0 ? rng.pick(w.streams) : undefined;
  const act = rng.weighted({ connect: 2, write: 4, end: 1, destroy: 1, pause: 1, resume: 1, answer: 1 });
  rec.op(`host ${act}`);
  switch (act) {
    case "connect":
      w.connects.add(
        dev.connect(rng.chance(0.8) ? 1024 : rng.u32(), 60_000).then(
          (st) => w.adopt(st),
          () => {},
        ),
      );
      return;
    case "write":
      s?.write(Buffer.alloc(rng.pick([1, 100, 5000, 300_000]), 7), () => {});
      return;
    case "end":
      s?.end();
      return;
    case "destroy":
      s?.destroy();
      return;
    case "pause":
      s?.pause();
      return;
    case "resume":
      s?.resume();
      return;
    case "answer": {
      const a = w.pendingAccepts.shift();
      a?.(rng.chance(0.7) ? (st) => w.adopt(st) : undefined);
    }
  }
}

function observe(w: World): void {
  const { dev, rec } = w;
  rec.bounded("connections", dev.connectionCount, MAX_CONNECTIONS);
  rec.bounded("pendingResets", dev.pendingResets, MAX_PENDING_RST + MAX_CONNECTIONS);
  // Sharper than the documented bound: beyond MAX_PENDING_RST, only RSTs owed to connections.
  rec.bounded("pendingResetsBeyondConnections", dev.pendingResets - dev.metrics.connectionsCreated, MAX_PENDING_RST);
  // Warnings are rate-limited; each activation may log its one contract violation.
  rec.bounded("logLinesBeyondActivations", w.logLines - w.activations, LOG_BURST);
  const conns = (dev as unknown as { conns: Map<string, Connection> }).conns;
  for (const c of conns.values()) {
    rec.state(`conn ${c.state}`);
    rec.bounded("guestBytesBuffered", c.buffered(), CONN_BUF_ALLOC);
  }
  rec.state(dev.needsReset ? "device needs reset" : "device running");
}

async function oneCase(g: GuardedMemory, rng: Rng, rec: Recorder): Promise<void> {
  const w = new World(g, rng, rec);
  postRx(w, rng.int(8));
  const steps = rng.range(1, 24);
  for (let i = 0; i < steps; i++) {
    const what = rng.weighted({
      packets: 6,
      burst: 0.3,
      rxBurst: 0.3,
      rx: 3,
      host: 4,
      turn: 2,
      garbage: 0.2,
      reset: 0.2,
    });
    switch (what) {
      case "packets": {
        const n = rng.range(1, 6);
        for (let k = 0; k < n; k++) guestPacket(w);
        await kick(w, 1);
        break;
      }
      case "burst": {
        // More packets than one turn's batch (on a ring large enough to hold them).
        rec.op("guest burst");
        const n = Math.min(w.tx.size, rng.range(VSOCK_BATCH, 2 * VSOCK_BATCH));
        for (let k = 0; k < n; k++)
          if (w.spend(HDR_SIZE))
            w.add(
              "tx",
              [
                encodeHeader({
                  srcCid: BigInt(CID),
                  dstCid: 2n,
                  srcPort: k,
                  dstPort: 9,
                  len: 0,
                  type: 1,
                  op: 6,
                  flags: 0,
                  bufAlloc: 0,
                  fwdCnt: 0,
                }),
              ],
              [],
            );
        await kick(w, 1);
        break;
      }
      case "rxBurst": {
        // More header-only rx buffers than one turn's batch, for RSTs waiting to go out.
        rec.op("guest rx burst");
        const n = Math.min(w.rx.size, rng.range(VSOCK_BATCH, 2 * VSOCK_BATCH));
        for (let k = 0; k < n; k++) if (w.spend(HDR_SIZE)) w.add("rx", [], [HDR_SIZE]);
        await kick(w, 0);
        break;
      }
      case "rx":
        rec.op("guest rx buffers");
        postRx(w, rng.range(1, 8));
        await kick(w, 0);
        break;
      case "host":
        hostAction(w);
        break;
      case "turn":
        await new Promise((r) => setImmediate(r));
        break;
      case "garbage": {
        rec.op("guest ring garbage");
        const d = rng.chance(0.5) ? w.rx : w.tx;
        if (d === w.rx) w.rxTainted = true;
        if (rng.chance(0.5)) d.publish(rng.u16());
        else d.setAvailIdx(rng.u16());
        await kick(w, d === w.rx ? 0 : 1);
        break;
      }
      case "reset":
        rec.op("device reset");
        w.dev.reset();
        w.sent.clear();
        if (rng.chance(0.7)) w.activate(rng.pick([16, 64, 256]));
        break;
    }
    collect(w);
    observe(w);
  }
  // The guest reboots: every connection goes, pending connects reject, deferred errors land.
  w.dev.reset();
  for (const a of w.pendingAccepts.splice(0)) a(undefined);
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  for (const s of w.streams) s.destroy();
  let unsettled = w.connects.size;
  for (const p of w.connects) p.then(() => unsettled--);
  await new Promise((r) => setImmediate(r));
  rec.bounded("connectsUnsettledAfterReset", unsettled, 0);
  g.checkGuards(rec);
}

export const fuzzer: Fuzzer = {
  name: "vsock",
  run(opts: FuzzOptions): Promise<FuzzReport> {
    const g = new GuardedMemory(2 * REGION);
    return runCases("vsock", opts, ({ rng, rec }) => oneCase(g, rng, rec));
  },
};
