// The guest half of MSI end to end: our guest kernel (with
// deploy/guest/kernel/patches/0001-virtio-mmio-msi-doorbells.patch) on the embedded VMM, inside the
// nested test host (genuine KVM under QEMU TCG). One nested boot runs four VMs in turn
// (test/integration/msi-vm.ts), each with virtio-blk root + a random read-only disk + a scratch
// writable disk + virtio-vsock:
//   msi       — the extension on: per-queue MSI vectors and doorbells for blk and vsock
//               (/proc/interrupts), no InterruptStatus read or ACK during I/O, data intact under
//               concurrent load, vectors moved between vCPUs (mask/UPDATE/unmask) and a vCPU
//               taken offline, vsock round trips and a 1 MiB echo intact;
//   legacy    — same devices, the guest told virtio_mmio.msi=0 doorbells=0: shared interrupt with
//               InterruptStatus/ACK, data intact;
//   no-offer  — the device does not offer MSI: the driver keeps the shared interrupt (doorbells on);
//   few-vectors — the device reports vectors for 1 queue: blk (1 queue) gets MSI, vsock (3 queues)
//               falls back to the shared interrupt, and both still work.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type NestedResult, nestedUnavailable, runNested } from "../harness/nested.ts";
import {
  bundleRunner,
  delta,
  FUNCTIONAL_INIT,
  guestKernelPresent,
  interruptsDump,
  makeDisks,
  msiGuestRoot,
  msiKernel,
  nestedScript,
  parseRuns,
  type RunOutput,
  type Scenario,
} from "./msi-guest.ts";

const skip = nestedUnavailable() ?? guestKernelPresent() ?? false;
if (skip) console.error(`SKIPPING virtio-mmio MSI nested tests: ${skip}`);

const SCRATCH = "/tmp/msi-w.img";
const scratch = (name: string): Pick<Scenario, "pre" | "post"> => ({
  pre: `rm -f ${SCRATCH}; dd if=/dev/zero of=${SCRATCH} bs=1M count=4 2>/dev/null`,
  post: `echo "HOST-WRITE-SHA ${name} $(head -c 1048576 ${SCRATCH} | sha256sum)"`,
});

/**
 * A failure of the emulated nested host rather than of the code under test (see before()): no status
 * at all, or a scenario whose guest stopped on a silent triple fault. Returns what to log, or undefined.
 */
function vehicleFault(r: NestedResult): string | undefined {
  // (A nested host that died is already retried by runNested; one that went idle until the bound is not.)
  if (r.status === -1)
    return r.timedOut
      ? `the nested host went idle until the bound; its console tail:\n${r.console.slice(-1500)}`
      : undefined;
  for (const x of parseRuns(r.output)) {
    if (x.result?.result !== "shutdown") continue;
    const text = x.console.join("\n");
    if (/Kernel panic|BUG:|Oops|general protection|double fault/.test(text)) return undefined;
    return `scenario ${x.name}: the guest stopped on a silent triple fault; its console tail:\n${x.console.slice(-25).join("\n")}`;
  }
  return undefined;
}

