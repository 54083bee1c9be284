// virtio-blk against a hostile driver: chains re-posted while in flight, a ring kept full, resets
// in a loop under slow I/O, and guest RAM torn down while reads are still on the thread pool.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { pino } from "pino";
import { LOG_BURST } from "../../../src/common/rate-limited-log.ts";
import { mapAnonymous, unmap } from "../../../src/native/kvm.ts";
import { BLK_BATCH, BlkDevice } from "../../../src/virtio/blk/device.ts";
import { bit, VIRTIO_F_VERSION_1 } from "../../../src/virtio/device.ts";
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../../../src/virtio/queue/chain.ts";
import type { Vm } from "../../../src/vmm/kvm.ts";
import { MiB } from "../../../src/vmm/layout.ts";
import { allocateGuestRam } from "../../../src/vmm/memory.ts";
import { hdr, Irq } from "./blk-helpers.ts";
import { TestDriver } from "./driver.ts";

const dir = mkdtempSync(join(tmpdir(), "cove-blk-hostile-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Reads over 256 KiB go to the thread pool (backing.ts), so they stay in flight for a while. */
const POOL_READ = 512 * 1024;

function disk(bytes: number, fill = 0xab): string {
  const p = join(dir, `disk-${Math.random().toString(36).slice(2)}.img`);
  writeFileSync(p, Buffer.alloc(bytes, fill));
  return p;
}

/**
 * Lays out `n` read chains of `dataLen` bytes by hand: chain i uses descriptors 3i..3i+2 (header,
 * data, status) and always the same buffers, so a driver can post it again once it came back.
 * Returns the heads; nothing is published.
 */
function readChains(d: TestDriver, n: number, dataLen: number, sharedData?: number): number[] {
  const heads: number[] = [];
  const data = sharedData ?? -1;
  for (let i = 0; i < n; i++) {
    const h = d.alloc(16);
    d.mem.write(h, hdr(0, 0));
    const buf = data >= 0 ? data : d.alloc(dataLen);
    const st = d.alloc(1);
    d.writeDesc(d.descTable, 3 * i, h, 16, VIRTQ_DESC_F_NEXT, 3 * i + 1);
    d.writeDesc(d.descTable, 3 * i + 1, buf, dataLen, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 3 * i + 2);
    d.writeDesc(d.descTable, 3 * i + 2, st, 1, VIRTQ_DESC_F_WRITE, 0);
    heads.push(3 * i);
  }
  return heads;
}

async function device(path: string, queueSize = 1024): Promise<BlkDevice> {
  return BlkDevice.create({ path, queueSize, logger: silent });
}

function activate(dev: BlkDevice, d: TestDriver, irq = new Irq()): Irq {
  dev.activate({
    mem: d.mem,
    queues: [d.queue(dev.queueMaxSizes[0])],
    interrupt: irq,
    features: bit(VIRTIO_F_VERSION_1),
  });
  return irq;
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

const silent = pino({ level: "silent" });

/** A drain that never ends fails the test instead of hanging the run. */
const T = { timeout: 20_000 };

describe("virtio-blk against a hostile driver", () => {
  it(
    "refuses a chain made available again while its request is in flight: never more in flight than the ring has entries",
    T,
    async () => {
      const dev = await device(disk(4 * MiB), 16);
      const d = new TestDriver(16, 4 * MiB);
      activate(dev, d);
      const [head] = readChains(d, 1, POOL_READ);
      // The same head, again and again, kick after kick, before the first read returns.
      for (let k = 0; k < 50; k++) {
        for (let i = 0; i < 16; i++) d.publish(head!);
        dev.notify(0);
      }
      assert.match(dev.needsReset ?? "", /head 0 made available while in flight/);
      assert.ok(dev.metrics.maxInFlight <= 16, `${dev.metrics.maxInFlight} requests in flight on a 16-entry ring`);
      await dev.close(); // the drain ends
      assert.equal(dev.metrics.inFlight, 0);
    },
  );

  it(`takes at most ${BLK_BATCH} requests per event-loop turn and the rest on the next turns`, T, async () => {
    const dev = await device(disk(MiB));
    const d = new TestDriver(1024, 4 * MiB);
    activate(dev, d);
    // GET_ID needs no disk: 320 requests (3 descriptors each) the device could answer in one loop.
    for (let i = 0; i < 320; i++) d.add([hdr(8, 0)], [20, 1]);
    for (let k = 0; k < 100; k++) dev.notify(0); // a kick storm in one turn
    assert.ok(dev.metrics.inFlight <= BLK_BATCH, `${dev.metrics.inFlight} requests taken in one turn`);
    let used = 0;
    await until(
      () => {
        used += d.takeUsed().length;
        return used === 320;
      },
      5000,
      "all 320 requests",
    );
    assert.equal(dev.metrics.maxBatch, BLK_BATCH);
    assert.ok(dev.metrics.deferredTurns >= 320 / BLK_BATCH - 1);
    await dev.close();
  });

  it("bounds requests in flight across resets while the disk is slow", T, async () => {
    const dev = await device(disk(4 * MiB), 16);
    // A guest that resets and re-activates in a loop, each time posting reads.
    for (let r = 0; r < 10; r++) {
      const d = new TestDriver(16, 4 * MiB);
      activate(dev, d);
      for (const h of readChains(d, 5, POOL_READ)) d.publish(h);
      dev.notify(0);
      dev.reset();
    }
    assert.ok(dev.metrics.maxInFlight <= 16, `${dev.metrics.maxInFlight} in flight for one 16-entry queue`);
    await dev.close();
  });

  it("drains although the driver keeps its queue busy", T, async () => {
    const dev = await device(disk(4 * MiB));
    const d = new TestDriver(64, 8 * MiB);
    const irq = activate(dev, d);
    const heads = readChains(d, 8, POOL_READ);
    // The driver posts each chain again as soon as it comes back: something is always in flight.
    irq.onQueue = () => {
      for (const u of d.takeUsed()) d.publish(u.head);
      dev.notify(0);
    };
    for (const h of heads) d.publish(h);
    dev.notify(0);
    const drained = dev.drain().then(() => "drained");
    const late = new Promise((r) => setTimeout(() => r("still busy after 3 s"), 3000).unref());
    const got = await Promise.race([drained, late]);
    if (got !== "drained") irq.onQueue = undefined;
    assert.equal(got, "drained");
    assert.equal(dev.metrics.inFlight, 0);
    // Afterwards the device takes what the driver posted meanwhile.
    const done = dev.metrics.completed;
    await until(() => dev.metrics.completed > done, 3000, "requests after the drain");
    irq.onQueue = undefined;
    await dev.close();
  });

  it("a guest that breaks the queue, resets and breaks it again does not flood the log", T, async () => {
    const lines: string[] = [];
    const logger = pino({ level: "debug" }, { write: (l: string) => void lines.push(l) });
    const dev = await BlkDevice.create({ path: disk(MiB), queueSize: 16, logger });
    for (let i = 0; i < 1000; i++) {
      const d = new TestDriver(16, MiB);
      activate(dev, d);
      d.add([Buffer.alloc(8)], [1]); // a short header
      dev.notify(0);
      dev.reset();
    }
    assert.ok(lines.length <= LOG_BURST, `${lines.length} lines for 1,000 broken activations`);
    await dev.close();
    assert.equal(lines.length, LOG_BURST + 1, "and one count line");
  });

  it("answers any config window, for any queue size (fuzzer seeds 79 and 1184)", T, async () => {
    const dev = await BlkDevice.create({ path: disk(MiB), queueSize: 1, logger: silent });
    assert.equal(dev.readConfig(12, 4).readUInt32LE(0), 1, "seg_max of a 1-entry queue");
    assert.equal(dev.readConfig(4, -8).length, 0, "a window ending before offset 0");
    assert.equal(dev.readConfig(60, 8).subarray(4).readUInt32LE(0), 0, "past the end reads zeros");
    await dev.close();
  });

  it("keeps guest RAM mapped until reads on the thread pool are back: a new mapping is never written", T, async () => {
    const fakeVm = { setMemoryRegion() {} } as unknown as Vm;
    const ram = allocateGuestRam(fakeVm, 64 * MiB);
    const region = ram.mem.regions[0]!;
    const dev = await device(disk(MiB, 0xab));
    const d = new TestDriver(256, 0, ram.mem);
    activate(dev, d);
    // Every read lands in the same MiB of guest RAM, 32 MiB in.
    for (const h of readChains(d, 80, MiB, 32 * MiB)) d.publish(h);
    dev.notify(0);
    assert.ok(dev.metrics.inFlight > 0, "reads are on the thread pool");
    // What Machine.close does: reset the devices, then release guest RAM.
    dev.reset();
    const released = ram.release();
    const mappedMeanwhile = region.bytes.length;
    // The process maps something new of the same size: the kernel reuses a freed range first.
    const next = mapAnonymous(64 * MiB);
    try {
      await dev.drain();
      const view = Buffer.from(next);
      assert.ok(
        view.every((b) => b === 0),
        "guest disk bytes were written into a later mapping",
      );
      assert.equal(mappedMeanwhile, 64 * MiB, "guest RAM was unmapped while reads held it");
      await released;
      assert.equal(region.bytes.length, 0, "guest RAM unmapped once the reads are back");
    } finally {
      unmap(next);
      await dev.close();
    }
  });
});
