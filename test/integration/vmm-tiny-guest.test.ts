// Tiny real-mode guests on this machine's own /dev/kvm (PVM here; any KVM elsewhere): they prove
// the vCPU run thread, the exit hand-off to JS, PIO and MMIO dispatch, ioeventfd, kicks, and that
// teardown leaves no thread or fd behind. No Linux guest is involved.
import assert from "node:assert/strict";
import { closeSync, existsSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { addressOf, eventfd, mapAnonymous, unmap, unwatchFd, watchFd } from "../../src/native/kvm.ts";
import { Bus, type BusDevice } from "../../src/vmm/bus.ts";
import { Exit, Kvm, type Vm } from "../../src/vmm/kvm.ts";
import { type StopReason, VcpuLoop } from "../../src/vmm/vcpu.ts";
import { withTimeout } from "../harness/timeout.ts";

const skip = existsSync("/dev/kvm") ? false : "no /dev/kvm on this machine: the tiny-guest KVM tests cannot run";
const CODE = 0x1000;
const MEM = 0x10000;

interface Tiny {
  kvm: Kvm;
  vm: Vm;
  loop: VcpuLoop;
  pio: Bus;
  mmio: Bus;
  stopped: Promise<StopReason>;
  close(): void;
}

/** A VM with 64 KiB of RAM at 0, `code` at 0x1000 and one vCPU in real mode about to run it. */
function tiny(code: number[]): Tiny {
  const kvm = Kvm.open();
  const vm = kvm.createVm();
  const ram = mapAnonymous(MEM);
  vm.setMemoryRegion(0, 0, MEM, addressOf(ram));
  new Uint8Array(ram).set(code, CODE);
  const vcpu = vm.createVcpu(0);
  const s = vcpu.getSregs();
  s.cs.base = 0n;
  s.cs.selector = 0;
  vcpu.setSregs(s);
  const r = vcpu.getRegs();
  r.rip = BigInt(CODE);
  r.rflags = 2n;
  vcpu.setRegs(r);
  const pio = new Bus("pio");
  const mmio = new Bus("mmio");
  let resolve!: (r: StopReason) => void;
  const stopped = new Promise<StopReason>((res) => {
    resolve = res;
  });
  const loop = new VcpuLoop(vcpu, { pio, mmio, onStop: resolve });
  return {
    kvm,
    vm,
    loop,
    pio,
    mmio,
    stopped,
    close() {
      loop.stop();
      vm.close();
      kvm.close();
      unmap(ram);
    },
  };
}

// x86 16-bit encodings used below.
const movDx = (port: number) => [0xba, port & 0xff, port >> 8];
const movAl = (v: number) => [0xb0, v];
const OUT_DX_AL = 0xee;
const HLT = 0xf4;

class Recorder implements BusDevice {
  writes: { offset: number; bytes: number[] }[] = [];
  reads: { offset: number; len: number }[] = [];
  constructor(private readonly value = 0) {}
  read(offset: number, data: Uint8Array): void {
    this.reads.push({ offset, len: data.length });
    new DataView(data.buffer, data.byteOffset, data.byteLength).setUint32(0, this.value, true);
  }
  write(offset: number, data: Uint8Array): void {
    this.writes.push({ offset, bytes: [...data] });
  }
}

const threads = () => readdirSync("/proc/self/task").length;
const threadNames = () =>
  readdirSync("/proc/self/task").map((t) => readFileSync(`/proc/self/task/${t}/comm`, "utf8").trim());
/** Open fds on /dev/kvm, a VM or a vCPU (only ours: other fds of the process come and go meanwhile). */
const fds = () =>
  readdirSync("/proc/self/fd").filter((fd) => {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      return target === "/dev/kvm" || target.startsWith("anon_inode:kvm");
    } catch {
      return false; // closed between readdir and readlink (e.g. the readdir's own fd)
    }
  }).length;

