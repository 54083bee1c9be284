// Building a guest root directory and turning it into an erofs image. Reusable: the guest image
// (image.ts) and test guests (e.g. busybox + socat roots) describe their content as a RootPlan,
// then materialize it and call makeErofs.
import { chmodSync, copyFileSync, lstatSync, mkdirSync, realpathSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, isAbsolute, join, normalize } from "node:path";
import { errorMessage } from "../common/errors.ts";
import { run } from "../common/exec.ts";
import { fileSha256, keyOf } from "./hash.ts";

/** One entry of a root directory; paths are absolute inside the root ("/usr/bin/node"). */
export type RootEntry =
  | { kind: "dir"; path: string; mode: number }
  | { kind: "file"; path: string; from: string; mode: number }
  | { kind: "content"; path: string; content: string; mode: number }
  | { kind: "symlink"; path: string; target: string };

export type RootPlan = RootEntry[];

/** The shared libraries (absolute paths, as the dynamic loader resolves them) a binary needs; [] if static. */
export function sharedLibraries(binary: string): string[] {
  let out: string;
  try {
    out = run(["ldd", binary]);
  } catch (e) {
    // ldd exits 1 for static binaries ("not a dynamic executable").
    if (String(errorMessage(e)).includes("not a dynamic executable")) return [];
    throw e;
  }
  const libs: string[] = [];
  for (const line of out.split("\n")) {
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    const m = /=>\s*(\S+)\s+\(0x/.exec(line) ?? /^\s*(\/\S+)\s+\(0x/.exec(line);
    if (m?.[1]?.startsWith("/")) libs.push(m[1]);
    else if (/=>\s*not found/.test(line)) throw new Error(`${binary}: missing shared library: ${line.trim()}`);
  }
  return libs;
}

/**
 * Entries that copy a host binary and exactly the shared libraries it needs into a root, each at
 * the path the host's dynamic loader uses (so the loader finds them the same way in the guest).
 * `dest` renames the binary inside the root (default: same path as on the host).
 */
export function binaryWithLibraries(binary: string, dest = binary): RootPlan {
  const real = realpathSync(binary);
  const entries: RootPlan = [{ kind: "file", path: dest, from: real, mode: 0o755 }];
  for (const lib of sharedLibraries(real))
    entries.push({ kind: "file", path: lib, from: realpathSync(lib), mode: 0o755 });
  return entries;
}

/** The Debian 12 merged-/usr skeleton: /bin, /sbin, /lib, /lib64 are symlinks into /usr. */
export function usrMergedSkeleton(): RootPlan {
  return [
    { kind: "dir", path: "/usr/bin", mode: 0o755 },
    { kind: "dir", path: "/usr/sbin", mode: 0o755 },
    { kind: "dir", path: "/usr/lib", mode: 0o755 },
    { kind: "dir", path: "/usr/lib64", mode: 0o755 },
    { kind: "symlink", path: "/bin", target: "usr/bin" },
    { kind: "symlink", path: "/sbin", target: "usr/sbin" },
    { kind: "symlink", path: "/lib", target: "usr/lib" },
    { kind: "symlink", path: "/lib64", target: "usr/lib64" },
  ];
}

function checkPath(p: string): string {
  if (!isAbsolute(p) || normalize(p) !== p || p.includes("/../") || p === "/") throw new Error(`bad root path: ${p}`);
  return p;
}

/**
 * Drops duplicate entries (the same library needed by two binaries) and rejects conflicting ones.
 * Order is kept: earlier entries win, and a later identical one is dropped.
 */
export function dedupe(plan: RootPlan): RootPlan {
  const seen = new Map<string, RootEntry>();
  const out: RootPlan = [];
  for (const e of plan) {
    checkPath(e.path);
    const prev = seen.get(e.path);
    if (prev) {
      if (JSON.stringify(prev) !== JSON.stringify(e)) throw new Error(`conflicting entries for ${e.path}`);
      continue;
    }
    seen.set(e.path, e);
    out.push(e);
  }
  return out;
}

/** A cache key for a plan: every entry, with copied files identified by their content hash. */
export function planKey(plan: RootPlan): string {
  return keyOf(plan.map((e) => (e.kind === "file" ? { ...e, from: undefined, sha256: fileSha256(e.from) } : e)));
}

/** Resolves a root path on the host, following symlinks already created inside the root (e.g. /lib -> usr/lib). */
function hostPath(root: string, p: string): string {
  const parts = p.split("/").filter(Boolean);
  let cur = root;
  for (const [i, part] of parts.entries()) {
    cur = join(cur, part);
    if (i === parts.length - 1) break;
    let st: ReturnType<typeof lstatSync> | undefined;
    try {
      st = lstatSync(cur);
    } catch {
      st = undefined;
    }
    if (st?.isSymbolicLink()) {
      const target = realpathSync(cur);
      if (target !== root && !target.startsWith(`${root}/`)) throw new Error(`${p}: symlink leaves the root`);
      cur = target;
    }
  }
  return cur;
}

/** Creates the plan's entries under root (an empty or missing directory). */
export function materialize(plan: RootPlan, root: string): void {
  mkdirSync(root, { recursive: true });
  const realRoot = realpathSync(root);
  for (const e of dedupe(plan)) {
    const dst = hostPath(realRoot, e.path);
    mkdirSync(dirname(dst), { recursive: true, mode: 0o755 });
    switch (e.kind) {
      case "dir":
        mkdirSync(dst, { recursive: true });
        chmodSync(dst, e.mode);
        break;
      case "file":
        copyFileSync(e.from, dst);
        chmodSync(dst, e.mode);
        break;
      case "content":
        writeFileSync(dst, e.content);
        chmodSync(dst, e.mode);
        break;
      case "symlink":
        symlinkSync(e.target, dst);
        break;
    }
  }
}

export interface ErofsOptions {
  /** "lz4" or "lz4hc" (erofs-utils 1.5); default: uncompressed (fastest to read under TCG). */
  compress?: "lz4" | "lz4hc";
  /** Fixed mtime for every file (reproducible images); default 0. */
  timestamp?: number;
  /** Fixed filesystem UUID (reproducible images). */
  uuid?: string;
}

/** mkfs.erofs: a read-only image of dir, every file owned by root. */
export function makeErofs(dir: string, image: string, opts: ErofsOptions = {}): void {
  const argv = ["mkfs.erofs", "--quiet", "--all-root", `-T${opts.timestamp ?? 0}`];
  if (opts.uuid) argv.push(`-U${opts.uuid}`);
  if (opts.compress) argv.push(`-z${opts.compress}`);
  argv.push(image, dir);
  run(argv);
}

/** A UUID-shaped string derived from a hex key (for reproducible images). */
export function uuidFromKey(hex: string): string {
  const h = (hex + "0".repeat(32)).slice(0, 32);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}
