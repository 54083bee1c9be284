// The guest's static busybox (the debug console's shell, and a toolbox for looking around in a pod
// VM): Debian's busybox-static package, the version the host's apt offers (Debian 12, like the rest
// of the guest), fetched with `apt-get download` and checked against the SHA256 apt's signed
// metadata gives for it, then extracted with `dpkg-deb -x`. Cached under <cache>/busybox/<key>/
// by that hash, so an image is rebuilt only when Debian publishes a new busybox-static.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { run } from "../common/exec.ts";
import { fileSha256 } from "./hash.ts";
import { acquireLock } from "./lock.ts";
import type { Progress } from "./progress.ts";

export const BUSYBOX_PACKAGE = "busybox-static";
/** Where busybox is in the guest image; no applet links (`busybox sh`, `busybox ls`, ...). */
export const GUEST_BUSYBOX = "/usr/bin/busybox";
/** The binary's path inside the package. */
const IN_PACKAGE = "bin/busybox";

export interface BusyboxBuild {
  /** The package version, e.g. "1:1.35.0-4+deb12u1+b1". */
  version: string;
  /** The .deb's SHA256 (apt's metadata), which names the cache entry. */
  sha256: string;
  binary: string;
  cached: boolean;
}

export interface BusyboxCandidate {
  version: string;
  sha256: string;
}

/** Parses `apt-cache show --no-all-versions` output: the candidate's Version and SHA256. */
export function parseAptShow(text: string): BusyboxCandidate | undefined {
  const field = (name: string) => new RegExp(`^${name}: *(\\S+) *$`, "m").exec(text)?.[1];
  const version = field("Version");
  const sha256 = field("SHA256");
  if (!version || !sha256 || !/^[0-9a-f]{64}$/.test(sha256)) return undefined;
  return { version, sha256 };
}

/** The version apt would install here, from its lists (no network). */
export function busyboxCandidate(): BusyboxCandidate {
  const r = spawnSync("apt-cache", ["show", "--no-all-versions", BUSYBOX_PACKAGE], { encoding: "utf8" });
  const c = r.status === 0 ? parseAptShow(r.stdout) : undefined;
  if (!c) {
    throw new Error(
      `apt knows no ${BUSYBOX_PACKAGE} package (the guest's static busybox): run \`apt-get update\`` +
        (r.stderr ? `\n${r.stderr.trim()}` : ""),
    );
  }
  return c;
}

function paths(cache: string, sha256: string) {
  const dir = join(cache, "busybox", sha256.slice(0, 20));
  return { dir, binary: join(dir, "busybox") };
}

/** The cached busybox for apt's current candidate, if fetched already (no download). */
export function builtBusybox(cache: string, candidate = busyboxCandidate()): BusyboxBuild | undefined {
  const p = paths(cache, candidate.sha256);
  return existsSync(p.binary) ? { ...candidate, binary: p.binary, cached: true } : undefined;
}

/** Fetches and extracts busybox-static once; later calls find it in the cache. */
export async function ensureBusybox(cache: string, progress: Progress): Promise<BusyboxBuild> {
  const candidate = busyboxCandidate();
  const hit = builtBusybox(cache, candidate);
  if (hit) {
    progress.stage(`busybox: ${candidate.version} up to date`);
    return hit;
  }
  const top = join(cache, "busybox");
  mkdirSync(top, { recursive: true });
  const release = await acquireLock(join(top, ".lock"), (pid) =>
    progress.stage(`busybox: waiting for pid ${pid}, which is fetching it`),
  );
  try {
    const again = builtBusybox(cache, candidate);
    if (again) return again;
    const p = paths(cache, candidate.sha256);
    const work = `${p.dir}.tmp-${process.pid}`;
    rmSync(work, { recursive: true, force: true });
    mkdirSync(work, { recursive: true });
    try {
      progress.stage(`busybox: apt-get download ${BUSYBOX_PACKAGE}=${candidate.version}`);
      // Root-owned work dir: apt's _apt sandbox user could not write there.
      run(["apt-get", "-qq", "-o", "APT::Sandbox::User=root", "download", `${BUSYBOX_PACKAGE}=${candidate.version}`], {
        cwd: work,
      });
      const deb = readdirSync(work).find((f) => f.endsWith(".deb"));
      if (!deb) throw new Error(`apt-get download ${BUSYBOX_PACKAGE} left no .deb in ${work}`);
      const got = fileSha256(join(work, deb));
      if (got !== candidate.sha256)
        throw new Error(`${deb}: sha256 ${got}, apt's metadata says ${candidate.sha256}: refusing it`);
      run(["dpkg-deb", "-x", join(work, deb), join(work, "tree")]);
      const bin = join(work, "tree", IN_PACKAGE);
      if (!existsSync(bin)) throw new Error(`${deb} has no /${IN_PACKAGE}`);
      // Must be static: the guest carries no libraries for it.
      const ldd = spawnSync("ldd", [bin], { encoding: "utf8" });
      if (ldd.status === 0) throw new Error(`${deb}: /${IN_PACKAGE} is dynamically linked:\n${ldd.stdout}`);
      const out = join(work, "out");
      mkdirSync(out);
      renameSync(bin, join(out, "busybox"));
      writeFileSync(join(out, "package"), `${BUSYBOX_PACKAGE} ${candidate.version} ${candidate.sha256}\n`);
      rmSync(p.dir, { recursive: true, force: true });
      renameSync(out, p.dir);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
    progress.stage(`busybox: ${candidate.version} fetched`);
    return { ...candidate, binary: p.binary, cached: false };
  } finally {
    release();
  }
}
