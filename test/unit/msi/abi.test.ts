// The guest driver (deploy/guest/kernel/patches/0001-…) and the device (src/vmm/virtio-mmio.ts)
// speak one ABI: every register offset, the vendor ID, the feature bits and the command codes the
// patch #defines equal the device's constants. Plus the MSI test runner's counting transport
// (reports fewer queue vectors, counts InterruptStatus/ACK/MSI commands) and its output parser.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { pino } from "pino";
import { type ActivateContext, bit, VIRTIO_F_VERSION_1, type VirtioDevice } from "../../../src/virtio/device.ts";
import { GuestMemory } from "../../../src/virtio/memory.ts";
import {
  CONFIG_OFFSET,
  DB_FEATURE_MSI,
  DB_FEATURE_PER_QUEUE_NOTIFY,
  DOORBELL_OFFSET,
  DOORBELL_SCALE,
  DRAGONBALL_VENDOR_ID,
  type MmioInterrupts,
  MSI_CMD_MASK,
  MSI_CMD_UNMASK,
  MSI_CMD_UPDATE,
  MSI_CSR_SUPPORTED,
  REG,
  WINDOW_SIZE,
} from "../../../src/vmm/virtio-mmio.ts";
import { delta, nestedScript, parseRuns, type Snapshot } from "../../integration/msi-guest.ts";
import { CountingTransport } from "../../integration/msi-vm.ts";

const PATCH = join(import.meta.dirname, "../../../deploy/guest/kernel/patches/0001-virtio-mmio-msi-doorbells.patch");

/** The patch's added `#define NAME value` lines (numeric ones). */
function patchDefines(): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of readFileSync(PATCH, "utf8").split("\n")) {
    const d = /^\+#define\s+(VIRTIO_MMIO_\w+)\s+(0x[0-9a-fA-F]+|\d+)\b/.exec(line);
    if (d?.[1] && d[2]) m.set(d[1], Number(d[2]));
  }
  return m;
}

describe("guest driver ↔ device ABI", () => {
  const d = patchDefines();
  const want: [string, number][] = [
    ["VIRTIO_MMIO_DB_VENDOR_ID", DRAGONBALL_VENDOR_ID],
    ["VIRTIO_MMIO_DB_F_MSI", DB_FEATURE_MSI],
    ["VIRTIO_MMIO_DB_F_DOORBELL", DB_FEATURE_PER_QUEUE_NOTIFY],
    ["VIRTIO_MMIO_MSI_CSR", REG.MSI_CSR],
    ["VIRTIO_MMIO_MSI_COMMAND", REG.MSI_COMMAND],
    ["VIRTIO_MMIO_MSI_ADDRESS_LOW", REG.MSI_ADDRESS_LOW],
    ["VIRTIO_MMIO_MSI_ADDRESS_HIGH", REG.MSI_ADDRESS_HIGH],
    ["VIRTIO_MMIO_MSI_DATA", REG.MSI_DATA],
    ["VIRTIO_MMIO_MSI_CSR_ENABLE", MSI_CSR_SUPPORTED],
    ["VIRTIO_MMIO_MSI_CMD_UPDATE", MSI_CMD_UPDATE],
    ["VIRTIO_MMIO_MSI_CMD_MASK", MSI_CMD_MASK],
    ["VIRTIO_MMIO_MSI_CMD_UNMASK", MSI_CMD_UNMASK],
  ];
  for (const [name, value] of want) {
    test(`${name} = 0x${value.toString(16)}`, () => {
      assert.equal(d.get(name), value, `patch defines ${name} = ${d.get(name)}`);
    });
  }

  test("doorbells the device announces pass the driver's checks and fit the window", () => {
    // The driver accepts offset ≥ config space, 4-aligned stride, first doorbell inside the window.
    assert.ok(DOORBELL_OFFSET >= CONFIG_OFFSET && DOORBELL_OFFSET % 4 === 0 && DOORBELL_SCALE % 4 === 0);
    assert.ok(DOORBELL_OFFSET + 4 <= WINDOW_SIZE);
  });

  test("the patch adds the Kconfig option cove.config turns on", () => {
    const patch = readFileSync(PATCH, "utf8");
    assert.match(patch, /^\+config VIRTIO_MMIO_MSI$/m);
    const frag = readFileSync(join(import.meta.dirname, "../../../deploy/guest/kernel/cove.config"), "utf8");
    assert.match(frag, /^CONFIG_VIRTIO_MMIO_MSI=y$/m);
    const series = readFileSync(join(import.meta.dirname, "../../../deploy/guest/kernel/patches/series"), "utf8");
    assert.match(series, /^0001-virtio-mmio-msi-doorbells\.patch$/m);
  });
});

class ThreeQueues implements VirtioDevice {
  readonly deviceType = 19;
  readonly name = "three";
  readonly queueMaxSizes = [16, 16, 16];
  readonly features = bit(VIRTIO_F_VERSION_1);
  needsReset: string | undefined;
  onNeedsReset?: (reason: string) => void;
  readConfig(_o: number, n: number): Buffer {
    return Buffer.alloc(n);
  }
  writeConfig(): void {}
  activate(_ctx: ActivateContext): void {}
  notify(): void {}
  reset(): void {}
}

