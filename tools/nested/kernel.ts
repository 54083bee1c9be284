// Builds (once, cached by content) the nested test host's kernel: allnoconfig of Debian's
// linux-source-6.1 with the guest fragment plus tools/nested/nested.config (KVM, 9p).
// Reuses the guest build's helpers and its extracted source tree (src/guest/kernel.ts), but keeps
// its own kbuild output directory: the guest's is per source tree, and sharing it would make the
// two configurations rebuild each other. Output: <cache>/nested/<key>/bzImage and the stable
// symlink <cache>/nested/kernel.
//   node --import tsx tools/nested/kernel.ts [--jobs N]
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { dpkgVersion, run, runStreaming } from "../../src/common/exec.ts";
import { keyOf, sha256 } from "../../src/guest/hash.ts";
import { configMismatches, kernelPaths, LINUX_SOURCE_PACKAGE, LINUX_SOURCE_TARBALL } from "../../src/guest/kernel.ts";
import { acquireLock } from "../../src/guest/lock.ts";
import { cacheDir } from "../../src/guest/paths.ts";
import { consoleProgress, type Progress } from "../../src/guest/progress.ts";

const here = dirname(fileURLToPath(import.meta.url));
export const NESTED_FRAGMENT = join(here, "nested.config");
export const NESTED_BASE = join(here, "base.config");
export const NESTED_INIT = join(here, "init.sh");
/** Bump when the recipe changes in a way the key does not see. */
const RECIPE = { version: 2, arch: "x86_64", base: "allnoconfig", target: "bzImage" };
const BUILD_ENV = { KBUILD_BUILD_USER: "cove", KBUILD_BUILD_HOST: "cove", KBUILD_BUILD_TIMESTAMP: "1970-01-01" };

export function nestedPaths(cache = cacheDir()) {
  const dir = join(cache, "nested");
  return { dir, kernel: join(dir, "kernel"), build: join(dir, "build"), src: join(dir, "src") };
}

/**
 * The fragment the build uses: base.config (a snapshot of deploy/guest/kernel/cove.config at commit
 * 9082129 — any edit to it changes the cache key and rebuilds — with the platform options, so
 * guest-kernel changes such as new drivers or patches do not rebuild the test host), then
 * nested.config.
 */
export function nestedFragment(): string {
  const base = readFileSync(NESTED_BASE, "utf8");
  return `${base}\n# ---- tools/nested/nested.config ----\n${readFileSync(NESTED_FRAGMENT, "utf8")}`;
}

/** What the kernel build sees of a fragment: its option lines, without comments or blank lines, so
 * that rewording a comment does not rebuild the kernel. */
export function effectiveOptions(fragment: string): string {
  return fragment
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => (l !== "" && !l.startsWith("#")) || /^# CONFIG_\w+ is not set$/.test(l))
    .join("\n");
}

export function nestedKey(): string {
  const linuxSource = dpkgVersion(LINUX_SOURCE_PACKAGE);
  if (!linuxSource || !existsSync(LINUX_SOURCE_TARBALL))
    throw new Error(`${LINUX_SOURCE_TARBALL} missing: apt-get install ${LINUX_SOURCE_PACKAGE}`);
  const gcc = run(["gcc", "--version"]).split("\n")[0] ?? "?";
  return keyOf({ recipe: RECIPE, linuxSource, fragment: sha256(effectiveOptions(nestedFragment())), gcc });
}

/** The cached kernel, if built. */
export function nestedKernel(cache = cacheDir()): string | undefined {
  const p = join(nestedPaths(cache).dir, nestedKey(), "bzImage");
  return existsSync(p) ? p : undefined;
}

/**
 * A source tree to build from: the guest build's unpatched tree of the same package version when it
 * exists (the test host needs none of the guest's patches), else our own extraction.
 */
