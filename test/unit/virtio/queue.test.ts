import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { GuestError } from "../../../src/virtio/errors.ts";
import { GuestMemory } from "../../../src/virtio/memory.ts";
import {
  gather,
  readChain,
  scatter,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "../../../src/virtio/queue/chain.ts";
import { Queue } from "../../../src/virtio/queue/queue.ts";
import { TestDriver } from "./driver.ts";

describe("guest memory", () => {
  it("bounds-checks every access and never crosses regions", () => {
    const m = new GuestMemory([
      { guestAddr: 0, bytes: Buffer.alloc(4096) },
      { guestAddr: 4096, bytes: Buffer.alloc(4096) },
      { guestAddr: 1 << 20, bytes: Buffer.alloc(100) },
    ]);
    assert.equal(m.size, 8292);
    m.writeU32(4092, 0xdeadbeef);
    assert.equal(m.readU32(4092), 0xdeadbeef);
    assert.throws(() => m.slice(4094, 4), GuestError, "crosses a region boundary");
    assert.throws(() => m.slice(8192, 1), GuestError);
    assert.throws(() => m.slice((1 << 20) + 99, 2), GuestError);
    assert.throws(() => m.slice(-1, 1), GuestError);
    assert.throws(() => m.slice(0, 2 ** 60), GuestError);
    assert.throws(() => m.slice(Number.MAX_SAFE_INTEGER, 1), GuestError);
    assert.equal(m.slice(4096, 0).length, 0);
    assert.equal(m.slice(8192, 0).length, 0, "empty slice at the end of a region");
    assert.ok(m.contains(0, 4096));
    assert.ok(!m.contains(0, 4097));
  });

  it("rejects overlapping regions and translates user addresses", () => {
    assert.throws(
      () =>
        new GuestMemory([
          { guestAddr: 0, bytes: Buffer.alloc(4096) },
          { guestAddr: 4095, bytes: Buffer.alloc(4096) },
        ]),
    );
    const m = new GuestMemory([{ guestAddr: 0x1000, bytes: Buffer.alloc(4096), userAddr: 0x7f0000000000n }]);
    assert.equal(m.userToGuest(0x7f0000000010n), 0x1010);
    assert.equal(m.userToGuest(0x7f0000001000n), undefined);
  });
});

describe("split virtqueue", () => {
  it("passes direct and indirect chains with readable then writable parts", () => {
    for (const indirect of [false, true]) {
      const d = new TestDriver(8);
      const q = d.queue();
      const h = d.add([Buffer.from("hello"), Buffer.from(" world")], [3, 7], { indirect });
      assert.equal(q.pending(), 1);
      const c = q.pop()!;
      assert.equal(c.head, h);
      assert.equal(c.readableLen, 11);
      assert.equal(c.writableLen, 10);
      const got = Buffer.alloc(11);
      assert.equal(gather(c.readable, got), 11);
      assert.equal(got.toString(), "hello world");
      assert.equal(scatter(c.writable, Buffer.from("0123456789")), 10);
      q.addUsed(c.head, 10);
      assert.deepEqual(d.takeUsed(), [{ head: h, len: 10 }]);
      assert.equal(d.written(h).toString(), "0123456789");
      assert.equal(q.pop(), undefined);
      assert.equal(q.broken, undefined);
    }
  });

  it("wraps the 16-bit indexes", () => {
    const d = new TestDriver(4);
    const q = new Queue(d.mem, {
      size: 4,
      descTable: d.descTable,
      availRing: d.availRing,
      usedRing: d.usedRing,
      nextAvail: 0xfffe,
    });
    d.setAvailIdx(0xfffe);
    for (let i = 0; i < 5; i++) {
      d.add([Buffer.from([i])], []);
      const c = q.pop()!;
      assert.ok(c, `chain ${i}`);
      assert.equal(c.readable[0]![0], i);
      q.addUsed(c.head, 0);
    }
    assert.equal(q.nextAvail, 3);
    assert.equal(q.broken, undefined);
  });

  const hostile: [string, (d: TestDriver) => void][] = [
    [
      "a descriptor loop",
      (d) => {
        const a = d.alloc(8);
        d.writeDesc(d.descTable, 0, a, 8, VIRTQ_DESC_F_NEXT, 1);
        d.writeDesc(d.descTable, 1, a, 8, VIRTQ_DESC_F_NEXT, 0);
        d.publish(0);
      },
    ],
    [
      "a self loop",
      (d) => {
        d.writeDesc(d.descTable, 3, d.alloc(8), 8, VIRTQ_DESC_F_NEXT, 3);
        d.publish(3);
      },
    ],
    ["a head outside the table", (d) => d.publish(d.size)],
    [
      "a next index outside the table",
      (d) => {
        d.writeDesc(d.descTable, 0, d.alloc(8), 8, VIRTQ_DESC_F_NEXT, 999);
        d.publish(0);
      },
    ],
    [
      "a buffer outside guest memory",
      (d) => {
        d.writeDesc(d.descTable, 0, d.mem.size - 4, 8, 0, 0);
        d.publish(0);
      },
    ],
    [
      "a 64-bit address beyond 2^53",
      (d) => {
        d.writeDesc(d.descTable, 0, 0xffff_ffff_ffff_f000n, 16, 0, 0);
        d.publish(0);
      },
    ],
    [
      "a huge length",
      (d) => {
        d.writeDesc(d.descTable, 0, 0, 0xffffffff, VIRTQ_DESC_F_WRITE, 0);
        d.publish(0);
      },
    ],
    [
      "a readable buffer after a writable one",
      (d) => {
        const a = d.alloc(8);
        d.writeDesc(d.descTable, 0, a, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
        d.writeDesc(d.descTable, 1, a, 8, 0, 0);
        d.publish(0);
      },
    ],
    [
      "nested indirect tables",
      (d) => {
        const t = d.alloc(32);
        d.writeDesc(t, 0, d.alloc(16), 16, VIRTQ_DESC_F_INDIRECT, 0);
        d.writeDesc(d.descTable, 0, t, 32, VIRTQ_DESC_F_INDIRECT, 0);
        d.publish(0);
      },
    ],
    [
      "an indirect table length not a multiple of 16",
      (d) => {
        d.writeDesc(d.descTable, 0, d.alloc(24), 24, VIRTQ_DESC_F_INDIRECT, 0);
        d.publish(0);
      },
    ],
    [
      "an empty indirect table",
      (d) => {
        d.writeDesc(d.descTable, 0, d.alloc(16), 0, VIRTQ_DESC_F_INDIRECT, 0);
        d.publish(0);
      },
    ],
    [
      "an indirect table outside memory",
      (d) => {
        d.writeDesc(d.descTable, 0, d.mem.size - 16, 32, VIRTQ_DESC_F_INDIRECT, 0);
        d.publish(0);
      },
    ],
    [
      "an indirect table larger than the queue",
      (d) => {
        const n = d.size * 2;
        const t = d.alloc(16 * n);
        for (let i = 0; i < n; i++) d.writeDesc(t, i, d.alloc(1), 1, i < n - 1 ? VIRTQ_DESC_F_NEXT : 0, i + 1);
        d.writeDesc(d.descTable, 0, t, 16 * n, VIRTQ_DESC_F_INDIRECT, 0);
        d.publish(0);
      },
    ],
    [
      "a loop inside an indirect table",
      (d) => {
        const t = d.alloc(32);
        d.writeDesc(t, 0, d.alloc(1), 1, VIRTQ_DESC_F_NEXT, 1);
        d.writeDesc(t, 1, d.alloc(1), 1, VIRTQ_DESC_F_NEXT, 0);
        d.writeDesc(d.descTable, 0, t, 32, VIRTQ_DESC_F_INDIRECT, 0);
        d.publish(0);
      },
    ],
    [
      "INDIRECT together with NEXT",
      (d) => {
        d.writeDesc(d.descTable, 0, d.alloc(16), 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
        d.publish(0);
      },
    ],
    ["an available index far ahead", (d) => d.setAvailIdx(d.size + 1)],
  ];
  for (const [what, setup] of hostile) {
    it(`marks the queue broken on ${what}, without throwing`, () => {
      const d = new TestDriver(8, 1 << 16);
      const q = d.queue();
      const reasons: string[] = [];
      q.onBroken = (r) => reasons.push(r);
      setup(d);
      assert.equal(q.pop(), undefined);
      assert.ok(q.broken, "queue is broken");
      assert.equal(reasons.length, 1);
      // A broken queue stays quiet: nothing more is popped or written.
      d.add([Buffer.from("x")], []);
      assert.equal(q.pop(), undefined);
      q.addUsed(0, 0);
      assert.deepEqual(d.takeUsed(), []);
    });
  }

  it("refuses ring areas outside memory, misaligned or of a bad size", () => {
    const m = GuestMemory.alloc(65536);
    for (const cfg of [
      { size: 256, descTable: 65536 - 16, availRing: 0, usedRing: 4096 },
      { size: 8, descTable: 8, availRing: 4096, usedRing: 8192 },
      { size: 12, descTable: 0, availRing: 4096, usedRing: 8192 },
      { size: 0, descTable: 0, availRing: 4096, usedRing: 8192 },
      { size: 8, descTable: 0, availRing: 4096, usedRing: 65534 },
    ]) {
      assert.ok(new Queue(m, cfg).broken, JSON.stringify(cfg));
    }
    assert.ok(new Queue(m, { size: 512, descTable: 0, availRing: 16384, usedRing: 20480 }, 256).broken);
  });

  it("accepts zero-length buffers", () => {
    const d = new TestDriver(8);
    const q = d.queue();
    d.add([Buffer.alloc(0)], [0]);
    const c = q.pop()!;
    assert.equal(c.readableLen + c.writableLen, 0);
  });

  it("suppresses interrupts with EVENT_IDX (used_event) and without (NO_INTERRUPT)", () => {
    const d = new TestDriver(8);
    const q = d.queue();
    q.eventIdx = true;
    d.setUsedEvent(2); // interrupt me once used idx passes 2 (i.e. reaches 3)
    const need: boolean[] = [];
    for (let i = 0; i < 4; i++) {
      d.add([Buffer.from([i])], []);
      q.addUsed(q.pop()!.head, 0);
      need.push(q.needsNotification());
    }
    assert.deepEqual(need, [true, false, true, false]);

    const d2 = new TestDriver(8);
    const q2 = d2.queue();
    d2.setAvailFlags(1);
    d2.add([Buffer.from([1])], []);
    q2.addUsed(q2.pop()!.head, 0);
    assert.equal(q2.needsNotification(), false);
    d2.setAvailFlags(0);
    assert.equal(q2.needsNotification(), true);
  });

  it("suppresses kicks with avail_event / NO_NOTIFY and reports late arrivals", () => {
    const d = new TestDriver(8);
    const q = d.queue();
    q.eventIdx = true;
    d.add([Buffer.from([1])], []);
    q.pop();
    assert.equal(q.enableNotification(), false);
    assert.equal(d.availEvent(), 1);
    d.add([Buffer.from([2])], []);
    assert.equal(q.enableNotification(), true, "a buffer arrived before the device re-armed");

    const d2 = new TestDriver(8);
    const q2 = d2.queue();
    q2.disableNotification();
    assert.equal(d2.usedFlags() & 1, 1);
    assert.equal(q2.enableNotification(), false);
    assert.equal(d2.usedFlags() & 1, 0);
  });

  it("readChain alone refuses indirect descriptors when not negotiated", () => {
    const d = new TestDriver(8);
    d.writeDesc(d.descTable, 0, d.alloc(16), 16, VIRTQ_DESC_F_INDIRECT, 0);
    assert.throws(() => readChain(d.mem, d.descTable, 8, 0, false), GuestError);
  });
});
