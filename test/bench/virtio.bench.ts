// Our virtio backends over vhost-user vs QEMU's built-in devices, on one guest (QEMU microvm,
// TCG where KVM is PVM or absent, 1 vCPU, 512 MiB):
//   - blk: one backing file attached twice, once through our vhost-user-blk backend and once as
//     QEMU's own virtio-blk-device (cache=writeback, aio=threads: buffered host I/O like ours).
//     Inside the guest a static tool (test/integration/virtio-blkbench.ts) does O_DIRECT
//     sequential read and write (1 MiB requests) and 4 KiB random reads at queue depth 1, each
//     for a fixed time; rounds alternate ours/QEMU so drift on a shared host hits both.
//     Ratio = ours / QEMU (higher is better for us). Targets: ≥ 1.0 on 4k random QD1, ≥ 0.8 on
//     sequential.
//   - vsock: host→guest and guest→host stream throughput (MB/s) and 64-byte echo round trips,
//     through our vhost-user-vsock (no reference: the host has no /dev/vhost-vsock for QEMU's
//     kernel-backed device).
//   - where the time goes: CPU seconds of QEMU (TCG vCPU + device emulation) and of this process
//     (our backends) per run; COVE_BENCH_PROFILE=1 also CPU-profiles our process during our
//     random-read runs and prints the top frames.
// Env: VIRTIO_BENCH_ROUNDS (3), VIRTIO_BENCH_SECONDS (4 per blk run), VIRTIO_BENCH_VSOCK_MIB (32).
// Writes bench-results/virtio.json.
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { guestCmdline } from "../../src/guest/cmdline.ts";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { chooseAccel } from "../../src/hypervisor/qemu/accel.ts";
import { QemuHypervisor, type QemuVm } from "../../src/hypervisor/qemu/qemu.ts";
import { load as loadAddon } from "../../src/native/load.ts";
import { withTimeout } from "../harness/timeout.ts";
import { type BlkBenchResult, buildBlkBench, parseBlkBench } from "../integration/virtio-blkbench.ts";
import { buildTestRoot, CMD_PORT, ECHO_PORT } from "../integration/virtio-guest-root.ts";

const ROUNDS = Number(process.env.VIRTIO_BENCH_ROUNDS ?? 3);
const SECONDS = Number(process.env.VIRTIO_BENCH_SECONDS ?? 4);
const VSOCK_MIB = Number(process.env.VIRTIO_BENCH_VSOCK_MIB ?? 32);
const PROFILE = process.env.COVE_BENCH_PROFILE === "1";
const REGION_MIB = 256;
const SINK_PORT = 1235;
const SOURCE_PORT = 1236;
const TESTS = ["seqread", "seqwrite", "randread"] as const;
type Test = (typeof TESTS)[number];
const DEVICES = [
  { key: "ours", label: "cove vhost-user-blk", serial: "cove-bench" },
  { key: "qemu", label: "QEMU virtio-blk-device", serial: "qemu-bench" },
] as const;
type DevKey = (typeof DEVICES)[number]["key"];

interface BlkRun extends BlkBenchResult {
  device: DevKey;
  round: number;
  /** CPU seconds during the run: QEMU's process and ours (the backends). */
  qemuCpuS: number;
  backendCpuS: number;
  /** Ours only: mean time a request spent inside our backend (off the ring → used ring + call). */
  serviceUs?: number;
  /** Ours only: mean time of the eventfd write that interrupts the guest (wakes QEMU). */
  callUs?: number;
}

const kernel = process.env.COVE_TEST_KERNEL ?? guestArtifacts().kernel;
if (!existsSync(kernel)) {
  console.error(`${kernel} missing: build the guest first with \`npm run guest\` (or set COVE_TEST_KERNEL)`);
  process.exit(1);
}

/** Sends `input`, half-closes, collects everything until the guest closes. */
function exchange(s: Duplex, input: Buffer | string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const out: Buffer[] = [];
    s.on("data", (d: Buffer) => out.push(d));
    s.on("error", reject);
    s.on("end", () => resolve(Buffer.concat(out)));
    s.end(input);
  });
}

/** utime + stime of a process, in seconds (/proc/<pid>/stat fields 14 and 15, clock ticks of 1/100 s). */
function procCpuS(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

function selfCpuS(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)]! : Number.NaN;
};
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

