// virtio-net tx and rx under a hostile guest and a tap that fills up, refuses frames and delivers
// frames of any length: tx chains of any shape (short, oversized, with writable parts, bursts past
// a turn's batch), rx buffers of any size (too small for the header included) and any number,
// features negotiated or not, kicks, ring garbage, resets, link changes.
// Invariants, besides the framework's: frames handed to the tap and read from it per synchronous
// turn ≤ NET_BATCH; what reaches the tap is exactly a tx chain's bytes; what reaches the guest is
// exactly a tap frame (num_buffers set to the buffers it took, flags cleared without GUEST_CSUM),
// within the buffers the guest posted; at most one frame held each way.
import { pino } from "pino";
import { bit, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_VERSION_1 } from "../../src/virtio/device.ts";
import { NET_BATCH, NetDevice } from "../../src/virtio/net/device.ts";
import {
  ETH_HLEN,
  MAX_FRAME_LEN,
  NET_HDR_SIZE,
  NUM_BUFFERS_OFFSET,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_MRG_RXBUF,
} from "../../src/virtio/net/header.ts";
import type { NetHostEnd } from "../../src/virtio/net/host-end.ts";
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

const REGION = 1 << 20;
const logger = pino({ level: "silent" });

/** A tap that the fuzzer fills and drains; counts the frames each synchronous turn handles. */
class FuzzTap implements NetHostEnd {
  readonly incoming: Buffer[] = [];
  readonly sent: Buffer[] = [];
  full = false;
  refuse = false;
  ready: ((r: boolean, w: boolean) => void) | undefined;
  wantRead = false;
  wantWrite = false;
  private turn = { send: 0, recv: 0 };
  constructor(private readonly rec: Recorder) {}
  private count(k: "send" | "recv"): void {
    if (this.turn.send === 0 && this.turn.recv === 0) {
      queueMicrotask(() => {
        this.rec.bounded("tapSendsPerTurn", this.turn.send, NET_BATCH);
        this.rec.bounded("tapReadsPerTurn", this.turn.recv, NET_BATCH);
        this.turn = { send: 0, recv: 0 };
      });
    }
    this.turn[k]++;
  }
  recv(bufs: Buffer[]): number {
    this.count("recv");
    const f = this.incoming.shift();
    if (!f) return -1;
    let off = 0;
    for (const b of bufs) off += f.copy(b, 0, off);
    return f.length;
  }
  send(bufs: Buffer[]): number {
    this.count("send");
    if (this.full) return -1;
    if (this.refuse) throw new Error("EINVAL");
    const f = Buffer.concat(bufs);
    this.sent.push(f);
    return f.length;
  }
  setOffload(): void {}
  onReady(cb: (r: boolean, w: boolean) => void): void {
    this.ready = cb;
  }
  want(r: boolean, w: boolean): void {
    this.wantRead = r;
    this.wantWrite = w;
  }
  close(): void {}
}

/** A frame the tap delivers: header then a byte pattern the guest side can recognise. */
function tapFrame(rng: Rng, len: number): Buffer {
  const tag = rng.u8();
  const pattern = Buffer.alloc(251); // a prime length: shifted copies of a frame do not match
  for (let i = 0; i < pattern.length; i++) pattern[i] = (tag + i * 7) & 0xff;
  return Buffer.alloc(len, pattern);
}

class World {
  readonly tap: FuzzTap;
  readonly dev: NetDevice;
  rx!: TestDriver;
  tx!: TestDriver;
  features = 0n;
  bytes = { rx: 0, tx: 0 };
  outstanding = { rx: 0, tx: 0 };
  readonly descs = { rx: new Map<number, number>(), tx: new Map<number, number>() };
  /** tx chains the guest posted, in order: their bytes, or undefined if the device may drop them. */
  readonly txPosted: (Buffer | undefined)[] = [];
  /** Frames the tap delivered, in order, for the guest to find again. */
  readonly delivered: Buffer[] = [];
  /** rx buffer sizes by head. */
  readonly rxSize = new Map<number, number>();
  tainted = false;
  /** Chains the device took, both rings. */
  pops = 0;

