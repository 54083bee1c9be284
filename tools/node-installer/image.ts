// The node installer image: an OCI image tarball (no registry is assumed; nodes import it with
// `ctr -n k8s.io images import`). Two layers:
//   1. Debian's static busybox with its applets (the entry point's shell, mount, chroot, mktemp),
//      the same layer as the test images' (test/harness/image.ts);
//   2. /opt/cove: the payload `cove install` copies onto the node, laid out as an installed prefix
//      (src/cli/install-layout.ts: the sh wrappers, its own Node, the bundles, the addon, the config
//      and containerd snippets, the guest kernel and image), plus node-installer.cjs (main.ts
//      bundled), and /usr/bin/cove-node-installer (entrypoint.sh).
// Built from a checkout after `npm run build` and `npm run guest`, cached by the content of every
// input under <cache>/node-installer/ (older builds there are removed), under a lock.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { guestSources, TREE_FILES } from "../../src/cli/install-layout.ts";
import { keyOf, sha256 } from "../../src/guest/hash.ts";
import { acquireLock } from "../../src/guest/lock.ts";
import { cacheDir, repoRoot } from "../../src/guest/paths.ts";
import { BUSYBOX_BIN, type BuiltImage, buildImage } from "../../test/harness/image.ts";
import type { Entry } from "../../test/harness/image-tar.ts";
import { writeLayer } from "../../test/harness/image-tar.ts";

const here = dirname(fileURLToPath(import.meta.url));
const version = (JSON.parse(readFileSync(join(repoRoot(), "package.json"), "utf8")) as { version: string }).version;

/** The image's name on the nodes (and in deploy/kubernetes/node-installer.yaml). */
export const IMAGE_REF = `localhost/cove/node-installer:${version}`;
/** The entry point (entrypoint.sh). */
export const ENTRYPOINT = "/usr/bin/cove-node-installer";
/** Written in the container once the node is installed and labelled: the readiness probe reads it. */
export const READY_FILE = "/run/cove-node-installer.installed";
/** Where the payload sits in the image. */
export const PAYLOAD = "opt/cove";
/** Bump when the recipe changes in a way the key does not see. */
const RECIPE = 1;

export interface BuildOptions {
  /** The checkout to take cove from; default this one. */
  root?: string;
  /** Default $COVE_CACHE_DIR (also where the guest artifacts are found). */
  cache?: string;
  /** The Node to put in the payload; default the one running (the pinned one: deploy/nodejs.env). */
  node?: string;
  env?: NodeJS.ProcessEnv;
}

/** The bundled installer program: one CommonJS file the payload's Node runs. */
async function bundleMain(): Promise<Buffer> {
  const r = await build({
    entryPoints: [join(here, "main.ts")],
    bundle: true,
    platform: "node",
    target: "node20",
    format: "cjs",
    write: false,
    logLevel: "warning",
  });
  return Buffer.from(r.outputFiles[0]!.contents);
}