describe("tiny guests on /dev/kvm", { skip }, () => {
  before(async () => {
    // Warm up once so lazily created process-wide resources (signal handler, threadpool) exist
    // before the leak checks count threads and fds.
    const t = tiny([HLT]);
    t.loop.start();
    await withTimeout(t.stopped, 10_000, "warm-up hlt");
    t.close();
  });

  test("serial bytes with out 0x3f8, then hlt; the exits reach JS and the run thread ends", async () => {
    const msg = "hi from a tiny guest\n";
    const code = [...movDx(0x3f8)];
    for (const ch of Buffer.from(msg)) code.push(...movAl(ch), OUT_DX_AL);
    code.push(HLT);
    const threadsBefore = threads();
    const fdsBefore = fds();
    const t = tiny(code);
    const serial = new Recorder();
    t.pio.register(0x3f8, 8, serial, "serial");
    try {
      t.loop.start();
      // (KVM may add its own per-VM thread, e.g. kvm-nx-lpage-recovery, so count ours by name.)
      assert.equal(threadNames().filter((n) => n === "cove-vcpu0").length, 1, "one native thread per running vCPU");
      const reason = await withTimeout(t.stopped, 10_000, "the guest to halt");
      assert.deepEqual(reason, { kind: "hlt" });
      assert.equal(Buffer.from(serial.writes.flatMap((w) => w.bytes)).toString(), msg);
      assert.ok(serial.writes.every((w) => w.offset === 0));
      assert.equal(t.loop.exits.get(Exit.IO), msg.length);
    } finally {
      t.close();
    }
    assert.equal(threads(), threadsBefore, "vCPU thread joined");
    assert.equal(fds(), fdsBefore, "kvm, vm and vcpu fds closed");
  });

  test("MMIO outside RAM: a 32-bit read answered by JS, then a 32-bit write of value+1", async () => {
    const code = [
      0xb8,
      0x00,
      0xd0, // mov ax, 0xd000
      0x8e,
      0xd8, // mov ds, ax
      0x66,
      0xa1,
      0x00,
      0x00, // mov eax, [0]     (gpa 0xd0000)
      0x66,
      0x83,
      0xc0,
      0x01, // add eax, 1
      0x66,
      0xa3,
      0x04,
      0x00, // mov [4], eax     (gpa 0xd0004)
      HLT,
    ];
    const t = tiny(code);
    const dev = new Recorder(0x12345678);
    t.mmio.register(0xd0000, 0x1000, dev, "test-mmio");
    try {
      t.loop.start();
      assert.deepEqual(await withTimeout(t.stopped, 10_000, "the guest to halt"), { kind: "hlt" });
      assert.deepEqual(dev.reads, [{ offset: 0, len: 4 }]);
      assert.deepEqual(dev.writes, [{ offset: 4, bytes: [0x79, 0x56, 0x34, 0x12] }]);
    } finally {
      t.close();
    }
  });

  test("unclaimed ports read as all-ones and do not stop the guest", async () => {
    const code = [
      ...movDx(0x1234),
      0xec, // in al, dx
      ...movDx(0x3f8),
      OUT_DX_AL,
      HLT,
    ];
    const t = tiny(code);
    const serial = new Recorder();
    t.pio.register(0x3f8, 8, serial, "serial");
    try {
      t.loop.start();
      assert.deepEqual(await withTimeout(t.stopped, 10_000, "the guest to halt"), { kind: "hlt" });
      assert.deepEqual(serial.writes, [{ offset: 0, bytes: [0xff] }]);
    } finally {
      t.close();
    }
  });

  test("ioeventfd with datamatch: a matching write signals the eventfd without a userspace exit", async () => {
    const code = [
      ...movDx(0x500),
      ...movAl(7),
      OUT_DX_AL, // matches: KVM signals the eventfd
      ...movAl(8),
      OUT_DX_AL, // no match: an ordinary exit to JS
      HLT,
    ];
    const t = tiny(code);
    const dev = new Recorder();
    t.pio.register(0x500, 1, dev, "doorbell");
    const efd = eventfd();
    let kicks = 0;
    const kicked = new Promise<void>((res) => {
      const w = watchFd(efd, (n) => {
        kicks += n;
        unwatchFd(w);
        res();
      });
    });
    try {
      t.vm.ioeventfd({ addr: 0x500, len: 1, fd: efd, datamatch: 7n, pio: true });
      t.loop.start();
      assert.deepEqual(await withTimeout(t.stopped, 10_000, "the guest to halt"), { kind: "hlt" });
      await withTimeout(kicked, 5_000, "the eventfd");
      assert.equal(kicks, 1);
      assert.deepEqual(dev.writes, [{ offset: 0, bytes: [8] }]);
      t.vm.ioeventfd({ addr: 0x500, len: 1, fd: efd, datamatch: 7n, pio: true }, true);
    } finally {
      t.close();
      closeSync(efd);
    }
  });

  test("a spinning guest is kicked out (INTR exit) and stopped promptly", async () => {
    const threadsBefore = threads();
    const t = tiny([0xeb, 0xfe]); // jmp $
    try {
      t.loop.start();
      await new Promise((r) => setTimeout(r, 50));
      t.loop.kick();
      const deadline = Date.now() + 5_000;
      while (!t.loop.exits.get(Exit.INTR) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      assert.equal(t.loop.exits.get(Exit.INTR), 1, "the kick reached JS as one INTR exit");
      const t0 = Date.now();
      t.loop.stop();
      assert.ok(Date.now() - t0 < 1000, "stop joins the thread quickly");
    } finally {
      t.close();
    }
    assert.equal(threads(), threadsBefore);
  });

  test("pause parks a spinning guest so its registers can be read; resume lets it run on", async () => {
    const t = tiny([0x90, 0xeb, 0xfd]); // nop; jmp back to the nop
    try {
      t.loop.start();
      await new Promise((r) => setTimeout(r, 20));
      await withTimeout(t.loop.pause(), 5_000, "the vCPU to park");
      const rip = Number(t.loop.vcpu.getRegs().rip);
      assert.ok(rip >= CODE && rip < CODE + 3, `rip 0x${rip.toString(16)} inside the loop`);
      const intr = t.loop.exits.get(Exit.INTR) ?? 0;
      t.loop.resume();
      // Running again: a second pause needs a second kick, which shows up as another INTR exit.
      await withTimeout(t.loop.pause(), 5_000, "the vCPU to park again");
      assert.ok((t.loop.exits.get(Exit.INTR) ?? 0) > intr);
    } finally {
      t.close();
    }
  });

  after(() => {
    // Nothing global to undo: each test closes its own VM.
  });
});
