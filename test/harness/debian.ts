// A Debian 12 userland as a registry-like multi-layer image, for the big tests and the rootfs bench:
// mmdebstrap (from Debian's archive) makes one root filesystem, which is then cut into layers the
// way a Dockerfile's RUN steps would have made them — the essential packages first, then the other
// packages in groups, then the files no package owns (dpkg's database, generated config), then a
// clean-up layer that removes apt's lists (whiteouts) and empties /usr/share/man (an opaque
// directory). Layer tars are written by GNU tar with xattrs (Debian's ping carries a file
// capability), numeric owners and a fixed mtime order; everything is cached by its inputs under
// <cacheDir>/debian/<key>/, so CI builds it once.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import type { LayerSpec } from "./image.ts";

export const DEBIAN_MIRROR = "http://deb.debian.org/debian";
export const DEBIAN_SUITE = "bookworm";

export interface DebianSpec {
  /** Packages on top of minbase. */
  include: string[];
  /** How many layers the non-essential packages are cut into. */
  packageLayers: number;
}

/** What the rootfs bench and the big tests use: ≥ 300 MiB over ≥ 8 layers. */
export const DEBIAN_BIG: DebianSpec = {
  include: [
    "python3",
    "python3-venv",
    "nginx-light",
    "curl",
    "ca-certificates",
    "git",
    "perl",
    "procps",
    "iproute2",
    "less",
    "iputils-ping",
    "python3-pip",
    "python3-dev",
    "file",
    "xz-utils",
  ],
  packageLayers: 6,
};

export interface DebianLayers {
  /** The layer tars, bottom first (ready for LayerSpec `tarFile`). */
  layers: LayerSpec[];
  /** Uncompressed bytes of all layers. */
  bytes: number;
  key: string;
}

function keyOf(spec: DebianSpec): string {
  return createHash("sha256")
    .update(JSON.stringify({ v: 1, spec, suite: DEBIAN_SUITE, mirror: DEBIAN_MIRROR }))
    .digest("hex")
    .slice(0, 16);
}

/** Package name → the paths it owns (dpkg's .list files), and the essential/required ones. */
function dpkgOwners(root: string): { owned: Map<string, string[]>; essential: Set<string> } {
  const info = join(root, "var/lib/dpkg/info");
  // Merged /usr: dpkg lists /bin/ping, the file is /usr/bin/ping (/bin is a symlink to usr/bin).
  const merged = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"].filter((d) => {
    try {
      return lstatSync(join(root, d)).isSymbolicLink();
    } catch {
      return false;
    }
  });
  const real = (p: string) => {
    const top = p.split("/")[1]!;
    return merged.includes(top) && p !== `/${top}` ? `/usr${p}` : p;
  };
  const owned = new Map<string, string[]>();
  for (const f of readdirSync(info).sort()) {
    if (!f.endsWith(".list")) continue;
    const pkg = f.slice(0, -".list".length).replace(/:.*$/, "");
    const paths = readFileSync(join(info, f), "utf8")
      .split("\n")
      .filter((p) => p.startsWith("/") && p !== "/.")
      .map(real);
    owned.set(pkg, paths);
  }
  const essential = new Set<string>();
  for (const para of readFileSync(join(root, "var/lib/dpkg/status"), "utf8").split("\n\n")) {
    const name = /^Package: (.+)$/m.exec(para)?.[1];
    if (name && (/^Essential: yes$/m.test(para) || /^Priority: required$/m.test(para))) essential.add(name);
  }
  return { owned, essential };
}

/** Every path under root (relative, no leading slash), directories included, sorted. */
function walk(root: string, rel = "", out: string[] = []): string[] {
  for (const name of readdirSync(join(root, rel)).sort()) {
    const p = rel ? `${rel}/${name}` : name;
    out.push(p);
    const st = lstatSync(join(root, p));
    if (st.isDirectory()) walk(root, p, out);
  }
  return out;
}

/** Splits root's paths into layers: essential packages, `groups` groups of the others, the rest. */
export function assignLayers(
  all: string[],
  owned: Map<string, string[]>,
  essential: Set<string>,
  groups: number,
  isDir: (p: string) => boolean,
): string[][] {
  const layerOf = new Map<string, number>();
  const others = [...owned.keys()].filter((p) => !essential.has(p)).sort();
  const group = (pkg: string) =>
    essential.has(pkg) ? 0 : 1 + Math.floor((others.indexOf(pkg) * groups) / others.length);
  for (const [pkg, paths] of owned) {
    const l = group(pkg);
    for (const p of paths) {
      const rel = p.slice(1);
      if (!isDir(rel) && (!layerOf.has(rel) || layerOf.get(rel)! > l)) layerOf.set(rel, l);
    }
  }
  const layers: string[][] = Array.from({ length: groups + 2 }, () => []);
  const withParents: Set<string>[] = layers.map(() => new Set());
  for (const p of all) {
    if (isDir(p)) continue;
    const l = layerOf.get(p) ?? groups + 1; // not owned by a package: the config layer
    const parts = p.split("/");
    for (let i = 1; i < parts.length; i++) withParents[l]!.add(parts.slice(0, i).join("/"));
    withParents[l]!.add(p);
  }
  // Every directory appears in the base layer (empty ones included), as a RUN step would leave it.
  for (const p of all) if (isDir(p)) withParents[0]!.add(p);
  return withParents.map((s) => [...s].sort());
}

