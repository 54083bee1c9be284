// The guest kernel: Debian's linux-source-6.1, `allnoconfig` with the project's fragment forced in
// (KCONFIG_ALLCONFIG), the project's patches applied in order, built with everything built in.
// Cached by a key over every input; the source tree and the kbuild output directory are kept so a
// changed fragment or patch rebuilds incrementally.
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { availableParallelism } from "node:os";
import { basename, join } from "node:path";
import { dpkgVersion, run, runStreaming } from "../common/exec.ts";
import { fileSha256, keyOf, sha256 } from "./hash.ts";
import { acquireLock } from "./lock.ts";
import type { Progress } from "./progress.ts";

export const LINUX_SOURCE_PACKAGE = "linux-source-6.1";
export const LINUX_SOURCE_TARBALL = "/usr/src/linux-source-6.1.tar.xz";
const TREE_NAME = "linux-source-6.1";
/** Bump when the recipe below changes in a way the key would not see. */
const RECIPE = { version: 1, arch: "x86_64", base: "allnoconfig", targets: ["bzImage"] };
const BUILD_ENV = { KBUILD_BUILD_USER: "cove", KBUILD_BUILD_HOST: "cove", KBUILD_BUILD_TIMESTAMP: "1970-01-01" };

export interface KernelInputs {
  fragment: string;
  patchesDir: string;
}

export interface KernelBuild {
  key: string;
  dir: string;
  bzImage: string;
  vmlinux: string;
  config: string;
  /** Set when this call compiled (absent when the cache had it). */
  compileSeconds?: number;
  cached: boolean;
}