  constructor(
    readonly g: GuardedMemory,
    readonly rng: Rng,
    readonly rec: Recorder,
  ) {
    this.tap = new FuzzTap(rec);
    this.dev = new NetDevice({ hostEnd: this.tap, mac: "52:54:00:12:34:56", logger, mtu: 1500 });
    this.activate();
  }

  activate(): void {
    const { rng } = this;
    const size = rng.pick([16, 64, 256]);
    this.g.mem.slice(0, 0x4000).fill(0);
    this.g.mem.slice(REGION, 0x4000).fill(0);
    this.rx = new TestDriver(size, 0, this.g.mem, 0);
    this.tx = new TestDriver(size, 0, this.g.mem, REGION);
    const rxq = this.rx.queue();
    const txq = this.tx.queue();
    for (const q of [rxq, txq]) {
      const pop = q.pop.bind(q);
      q.pop = () => {
        const c = pop();
        if (c) this.pops++;
        return c;
      };
    }
    this.bytes = { rx: 0, tx: 0 };
    this.outstanding = { rx: 0, tx: 0 };
    this.descs.rx.clear();
    this.descs.tx.clear();
    this.txPosted.length = 0; // (frames still in the tap stay expected: a reset does not drain it)
    this.rxSize.clear();
    this.tainted = false;
    let f = bit(VIRTIO_F_VERSION_1);
    for (const b of [
      VIRTIO_NET_F_MRG_RXBUF,
      VIRTIO_NET_F_GUEST_CSUM,
      VIRTIO_NET_F_CSUM,
      VIRTIO_NET_F_GUEST_TSO4,
      VIRTIO_F_RING_EVENT_IDX,
    ])
      if (rng.chance(0.5)) f |= bit(b);
    if (rng.chance(0.03)) f |= bit(BigInt(rng.int(64)));
    this.features = f;
    this.dev.activate({
      mem: this.g.mem,
      queues: [rxq, txq],
      interrupt: { queue: () => {}, config: () => {} },
      features: f,
    });
    this.rec.state(
      this.dev.needsReset ? "refused features" : `activated${f & bit(VIRTIO_NET_F_MRG_RXBUF) ? " mergeable" : ""}`,
    );
  }

  add(ring: "rx" | "tx", readable: Buffer[], writable: number[]): number | undefined {
    const d = ring === "rx" ? this.rx : this.tx;
    const n = readable.length + writable.length;
    const bytes = [...readable.map((b) => b.length), ...writable].reduce((a, b) => a + b + 16, 0);
    if (this.outstanding[ring] + n > d.size || this.bytes[ring] + bytes > REGION - 0x10000) return undefined;
    this.bytes[ring] += bytes;
    const head = d.add(readable, writable);
    this.outstanding[ring] += n;
    this.descs[ring].set(head, n);
    return head;
  }

  used(ring: "rx" | "tx"): { head: number; len: number }[] {
    const out = (ring === "rx" ? this.rx : this.tx).takeUsed();
    for (const u of out) {
      this.outstanding[ring] -= this.descs[ring].get(u.head) ?? 0;
      this.descs[ring].delete(u.head);
    }
    return out;
  }
}

function kick(w: World, q: number): Promise<void> {
  return new Promise((r) =>
    setImmediate(() => {
      w.dev.notify(q);
      r();
    }),
  );
}