/** The payload layer's entries: files of the checkout and the cache, read into memory. */
async function payloadEntries(opts: BuildOptions): Promise<Entry[]> {
  const root = opts.root ?? repoRoot();
  const env = opts.env ?? process.env;
  const files: { path: string; from: string }[] = [];
  for (const f of TREE_FILES) {
    const from = join(root, f.path);
    if (existsSync(from)) files.push({ path: f.path, from });
    else if (!f.optional) throw new Error(`${from} is missing: run \`npm ci && npm run build\` in the checkout first`);
  }
  for (const g of guestSources(root, env)) files.push(g);
  files.push({ path: "bin/node", from: opts.node ?? process.execPath });

  const entries: Entry[] = [];
  const dirs = new Set<string>();
  const addDirs = (path: string) => {
    const parts = path.split("/").slice(0, -1);
    for (let i = 1; i <= parts.length; i++) {
      const d = `${parts.slice(0, i).join("/")}/`;
      if (!dirs.has(d)) entries.push({ name: d, type: "directory", mode: 0o755 });
      dirs.add(d);
    }
  };
  const addFile = (path: string, content: Buffer, mode: number) => {
    addDirs(path);
    entries.push({ name: path, type: "file", mode, content });
  };
  for (const f of files) {
    if (!existsSync(f.from)) throw new Error(`${f.from} is missing: build the guest first (npm run guest)`);
    addFile(`${PAYLOAD}/${f.path}`, readFileSync(f.from), statSync(f.from).mode & 0o7777);
  }
  // Names the tree "cove", as `cove install` does in the prefix (repoRoot() finds it).
  const pkg = `${JSON.stringify({ name: "cove", version, private: true }, null, 2)}\n`;
  addFile(`${PAYLOAD}/package.json`, Buffer.from(pkg), 0o644);
  addFile(`${PAYLOAD}/node-installer.cjs`, await bundleMain(), 0o644);
  addFile(ENTRYPOINT.slice(1), readFileSync(join(here, "entrypoint.sh")), 0o755);
  return entries;
}

/** Whether an x86-64 ELF executable names a program interpreter (PT_INTERP), i.e. is dynamic. */
function isDynamic(elf: Buffer): boolean {
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const size = elf.readUInt16LE(0x36);
  const count = elf.readUInt16LE(0x38);
  for (let i = 0; i < count; i++) if (elf.readUInt32LE(phoff + i * size) === 3) return true;
  return false;
}

/** The entry point's shell and tools: busybox must be static, as nothing else is in the image. */
function checkBusybox(): void {
  if (!existsSync(BUSYBOX_BIN) || isDynamic(readFileSync(BUSYBOX_BIN)))
    throw new Error(`${BUSYBOX_BIN} is missing or not static: apt-get install busybox-static`);
}

/** Builds the image tarball (or finds it in the cache) and returns its path and digests. */
export async function buildInstallerImage(opts: BuildOptions = {}): Promise<BuiltImage> {
  checkBusybox();
  const dir = join(opts.cache ?? cacheDir(opts.env ?? process.env), "node-installer");
  mkdirSync(dir, { recursive: true });
  const entries = await payloadEntries(opts);
  const key = keyOf({
    recipe: RECIPE,
    entries: entries.map((e) => ({ ...e, content: e.content ? sha256(e.content as Buffer) : undefined })),
  });
  // <key>.json names the image tarball built from these inputs.
  const built = join(dir, `${key}.json`);
  const release = await acquireLock(join(dir, ".lock"), (pid) =>
    process.stderr.write(`node installer image: waiting for pid ${pid}'s build\n`),
  );
  try {
    if (existsSync(built)) {
      const image = JSON.parse(readFileSync(built, "utf8")) as BuiltImage;
      if (existsSync(image.path)) return image;
    }
    // The payload layer goes into the image tarball, then away: one copy of a few hundred MiB.
    const payloadTar = join(dir, `payload-${key}.tar`);
    await writeLayer(entries, payloadTar, false);
    const image = await buildImage(
      {
        ref: IMAGE_REF,
        entrypoint: [ENTRYPOINT],
        cmd: ["daemon"],
        env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        layers: [{ tarFile: payloadTar, key }],
      },
      dir,
    );
    writeFileSync(built, JSON.stringify(image));
    // One build kept (the busybox layer in layers/ stays: the test images share it).
    for (const f of readdirSync(dir)) {
      const path = join(dir, f);
      if (path !== built && path !== image.path && path !== `${image.path}.json` && f !== "layers" && f !== ".lock")
        rmSync(path, { force: true });
    }
    return image;
  } finally {
    release();
  }
}

// node --import tsx tools/node-installer/image.ts: builds the image and prints where it is.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const image = await buildInstallerImage();
  process.stdout.write(`${image.path}\n${image.ref}\n`);
}
