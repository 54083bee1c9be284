// virtio-blk requests from a hostile driver, driven through the device's real ring: requests of
// every type with any sector and length, data split over descriptors or in an indirect table, the
// wrong direction, addresses at and past the end of RAM, descriptors overwritten with garbage,
// heads made available again while in flight, the available index thrown forward, kick storms,
// resets in the middle of I/O, config-space reads and writes.
// Invariants on every case: no uncaught error; no write outside guest RAM (guards); requests in
// flight never above the device's bound, the sum of its ring sizes (blkInFlightPerRingEntry ≤ 1);
// at most BLK_BATCH chains taken in one synchronous turn (counted around each notify, including
// the device's own follow-up turns); the drain at the end finishes.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { BLK_BATCH, BlkDevice } from "../../src/virtio/blk/device.ts";
import {
  bit,
  VIRTIO_F_RING_EVENT_IDX,
  VIRTIO_F_RING_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
} from "../../src/virtio/device.ts";
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../../src/virtio/queue/chain.ts";
import { TestDriver } from "../unit/virtio/driver.ts";
import { type CaseContext, type Fuzzer, GuardedMemory, type Rng, runCases } from "./fuzz.ts";

const RAM = 256 * 1024;
const DISK = 64 * 1024;
/** How long the closing drain of one case may take (its I/O is a few small page-cache reads). */
const DRAIN_MS = 5000;
const TYPES = [0, 1, 4, 8, 11, 13, 2, 99, 0xffffffff];
const silent = pino({ level: "silent" });
const turn = () => new Promise<void>((r) => setImmediate(r));

/**
 * The case's random source and how hostile it is: half the cases build every request right (they
 * reach deep states: many in flight, full batches), the others break a share of what they build.
 */
class Gen {
  readonly evil: number;
  constructor(readonly rng: Rng) {
    this.evil = rng.chance(0.5) ? 0 : rng.pick([0.01, 0.05, 0.2]);
  }
  /** True with the case's hostility. */
  bad(): boolean {
    return this.evil > 0 && this.rng.chance(this.evil);
  }
  /** A guest buffer address: inside RAM, or (hostile) at its very end or past it. */
  addr(len: number): number {
    const { rng } = this;
    if (!this.bad()) return rng.int(Math.max(1, RAM - len));
    if (rng.chance(0.6)) return RAM - rng.int(Math.min(len, 16) + 1);
    return rng.pick([RAM, RAM + 4096, 2 ** 32, 2 ** 53]);
  }
  /** A data length: sector multiples, or (hostile) odd ones and zero. */
  dataLen(): number {
    const { rng } = this;
    if (!this.bad()) return 512 * rng.range(1, 8);
    return rng.chance(0.5) ? rng.int(600) : rng.pick([0, 1, 511, 513, 4096, 8192]);
  }
}

interface Part {
  addr: number;
  len: number;
  write: boolean;
}

/** A request's descriptors: header, data, status, with the direction right or (sometimes) wrong. */
function requestParts(g: Gen, d: TestDriver): Part[] {
  const { rng } = g;
  const type = g.bad() ? rng.pick(TYPES) : rng.pick(TYPES.slice(0, 6));
  const h = g.addr(16);
  if (d.mem.contains(h, 16)) {
    const hdr = Buffer.alloc(16);
    hdr.writeUInt32LE(type, 0);
    const sector = rng.chance(0.8) ? rng.int(DISK / 512 + 4) : Number(rng.u64() & 0x1fffffffffffffn);
    hdr.writeBigUInt64LE(BigInt(sector), 8);
    d.mem.write(h, hdr);
  }
  const parts: Part[] = [{ addr: h, len: g.bad() ? rng.int(32) : 16, write: false }];
  const dataWrite = type === 0 || type === 8;
  const flip = g.bad();
  if (type === 11 || type === 13) {
    const n = g.bad() ? rng.range(0, 3) : 1;
    const segs = g.addr(16 * n);
    if (d.mem.contains(segs, 16 * n)) {
      for (let i = 0; i < n; i++) {
        d.mem.writeU64(segs + 16 * i, BigInt(rng.int(DISK / 512 + 8)));
        d.mem.writeU32(segs + 16 * i + 8, rng.edgy());
        d.mem.writeU32(segs + 16 * i + 12, g.bad() ? rng.u32() : rng.int(2));
      }
    }
    parts.push({ addr: segs, len: g.bad() ? rng.int(40) : 16 * n, write: flip });
  } else if (type !== 4 || g.bad()) {
    for (let i = type === 8 || g.bad() ? rng.range(0, 3) : rng.range(1, 3); i > 0; i--) {
      const len = type === 8 && !g.bad() ? 20 : g.dataLen();
      parts.push({ addr: g.addr(len), len, write: dataWrite !== flip });
    }
  }
  if (!g.bad()) parts.push({ addr: g.addr(1), len: 1, write: true });
  else if (rng.chance(0.5)) parts.push({ addr: g.addr(4), len: rng.int(4), write: rng.chance(0.5) });
  return parts;
}

