// QEMU's TCG translation cache (`[qemu] tcg_tb_size_mib`), side by side in one run for each size:
// host memory of idle pods (PSS of the QEMU process: its own anonymous memory, mostly the
// translation cache, plus the guest RAM the guest touched) and the run time of a CPU-bound
// container (many busybox applets, so the guest's code working set is not tiny). The reference is
// QEMU's own default (0 = no tb-size: 1 GiB on 7.2). Writes bench-results/tcg.json.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { COVE_RUNTIME_TYPE, Containerd } from "../harness/containerd.ts";
import { BUSYBOX_IMAGE_REF, buildImage, busyboxImage, importImage } from "../harness/image.ts";
import { processesWithCwdUnder } from "../harness/processes.ts";

const SIZES = (process.env.COVE_BENCH_TB_SIZES ?? "0,128,64,32,16").split(",").map(Number);
const PODS = Number(process.env.COVE_BENCH_PODS ?? 2);
const IDLE_MS = Number(process.env.COVE_BENCH_IDLE_MS ?? 20_000);
const art = guestArtifacts();
const CPU_WORK =
  "dd if=/dev/zero bs=1M count=4 2>/dev/null | gzip -1 | gzip -d | md5sum; " +
  "seq 1 40000 | sort -rn | awk '{s+=$1} END {print s}'; seq 1 20000 | sha256sum; " +
  "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo $i";

function smaps(pid: number): { pss: number; anon: number } {
  const t = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(t)?.[1] ?? 0);
  return { pss: kb("Pss") / 1024, anon: kb("Pss_Anon") / 1024 };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const cd = await Containerd.start({});
  const rows: { tbSizeMib: number; qemuPssMib: number; qemuAnonMib: number; cpuWorkMs: number }[] = [];
  try {
    await importImage(cd, await buildImage(busyboxImage(), join(cd.dir, "images")));
    for (const size of SIZES) {
      const dir = join(cd.dir, `cove-tb${size}`);
      mkdirSync(dir, { recursive: true });
      const cfg = join(dir, "cove.toml");
      writeFileSync(
        cfg,
        `hypervisor = "qemu"\ncache_dir = "${join(dir, "cache")}"\n[guest]\nkernel = "${art.kernel}"\nimage = "${art.rootfs}"\n` +
          `[qemu]\ntcg_tb_size_mib = ${size}\n[pod]\nwritable_layer_mib = 64\n`,
      );
      const run = ["run", "--runtime", COVE_RUNTIME_TYPE, "--runtime-config-path", cfg];
      // The CPU-bound container first (its own VM), timed from ctr's start to its exit.
      const t0 = performance.now();
      await cd.ctrOk([...run, "--rm", BUSYBOX_IMAGE_REF, `cpu${size}`, "sh", "-c", CPU_WORK], { timeoutMs: 600_000 });
      const cpuWorkMs = performance.now() - t0;
      for (let i = 0; i < PODS; i++) {
        await cd.ctrOk([...run, "-d", BUSYBOX_IMAGE_REF, `idle${size}-${i}`, "sleep", "100000"], {
          timeoutMs: 300_000,
        });
      }
      await sleep(IDLE_MS);
      const qemus = processesWithCwdUnder(cd.dir).filter((p) => /qemu-system/.test(p.argv.join(" ")));
      const mem = qemus.map((p) => smaps(p.pid));
      const avg = (f: (m: { pss: number; anon: number }) => number) =>
        mem.reduce((a, m) => a + f(m), 0) / Math.max(1, mem.length);
      rows.push({ tbSizeMib: size, qemuPssMib: avg((m) => m.pss), qemuAnonMib: avg((m) => m.anon), cpuWorkMs });
      for (let i = 0; i < PODS; i++) {
        await cd.ctr(["task", "kill", "-s", "SIGKILL", `idle${size}-${i}`]);
      }
      await sleep(2000);
      for (let i = 0; i < PODS; i++) {
        await cd.ctr(["task", "rm", "-f", `idle${size}-${i}`], { timeoutMs: 60_000 });
        await cd.ctr(["container", "rm", `idle${size}-${i}`]);
      }
    }
  } finally {
    await cd.stop();
  }
  const ref = rows.find((r) => r.tbSizeMib === 0) ?? rows[0]!;
  console.log(
    `TCG translation cache: ${PODS} idle busybox pods per size (PSS after ${IDLE_MS / 1000} s idle) and a CPU-bound container`,
  );
  console.log("tb-size MiB   QEMU PSS MiB   of it anon   vs default   CPU work s   vs default");
  for (const r of rows) {
    console.log(
      `${(r.tbSizeMib ? String(r.tbSizeMib) : "default").padEnd(12)} ${r.qemuPssMib.toFixed(1).padStart(13)} ${r.qemuAnonMib
        .toFixed(1)
        .padStart(12)} ${(r.qemuPssMib / ref.qemuPssMib).toFixed(2).padStart(11)}x ${(r.cpuWorkMs / 1000)
        .toFixed(1)
        .padStart(11)} ${(r.cpuWorkMs / ref.cpuWorkMs).toFixed(2).padStart(11)}x`,
    );
  }
  mkdirSync("bench-results", { recursive: true });
  writeFileSync("bench-results/tcg.json", `${JSON.stringify({ pods: PODS, idleMs: IDLE_MS, rows }, null, 2)}\n`);
}

await main();