function postTx(w: World, n: number): void {
  const { rng } = w;
  for (let i = 0; i < n; i++) {
    const len = rng.pick([
      0,
      5,
      NET_HDR_SIZE + ETH_HLEN - 1,
      NET_HDR_SIZE + 60,
      NET_HDR_SIZE + 1514,
      NET_HDR_SIZE + rng.int(MAX_FRAME_LEN + 100),
    ]);
    const frame = tapFrame(rng, len);
    const parts: Buffer[] = [];
    for (let off = 0; off < len; ) {
      const k = rng.chance(0.7) ? len - off : rng.range(1, len - off);
      parts.push(frame.subarray(off, off + k));
      off += k;
    }
    if (parts.length === 0) parts.push(frame); // a chain has at least one descriptor, maybe empty
    const writable = rng.chance(0.05) ? [16] : [];
    if (w.add("tx", parts, writable) === undefined) return;
    const valid = writable.length === 0 && len >= NET_HDR_SIZE + ETH_HLEN && len <= NET_HDR_SIZE + MAX_FRAME_LEN;
    w.txPosted.push(valid ? frame : undefined);
  }
}

function postRx(w: World, n: number): void {
  const { rng } = w;
  const size = rng.pick([NET_HDR_SIZE - 1, 64, 1526, 1526, 4096, 65562]);
  for (let i = 0; i < n; i++) {
    const lens = rng.chance(0.8)
      ? [size]
      : [Math.max(1, size >> 1), size - Math.max(1, size >> 1)].filter((l) => l > 0);
    const head = w.add("rx", rng.chance(0.02) ? [Buffer.alloc(4)] : [], lens);
    if (head === undefined) return;
    w.rxSize.set(head, size);
  }
}

/** Removes list entries up to and including the first that matches; false if none does. */
function takeMatching<T>(list: T[], match: (x: T) => boolean): boolean {
  const i = list.findIndex(match);
  if (i < 0) return false;
  list.splice(0, i + 1);
  return true;
}

/** Checks what the device did: tx frames reached the tap intact, rx frames reached the guest intact. */
function check(w: World): void {
  const { rec } = w;
  w.used("tx");
  // Every frame sent is a later valid tx chain, in order (those in between were dropped or refused).
  for (const f of w.tap.sent.splice(0)) {
    if (w.tainted) continue;
    if (!takeMatching(w.txPosted, (want) => want?.equals(f) === true))
      rec.violate(`tap got a ${f.length}-byte frame that is not one of the guest's tx frames, in order`);
  }
  const used = w.used("rx");
  for (let i = 0; i < used.length; ) {
    if (w.tainted) break;
    const first = w.rx.written(used[i]!.head);
    const n = w.features & bit(VIRTIO_NET_F_MRG_RXBUF) ? first.readUInt16LE(NUM_BUFFERS_OFFSET) : 1;
    if (n < 1 || i + n > used.length) {
      rec.violate(`rx frame claims ${n} buffers, ${used.length - i} used`);
      return;
    }
    const parts: Buffer[] = [];
    for (let k = 0; k < n; k++) {
      const u = used[i + k]!;
      const size = w.rxSize.get(u.head);
      if (size !== undefined && u.len > size) rec.violate(`${u.len} bytes used of a ${size}-byte rx buffer`);
      parts.push(w.rx.written(u.head).subarray(0, u.len));
    }
    i += n;
    rec.max("rxBuffersPerFrame", n);
    const got = Buffer.concat(parts);
    const expected = (want: Buffer): boolean => {
      if (want.length !== got.length) return false;
      const e = Buffer.from(want);
      e.writeUInt16LE(n, NUM_BUFFERS_OFFSET);
      if (!(w.features & bit(VIRTIO_NET_F_GUEST_CSUM))) e[0] = 0;
      return e.equals(got);
    };
    if (!takeMatching(w.delivered, expected))
      rec.violate(`the guest got a ${got.length}-byte frame that is not one of the tap's, in order`);
  }
}