describe("virtio-mmio MSI + doorbells: guest driver on the embedded VMM (nested test host)", { skip }, () => {
  let runs: RunOutput[] = [];
  let raw = "";
  let readSha = "";
  const cleanups: (() => void)[] = [];

  before(async () => {
    const disks = makeDisks(8);
    cleanups.push(disks.cleanup);
    readSha = disks.readSha256;
    const root = msiGuestRoot(FUNCTIONAL_INIT);
    cleanups.push(root.cleanup);
    const runner = bundleRunner();
    cleanups.push(runner.cleanup);
    const common = [
      "--kernel",
      msiKernel(),
      "--root",
      root.image,
      "--disk",
      `${disks.readDisk}:ro`,
      "--disk",
      SCRATCH,
      "--vsock",
      "--timeout",
      "200",
      "--echo-bytes",
      String(1024 * 1024),
      "--rr",
      "200",
    ];
    const scenarios: Scenario[] = [
      { name: "msi", flags: ["--vcpus", "2"], ...scratch("msi") },
      // One vCPU: the vector moves need two (msi above); two vCPUs under load is where the nested
      // host's faults below come from (legacy mode included), so only one scenario pays for them.
      { name: "legacy", flags: ["--cmdline", "virtio_mmio.msi=0 virtio_mmio.doorbells=0"], ...scratch("legacy") },
      { name: "no-offer", flags: ["--no-msi"], ...scratch("no-offer") },
      { name: "few-vectors", flags: ["--vector-queues", "1"], ...scratch("few-vectors") },
    ];
    // The four scenarios take ~50–80 s here. The nested host is QEMU's TCG emulation of SVM running
    // KVM, and it is not flawless. Seen here, only with a 2-vCPU guest under disk load (MSI and
    // legacy mode alike), each about once in 10–25 fresh nested hosts: the whole nested host dying
    // or going idle without a word (no status), or the guest's vCPU 1 stopping on a triple fault
    // with no kernel message at all (a Linux crash prints an oops or panic first). Such a run is
    // retried, loudly, up to twice (two faults in a row were seen once); any other failure (a panic,
    // an assertion, a wrong result) is never retried.
    const run = () =>
      runNested(nestedScript(scenarios, common, runner.runner), {
        timeoutMs: 240_000, // a run takes 50–80 s here; a stalled nested host is retried (see above)
        memoryMiB: 2048,
        cpus: 2,
      });
    let r = await run();
    for (let retry = 1; retry <= 2; retry++) {
      const fault = vehicleFault(r);
      if (!fault) break;
      console.error(`!!! msi-nested: ${fault}; retrying the nested run (${retry} of 2)`);
      r = await run();
    }
    raw = r.output;
    assert.equal(
      r.status,
      0,
      `nested command failed (status ${r.status}):\n${r.output.slice(-4000)}\n${r.console.slice(-2000)}`,
    );
    runs = parseRuns(r.output);
  });

  after(() => {
    for (const c of cleanups) c();
  });

  const run = (name: string): RunOutput => {
    const r = runs.find((x) => x.name === name);
    assert.ok(r, `scenario ${name} did not run; output tail:\n${raw.slice(-3000)}`);
    assert.equal(r.exitCode, 0, `scenario ${name}: runner exit ${r.exitCode}\n${r.console.slice(-60).join("\n")}`);
    assert.equal(
      r.result?.result,
      "vsock-done",
      `scenario ${name} ended ${r.result?.result}; its console tail:\n${r.console.slice(-80).join("\n")}`,
    );
    return r;
  };

  /** Every read of the random disk hashed to the host's sha256, and the write reached the host file. */
  const assertIntegrity = (r: RunOutput) => {
    const reads = r.console.filter((l) => /^(READ-SHA\d|MOVED-SHA|OFFLINE-SHA) /.test(l));
    assert.ok(reads.length >= 4, `${r.name}: expected 4+ disk reads, got:\n${reads.join("\n")}`);
    for (const l of reads) assert.ok(l.includes(readSha), `${r.name}: corrupted read: ${l} (want ${readSha})`);
    const w = r.console.find((l) => l.startsWith("WRITE-SHA "))?.split(/\s+/)[1];
    const back = r.console.find((l) => l.startsWith("READBACK-SHA "))?.split(/\s+/)[1];
    const host = r.console.find((l) => l.startsWith(`HOST-WRITE-SHA ${r.name} `))?.split(/\s+/)[2];
    assert.ok(w && /^[0-9a-f]{64}$/.test(w), `${r.name}: no write hash`);
    assert.equal(back, w, `${r.name}: read-back differs from what was written`);
    assert.equal(host, w, `${r.name}: the host's disk file differs from what the guest wrote`);
    assert.equal(r.vsock?.echo?.ok, true, `${r.name}: vsock echo corrupted: ${JSON.stringify(r.vsock)}`);
    assert.equal(r.vsock?.rr?.n, 200);
  };

  test("msi: per-queue vectors for blk and vsock, doorbells, no InterruptStatus/ACK during I/O", () => {
    const r = run("msi");
    const boot = interruptsDump(r.console, "interrupts at boot").join("\n");
    // virtio0..2 are the blk disks (1 queue each), virtio3 is vsock (rx, tx, event).
    for (const name of ["virtio0-config", "virtio0-req.0", "virtio1-req.0", "virtio2-req.0", "virtio3-config"]) {
      assert.match(boot, new RegExp(`virtio-mmio-MSI.*edge.*${name}\\b`), `${name} missing:\n${boot}`);
    }
    for (const q of ["rx", "tx", "event"]) assert.match(boot, new RegExp(`virtio-mmio-MSI.*virtio3-${q}\\b`));
    assert.doesNotMatch(boot, /IO-APIC.*virtio/, "no device should be on its shared IOAPIC interrupt");
    assert.ok(
      r.console.some((l) => /virtio_blk virtio0: MSI: 2 vectors \(config \+ 1 virtqueues\), doorbells/.test(l)),
    );
    assert.ok(r.console.some((l) => /virtio3: MSI: 4 vectors \(config \+ 3 virtqueues\), doorbells/.test(l)));
    const a = r.marks["io-start"];
    const b = r.marks["io-end"];
    assert.ok(a && b, "io marks missing");
    for (const t of b.transports) assert.equal(t.msi, true, `${t.device} not in MSI mode`);
    const dev = "virtio-blk";
    assert.ok(delta(a, b, dev, "msiIrqs") > 100, `blk MSI interrupts during I/O: ${delta(a, b, dev, "msiIrqs")}`);
    assert.equal(delta(a, b, dev, "isrReads"), 0, "InterruptStatus read during I/O");
    assert.equal(delta(a, b, dev, "ackWrites"), 0, "InterruptAck written during I/O");
    assert.equal(delta(a, b, dev, "legacyIrqs"), 0);
    // Doorbells are fast-MMIO ioeventfds and QueueNotify has datamatch ones: no kick reaches JS.
    assert.equal(delta(a, b, dev, "queueNotifyWrites") + delta(a, b, dev, "doorbellWrites"), 0);
    const end = r.result;
    assert.ok(end);
    for (const t of end.transports) {
      assert.equal(t.isrReads, 0, `${t.device}: InterruptStatus read at all`);
      assert.equal(t.ackWrites, 0, `${t.device}: InterruptAck written at all`);
      assert.equal(t.legacyIrqs, 0);
    }
    assertIntegrity(r);
  });

  test("msi: moving vectors between vCPUs and offlining a vCPU masks, re-targets (UPDATE) and unmasks", () => {
    const r = run("msi");
    assert.ok(r.console.includes("CPU1-OFFLINE"), "CPU 1 did not go offline");
    const boot = r.marks.boot;
    const moved = r.marks["moved-end"];
    const off = r.marks["offline-end"];
    assert.ok(boot && moved && off);
    const dev = "virtio-blk";
    assert.ok(delta(boot, moved, dev, "msiMasks") > 0, "no MASK command during the move");
    assert.ok(delta(boot, moved, dev, "msiUnmasks") > 0, "no UNMASK command during the move");
    assert.ok(delta(boot, moved, dev, "msiUpdates") > 0, "no UPDATE during the move");
    assert.ok(delta(moved, off, dev, "msiUpdates") > 0, "no UPDATE when CPU 1 went offline");
    // The moved vectors fired on CPU 1: its column in /proc/interrupts is non-zero for the read disk.
    const dump = interruptsDump(r.console, "interrupts after move");
    const line = dump.find((l) => /virtio1-req\.0/.test(l));
    assert.ok(line, dump.join("\n"));
    const cols = line.trim().split(/\s+/);
    assert.ok(Number(cols[2]) > 0, `no interrupt on CPU 1 after the move: ${line}`);
    assertIntegrity(r);
  });

  test("legacy (virtio_mmio.msi=0 doorbells=0): shared interrupt with InterruptStatus/ACK, data intact", () => {
    const r = run("legacy");
    const boot = interruptsDump(r.console, "interrupts at boot").join("\n");
    assert.doesNotMatch(boot, /virtio-mmio-MSI/);
    assert.match(boot, /IO-APIC.*virtio0/);
    const a = r.marks["io-start"];
    const b = r.marks["io-end"];
    assert.ok(a && b);
    assert.ok(delta(a, b, "virtio-blk", "isrReads") > 100, "legacy mode should read InterruptStatus per interrupt");
    assert.ok(delta(a, b, "virtio-blk", "ackWrites") > 100);
    for (const t of b.transports) assert.equal(t.msi, false);
    assertIntegrity(r);
  });

  test("no-offer: a device without the MSI feature keeps the shared interrupt; doorbells still used", () => {
    const r = run("no-offer");
    assert.ok(r.console.some((l) => /vendor extension 0x05: msi not offered, doorbells on/.test(l)));
    const boot = interruptsDump(r.console, "interrupts at boot").join("\n");
    assert.doesNotMatch(boot, /virtio-mmio-MSI/);
    const end = r.result;
    assert.ok(end);
    for (const t of end.transports) {
      assert.equal(t.msi, false);
      assert.equal(t.csrWrites, 0, `${t.device}: MSI CSR written although not offered`);
    }
    assertIntegrity(r);
  });

  test("few-vectors: more queues than vectors → that device falls back, the others keep MSI", () => {
    const r = run("few-vectors");
    assert.ok(r.console.some((l) => /virtio3: MSI: 3 virtqueues, but vectors for 1/.test(l)));
    assert.ok(r.console.some((l) => /virtio3: MSI unavailable \(-28\), using the shared interrupt/.test(l)));
    const end = r.result;
    assert.ok(end);
    for (const t of end.transports) assert.equal(t.msi, t.device.startsWith("virtio-blk"), `${t.device} msi=${t.msi}`);
    assertIntegrity(r);
  });
});