async function main(): Promise<void> {
  const tmp = mkdtempSync(join(tmpdir(), "cove-virtio-bench-"));
  let vm: QemuVm | undefined;
  let root: { image: string; cleanup: () => void } | undefined;
  const profiler = PROFILE ? new Session() : undefined;
  try {
    const tool = buildBlkBench(tmp);
    root = buildTestRoot({
      files: { "/usr/bin/blkbench": tool },
      initLines: [
        // host→guest: count what arrives and answer with the count once the host half-closes
        `socat -t 60 VSOCK-LISTEN:${SINK_PORT},fork,reuseaddr EXEC:"wc -c" &`,
        // guest→host: a fixed amount of zeros
        `socat -t 60 VSOCK-LISTEN:${SOURCE_PORT},fork,reuseaddr EXEC:"head -c ${VSOCK_MIB << 20} /dev/zero" &`,
      ],
    });
    const disk = join(tmp, "bench.img");
    for (let i = 0; i < REGION_MIB / 16; i++) writeFileSync(disk, randomBytes(16 << 20), { flag: i ? "a" : "w" });

    const accel = chooseAccel();
    const hv = new QemuHypervisor(accel, {
      extraArgs: [
        "-drive",
        `file=${disk},if=none,id=qblk,format=raw,cache=writeback,aio=threads,file.locking=off`,
        "-device",
        `virtio-blk-device,drive=qblk,serial=${DEVICES[1].serial}`,
      ],
    });
    let consoleText = "";
    vm = (await hv.start({
      id: "virtio-bench",
      kernel,
      cmdline: guestCmdline({ quiet: true }),
      memoryMiB: 512,
      vcpus: 1,
      disks: [
        { id: "root", path: root.image, readOnly: true },
        { id: "bench", path: disk, serial: DEVICES[0].serial },
      ],
      vsock: { guestCid: 3 },
      workDir: join(tmp, "vm"),
    })) as QemuVm;
    vm.console.on("data", (d: Buffer) => {
      consoleText = (consoleText + d.toString()).slice(-20000);
    });
    const guestSh = async (script: string, ms = 120_000): Promise<string> => {
      const s = await vm!.connectVsock(CMD_PORT, 10_000);
      return (await withTimeout(exchange(s, `${script}\n`), ms, `guest: ${script}`)).toString();
    };

    const deadline = Date.now() + 180_000;
    while (!consoleText.includes("COVE-TEST-GUEST-READY")) {
      if (Date.now() > deadline) throw new Error(`guest did not boot; console:\n${consoleText.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    for (;;) {
      try {
        if ((await guestSh("echo up", 10_000)).includes("up")) break;
      } catch (e) {
        if (Date.now() > deadline) throw e;
      }
      await new Promise((r) => setTimeout(r, 300));
    }
    const devOut = await guestSh(
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell script, not a template
      'for d in /sys/block/vd*; do echo "$(cat $d/serial) /dev/${d##*/} $(cat $d/size)"; done',
    );
    const devPath = new Map<string, string>();
    for (const m of devOut.matchAll(/^(\S+) (\/dev\/vd[a-z]+) (\d+)$/gm)) devPath.set(m[1]!, m[2]!);
    for (const d of DEVICES)
      if (!devPath.has(d.serial)) throw new Error(`guest has no disk with serial ${d.serial}:\n${devOut}`);
    console.log(`accel ${accel.accel} (${accel.reason}); guest disks: ${devOut.trim().replace(/\n/g, "; ")}`);

    // blk: alternate devices within each round, every test.
    const runs: BlkRun[] = [];
    const qemuPid = vm.pid;
    const benchDisk = vm.devices.disks.get("bench")!;
    const benchBackend = vm.backends.get("bench")!;
    if (profiler) {
      profiler.connect();
      await profiler.post("Profiler.enable");
      await profiler.post("Profiler.setSamplingInterval", { interval: 200 });
    }
    for (let round = 1; round <= ROUNDS; round++) {
      for (const test of TESTS) {
        const order = round % 2 ? DEVICES : [...DEVICES].reverse();
        for (const d of order) {
          const profiling = profiler && d.key === "ours" && test === "randread";
          if (profiling) await profiler.post("Profiler.start");
          const q0 = procCpuS(qemuPid);
          const c0 = selfCpuS();
          const m0 = { ...benchDisk.metrics };
          const v0 = { ...benchBackend.metrics };
          const out = await guestSh(
            `blkbench ${devPath.get(d.serial)} ${test} ${SECONDS} ${REGION_MIB} 2>&1 | tee /dev/console`,
            SECONDS * 1000 + 120_000,
          );
          const qemuCpuS = procCpuS(qemuPid) - q0;
          const backendCpuS = selfCpuS() - c0;
          if (profiling) profiles.push((await profiler.post("Profiler.stop")).profile as CpuProfile);
          const r = parseBlkBench(out)[0];
          if (!r || r.test !== test) throw new Error(`blkbench ${d.key} ${test} failed:\n${out}`);
          const served = benchDisk.metrics.completed - m0.completed;
          const serviceUs =
            d.key === "ours" && served > 0 ? (benchDisk.metrics.serviceNs - m0.serviceNs) / served / 1000 : undefined;
          const calls = benchBackend.metrics.calls - v0.calls;
          const callUs =
            d.key === "ours" && calls > 0 ? (benchBackend.metrics.callNs - v0.callNs) / calls / 1000 : undefined;
          runs.push({ ...r, device: d.key, round, qemuCpuS, backendCpuS, serviceUs, callUs });
          console.log(
            `round ${round} ${test.padEnd(8)} ${d.key.padEnd(4)} ${fmtRun(test, r)}  cpu qemu ${qemuCpuS.toFixed(2)} s, backend ${backendCpuS.toFixed(2)} s`,
          );
        }
      }
    }
    profiler?.disconnect();

    // vsock: round trips, then both directions.
    const rtts: number[] = [];
    {
      const s = await vm.connectVsock(ECHO_PORT, 10_000);
      const msg = Buffer.alloc(64, 0x61);
      let pending: ((b: Buffer) => void) | undefined;
      let buf = Buffer.alloc(0);
      s.on("data", (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= msg.length && pending) {
          const p = pending;
          pending = undefined;
          const got = buf.subarray(0, msg.length);
          buf = buf.subarray(msg.length);
          p(got);
        }
      });
      for (let i = 0; i < 300 + 20; i++) {
        const t0 = process.hrtime.bigint();
        const got = await withTimeout(
          new Promise<Buffer>((res) => {
            pending = res;
            s.write(msg);
          }),
          10_000,
          "vsock echo",
        );
        if (!got.equals(msg)) throw new Error("vsock echo returned different bytes");
        if (i >= 20) rtts.push(Number(process.hrtime.bigint() - t0) / 1000);
      }
      s.destroy();
    }
    const vsockRuns: { dir: string; round: number; mbps: number; qemuCpuS: number; backendCpuS: number }[] = [];
    const bytes = VSOCK_MIB << 20;
    for (let round = 1; round <= ROUNDS; round++) {
      {
        const data = randomBytes(bytes);
        const q0 = procCpuS(qemuPid);
        const c0 = selfCpuS();
        const s = await vm.connectVsock(SINK_PORT, 10_000);
        const t0 = performance.now();
        const reply = await withTimeout(exchange(s, data), 300_000, "vsock host→guest");
        const ms = performance.now() - t0;
        if (Number(reply.toString().trim()) !== bytes)
          throw new Error(`guest counted ${reply.toString().trim()} bytes, sent ${bytes}`);
        vsockRuns.push({
          dir: "host→guest",
          round,
          mbps: bytes / 1e6 / (ms / 1000),
          qemuCpuS: procCpuS(qemuPid) - q0,
          backendCpuS: selfCpuS() - c0,
        });
      }
      {
        const q0 = procCpuS(qemuPid);
        const c0 = selfCpuS();
        const s = await vm.connectVsock(SOURCE_PORT, 10_000);
        const t0 = performance.now();
        const got = await withTimeout(exchange(s, ""), 300_000, "vsock guest→host");
        const ms = performance.now() - t0;
        if (got.length !== bytes || !got.equals(Buffer.alloc(bytes)))
          throw new Error(`guest sent ${got.length} bytes (${createHash("sha256").update(got).digest("hex")})`);
        vsockRuns.push({
          dir: "guest→host",
          round,
          mbps: bytes / 1e6 / (ms / 1000),
          qemuCpuS: procCpuS(qemuPid) - q0,
          backendCpuS: selfCpuS() - c0,
        });
      }
      console.log(
        `round ${round} vsock ${vsockRuns
          .slice(-2)
          .map((r) => `${r.dir} ${r.mbps.toFixed(1)} MB/s`)
          .join(", ")}`,
      );
    }
    const metrics = vm.devices;
    report(runs, rtts, vsockRuns, accel.accel, {
      blk: metrics.disks.get("bench")?.metrics,
      blkIoPath: metrics.disks.get("bench")?.ioPath,
      vsock: metrics.vsock.metrics,
    });
  } finally {
    profiler?.disconnect();
    if (vm) await vm.kill();
    root?.cleanup();
    rmSync(tmp, { recursive: true, force: true });
  }
}

function fmtRun(test: Test | string, r: BlkBenchResult): string {
  const s = r.ns / 1e9;
  return test === "randread"
    ? `${(r.ops / s).toFixed(0)} IOPS (${((s / r.ops) * 1e6).toFixed(0)} µs/op)`
    : `${(r.bytes / 1e6 / s).toFixed(1)} MB/s`;
}

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number }[];
}
const profiles: CpuProfile[] = [];
const addonNames = new Set(Object.keys(loadAddon()));

/** Top frames by self samples over all profiles. */
function topFrames(n: number): string[] {
  const counts = new Map<string, number>();
  let total = 0;
  for (const p of profiles)
    for (const node of p.nodes) {
      const h = node.hitCount ?? 0;
      if (!h) continue;
      const cf = node.callFrame;
      if (!cf.url && addonNames.has(cf.functionName)) {
        // V8 attributes every N-API frame of the addon to one of its names: it is "the syscalls".
        const key = "native addon calls (preadv2/pwritev2 RWF_NOWAIT, eventfd read/write, sendmsg/recvmsg)";
        counts.set(key, (counts.get(key) ?? 0) + h);
        total += h;
        continue;
      }
      const where = cf.url ? `${cf.url.replace(/^.*\/(src|node_modules)\//, "$1/")}:${cf.lineNumber + 1}` : "";
      const key = `${cf.functionName || "(anonymous)"} ${where}`.trim();
      counts.set(key, (counts.get(key) ?? 0) + h);
      total += h;
    }
  const idle = counts.get("(idle)") ?? 0;
  const busy = total - idle;
  const rows = [...counts.entries()]
    .filter(([k]) => k !== "(idle)")
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([k, v]) => `  ${((100 * v) / Math.max(1, busy)).toFixed(1).padStart(5)}%  ${k}`);
  return [
    `  busy ${((100 * busy) / Math.max(1, total)).toFixed(1)}% of samples; top self time of busy samples:`,
    ...rows,
  ];
}

function table(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  console.log(line(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const r of rows) console.log(line(r));
}

function report(
  runs: BlkRun[],
  rtts: number[],
  vsockRuns: { dir: string; round: number; mbps: number; qemuCpuS: number; backendCpuS: number }[],
  accel: string,
  deviceMetrics: Record<string, unknown>,
): void {
  const value = (r: BlkRun) => (r.test === "randread" ? r.ops / (r.ns / 1e9) : r.bytes / 1e6 / (r.ns / 1e9));
  const blk = TESTS.map((test) => {
    const per = (k: DevKey) => runs.filter((r) => r.test === test && r.device === k);
    const ours = per("ours");
    const qemu = per("qemu");
    const o = median(ours.map(value));
    const q = median(qemu.map(value));
    const cpuPerOp = (rs: BlkRun[], f: (r: BlkRun) => number) => median(rs.map((r) => (f(r) / r.ops) * 1e6));
    return {
      test,
      unit: test === "randread" ? "IOPS" : "MB/s",
      ours: o,
      qemu: q,
      ratioOfMedians: o / q,
      // Each round runs ours and QEMU back to back: the per-round ratio cancels slow drift of a
      // shared host, so its median is the headline number.
      ratio: median(
        ours.flatMap((r) => {
          const p = qemu.find((x) => x.round === r.round);
          return p ? [value(r) / value(p)] : [];
        }),
      ),
      target: test === "randread" ? 1.0 : 0.8,
      oursRuns: ours.map(value),
      qemuRuns: qemu.map(value),
      oursQemuCpuUsPerOp: cpuPerOp(ours, (r) => r.qemuCpuS),
      oursBackendCpuUsPerOp: cpuPerOp(ours, (r) => r.backendCpuS),
      qemuQemuCpuUsPerOp: cpuPerOp(qemu, (r) => r.qemuCpuS),
      qemuBackendCpuUsPerOp: cpuPerOp(qemu, (r) => r.backendCpuS),
      oursServiceUs: median(ours.flatMap((r) => (r.serviceUs === undefined ? [] : [r.serviceUs]))),
      oursCallUs: median(ours.flatMap((r) => (r.callUs === undefined ? [] : [r.callUs]))),
      oursLatencyUs: median(ours.map((r) => r.ns / r.ops / 1000)),
      qemuLatencyUs: median(qemu.map((r) => r.ns / r.ops / 1000)),
    };
  });
  const f = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : "-");
  console.log(
    `\nvirtio-blk in one guest (QEMU microvm, ${accel}, 1 vCPU), same backing file; median of ${ROUNDS} alternating runs of ${SECONDS} s`,
  );
  console.log("ratio = median over rounds of ours / QEMU in the same round (> 1: we are faster)");
  console.log("µs/op: guest-measured time per tool operation (1 MiB or 4 KiB), ours | QEMU");
  console.log("in backend: µs per virtio request inside our process, ring → used ring + interrupt");
  console.log("  (in brackets: the eventfd write that interrupts the guest, i.e. wakes QEMU's main loop)");
  console.log("cpu/op: CPU µs per tool operation, QEMU process | our process\n");
  table(
    [
      "test",
      "unit",
      "cove vhost-user",
      "QEMU built-in",
      "ratio",
      "target",
      "µs/op",
      "in backend (call)",
      "cpu/op ours",
      "cpu/op QEMU dev",
    ],
    blk.map((b) => [
      b.test === "randread" ? "4k random read QD1" : b.test === "seqread" ? "seq read 1M" : "seq write 1M",
      b.unit,
      f(b.ours, b.unit === "IOPS" ? 0 : 1),
      f(b.qemu, b.unit === "IOPS" ? 0 : 1),
      `${f(b.ratio, 2)}${b.ratio >= b.target ? "" : " (miss)"}`,
      `≥ ${b.target.toFixed(1)}`,
      `${f(b.oursLatencyUs, 0)} | ${f(b.qemuLatencyUs, 0)}`,
      `${f(b.oursServiceUs, 1)} (${f(b.oursCallUs, 1)})`,
      `${f(b.oursQemuCpuUsPerOp, 0)} | ${f(b.oursBackendCpuUsPerOp, 0)}`,
      `${f(b.qemuQemuCpuUsPerOp, 0)} | ${f(b.qemuBackendCpuUsPerOp, 0)}`,
    ]),
  );
  const vs = ["host→guest", "guest→host"].map((dir) => {
    const rs = vsockRuns.filter((r) => r.dir === dir);
    return {
      dir,
      mbps: median(rs.map((r) => r.mbps)),
      runs: rs.map((r) => r.mbps),
      qemuCpuS: median(rs.map((r) => r.qemuCpuS)),
      backendCpuS: median(rs.map((r) => r.backendCpuS)),
    };
  });
  const rtt = { p50us: median(rtts), p99us: pct(rtts, 99), n: rtts.length };
  console.log(
    `\nvirtio-vsock through cove vhost-user (socat in the guest), ${VSOCK_MIB} MiB per run, median of ${ROUNDS}`,
  );
  console.log("(no reference: this host has no /dev/vhost-vsock for QEMU's kernel-backed vhost-vsock)\n");
  table(
    ["measure", "value", "cpu s QEMU | ours"],
    [
      ...vs.map((v) => [`stream ${v.dir}`, `${f(v.mbps)} MB/s`, `${f(v.qemuCpuS, 2)} | ${f(v.backendCpuS, 2)}`]),
      [`64 B echo round trip p50 (n=${rtt.n})`, `${f(rtt.p50us, 0)} µs`, ""],
      ["64 B echo round trip p99", `${f(rtt.p99us, 0)} µs`, ""],
    ],
  );
  const prof = profiles.length ? topFrames(15) : [];
  if (prof.length) {
    console.log("\nour process during our 4k random-read runs (CPU profile):");
    for (const l of prof) console.log(l);
  }
  mkdirSync("bench-results", { recursive: true });
  writeFileSync(
    "bench-results/virtio.json",
    `${JSON.stringify(
      {
        bench: "virtio",
        date: new Date().toISOString(),
        node: process.version,
        cpus: cpus().length,
        accel,
        rounds: ROUNDS,
        secondsPerRun: SECONDS,
        blk,
        blkRuns: runs,
        vsock: { streams: vs, roundTrip: rtt, runs: vsockRuns },
        deviceMetrics,
        profileTop: prof,
      },
      null,
      2,
    )}\n`,
  );
  console.log("\nwrote bench-results/virtio.json");
}

await main();