async function oneCase(g: GuardedMemory, rng: Rng, rec: Recorder): Promise<void> {
  const w = new World(g, rng, rec);
  const steps = rng.range(1, 20);
  for (let s = 0; s < steps; s++) {
    const what = rng.weighted({
      tx: 5,
      txBurst: 0.5,
      rx: 4,
      tapFrames: 4,
      tapBurst: 0.5,
      tapState: 2,
      ready: 2,
      turn: 2,
      garbage: 0.2,
      reset: 0.2,
      link: 0.3,
    });
    rec.op(what);
    switch (what) {
      case "tx":
        postTx(w, rng.range(1, 6));
        await kick(w, 1);
        break;
      case "txBurst":
        for (let k = 0; k < NET_BATCH * 2; k++) {
          const f = tapFrame(rng, NET_HDR_SIZE + 60);
          if (w.add("tx", [f], []) !== undefined) w.txPosted.push(f);
        }
        await kick(w, 1);
        break;
      case "rx":
        postRx(w, rng.range(1, 16));
        await kick(w, 0);
        break;
      case "tapFrames":
      case "tapBurst": {
        const n = what === "tapBurst" ? NET_BATCH * 2 : rng.range(1, 8);
        for (let k = 0; k < n; k++) {
          const len = rng.pick([
            1,
            NET_HDR_SIZE + ETH_HLEN - 1,
            NET_HDR_SIZE + 60,
            NET_HDR_SIZE + 1514,
            NET_HDR_SIZE + rng.int(MAX_FRAME_LEN + 10),
          ]);
          const f = tapFrame(rng, len);
          w.tap.incoming.push(f);
          w.delivered.push(f);
        }
        if (w.tap.ready && w.tap.wantRead)
          await new Promise<void>((r) =>
            setImmediate(() => {
              w.tap.ready?.(true, false);
              r();
            }),
          );
        break;
      }
      case "tapState":
        w.tap.full = rng.chance(0.3);
        w.tap.refuse = rng.chance(0.1);
        break;
      case "ready":
        await new Promise<void>((r) =>
          setImmediate(() => {
            w.tap.ready?.(rng.chance(0.5), rng.chance(0.5));
            r();
          }),
        );
        break;
      case "turn":
        await new Promise((r) => setImmediate(r));
        break;
      case "garbage": {
        w.tainted = true;
        const d = rng.chance(0.5) ? w.rx : w.tx;
        if (rng.chance(0.5)) d.publish(rng.u16());
        else d.setAvailIdx(rng.u16());
        await kick(w, d === w.rx ? 0 : 1);
        break;
      }
      case "reset":
        w.dev.reset();
        w.activate();
        break;
      case "link":
        w.dev.setLinkUp(rng.chance(0.5));
        break;
    }
    rec.state(w.dev.needsReset ? "needs reset" : w.tap.full ? "tap full" : "running");
    const held = w.dev as unknown as { pendingRx?: Buffer; pendingTx?: unknown };
    rec.bounded("framesHeld", (held.pendingRx ? 1 : 0) + (held.pendingTx ? 1 : 0), 2);
    check(w);
  }
  // Idle: the guest and the tap do nothing. Work deferred to later turns finishes within a few;
  // a device still taking chains turn after turn is spinning (it would burn a core for good). A
  // slow retry (a frame waiting for buffers, every 10 ms) may show in a turn or two, not in all.
  for (let t = 0; t < 10; t++) await new Promise((r) => setImmediate(r));
  let busyTurns = 0;
  for (let t = 0; t < 10; t++) {
    const before = w.pops;
    await new Promise((r) => setImmediate(r));
    if (w.pops > before) busyTurns++;
  }
  rec.bounded("idleTurnsWithChainsTaken", busyTurns, 2);
  w.dev.reset();
  g.checkGuards(rec);
}

export const fuzzer: Fuzzer = {
  name: "net",
  run(opts: FuzzOptions): Promise<FuzzReport> {
    const g = new GuardedMemory(2 * REGION);
    return runCases("net", opts, ({ rng, rec }) => oneCase(g, rng, rec));
  },
};
