// The virtio-mmio transport's register protocol, legacy and MSI interrupts, doorbells, and every
// hostile-guest case we know of (docs/security.md): each is logged, marks the device failed (or is ignored),
// and never throws. No KVM: interrupts and notifiers are test doubles.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { pino } from "pino";
import { BlkDevice } from "../../../src/virtio/blk/device.ts";
import { VIRTIO_STATUS_DEVICE_NEEDS_RESET } from "../../../src/virtio/device.ts";
import {
  DRAGONBALL_VENDOR_ID,
  REG,
  STATUS_ACKNOWLEDGE,
  STATUS_DRIVER,
  STATUS_FEATURES_OK,
} from "../../../src/vmm/virtio-mmio.ts";
import { type FakeDevice, rig } from "./mmio-rig.ts";

const log = pino({ level: "silent" });

describe("virtio-mmio transport", () => {
  test("identity registers, Dragonball vendor id with its feature byte, features by select", () => {
    const { r32, w32, device } = rig();
    assert.equal(r32(REG.MAGIC), 0x74726976);
    assert.equal(r32(REG.VERSION), 2);
    assert.equal(r32(REG.DEVICE_ID), 42);
    assert.equal(r32(REG.VENDOR_ID), (DRAGONBALL_VENDOR_ID | 0x7) >>> 0);
    w32(REG.DEVICE_FEATURES_SEL, 0);
    assert.equal(r32(REG.DEVICE_FEATURES), 0x5);
    w32(REG.DEVICE_FEATURES_SEL, 1);
    assert.equal(r32(REG.DEVICE_FEATURES), 1, "VERSION_1 is bit 32");
    w32(REG.QUEUE_SEL, 1);
    assert.equal(r32(REG.QUEUE_NUM_MAX), device.queueMaxSizes[1]);
    w32(REG.QUEUE_SEL, 7);
    assert.equal(r32(REG.QUEUE_NUM_MAX), 0, "no such queue");
    assert.equal(r32(REG.QUEUE_NOTIFY), 0x41000, "doorbells at +0x1000, scale 4");
    const plain = rig({ msi: false, doorbells: false });
    assert.equal(plain.r32(REG.VENDOR_ID), (DRAGONBALL_VENDOR_ID | 0x1) >>> 0);
    assert.equal(plain.r32(REG.QUEUE_NOTIFY), 0);
    assert.equal(plain.r16(REG.MSI_CSR), 0);
  });

  test("config space reads and writes reach the device", () => {
    const { t, r32, device } = rig();
    assert.equal(r32(0x100), 0x04030201);
    const b = new Uint8Array([9]);
    t.write(0x102, b);
    assert.equal((device as FakeDevice).config[2], 9);
  });

  test("legacy: handshake activates the device with its queues; notify, interrupt, ACK", () => {
    const { r32, w32, negotiate, driverOk, device, irq, notifiers, t } = rig({ msi: false });
    negotiate([0]);
    assert.equal(r32(REG.STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    driverOk();
    const fake = device as FakeDevice;
    assert.ok(fake.ctx, "activated");
    assert.equal(fake.ctx.queues[0]?.size, 16);
    assert.equal(fake.ctx.queues[0]?.descTable, 0x10000);
    assert.equal(fake.ctx.queues[1], undefined, "queue 1 was not set up");
    assert.equal(fake.ctx.features, device.features);
    assert.deepEqual(notifiers.attached, [0]);
    w32(REG.QUEUE_NOTIFY, 0);
    t.write(0x1000, new Uint8Array(4)); // doorbell of queue 0
    assert.deepEqual(fake.notified, [0, 0]);
    fake.ctx.interrupt.config();
    assert.equal(irq.legacyCount, 1);
    assert.equal(r32(REG.INTERRUPT_STATUS) & 2, 2, "CONFIG bit set");
    w32(REG.INTERRUPT_ACK, 2);
    assert.equal(r32(REG.INTERRUPT_STATUS) & 2, 0, "ACK clears it");
    fake.ctx.interrupt.queue(0);
    assert.equal(irq.legacyCount, 2);
    assert.equal(r32(REG.INTERRUPT_STATUS) & 1, 1);
    assert.equal(t.failed, undefined);
  });

  test("feature negotiation: without VERSION_1 FEATURES_OK does not stick", () => {
    const { r32, negotiate } = rig();
    negotiate([0], 0x5n);
    assert.equal(r32(REG.STATUS) & STATUS_FEATURES_OK, 0);
  });

  test("MSI: enable before DRIVER_OK, program vectors, deliver per queue, mask and unmask", () => {
    const { r16, w16, w32, r32, negotiate, driverOk, device, irq } = rig();
    assert.equal(r16(REG.MSI_CSR) & 0x8000, 0x8000, "MSI supported");
    negotiate([0, 1]);
    for (const v of [0, 1, 2]) {
      w32(REG.MSI_ADDRESS_LOW, 0xfee00000);
      w32(REG.MSI_ADDRESS_HIGH, 0);
      w32(REG.MSI_DATA, 0x40 + v);
      w16(REG.MSI_COMMAND, (1 << 12) | v);
    }
    w16(REG.MSI_CSR, 0x8000);
    driverOk();
    assert.deepEqual(irq.routes.get(2), [0xfee00000, 0, 0x42]);
    assert.deepEqual(irq.enabled, [true]);
    const fake = device as FakeDevice;
    fake.ctx?.interrupt.queue(1);
    fake.ctx?.interrupt.config();
    assert.deepEqual(irq.signals, [2, 0], "queue 1 → vector 2, config → vector 0");
    assert.equal(irq.legacyCount, 0);
    assert.equal(r32(REG.INTERRUPT_STATUS), 0, "no InterruptStatus with MSI");
    w16(REG.MSI_COMMAND, (2 << 12) | 1); // mask vector 1
    fake.ctx?.interrupt.queue(0);
    assert.deepEqual(irq.signals, [2, 0], "masked: held back");
    w16(REG.MSI_COMMAND, (3 << 12) | 1); // unmask: the pending one is delivered
    assert.deepEqual(irq.signals, [2, 0, 1]);
  });

  test("MSI UPDATE beyond the vectors is ignored, not fatal", () => {
    const { w16, negotiate, t } = rig();
    negotiate([0]);
    w16(REG.MSI_COMMAND, (1 << 12) | 200);
    assert.equal(t.failed, undefined);
    assert.equal(t.stats.rejected, 1);
  });

  describe("hostile guest", () => {
    test("writes to unknown registers and odd widths are ignored; the device keeps working", () => {
      const { w32, t, negotiate, driverOk, device } = rig();
      negotiate([0]);
      driverOk();
      w32(0x0d0, 0xdeadbeef);
      w32(0x028, 1);
      t.write(REG.STATUS, new Uint8Array(1));
      t.read(REG.MAGIC, new Uint8Array(3));
      assert.equal(t.failed, undefined);
      assert.equal(t.stats.rejected, 4);
      w32(REG.QUEUE_NOTIFY, 0);
      assert.deepEqual((device as FakeDevice).notified, [0]);
    });

    test("queue setup while running fails the device: NEEDS_RESET, config interrupt, device reset", () => {
      const { w32, r32, t, negotiate, driverOk, irq, device, notifiers } = rig({ msi: false });
      negotiate([0]);
      driverOk();
      w32(REG.QUEUE_SEL, 0);
      w32(REG.QUEUE_DESC_LOW, 0x50000);
      assert.match(t.failed ?? "", /reconfigured while running/);
      assert.equal(r32(REG.STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET, VIRTIO_STATUS_DEVICE_NEEDS_RESET);
      assert.equal(irq.legacyCount, 1, "config-change interrupt");
      assert.equal((device as FakeDevice).resets, 2, "reset at negotiate + on failure");
      assert.equal(notifiers.attached.length, 0, "kicks detached");
      w32(REG.QUEUE_NOTIFY, 0);
      assert.deepEqual((device as FakeDevice).notified, [], "a failed device gets no notifies");
    });

    test("a reset brings a failed device back", () => {
      const { w32, t, negotiate, driverOk, device } = rig();
      negotiate([0]);
      driverOk();
      w32(REG.QUEUE_SEL, 0);
      w32(REG.QUEUE_NUM, 8);
      assert.ok(t.failed);
      negotiate([0]);
      driverOk();
      assert.equal(t.failed, undefined);
      assert.ok((device as FakeDevice).ctx);
    });

    test("rings outside guest memory fail the device at QueueReady", () => {
      const { w32, t, negotiate } = rig();
      negotiate([]);
      w32(REG.QUEUE_SEL, 0);
      w32(REG.QUEUE_NUM, 16);
      w32(REG.QUEUE_DESC_LOW, 0);
      w32(REG.QUEUE_DESC_HIGH, 0x10); // 64 GiB
      w32(REG.QUEUE_READY, 1);
      assert.match(t.failed ?? "", /outside guest memory/);
    });

    test("a queue size that is not a power of two fails the device", () => {
      const { w32, t, negotiate } = rig();
      negotiate([]);
      w32(REG.QUEUE_SEL, 0);
      w32(REG.QUEUE_NUM, 12);
      w32(REG.QUEUE_READY, 1);
      assert.match(t.failed ?? "", /size 12 invalid/);
    });

    test("enabling MSI after DRIVER_OK fails the device", () => {
      const { w16, t, negotiate, driverOk, irq } = rig();
      negotiate([0]);
      driverOk();
      w16(REG.MSI_CSR, 0x8000);
      assert.match(t.failed ?? "", /MSI enabled after DRIVER_OK/);
      assert.deepEqual(irq.enabled, [], "MSI never switched on");
    });

    test("an unknown MSI command fails the device", () => {
      const { w16, t, negotiate } = rig();
      negotiate([0]);
      w16(REG.MSI_COMMAND, 0x7001);
      assert.match(t.failed ?? "", /unknown MSI command/);
    });

    test("clearing status bits without a reset fails the device", () => {
      const { w32, t, negotiate, driverOk } = rig();
      negotiate([0]);
      driverOk();
      w32(REG.STATUS, STATUS_ACKNOWLEDGE);
      assert.match(t.failed ?? "", /cleared without reset/);
    });

    test("notify of a nonexistent queue is ignored", () => {
      const { w32, t, negotiate, driverOk, device } = rig();
      negotiate([0]);
      driverOk();
      w32(REG.QUEUE_NOTIFY, 9);
      t.write(0x1000 + 4 * 100, new Uint8Array(4));
      assert.equal(t.failed, undefined);
      assert.deepEqual((device as FakeDevice).notified, []);
    });

    test("a descriptor loop in virtio-blk's queue fails the device through the transport", async () => {
      const dir = mkdtempSync(join(tmpdir(), "cove-mmio-"));
      try {
        const disk = join(dir, "disk.img");
        writeFileSync(disk, Buffer.alloc(64 * 1024));
        const blk = await BlkDevice.create({ path: disk, logger: log });
        const { mem, t, r32, negotiate, driverOk, w32 } = rig({ device: blk, msi: false });
        negotiate([0]);
        driverOk();
        // desc 0 → desc 1 → desc 0 …, both with NEXT; avail ring offers head 0.
        const desc = 0x10000;
        for (const [i, next] of [
          [0, 1],
          [1, 0],
        ] as const) {
          mem.writeU64(desc + i * 16, 0x30000n);
          mem.writeU32(desc + i * 16 + 8, 16);
          mem.writeU16(desc + i * 16 + 12, 1);
          mem.writeU16(desc + i * 16 + 14, next);
        }
        mem.writeU16(0x11000 + 4, 0);
        mem.writeU16(0x11000 + 2, 1);
        w32(REG.QUEUE_NOTIFY, 0);
        assert.match(t.failed ?? "", /loop|longer than the queue/);
        assert.equal(r32(REG.STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET, VIRTIO_STATUS_DEVICE_NEEDS_RESET);
        await blk.close?.();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
});
