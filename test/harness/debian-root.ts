// Minimal Debian roots for tests that need a machine other than this one (e.g. one without Node):
// made by mmdebstrap from Debian's archive, cached as a tarball under
// $COVE_CACHE_DIR/debian-root/<key>/root.tar (key: suite, variant, packages, mirror, mmdebstrap's
// version), unpacked fresh for each use, and entered with chroot inside a private mount namespace
// (the /proc and /dev mounted there vanish with the namespace).
import { type SpawnSyncReturns, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { run } from "../../src/common/exec.ts";
import { keyOf } from "../../src/guest/hash.ts";
import { acquireLock } from "../../src/guest/lock.ts";
import { cacheDir } from "../../src/guest/paths.ts";
import { DEBIAN_MIRROR } from "./containerd-versions.ts";

export interface DebianRootSpec {
  suite: string;
  variant: "minbase" | "essential";
  /** Packages added to the variant's. */
  include: string[];
}

function rootKey(spec: DebianRootSpec): string {
  const mmdebstrap = run(["mmdebstrap", "--version"]).trim();
  return keyOf({ spec, mirror: DEBIAN_MIRROR, mmdebstrap, recipe: 1 });
}

/** The cached root tarball for spec, made once (a few minutes: mmdebstrap downloads every package). */
export async function debianRootTarball(spec: DebianRootSpec, cache = cacheDir()): Promise<string> {
  const dir = join(cache, "debian-root", rootKey(spec));
  const tar = join(dir, "root.tar");
  if (existsSync(tar)) return tar;
  mkdirSync(dir, { recursive: true });
  const release = await acquireLock(join(dir, ".lock"), (pid) =>
    process.stderr.write(`==> debian root: waiting for pid ${pid}, which is making it\n`),
  );
  try {
    if (existsSync(tar)) return tar;
    process.stderr.write(`==> debian root: mmdebstrap ${spec.suite} (${spec.variant} + ${spec.include.join(",")})\n`);
    const tmp = join(dir, `.root-${process.pid}.tar`);
    const argv = [`--variant=${spec.variant}`, "--quiet"];
    if (spec.include.length) argv.push(`--include=${spec.include.join(",")}`);
    const r = spawnSync("mmdebstrap", [...argv, spec.suite, tmp, DEBIAN_MIRROR], {
      encoding: "utf8",
      timeout: 900_000,
    });
    if (r.status !== 0) {
      rmSync(tmp, { force: true });
      throw new Error(`mmdebstrap failed (${r.error?.message ?? `exit ${r.status}`}):\n${r.stderr}`);
    }
    renameSync(tmp, tar);
    return tar;
  } finally {
    release();
  }
}

const HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt";
/** Proxy settings passed into the root as they are here. */
const PROXY_ENV = ["http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"];

/**
 * Unpacks a root tarball into dir (owners, modes and device nodes kept: we are root). The root uses
 * this machine's network, so it gets this machine's view of it: name resolution, and the trusted
 * CA bundle (a machine behind a TLS-intercepting proxy trusts that proxy's CA).
 */
export function unpackRoot(tar: string, dir: string): void {
  mkdirSync(dir, { recursive: true });
  run(["tar", "-xpf", tar, "-C", dir, "--numeric-owner"]);
  copyFileSync("/etc/resolv.conf", join(dir, "etc/resolv.conf"));
  copyFileSync(HOST_CA_BUNDLE, join(dir, "etc/ssl/certs/ca-certificates.crt"));
}

/** Runs argv chrooted into root with a clean environment (Debian's root PATH, this machine's proxy settings, env). */
export function runInRoot(
  root: string,
  argv: string[],
  env: Record<string, string> = {},
  timeoutMs = 300_000,
): SpawnSyncReturns<string> {
  const envArgs = Object.entries({
    PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    HOME: "/root",
    LANG: "C.UTF-8",
    ...Object.fromEntries(PROXY_ENV.flatMap((k) => (process.env[k] ? [[k, process.env[k]]] : []))),
    ...env,
  }).map(([k, v]) => `${k}=${v}`);
  const script = 'mount -t proc proc "$0/proc" && mount --rbind /dev "$0/dev" && exec chroot "$0" "$@"';
  return spawnSync(
    "unshare",
    ["--mount", "--propagation", "private", "--", "sh", "-c", script, root, "env", "-i", ...envArgs, ...argv],
    { encoding: "utf8", timeout: timeoutMs },
  );
}
