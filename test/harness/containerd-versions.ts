// The containerd versions the end-to-end tests run against, and where their binaries come from:
// Debian 12's own containerd (installed by scripts/setup.sh), and newer ones fetched from Debian's
// archive WITHOUT installing them: a private apt sources list and state dir, `apt-get download` of
// one pinned .deb, `dpkg-deb -x` into $COVE_CACHE_DIR/containerd/<deb version>/. containerd, ctr and
// containerd-shim-runc-v2 are Go binaries that need only glibc, so sid's run on Debian 12.
//
// A version that cannot be fetched throws, naming the package and the mirror: tests never skip it.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { acquireLock } from "../../src/guest/lock.ts";
import { cacheDir } from "../../src/guest/paths.ts";

export interface ContainerdVersion {
  /** What COVE_CONTAINERD names it by, e.g. "2.1.9". */
  version: string;
  /** The config.toml version this containerd reads: 2 for 1.6/1.7, 3 for 2.x. */
  configVersion: 2 | 3;
  /** Debian's package: the installed system one, or a pinned .deb from a suite of the archive. */
  source: { kind: "system" } | { kind: "deb"; suite: string; debVersion: string };
}

export const CONTAINERD_VERSIONS: Record<string, ContainerdVersion> = {
  "1.6.20": { version: "1.6.20", configVersion: 2, source: { kind: "system" } },
  "1.7.24": {
    version: "1.7.24",
    configVersion: 2,
    source: { kind: "deb", suite: "trixie", debVersion: "1.7.24~ds1-6+deb13u1" },
  },
  "2.1.9": { version: "2.1.9", configVersion: 3, source: { kind: "deb", suite: "sid", debVersion: "2.1.9+ds1-5" } },
};

/** The version the tests use when none is named: $COVE_CONTAINERD, else Debian 12's. */
export const DEFAULT_CONTAINERD = "1.6.20";

/** "2.1", "2.1.9" and "v2.1.9" all name 2.1.9; throws for a version we do not test. */
export function resolveContainerdVersion(name: string | undefined): ContainerdVersion {
  const n = (name || DEFAULT_CONTAINERD).replace(/^v/, "");
  const hit = CONTAINERD_VERSIONS[n] ?? Object.values(CONTAINERD_VERSIONS).find((v) => v.version.startsWith(`${n}.`));
  if (!hit) {
    throw new Error(
      `containerd ${n} is not one of the tested versions (${Object.keys(CONTAINERD_VERSIONS).join(", ")})`,
    );
  }
  return hit;
}

export interface ContainerdBinaries {
  version: ContainerdVersion;
  containerd: string;
  ctr: string;
  /** The directory holding this version's containerd-shim-runc-v2 (put on containerd's PATH). */
  binDir: string;
}

export const DEBIAN_MIRROR = process.env.COVE_DEBIAN_MIRROR || "http://deb.debian.org/debian";
const KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg";

function binaries(v: ContainerdVersion, usrBin: string): ContainerdBinaries {
  return { version: v, containerd: join(usrBin, "containerd"), ctr: join(usrBin, "ctr"), binDir: usrBin };
}

/** Where a fetched version lives (its extracted package tree). */
export function fetchedDir(v: ContainerdVersion, cache = cacheDir()): string {
  if (v.source.kind !== "deb") throw new Error(`containerd ${v.version} is the system's, not fetched`);
  return join(cache, "containerd", v.source.debVersion);
}

/** The binaries of v if they are at hand (system, or already fetched), else undefined. */
export function containerdBinariesIfPresent(v: ContainerdVersion, cache = cacheDir()): ContainerdBinaries | undefined {
  if (v.source.kind === "system") return binaries(v, "/usr/bin");
  const dir = fetchedDir(v, cache);
  return existsSync(join(dir, ".complete")) ? binaries(v, join(dir, "usr", "bin")) : undefined;
}

function runApt(args: string[], what: string): string {
  const r = spawnSync(args[0]!, args.slice(1), { encoding: "utf8", timeout: 600_000 });
  if (r.status !== 0) {
    throw new Error(
      `${what} failed (${r.error?.message ?? `exit ${r.status}`}): ${args.join(" ")}\n${r.stdout ?? ""}${r.stderr ?? ""}`,
    );
  }
  return r.stdout;
}