/** The patch files named in patches/series, in order (blank lines and # comments ignored). */
export function patchSeries(patchesDir: string): string[] {
  const series = join(patchesDir, "series");
  if (!existsSync(series)) return [];
  const names = readFileSync(series, "utf8")
    .split("\n")
    .map((l) => l.replace(/#.*/, "").trim())
    .filter(Boolean);
  for (const n of names) {
    if (n.includes("/") || n.startsWith(".")) throw new Error(`patches/series: bad patch name ${n}`);
    if (!existsSync(join(patchesDir, n))) throw new Error(`patches/series names ${n}, which does not exist`);
  }
  return names.map((n) => join(patchesDir, n));
}

/** Option values a fragment sets: CONFIG_X=value, and "n" for "# CONFIG_X is not set". */
export function parseConfig(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    const unset = /^# (CONFIG_[A-Za-z0-9_]+) is not set$/.exec(line);
    if (unset?.[1]) m.set(unset[1], "n");
    else {
      const set = /^(CONFIG_[A-Za-z0-9_]+)=(.*)$/.exec(line);
      if (set?.[1] && set[2] !== undefined) m.set(set[1], set[2]);
    }
  }
  return m;
}

/** Every option the fragment asks for that the resolved .config does not have (dependency not met). */
export function configMismatches(fragment: string, config: string): string[] {
  const want = parseConfig(fragment);
  const got = parseConfig(config);
  const bad: string[] = [];
  for (const [name, value] of want) {
    const have = got.get(name) ?? "n";
    if (have !== value) bad.push(`${name}: wanted ${value}, got ${have}`);
  }
  return bad;
}

function compilerVersion(): string {
  try {
    return run(["gcc", "--version"]).split("\n")[0] ?? "?";
  } catch {
    return "none";
  }
}

export function kernelKeys(inp: KernelInputs) {
  const linuxSource = dpkgVersion(LINUX_SOURCE_PACKAGE);
  if (!linuxSource || !existsSync(LINUX_SOURCE_TARBALL))
    throw new Error(`${LINUX_SOURCE_TARBALL} missing: apt-get install ${LINUX_SOURCE_PACKAGE}`);
  const patches = patchSeries(inp.patchesDir).map((p) => ({ name: basename(p), sha256: fileSha256(p) }));
  // The source tree is shared by every build with the same package version and patches.
  const sourceKey = patches.length ? `${linuxSource}-p${keyOf(patches).slice(0, 12)}` : linuxSource;
  const key = keyOf({
    recipe: RECIPE,
    linuxSource,
    patches,
    fragment: sha256(readFileSync(inp.fragment)),
    gcc: compilerVersion(),
  });
  return { key, sourceKey, linuxSource, patches };
}

export function kernelPaths(cache: string, key: string, sourceKey: string) {
  const root = join(cache, "kernel");
  return {
    srcParent: join(root, "src", sourceKey),
    src: join(root, "src", sourceKey, TREE_NAME),
    build: join(root, "build", sourceKey),
    out: join(root, key),
  };
}

/** Returns the cached build for the inputs, or builds it. */
export async function buildKernel(
  cache: string,
  inp: KernelInputs,
  progress: Progress,
  opts: { jobs?: number; force?: boolean } = {},
): Promise<KernelBuild> {
  const { key, sourceKey, patches } = kernelKeys(inp);
  const p = kernelPaths(cache, key, sourceKey);
  const result = (cached: boolean, compileSeconds?: number): KernelBuild => ({
    key,
    dir: p.out,
    bzImage: join(p.out, "bzImage"),
    vmlinux: join(p.out, "vmlinux"),
    config: join(p.out, "config"),
    cached,
    compileSeconds,
  });
  if (!opts.force && existsSync(join(p.out, "manifest.json"))) {
    progress.stage(`kernel: up to date (${key})`);
    return result(true);
  }

  mkdirSync(join(cache, "kernel", "build"), { recursive: true });
  const release = await acquireLock(`${p.build}.lock`, (pid) =>
    progress.stage(`kernel: waiting for another build (pid ${pid}) to finish`),
  );
  try {
    // Another build may have made it while we waited.
    if (!opts.force && existsSync(join(p.out, "manifest.json"))) {
      progress.stage(`kernel: up to date (${key})`);
      return result(true);
    }
    return await compileKernel(inp, progress, p, key, patches, opts.jobs, result);
  } finally {
    release();
  }
}

async function compileKernel(
  inp: KernelInputs,
  progress: Progress,
  p: ReturnType<typeof kernelPaths>,
  key: string,
  patches: { name: string; sha256: string }[],
  jobsOpt: number | undefined,
  result: (cached: boolean, compileSeconds?: number) => KernelBuild,
): Promise<KernelBuild> {
  // 1. Source tree, extracted once per package version + patch set.
  const complete = join(p.srcParent, ".complete");
  if (!existsSync(complete)) {
    progress.stage(`kernel: extracting ${LINUX_SOURCE_TARBALL} (once)`);
    rmSync(p.srcParent, { recursive: true, force: true });
    mkdirSync(p.srcParent, { recursive: true });
    run(["tar", "-xf", LINUX_SOURCE_TARBALL, "-C", p.srcParent]);
    for (const patch of patchSeries(inp.patchesDir)) {
      progress.stage(`kernel: applying ${basename(patch)}`);
      run(["patch", "-p1", "--forward", "--batch", "-i", patch], { cwd: p.src });
    }
    writeFileSync(complete, JSON.stringify({ patches }, null, 2));
  }

  // 2. Configuration: allnoconfig with the fragment forced in, then checked option by option.
  progress.stage("kernel: configuring (allnoconfig + deploy/guest/kernel/cove.config)");
  mkdirSync(p.build, { recursive: true });
  const make = ["make", "-C", p.src, `O=${p.build}`, `ARCH=${RECIPE.arch}`];
  const env = { ...process.env, ...BUILD_ENV };
  run([...make, `KCONFIG_ALLCONFIG=${inp.fragment}`, RECIPE.base], { env });
  const bad = configMismatches(readFileSync(inp.fragment, "utf8"), readFileSync(join(p.build, ".config"), "utf8"));
  if (bad.length)
    throw new Error(
      `kernel config: options the fragment sets did not survive (missing dependency?):\n  ${bad.join("\n  ")}`,
    );

  // 3. Compile, counting compiler lines for a progress display.
  const jobs = jobsOpt ?? availableParallelism();
  const countFile = join(p.build, ".cove-cc-count");
  const expected = existsSync(countFile) ? Number(readFileSync(countFile, "utf8")) || 0 : 0;
  progress.stage(`kernel: compiling with -j${jobs} (log: ${join(p.build, "build.log")})`);
  const log = openSync(join(p.build, "build.log"), "w");
  let cc = 0;
  const t0 = process.hrtime.bigint();
  try {
    await runStreaming(
      [...make, `-j${jobs}`, ...RECIPE.targets],
      (line) => {
        writeSync(log, `${line}\n`);
        const m = /^\s+CC\s+(\S+)/.exec(line);
        if (m) {
          cc++;
          const pct = expected ? ` (${Math.min(99, Math.floor((100 * cc) / expected))}%)` : "";
          progress.status(`kernel: ${cc}${expected ? `/${expected}` : ""} CC${pct} ${m[1]}`);
        }
      },
      { env },
    );
  } finally {
    progress.done();
    closeSync(log);
  }
  const compileSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
  // An incremental build compiles fewer files; only a full build sets the expectation.
  if (cc > expected) writeFileSync(countFile, String(cc));

  // 4. Publish: a complete directory appears under its key in one rename.
  const tmp = `${p.out}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  copyFileSync(join(p.build, "arch/x86/boot/bzImage"), join(tmp, "bzImage"));
  copyFileSync(join(p.build, "vmlinux"), join(tmp, "vmlinux"));
  copyFileSync(join(p.build, ".config"), join(tmp, "config"));
  writeFileSync(
    join(tmp, "manifest.json"),
    JSON.stringify(
      {
        key,
        recipe: RECIPE,
        inputs: kernelKeys(inp),
        bzImageBytes: statSync(join(tmp, "bzImage")).size,
        vmlinuxBytes: statSync(join(tmp, "vmlinux")).size,
        compileSeconds,
        compiledFiles: cc,
        jobs,
        builtAt: new Date().toISOString(),
      },
      null,
      2,
    ),
  );
  rmSync(p.out, { recursive: true, force: true });
  renameSync(tmp, p.out);
  progress.stage(`kernel: built in ${compileSeconds.toFixed(0)} s (${cc} files compiled)`);
  return result(false, compileSeconds);
}

/** Older kernel builds (other keys), for pruning. */
export function kernelBuilds(cache: string): string[] {
  const root = join(cache, "kernel");
  if (!existsSync(root)) return [];
  return readdirSync(root).filter((n) => /^[0-9a-f]{20}$/.test(n));
}