function rig(vectorQueues?: number) {
  const irq: MmioInterrupts = { msiCapable: true, legacy() {}, msiUpdate() {}, msiEnable() {}, msiSignal() {} };
  const t = new CountingTransport(
    { device: new ThreeQueues(), mem: GuestMemory.alloc(1 << 20), interrupts: irq, log: pino({ level: "silent" }) },
    vectorQueues,
  );
  const io = (off: number, len: number, v?: number) => {
    const b = new Uint8Array(len);
    const dv = new DataView(b.buffer);
    if (v === undefined) {
      t.read(off, b);
      return len === 2 ? dv.getUint16(0, true) : dv.getUint32(0, true);
    }
    if (len === 2) dv.setUint16(0, v, true);
    else dv.setUint32(0, v >>> 0, true);
    t.write(off, b);
    return 0;
  };
  return { t, io };
}

describe("CountingTransport (the MSI tests' device wrapper)", () => {
  test("reports the device's queue count in the CSR, or the smaller number it is given", () => {
    assert.equal(rig().io(REG.MSI_CSR, 2), MSI_CSR_SUPPORTED | 3);
    assert.equal(rig(1).io(REG.MSI_CSR, 2), MSI_CSR_SUPPORTED | 1);
  });

  test("counts InterruptStatus reads, ACK writes, QueueNotify/doorbell writes and MSI commands", () => {
    const { t, io } = rig();
    io(REG.INTERRUPT_STATUS, 4);
    io(REG.INTERRUPT_STATUS, 4);
    io(REG.INTERRUPT_ACK, 4, 1);
    io(REG.QUEUE_NOTIFY, 4, 0);
    io(DOORBELL_OFFSET + 4, 4, 1);
    io(REG.MSI_COMMAND, 2, (MSI_CMD_UPDATE << 12) | 1);
    io(REG.MSI_COMMAND, 2, (MSI_CMD_MASK << 12) | 1);
    io(REG.MSI_COMMAND, 2, (MSI_CMD_UNMASK << 12) | 1);
    io(REG.MSI_CSR, 2, MSI_CSR_SUPPORTED);
    assert.deepEqual(t.counts, {
      isrReads: 2,
      ackWrites: 1,
      queueNotifyWrites: 1,
      doorbellWrites: 1,
      csrWrites: 1,
      msiUpdates: 1,
      msiMasks: 1,
      msiUnmasks: 1,
    });
    assert.equal(t.msiActive, true, "the CSR write still reaches the transport");
  });
});

describe("MSI test output parsing", () => {
  const snap = (isr: number, device = "virtio-blk(x)"): Snapshot => ({
    ms: 1,
    exits: { "6": isr },
    kvm: { exits: 10 * isr },
    transports: [
      {
        device,
        msi: true,
        registerReads: 0,
        registerWrites: 0,
        notifies: 0,
        legacyIrqs: 0,
        msiIrqs: 0,
        isrReads: isr,
        ackWrites: 0,
        queueNotifyWrites: 0,
        doorbellWrites: 0,
        csrWrites: 0,
        msiUpdates: 0,
        msiMasks: 0,
        msiUnmasks: 0,
      },
    ],
  });

  test("splits runs, keeps console lines, picks up marks, vsock and result lines", () => {
    const out = [
      "noise before",
      "=== RUN a",
      "[ 1.0] hello",
      JSON.stringify({ mark: "io-start", ...snap(1) }),
      JSON.stringify({ mark: "io-end", ...snap(5) }),
      JSON.stringify({ vsock: { echo: { bytes: 3, sha256: "x", ok: true } } }),
      JSON.stringify({ result: "vsock-done", ...snap(6) }),
      "=== EXIT 0",
      "HOST-WRITE-SHA a abc  -",
      "=== RUN b",
      "{not json",
      "=== EXIT 2",
    ].join("\n");
    const runs = parseRuns(out);
    assert.equal(runs.length, 2);
    const [a, b] = runs;
    assert.ok(a && b);
    assert.equal(a.exitCode, 0);
    assert.deepEqual(a.console, ["[ 1.0] hello", "HOST-WRITE-SHA a abc  -"]);
    assert.equal(a.vsock?.echo?.ok, true);
    assert.equal(a.result?.result, "vsock-done");
    const s = a.marks["io-start"];
    const e = a.marks["io-end"];
    assert.ok(s && e);
    assert.equal(delta(s, e, "virtio-blk", "isrReads"), 4);
    assert.equal(delta(s, e, "virtio-vsock", "isrReads"), 0);
    assert.equal(b.exitCode, 2);
    assert.deepEqual(b.console, ["{not json"]);
  });

  test("the nested script runs every scenario with its own flags, quoted", () => {
    const s = nestedScript(
      [
        { name: "x y", flags: ["--cmdline", "a=1 b='2'"], pre: "echo pre", post: "echo post" },
        { name: "z", flags: [] },
      ],
      ["--root", "/r.img"],
    );
    assert.match(
      s,
      /^echo '=== RUN x y'; echo pre; node --import tsx test\/integration\/msi-vm\.ts '--root' '\/r\.img' '--cmdline' 'a=1 b='\\''2'\\''' 2>&1; echo "=== EXIT \$\?"; echo post; /,
    );
    assert.match(s, /echo '=== RUN z'; node /);
  });
});
