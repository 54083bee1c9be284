// `cove guest build`: the guest kernel and image (src/guest/build.ts).
import { parseArgs } from "node:util";
import { buildGuest } from "../guest/build.ts";
import { consoleProgress } from "../guest/progress.ts";
import { type Command, UsageError } from "./command.ts";

export const guestBuild: Command = {
  path: ["guest", "build"],
  summary: "build (or reuse from the cache) the guest kernel and read-only image",
  usage: `cove guest build [--only kernel|image] [--force] [--jobs N] [--compress lz4|lz4hc]

Builds the guest kernel (Debian's linux-source-6.1 + deploy/guest/kernel/cove.config) and the guest
image (erofs: node, the agent bundle dist/agent.cjs, crun or runc). Each is cached under
$COVE_CACHE_DIR (default /var/cache/cove) by a hash of its inputs and rebuilt only when they change.
Prints the artifact paths: <cache>/guest/kernel (bzImage), <cache>/guest/vmlinux (PVH ELF) and
<cache>/guest/rootfs.erofs. Needs dist/agent.cjs and the native addon (npm run build; npm ci).

  --only kernel|image   build just one of the two
  --force               rebuild even if the cache has it
  --jobs N              kernel make -jN (default: number of CPUs)
  --compress ALG        compress the erofs image (default: none; faster reads under TCG)`,
  async run(args) {
    const { values } = parseArgs({
      args,
      options: {
        only: { type: "string" },
        force: { type: "boolean" },
        jobs: { type: "string" },
        compress: { type: "string" },
      },
      strict: true,
    });
    if (values.only !== undefined && values.only !== "kernel" && values.only !== "image")
      throw new UsageError("--only takes kernel or image");
    if (values.compress !== undefined && values.compress !== "lz4" && values.compress !== "lz4hc")
      throw new UsageError("--compress takes lz4 or lz4hc");
    const jobs = values.jobs === undefined ? undefined : Number(values.jobs);
    if (jobs !== undefined && !(Number.isInteger(jobs) && jobs > 0))
      throw new UsageError("--jobs takes a positive integer");
    const t0 = Date.now();
    const r = await buildGuest(consoleProgress(), {
      only: values.only as "kernel" | "image" | undefined,
      force: values.force,
      jobs,
      compress: values.compress as "lz4" | "lz4hc" | undefined,
    });
    process.stderr.write(`==> done in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
    if (r.kernel) {
      process.stdout.write(`kernel   ${r.artifacts.kernel} -> ${r.kernel.bzImage}\n`);
      process.stdout.write(`vmlinux  ${r.artifacts.vmlinux} -> ${r.kernel.vmlinux}\n`);
    }
    if (r.image) process.stdout.write(`rootfs   ${r.artifacts.rootfs} -> ${r.image.rootfs}\n`);
    return 0;
  },
};