function sourceTree(cache: string, progress: Progress): string {
  const plain = kernelPaths(cache, "", dpkgVersion(LINUX_SOURCE_PACKAGE) ?? "none");
  if (existsSync(join(plain.srcParent, ".complete"))) {
    const c = readFileSync(join(plain.srcParent, ".complete"), "utf8");
    if (!/"name"/.test(c)) return plain.src; // no patches applied
  }
  const own = nestedPaths(cache).src;
  const tree = join(own, "linux-source-6.1");
  if (!existsSync(join(own, ".complete"))) {
    progress.stage(`nested kernel: extracting ${LINUX_SOURCE_TARBALL} (once)`);
    rmSync(own, { recursive: true, force: true });
    mkdirSync(own, { recursive: true });
    run(["tar", "-xf", LINUX_SOURCE_TARBALL, "-C", own]);
    writeFileSync(join(own, ".complete"), "");
  }
  return tree;
}

export async function buildNestedKernel(
  cache = cacheDir(),
  progress: Progress = consoleProgress(),
  opts: { jobs?: number } = {},
): Promise<string> {
  const key = nestedKey();
  const p = nestedPaths(cache);
  const bzImage = join(p.dir, key, "bzImage");
  if (existsSync(bzImage)) {
    progress.stage(`nested kernel: up to date (${key})`);
    return bzImage;
  }
  // One build at a time per cache: every build shares one kbuild output directory.
  mkdirSync(p.dir, { recursive: true });
  const release = await acquireLock(join(p.dir, ".lock"), (pid) =>
    progress.stage(`nested kernel: waiting for pid ${pid}, which is building it`),
  );
  try {
    if (existsSync(bzImage)) return bzImage;
    return await build(key, sourceTree(cache, progress), p, progress, opts.jobs ?? 2);
  } finally {
    release();
  }
}

async function build(
  key: string,
  src: string,
  p: ReturnType<typeof nestedPaths>,
  progress: Progress,
  jobs: number,
): Promise<string> {
  const out = join(p.dir, key);
  const bzImage = join(out, "bzImage");
  mkdirSync(p.build, { recursive: true });
  const fragmentFile = join(p.build, "cove-nested.fragment");
  const fragment = nestedFragment();
  writeFileSync(fragmentFile, fragment);
  const make = ["make", "-C", src, `O=${p.build}`, `ARCH=${RECIPE.arch}`];
  const env = { ...process.env, ...BUILD_ENV };
  progress.stage("nested kernel: configuring (allnoconfig + guest fragment + tools/nested/nested.config)");
  run([...make, `KCONFIG_ALLCONFIG=${fragmentFile}`, RECIPE.base], { env });
  const bad = configMismatches(fragment, readFileSync(join(p.build, ".config"), "utf8"));
  if (bad.length) throw new Error(`nested kernel config: options that did not survive:\n  ${bad.join("\n  ")}`);
  progress.stage(`nested kernel: compiling with -j${jobs} (log: ${join(p.build, "build.log")})`);
  const log: string[] = [];
  const t0 = Date.now();
  try {
    await runStreaming(
      [...make, `-j${jobs}`, RECIPE.target],
      (line) => {
        log.push(line);
        progress.status(line.trim());
      },
      { env },
    );
  } finally {
    progress.done();
    writeFileSync(join(p.build, "build.log"), log.join("\n"));
  }
  const tmp = `${out}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  copyFileSync(join(p.build, "arch/x86/boot/bzImage"), join(tmp, "bzImage"));
  copyFileSync(join(p.build, ".config"), join(tmp, "config"));
  rmSync(out, { recursive: true, force: true });
  renameSync(tmp, out);
  rmSync(p.kernel, { force: true });
  symlinkSync(join(key, "bzImage"), p.kernel);
  progress.stage(`nested kernel: built in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  return bzImage;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const i = process.argv.indexOf("--jobs");
  const jobs = i > 0 ? Number(process.argv[i + 1]) : undefined;
  buildNestedKernel(cacheDir(), consoleProgress(), { jobs }).then(
    (p) => console.log(p),
    (e: Error) => {
      console.error(e.message);
      process.exit(1);
    },
  );
}