/** GNU tar of exactly these paths (no recursion), with xattrs and numeric owners. */
function tarOf(root: string, paths: string[], out: string): void {
  const list = `${out}.list`;
  writeFileSync(list, paths.join("\0"));
  execFileSync(
    "tar",
    [
      "--create",
      "--file",
      out,
      "--directory",
      root,
      "--no-recursion",
      "--null",
      "--files-from",
      list,
      "--format=posix",
      "--xattrs",
      "--xattrs-include=*",
      "--numeric-owner",
      "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
      "--sort=none",
    ],
    { stdio: ["ignore", "ignore", "pipe"], timeout: 600_000 },
  );
  rmSync(list);
}

/** The clean-up layer: apt's lists removed (whiteouts), /usr/share/man emptied (opaque). */
function cleanupLayer(root: string, out: string): void {
  const stage = `${out}.d`;
  rmSync(stage, { recursive: true, force: true });
  const lists = join(root, "var/lib/apt/lists");
  const names = existsSync(lists) ? readdirSync(lists).filter((n) => n !== "lock" && n !== "partial") : [];
  mkdirSync(join(stage, "var/lib/apt/lists"), { recursive: true });
  for (const n of names) writeFileSync(join(stage, "var/lib/apt/lists", `.wh.${n}`), "");
  mkdirSync(join(stage, "usr/share/man"), { recursive: true });
  writeFileSync(join(stage, "usr/share/man/.wh..wh..opq"), "");
  const fixed = ["--numeric-owner", "--owner=0", "--group=0", "--mtime=@946684800", "--sort=name", "--format=posix"];
  execFileSync("tar", ["--create", "--file", out, "--directory", stage, ...fixed, "."], { timeout: 60_000 });
  rmSync(stage, { recursive: true, force: true });
}

/** Cuts the root filesystem at `root` into layer tars under `out`; their paths, bottom first. */
export function cutLayers(root: string, packageLayers: number, out: string, progress: (s: string) => void): string[] {
  const { owned, essential } = dpkgOwners(root);
  const all = walk(root);
  const dirs = new Set(all.filter((p) => lstatSync(join(root, p)).isDirectory()));
  const groups = assignLayers(all, owned, essential, packageLayers, (p) => dirs.has(p));
  mkdirSync(out, { recursive: true });
  const files: string[] = [];
  for (const [i, paths] of groups.entries()) {
    progress(`debian: layer ${i + 1}/${groups.length + 1} (${paths.length} paths)`);
    const f = join(out, `layer-${String(i).padStart(2, "0")}.tar`);
    tarOf(root, paths, f);
    files.push(f);
  }
  const cleanup = join(out, `layer-${String(groups.length).padStart(2, "0")}.tar`);
  cleanupLayer(root, cleanup);
  files.push(cleanup);
  return files;
}

/**
 * The layers of a Debian userland (cached): mmdebstrap once, cut into layers. Needs root,
 * mmdebstrap and the network the first time.
 */
export function debianLayers(
  spec: DebianSpec,
  cacheDir: string,
  progress: (s: string) => void = () => {},
): DebianLayers {
  const key = keyOf(spec);
  const dir = join(cacheDir, "debian", key);
  const manifest = join(dir, "layers.json");
  if (existsSync(manifest)) return JSON.parse(readFileSync(manifest, "utf8")) as DebianLayers;
  const work = `${dir}.${process.pid}.work`;
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  try {
    const root = join(work, "root");
    mkdirSync(root); // mmdebstrap wants an existing, empty directory
    progress(`debian: mmdebstrap ${DEBIAN_SUITE} minbase + ${spec.include.join(",")}`);
    execFileSync(
      "mmdebstrap",
      [
        "--quiet",
        "--variant=minbase",
        `--include=${spec.include.join(",")}`,
        "--mode=root",
        DEBIAN_SUITE,
        `${root}/`,
        DEBIAN_MIRROR,
      ],
      {
        env: { ...process.env, SOURCE_DATE_EPOCH: "946684800" },
        stdio: ["ignore", "ignore", "pipe"],
        timeout: 1_800_000,
      },
    );
    const out = join(work, "out");
    const files = cutLayers(root, spec.packageLayers, out, progress);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(join(cacheDir, "debian"), { recursive: true });
    renameSync(out, dir);
    const tars = files.map((f) => join(dir, f.slice(out.length + 1)));
    const bytes = tars.reduce((n, f) => n + lstatSync(f).size, 0);
    const result: DebianLayers = { layers: tars.map((tarFile) => ({ tarFile, key })), bytes, key };
    writeFileSync(manifest, JSON.stringify(result));
    return result;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