/** Writes `parts` as a chain (direct or through an indirect table) and returns its head. */
function place(g: Gen, d: TestDriver, parts: Part[]): number {
  const { rng } = g;
  const flags = (p: Part, i: number) =>
    (p.write ? VIRTQ_DESC_F_WRITE : 0) | (i < parts.length - 1 ? VIRTQ_DESC_F_NEXT : 0);
  if (parts.length > 0 && rng.chance(0.25)) {
    const table = g.addr(16 * parts.length) & ~15;
    if (d.mem.contains(table, 16 * parts.length)) {
      for (const [i, p] of parts.entries()) d.writeDesc(table, i, p.addr, p.len, flags(p, i), i + 1);
    }
    const head = d.takeDesc();
    d.writeDesc(d.descTable, head, table, g.bad() ? rng.edgy(1 << 16) : 16 * parts.length, VIRTQ_DESC_F_INDIRECT, 0);
    return head;
  }
  const idx = parts.map(() => d.takeDesc());
  for (const [i, p] of parts.entries()) d.writeDesc(d.descTable, idx[i]!, p.addr, p.len, flags(p, i), idx[i + 1] ?? 0);
  return idx[0] ?? d.takeDesc();
}

async function oneCase({ rng, rec }: CaseContext, path: string): Promise<void> {
  const g = new Gen(rng);
  const maxSize = rng.pick([1, 2, 4, 8, 16, 64, 256]);
  const numQueues = rng.chance(0.8) ? 1 : 2;
  const ram = new GuardedMemory(RAM);
  const dev = await BlkDevice.create({
    path,
    readOnly: rng.chance(0.2),
    queueSize: maxSize,
    numQueues,
    logger: silent,
  });
  const bound = maxSize * numQueues;
  // Counted around every notify, the device's own next-turn calls included (they go through the
  // instance property too): chains taken in one synchronous turn, requests in flight after it.
  const notify = dev.notify.bind(dev);
  dev.notify = (i: number) => {
    const before = dev.metrics.inFlight;
    notify(i);
    rec.bounded("blkChainsPerTurn", dev.metrics.inFlight - before, BLK_BATCH);
    // The bound differs per case (ring sizes), so the checked quantity is the share of it in use.
    rec.bounded("blkInFlightPerRingEntry", dev.metrics.inFlight / bound, 1);
  };
  let drivers: TestDriver[] = [];
  const activate = () => {
    const size = g.bad() ? rng.pick([maxSize * 2, 3, 0]) : maxSize;
    drivers = Array.from(
      { length: numQueues },
      (_, q) => new TestDriver(Math.max(1, size), 0, ram.mem, 0x1000 * q * 8),
    );
    const offered =
      dev.features & (bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_RING_EVENT_IDX) | bit(VIRTIO_F_RING_INDIRECT_DESC));
    dev.activate({
      mem: ram.mem,
      queues: drivers.map((d) => d.queue(maxSize)),
      interrupt: { queue: () => rec.op("irq"), config: () => rec.op("config-irq") },
      features: g.bad() ? rng.u64() & 0xffffffffffn : offered,
    });
  };
  try {
    activate();
    for (let n = rng.range(1, 30); n > 0; n--) {
      const q = rng.int(numQueues);
      const d = drivers[q]!;
      const op = g.evil
        ? rng.weighted({ request: 10, kick: 6, turn: 3, repost: 2, garbage: 1, jump: 1, storm: 1, reset: 1, config: 1 })
        : rng.weighted({ request: 10, burst: 2, kick: 6, turn: 3, storm: 1, reset: 1, config: 1 });
      rec.op(op);
      switch (op) {
        case "request":
          d.publish(place(g, d, requestParts(g, d)));
          break;
        case "burst": // a full ring of requests before one kick
          for (let k = Math.floor(d.size / 3); k > 0; k--) d.publish(place(g, d, requestParts(g, d)));
          dev.notify(q);
          break;
        case "kick":
          dev.notify(q);
          break;
        case "turn":
          await turn();
          break;
        case "repost": // a head again, in flight or not, several times
          for (let k = rng.range(1, 2 * d.size); k > 0; k--) d.publish(rng.chance(0.8) ? 0 : rng.int(d.size + 2));
          break;
        case "garbage":
          d.writeDesc(d.descTable, rng.int(d.size), rng.u64() & 0xffffffffffn, rng.edgy(), rng.u16(), rng.u16());
          break;
        case "jump":
          d.setAvailIdx(rng.u16());
          break;
        case "storm":
          for (let k = rng.range(2, 50); k > 0; k--) dev.notify(rng.int(numQueues + 1));
          break;
        case "reset":
          dev.reset();
          activate();
          break;
        case "config":
          if (rng.chance(0.5)) dev.readConfig(rng.edgy(), rng.edgy(256) - 8);
          else dev.writeConfig(rng.edgy(), rng.bytes(rng.int(16)));
          break;
      }
      rec.state(dev.needsReset ? "needs-reset" : dev.metrics.inFlight > 0 ? "in-flight" : "idle");
    }
    for (let k = rng.int(4); k > 0; k--) await turn();
  } finally {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<"late">((r) => {
      timer = setTimeout(() => r("late"), DRAIN_MS);
    });
    if ((await Promise.race([dev.close().then(() => "done" as const), late])) === "late") {
      rec.violate(`the drain did not end in ${DRAIN_MS} ms (${dev.metrics.inFlight} in flight)`);
    }
    clearTimeout(timer);
    ram.checkGuards(rec);
    rec.max("blkMaxInFlight", dev.metrics.maxInFlight);
  }
}

export const fuzzer: Fuzzer = {
  name: "blk",
  async run(opts) {
    const dir = mkdtempSync(join(tmpdir(), "cove-fuzz-blk-"));
    const path = join(dir, "disk.img");
    const content = Buffer.alloc(DISK);
    for (let i = 0; i < DISK; i++) content[i] = (i * 131) & 0xff;
    try {
      return await runCases("blk", opts, (ctx) => {
        writeFileSync(path, content); // every case starts from the same disk, so a seed replays
        return oneCase(ctx, path);
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
