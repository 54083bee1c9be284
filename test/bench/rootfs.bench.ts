// The first start of a real image, side by side with runc: a Debian 12 userland (mmdebstrap, cut
// into RUN-like layers, ≥ 300 MiB over ≥ 8 layers; built once and cached under $COVE_CACHE_DIR)
// through `ctr run --rm … python3 -c print(...)`, timed to the first output byte. Cold: cove's
// layer cache is empty (every layer converted); warm: cached. Prints the times, the ratios and how
// many layers were converted. Writes bench-results/rootfs.json.
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cacheDir, guestArtifacts } from "../../src/guest/paths.ts";
import { COVE_RUNTIME_TYPE, Containerd } from "../harness/containerd.ts";
import { DEBIAN_BIG, debianLayers } from "../harness/debian.ts";
import { buildImage, importImage } from "../harness/image.ts";
import { firstOutput, median } from "./first-output.ts";

const ROUNDS = Number(process.env.COVE_BENCH_ROUNDS ?? 3);
const REF = "docker.io/cove-bench/debian-python:1";
const CMD = ["/usr/bin/python3", "-c", "print('ready')"];
const art = guestArtifacts();

/** "converted" of the shim's rootfs line for container `id` (how many layers it converted). */
function converted(cd: Containerd, id: string): number {
  for (const line of cd.log().split("\n")) {
    if (!line.includes("rootfs: layer images ready") || !line.includes(`"id":"${id}"`)) continue;
    const m = /"converted":(\d+)/.exec(line);
    if (m) return Number(m[1]);
  }
  return Number.NaN;
}

async function main() {
  const cache = cacheDir();
  const t0 = performance.now();
  const deb = debianLayers(DEBIAN_BIG, cache, (s) => console.log(s));
  const image = await buildImage(
    { ref: REF, base: "none", layers: deb.layers, cmd: CMD, env: ["PATH=/usr/local/bin:/usr/bin:/bin"] },
    join(cache, "test-images"),
  );
  console.log(
    `image: Debian ${DEBIAN_BIG.include.length} packages + minbase, ${deb.layers.length} layers, ${(deb.bytes / 2 ** 20).toFixed(0)} MiB (ready in ${((performance.now() - t0) / 1000).toFixed(0)} s)`,
  );
  const cd = await Containerd.start({});
  const coveDir = join(cd.dir, "cove");
  mkdirSync(coveDir);
  const layerCache = join(coveDir, "cache");
  const cfg = join(coveDir, "cove.toml");
  writeFileSync(
    cfg,
    `cache_dir = "${layerCache}"\n[guest]\nkernel = "${art.kernel}"\nimage = "${art.rootfs}"\nmemory_mib = 512\n[pod]\nwritable_layer_mib = 256\n`,
  );
  const result: Record<string, unknown> = { layers: deb.layers.length, image_mib: deb.bytes / 2 ** 20 };
  try {
    await importImage(cd, image, "default", 600_000);
    const runc = (id: string) => firstOutput(cd, ["run", "--rm", REF, id, ...CMD], 900_000);
    const cove = (id: string) =>
      firstOutput(
        cd,
        ["run", "--rm", "--runtime", COVE_RUNTIME_TYPE, "--runtime-config-path", cfg, REF, id, ...CMD],
        900_000,
      );
    const rows = {
      cold: { runc: [] as number[], cove: [] as number[], converted: [] as number[] },
      warm: { runc: [] as number[], cove: [] as number[], converted: [] as number[] },
    };
    for (let r = 0; r < ROUNDS; r++) {
      rmSync(join(layerCache, "layers"), { recursive: true, force: true });
      rows.cold.runc.push((await runc(`rc${r}`)).firstMs);
      rows.cold.cove.push((await cove(`cc${r}`)).firstMs);
      rows.cold.converted.push(converted(cd, `cc${r}`));
      rows.warm.runc.push((await runc(`rw${r}`)).firstMs);
      rows.warm.cove.push((await cove(`cw${r}`)).firstMs);
      rows.warm.converted.push(converted(cd, `cw${r}`));
    }
    console.log(`\nctr run --rm ${REF} ${CMD.join(" ")}: ms to the first output byte (median of ${ROUNDS})`);
    console.log("case                            runc       cove   cove/runc   layers converted (cove)");
    const out: Record<string, unknown>[] = [];
    for (const [name, row] of Object.entries(rows)) {
      const a = median(row.runc);
      const b = median(row.cove);
      const label = name === "cold" ? "cold (layer cache empty)" : "warm (layers cached)";
      console.log(
        `${label.padEnd(30)} ${a.toFixed(0).padStart(6)} ${b.toFixed(0).padStart(10)} ${(b / a).toFixed(1).padStart(10)}x   ${median(row.converted)} of ${deb.layers.length}`,
      );
      out.push({ case: name, runc_ms: a, cove_ms: b, ratio: b / a, converted: median(row.converted), rounds: ROUNDS });
    }
    result.first_output = out;
  } finally {
    await cd.stop();
  }
  mkdirSync("bench-results", { recursive: true });
  writeFileSync("bench-results/rootfs.json", `${JSON.stringify(result, null, 2)}\n`);
}

await main();
