// The guest's OCI runtime: crun built from Debian's source (trixie's 1.21, the .orig tarball pinned
// by content hash) on this Debian 12 machine. Debian 12's own crun (1.8.1) refuses any spec whose
// ociVersion is not 1.0.x ("unknown version specified"), and containerd 2.x writes 1.2.x; Debian's
// newer crun binaries need glibc ≥ 2.38, which the guest (built from Debian 12's libraries) lacks.
// Built once per input set and cached under <cache>/crun/<key>/: the binary plus its own
// `crun features` output, which the image build keeps beside the image for the shim's `-info`.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { errorMessage } from "../common/errors.ts";
import { dpkgVersion, run, runStreaming } from "../common/exec.ts";
import { keyOf } from "./hash.ts";
import { acquireLock } from "./lock.ts";
import type { Progress } from "./progress.ts";

/** The pinned source: Debian's crun_<version>.orig.tar.gz (trixie main), by its sha256. */
export const CRUN_SOURCE = {
  version: "1.21",
  file: "crun_1.21.orig.tar.gz",
  pool: "pool/main/c/crun",
  sha256: "4bfb700e764a4804a4de3ecf07753f4c391005356d60356df65d80ae0914c486",
} as const;

/**
 * No systemd (the guest has none; cgroups are driven through cgroupfs), no CRIU, yajl built in
 * (Debian 12's libyajl works too, but one library fewer to carry). seccomp and capabilities stay.
 */
const CONFIGURE_FLAGS = [
  "--disable-systemd",
  "--disable-criu",
  "--enable-embedded-yajl",
  "--disable-dependency-tracking",
];

/** The file beside a guest image holding its runtime's `crun features` (read by the shim's -info). */
export const RUNTIME_FEATURES_FILE = "runtime-features.json";

/** What a build needs besides the toolchain (scripts/setup.sh installs them). */
export const CRUN_BUILD_PACKAGES = ["libseccomp-dev", "libcap-dev", "gperf"] as const;

export interface CrunBuild {
  key: string;
  binary: string;
  /** `crun features` of that binary (OCI runtime-spec features.md JSON). */
  features: string;
  version: string;
  cached: boolean;
}

const mirror = () => process.env.COVE_DEBIAN_MIRROR || "http://deb.debian.org/debian";

/** The build's cache key: the source, the flags, and the Debian versions of what it links and compiles with. */
export function crunKey(): string {
  return keyOf({
    source: CRUN_SOURCE.sha256,
    flags: CONFIGURE_FLAGS,
    libc6: dpkgVersion("libc6") ?? null,
    gcc: dpkgVersion("gcc") ?? null,
    deps: CRUN_BUILD_PACKAGES.map((p) => dpkgVersion(p) ?? null),
  });
}

function paths(cache: string, key = crunKey()) {
  const dir = join(cache, "crun", key);
  return { key, dir, binary: join(dir, "crun"), features: join(dir, "features.json") };
}

/** The cached build for the current inputs, if there is one (no build, no download). */
export function builtCrun(cache: string): CrunBuild | undefined {
  const p = paths(cache);
  if (!existsSync(p.binary) || !existsSync(p.features)) return undefined;
  return { key: p.key, binary: p.binary, features: p.features, version: CRUN_SOURCE.version, cached: true };
}

/** The source tarball, downloaded once and checked against the pinned hash. */
async function sourceTarball(cache: string, progress: Progress): Promise<string> {
  const dir = join(cache, "crun", "src");
  mkdirSync(dir, { recursive: true });
  const path = join(dir, CRUN_SOURCE.file);
  const hash = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
  if (existsSync(path) && hash(readFileSync(path)) === CRUN_SOURCE.sha256) return path;
  const url = `${mirror()}/${CRUN_SOURCE.pool}/${CRUN_SOURCE.file}`;
  progress.stage(`crun: downloading ${url}`);
  let body: Uint8Array;
  try {
    const res = await fetch(url);
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    body = new Uint8Array(await res.arrayBuffer());
  } catch (e) {
    throw new Error(`cannot download crun's source ${url}: ${errorMessage(e)} (COVE_DEBIAN_MIRROR sets the mirror)`);
  }
  const got = hash(body);
  if (got !== CRUN_SOURCE.sha256) {
    throw new Error(`${url}: sha256 ${got}, expected ${CRUN_SOURCE.sha256}: refusing an unexpected source`);
  }
  writeFileSync(`${path}.tmp`, body);
  renameSync(`${path}.tmp`, path);
  return path;
}

/** Builds crun (or finds it in the cache) and captures its features. */
export async function ensureCrun(cache: string, progress: Progress, jobs = cpus().length): Promise<CrunBuild> {
  const hit = builtCrun(cache);
  if (hit) {
    progress.stage(`crun: ${CRUN_SOURCE.version} up to date (${hit.key})`);
    return hit;
  }
  const missing = CRUN_BUILD_PACKAGES.filter((p) => !dpkgVersion(p));
  if (missing.length > 0) throw new Error(`building the guest's crun needs: apt-get install ${missing.join(" ")}`);
  mkdirSync(join(cache, "crun"), { recursive: true });
  const release = await acquireLock(join(cache, "crun", ".lock"), (pid) =>
    progress.stage(`crun: waiting for pid ${pid}, which is building it`),
  );
  try {
    const again = builtCrun(cache);
    if (again) return again;
    const p = paths(cache);
    const tarball = await sourceTarball(cache, progress);
    const tmp = `${p.dir}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    try {
      run(["tar", "-xzf", tarball, "-C", tmp]);
      const src = join(tmp, `crun-${CRUN_SOURCE.version}`);
      const onLine = (l: string) => progress.status(l);
      progress.stage(`crun: configuring ${CRUN_SOURCE.version} (${CONFIGURE_FLAGS.join(" ")})`);
      await runStreaming(["./configure", ...CONFIGURE_FLAGS], onLine, { cwd: src });
      progress.stage(`crun: compiling with -j${jobs}`);
      await runStreaming(["make", `-j${jobs}`], onLine, { cwd: src });
      progress.done();
      const version = run([join(src, "crun"), "--version"]);
      if (!version.includes(`crun version ${CRUN_SOURCE.version}`)) throw new Error(`built crun says: ${version}`);
      const features = run([join(src, "crun"), "features"]);
      JSON.parse(features); // must be JSON, or -info would fail later
      run(["strip", "-o", join(tmp, "crun"), join(src, "crun")]);
      writeFileSync(join(tmp, "features.json"), features);
      rmSync(src, { recursive: true, force: true });
      rmSync(p.dir, { recursive: true, force: true });
      renameSync(tmp, p.dir);
    } catch (e) {
      rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
    progress.stage(`crun: built ${CRUN_SOURCE.version} (${p.key})`);
    return { key: p.key, binary: p.binary, features: p.features, version: CRUN_SOURCE.version, cached: false };
  } finally {
    release();
  }
}
