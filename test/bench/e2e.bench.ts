// End to end, side by side in one run: `ctr run --rm … echo` to the container's first output byte
// for containerd's runc shim and for cove (cold: the layer image is converted; warm: cached);
// host memory per running cove pod (PSS of every host process of the pod: shim + VMM; guest RAM
// reported separately); N cove pods started concurrently. Writes bench-results/e2e.json.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { COVE_RUNTIME_TYPE, Containerd } from "../harness/containerd.ts";
import { BUSYBOX_IMAGE_REF, buildImage, busyboxImage, importImage } from "../harness/image.ts";
import { processesWithArg, processesWithCwdUnder } from "../harness/processes.ts";
import { firstOutput, median } from "./first-output.ts";

const ROUNDS = Number(process.env.COVE_BENCH_ROUNDS ?? 3);
const N = Number(process.env.COVE_BENCH_PODS ?? 3);
const GUEST_MIB = 256;
const art = guestArtifacts();

function pssKiB(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

async function main() {
  const cd = await Containerd.start({});
  const coveDir = join(cd.dir, "cove");
  mkdirSync(coveDir);
  const cache = join(coveDir, "cache");
  const cfg = join(coveDir, "cove.toml");
  writeFileSync(
    cfg,
    `cache_dir = "${cache}"\n[guest]\nkernel = "${art.kernel}"\nimage = "${art.rootfs}"\nmemory_mib = ${GUEST_MIB}\n[pod]\nwritable_layer_mib = 64\n`,
  );
  const result: Record<string, unknown> = {};
  try {
    await importImage(cd, await buildImage(busyboxImage(), join(cd.dir, "images")));
    const run = (rt: string, id: string, extra: string[] = []) =>
      firstOutput(cd, ["run", "--rm", "--runtime", rt, ...extra, BUSYBOX_IMAGE_REF, id, "/bin/echo", "hi"]);
    const cove = (id: string) => run(COVE_RUNTIME_TYPE, id, ["--runtime-config-path", cfg]);
    const rows: { name: string; runc: number[]; cove: number[] }[] = [
      { name: "cold (layer converted)", runc: [], cove: [] },
      { name: "warm (layer cached)", runc: [], cove: [] },
    ];
    for (let r = 0; r < ROUNDS; r++) {
      rmSync(join(cache, "layers"), { recursive: true, force: true });
      rows[0]!.runc.push((await run("io.containerd.runc.v2", `rc${r}`)).firstMs);
      rows[0]!.cove.push((await cove(`cc${r}`)).firstMs);
      rows[1]!.runc.push((await run("io.containerd.runc.v2", `rw${r}`)).firstMs);
      rows[1]!.cove.push((await cove(`cw${r}`)).firstMs);
    }
    console.log(`ctr run --rm … /bin/echo hi: ms to the first output byte (median of ${ROUNDS})`);
    console.log("case                     runc      cove     cove/runc");
    for (const row of rows) {
      const a = median(row.runc);
      const b = median(row.cove);
      console.log(
        `${row.name.padEnd(24)} ${a.toFixed(0).padStart(6)} ${b.toFixed(0).padStart(9)} ${(b / a).toFixed(1).padStart(9)}x`,
      );
    }
    result.first_output_ms = rows.map((r) => ({
      case: r.name,
      runc: median(r.runc),
      cove: median(r.cove),
      rounds: ROUNDS,
    }));

    // N pods at once, then host memory of each while they run.
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: N }, (_, i) =>
        cd.ctrOk(
          [
            "run",
            "-d",
            "--runtime",
            COVE_RUNTIME_TYPE,
            "--runtime-config-path",
            cfg,
            BUSYBOX_IMAGE_REF,
            `p${i}`,
            "sleep",
            "1000",
          ],
          { timeoutMs: 300_000 },
        ),
      ),
    );
    const concurrentMs = performance.now() - t0;
    await new Promise((r) => setTimeout(r, 2000));
    const shims = processesWithArg(cd.address).filter((p) => !/qemu/.test(p.argv[0] ?? ""));
    const vmms = processesWithCwdUnder(cd.dir).filter((p) => /qemu-system/.test(p.argv[0] ?? ""));
    const shimPss = shims.map((p) => pssKiB(p.pid));
    const vmmPss = vmms.map((p) => pssKiB(p.pid));
    const perPodShim = shimPss.reduce((a, b) => a + b, 0) / Math.max(1, shims.length);
    const perPodVmm = vmmPss.reduce((a, b) => a + b, 0) / Math.max(1, vmms.length);
    console.log(`\n${N} cove pods started concurrently (ctr run -d): ${concurrentMs.toFixed(0)} ms total`);
    console.log(
      "host memory per running pod (PSS, MiB; guest RAM backs the VMM's share, configured " + `${GUEST_MIB} MiB):`,
    );
    console.log(`  shim (Node)          ${(perPodShim / 1024).toFixed(1)}`);
    console.log(`  VMM (qemu, TCG)      ${(perPodVmm / 1024).toFixed(1)}  (includes the guest RAM the guest touched)`);
    console.log(`  total                ${((perPodShim + perPodVmm) / 1024).toFixed(1)}`);
    result.concurrent = { pods: N, total_ms: concurrentMs };
    result.host_pss_mib_per_pod = {
      shim: perPodShim / 1024,
      vmm_including_guest_ram: perPodVmm / 1024,
      total: (perPodShim + perPodVmm) / 1024,
      guest_ram_configured_mib: GUEST_MIB,
      shims: shims.length,
      vmms: vmms.length,
    };
    for (let i = 0; i < N; i++) {
      await cd.ctr(["task", "kill", "-s", "SIGKILL", `p${i}`]);
    }
    await new Promise((r) => setTimeout(r, 2000));
    for (let i = 0; i < N; i++) {
      await cd.ctr(["task", "rm", "-f", `p${i}`], { timeoutMs: 30_000 });
      await cd.ctr(["container", "rm", `p${i}`]);
    }
  } finally {
    await cd.stop();
  }
  mkdirSync("bench-results", { recursive: true });
  writeFileSync("bench-results/e2e.json", `${JSON.stringify(result, null, 2)}\n`);
}

await main();
