// virtio-mmio against a guest that repeats what it may do once: a violation/reset loop (log lines
// rate-limited), DRIVER_OK written together with a refused FEATURES_OK (never "running" without
// activation), and an MSI UPDATE storm (coalesced KVM routing-table writes).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { pino } from "pino";
import { LOG_BURST } from "../../../src/common/rate-limited-log.ts";
import { VIRTIO_STATUS_DEVICE_NEEDS_RESET } from "../../../src/virtio/device.ts";
import { GsiRouter } from "../../../src/vmm/irq.ts";
import type { GsiRoute, Vm } from "../../../src/vmm/kvm.ts";
import { MSI_CMD_UPDATE, REG, STATUS_DRIVER_OK } from "../../../src/vmm/virtio-mmio.ts";
import { KvmMmioInterrupts } from "../../../src/vmm/virtio-mmio-kvm.ts";
import { type FakeDevice, rig } from "./mmio-rig.ts";

/** A logger that counts the lines it writes. */
function countingLog() {
  const lines: string[] = [];
  const log = pino({ level: "debug" }, { write: (s: string) => void lines.push(s) });
  return { log, lines };
}

describe("virtio-mmio against a hostile guest", () => {
  test("a violation/reset loop does not flood the log: the first lines, then one count", () => {
    const { log, lines } = countingLog();
    const { w32, t } = rig({ log });
    // 20,000 writes: DRIVER_OK without FEATURES_OK (fatal), then a reset; and again.
    for (let i = 0; i < 10_000; i++) {
      w32(REG.STATUS, STATUS_DRIVER_OK);
      w32(REG.STATUS, 0);
    }
    // And 10,000 writes to a register that does not exist (ignored).
    for (let i = 0; i < 10_000; i++) w32(0x0d0, i);
    assert.ok(lines.length <= 2 * LOG_BURST, `${lines.length} log lines for 30,000 hostile writes`);
    t.close();
    const summaries = lines.map((l) => JSON.parse(l) as { suppressed?: number }).filter((l) => l.suppressed);
    assert.equal(summaries.length, 2, "one count line per source at close");
    assert.equal(
      summaries.reduce((n, l) => n + (l.suppressed ?? 0), 0),
      20_000 - 2 * LOG_BURST,
    );
  });

  test("DRIVER_OK in the same write as a refused FEATURES_OK: never running without activation", () => {
    const { w32, r32, negotiate, driverOk, device, t } = rig();
    const fake = device as FakeDevice;
    negotiate([0], 0n); // no VERSION_1: FEATURES_OK is refused
    driverOk(); // ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK at once
    assert.equal(fake.ctx, undefined, "never activated");
    assert.equal(r32(REG.STATUS) & STATUS_DRIVER_OK, 0, "does not read as running");
    assert.ok(r32(REG.STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    assert.match(t.failed ?? "", /DRIVER_OK with the feature negotiation refused/);
    w32(REG.QUEUE_NOTIFY, 0);
    assert.deepEqual(fake.notified, [], "no kick reaches a device that was never activated");
  });

  test("an MSI UPDATE storm costs no KVM routing-table write until an interrupt uses the route", () => {
    const tables: GsiRoute[][] = [];
    const vm = {
      checkExtension: () => 1,
      irqfd() {},
      setGsiRouting(r: readonly GsiRoute[]) {
        tables.push([...r]);
      },
    } as unknown as Vm;
    const router = new GsiRouter(vm);
    const interrupts = new KvmMmioInterrupts(vm, router, 5);
    const { t, w16, w32, negotiate, driverOk, device } = rig({ interrupts });
    const fake = device as FakeDevice;
    negotiate([0]);
    w16(REG.MSI_CSR, 0x8000);
    for (let i = 0; i < 10_000; i++) {
      w32(REG.MSI_ADDRESS_LOW, 0xfee00000);
      w32(REG.MSI_ADDRESS_HIGH, 0);
      w32(REG.MSI_DATA, 0x40 + (i % 32));
      w16(REG.MSI_COMMAND, (MSI_CMD_UPDATE << 12) | 1);
    }
    driverOk();
    assert.equal(tables.length, 0, "no routing-table write for 10,000 UPDATEs");
    fake.ctx?.interrupt.queue(0); // vector 1
    assert.equal(tables.length, 1, "one write, right before the interrupt");
    const route = tables.at(-1)?.find((e) => e.kind === "msi");
    assert.deepEqual(route, {
      kind: "msi",
      gsi: route?.gsi,
      addressLo: 0xfee00000,
      addressHi: 0,
      data: 0x40 + (9999 % 32),
    });
    // Unchanged UPDATEs change nothing; later interrupts write nothing either.
    for (let i = 0; i < 1000; i++) w16(REG.MSI_COMMAND, (MSI_CMD_UPDATE << 12) | 1);
    for (let i = 0; i < 100; i++) fake.ctx?.interrupt.queue(0);
    assert.equal(tables.length, 1);
    interrupts.close();
    t.close();
  });

  test("KVM refusing the routing table at an interrupt is reported, never thrown into the device", () => {
    const vm = {
      checkExtension: () => 1,
      irqfd() {},
      setGsiRouting() {
        throw new Error("KVM_SET_GSI_ROUTING: EINVAL");
      },
    } as unknown as Vm;
    const errors: string[] = [];
    const interrupts = new KvmMmioInterrupts(vm, new GsiRouter(vm, (e) => errors.push(e.message)), 5);
    const { t, w16, w32, negotiate, driverOk, device } = rig({ interrupts });
    negotiate([0]);
    w16(REG.MSI_CSR, 0x8000);
    w32(REG.MSI_ADDRESS_LOW, 0xfee00000);
    w16(REG.MSI_COMMAND, (MSI_CMD_UPDATE << 12) | 1);
    driverOk();
    (device as FakeDevice).ctx?.interrupt.queue(0); // a completion on the event loop: must not throw
    assert.deepEqual(errors, ["KVM_SET_GSI_ROUTING: EINVAL"]);
    interrupts.close();
    t.close();
  });
});