/** apt-get options that keep everything (sources, lists, cache, status) private to dir. */
export function privateAptOptions(dir: string): string[] {
  return [
    "-o",
    `Dir::Etc::sourcelist=${join(dir, "sources.list")}`,
    "-o",
    "Dir::Etc::sourceparts=-",
    "-o",
    `Dir::State::Lists=${join(dir, "lists")}`,
    "-o",
    `Dir::Cache=${join(dir, "cache")}`,
    "-o",
    "Dir::State::status=/dev/null",
    "-o",
    "Debug::NoLocking=1",
    // Downloads go to a root-owned dir; the _apt sandbox user could not write there.
    "-o",
    "APT::Sandbox::User=root",
  ];
}

/** A private apt state for the suites named, updated once per process that needs it. */
export function privateApt(dir: string, suites: string[], withSources = false): string[] {
  for (const d of ["lists/partial", "cache/archives/partial"]) mkdirSync(join(dir, d), { recursive: true });
  const lines = suites.flatMap((s) => [
    `deb [signed-by=${KEYRING}] ${DEBIAN_MIRROR} ${s} main`,
    ...(withSources ? [`deb-src [signed-by=${KEYRING}] ${DEBIAN_MIRROR} ${s} main`] : []),
  ]);
  writeFileSync(join(dir, "sources.list"), `${lines.join("\n")}\n`);
  const opts = privateAptOptions(dir);
  runApt(["apt-get", ...opts, "-qq", "update"], `apt-get update of ${suites.join(", ")} from ${DEBIAN_MIRROR}`);
  return opts;
}

/**
 * Makes v's binaries available (fetching its .deb once; later calls find it in the cache) and
 * returns their paths. Throws, loudly, when the pinned package cannot be fetched.
 */
export async function ensureContainerd(v: ContainerdVersion, cache = cacheDir()): Promise<ContainerdBinaries> {
  const present = containerdBinariesIfPresent(v, cache);
  if (present) return present;
  if (v.source.kind !== "deb") throw new Error("unreachable");
  const { suite, debVersion } = v.source;
  const top = join(cache, "containerd");
  mkdirSync(top, { recursive: true });
  const release = await acquireLock(join(top, ".lock"), (pid) =>
    process.stderr.write(`==> containerd ${v.version}: waiting for pid ${pid}, which is fetching\n`),
  );
  try {
    const again = containerdBinariesIfPresent(v, cache);
    if (again) return again;
    process.stderr.write(`==> containerd ${v.version}: fetching containerd=${debVersion} from ${suite}\n`);
    const aptDir = join(top, "apt");
    const opts = privateApt(aptDir, [suite]);
    const work = join(top, `.fetch-${process.pid}`);
    rmSync(work, { recursive: true, force: true });
    mkdirSync(work, { recursive: true });
    const r = spawnSync("apt-get", [...opts, "-qq", "download", `containerd=${debVersion}`], {
      cwd: work,
      encoding: "utf8",
      timeout: 600_000,
    });
    const deb = readdirSync(work).find((f) => f.endsWith(".deb"));
    if (r.status !== 0 || !deb) {
      throw new Error(
        `cannot fetch containerd ${v.version}: apt-get download containerd=${debVersion} from ${DEBIAN_MIRROR} ${suite} ` +
          `failed (${r.error?.message ?? `exit ${r.status}`}). The pinned package may have left the archive: ` +
          `update CONTAINERD_VERSIONS in test/harness/containerd-versions.ts.\n${r.stdout}${r.stderr}`,
      );
    }
    const tree = join(work, "tree");
    runApt(["dpkg-deb", "-x", join(work, deb), tree], `dpkg-deb -x ${deb}`);
    const got = binaries(v, join(tree, "usr", "bin"));
    for (const b of [got.containerd, got.ctr, join(got.binDir, "containerd-shim-runc-v2")]) {
      if (!existsSync(b)) throw new Error(`containerd ${v.version}: ${deb} has no ${b.slice(tree.length)}`);
    }
    writeFileSync(join(tree, ".complete"), `${deb}\n`);
    const dir = fetchedDir(v, cache);
    rmSync(dir, { recursive: true, force: true });
    renameSync(tree, dir);
    rmSync(work, { recursive: true, force: true });
    return binaries(v, join(dir, "usr", "bin"));
  } finally {
    release();
  }
}

/** The versions named by a comma-separated list ("all" or empty = every tested version). */
export function containerdVersionsFrom(list: string | undefined): ContainerdVersion[] {
  if (!list || list === "all") return Object.values(CONTAINERD_VERSIONS);
  return list.split(",").map((s) => resolveContainerdVersion(s.trim()));
}
