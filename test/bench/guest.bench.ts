// Guest boot to agent-ready under QEMU TCG (microvm, QEMU's own virtio-blk, 512 MiB, 1 vCPU), broken
// into kernel (until the kernel starts /init) and agent start (Node + the agent bundle until the
// readiness line), plus the guest's memory in use at that point (MemTotal − MemAvailable, read by
// the agent). Side by side in alternating rounds (median kept), ratios against the first row:
//   - bzImage, verbose console   (host sees "Run /init as init process": host-side kernel split)
//   - bzImage, `quiet`           (serial output is slow under TCG)
//   - vmlinux (PVH entry), quiet (no decompression; what an ELF/PVH loader would boot)
//   - bzImage, quiet, lz4hc-compressed erofs image (smaller image vs. decompression cost)
// Reference for real KVM hosts (anchors.md): Firecracker boots to init in ≤125 ms; TCG here is an
// emulator on a shared 2-core machine, so absolute numbers are far above that.
// Env: GUEST_BENCH_ROUNDS (default 3). Writes bench-results/guest.json.
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { buildImage } from "../../src/guest/build.ts";
import { guestArtifacts, repoRoot } from "../../src/guest/paths.ts";
import { silentProgress } from "../../src/guest/progress.ts";
import { type BootResult, bootGuest } from "../harness/qemu-boot.ts";

interface Variant {
  name: string;
  kernel: string;
  rootfs: string;
  quiet: boolean;
}

interface Sample {
  hostReadyMs: number;
  hostInitMs?: number;
  hostTotalMs: number;
  guestUptimeMs: number;
  guestKernelMs: number;
  guestAgentMs: number;
  memUsedKiB: number;
}

const rounds = Number(process.env.GUEST_BENCH_ROUNDS ?? 3);
const a = guestArtifacts();
for (const p of [a.kernel, a.vmlinux, a.rootfs])
  if (!existsSync(p)) {
    console.error(`${p} missing: build the guest first with \`npm run guest\``);
    process.exit(1);
  }

const tmp = mkdtempSync(join(tmpdir(), "cove-guest-bench-"));
try {
  const lz4 = await buildImage(tmp, repoRoot(), silentProgress(), { compress: "lz4hc" });
  const variants: Variant[] = [
    { name: "bzImage, verbose console", kernel: a.kernel, rootfs: a.rootfs, quiet: false },
    { name: "bzImage, quiet", kernel: a.kernel, rootfs: a.rootfs, quiet: true },
    { name: "vmlinux (PVH), quiet", kernel: a.vmlinux, rootfs: a.rootfs, quiet: true },
    { name: "bzImage, quiet, lz4hc image", kernel: a.kernel, rootfs: lz4.rootfs, quiet: true },
  ];
  const samples = new Map<string, Sample[]>(variants.map((v) => [v.name, []]));
  const failures: string[] = [];
  for (let round = 0; round < rounds; round++) {
    for (const v of variants) {
      const t0 = performance.now();
      let hostInitMs: number | undefined;
      const r: BootResult = await bootGuest({
        kernel: v.kernel,
        rootfs: v.rootfs,
        quiet: v.quiet,
        cmdline: "cove.shutdown_after_ready=1",
        timeoutMs: 120_000,
        onLine: (l) => {
          if (hostInitMs === undefined && l.includes("Run /init as init process")) hostInitMs = performance.now() - t0;
        },
      });
      if (!r.ready || r.exitCode !== 0) {
        failures.push(
          `${v.name} round ${round}: ready=${Boolean(r.ready)} exit=${r.exitCode}\n${r.serial.slice(-15).join("\n")}`,
        );
        continue;
      }
      samples.get(v.name)!.push({
        hostReadyMs: r.readyWallMs!,
        hostInitMs,
        hostTotalMs: r.totalWallMs,
        guestUptimeMs: r.ready.uptime_ms,
        guestKernelMs: r.ready.kernel_ms,
        guestAgentMs: r.ready.agent_ms,
        memUsedKiB: r.ready.mem_used_kib,
      });
      process.stderr.write(".");
    }
  }
  process.stderr.write("\n");
  const median = (xs: number[]) => {
    const s = [...xs].sort((x, y) => x - y);
    return s.length ? s[Math.floor(s.length / 2)]! : Number.NaN;
  };
  const rows = variants.map((v) => {
    const s = samples.get(v.name)!;
    const m = (k: keyof Sample) => median(s.map((x) => x[k]).filter((x): x is number => x !== undefined));
    return {
      variant: v.name,
      runs: s.length,
      hostReadyMs: m("hostReadyMs"),
      hostInitMs: m("hostInitMs"),
      hostTotalMs: m("hostTotalMs"),
      guestUptimeMs: m("guestUptimeMs"),
      guestKernelMs: m("guestKernelMs"),
      guestAgentMs: m("guestAgentMs"),
      memUsedKiB: m("memUsedKiB"),
    };
  });
  const base = rows[0]!;
  const f = (n: number) => (Number.isNaN(n) ? "-" : n.toFixed(0));
  console.log(
    `guest boot to agent-ready, QEMU ${process.env.QEMU_VERSION ?? "7.2"} microvm, TCG, 512 MiB, 1 vCPU; median of ${rounds} rounds\n`,
  );
  console.log(
    "variant                        | host: ready ms (ratio) | host: /init ms | guest: uptime = kernel + agent ms | mem used MiB",
  );
  console.log(
    "-------------------------------|------------------------|----------------|-----------------------------------|-------------",
  );
  for (const r of rows)
    console.log(
      `${r.variant.padEnd(31)}| ${`${f(r.hostReadyMs)} (${(r.hostReadyMs / base.hostReadyMs).toFixed(2)}x)`.padEnd(23)}| ${f(r.hostInitMs).padEnd(15)}| ${`${f(r.guestUptimeMs)} = ${f(r.guestKernelMs)} + ${f(r.guestAgentMs)}`.padEnd(34)}| ${(r.memUsedKiB / 1024).toFixed(1)}`,
    );
  const kernelDir = dirname(realpathSync(a.kernel));
  const manifest = JSON.parse(readFileSync(join(kernelDir, "manifest.json"), "utf8")) as { compileSeconds?: number };
  const sizes = {
    bzImageBytes: statSync(a.kernel).size,
    vmlinuxBytes: statSync(a.vmlinux).size,
    rootfsBytes: statSync(a.rootfs).size,
    rootfsLz4hcBytes: statSync(lz4.rootfs).size,
    kernelCompileSeconds: manifest.compileSeconds ?? null,
  };
  console.log(
    `\nbzImage ${(sizes.bzImageBytes / 1048576).toFixed(1)} MiB, vmlinux ${(sizes.vmlinuxBytes / 1048576).toFixed(1)} MiB, ` +
      `rootfs.erofs ${(sizes.rootfsBytes / 1048576).toFixed(1)} MiB (lz4hc ${(sizes.rootfsLz4hcBytes / 1048576).toFixed(1)} MiB), ` +
      `last kernel compile ${sizes.kernelCompileSeconds === null ? "?" : `${sizes.kernelCompileSeconds.toFixed(0)} s`}`,
  );
  console.log("reference: Firecracker boots to init in <=125 ms on real KVM (anchors.md); TCG is not comparable.");
  if (failures.length) console.log(`\nfailed boots:\n${failures.join("\n\n")}`);
  mkdirSync("bench-results", { recursive: true });
  writeFileSync("bench-results/guest.json", JSON.stringify({ rounds, rows, sizes, failures }, null, 2));
  if (failures.length) process.exitCode = 1;
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
