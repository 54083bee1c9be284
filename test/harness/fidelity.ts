// A multi-layer test image that has what registry images have and what a block-device rootfs could
// get wrong: whiteouts and opaque directories across layers, a path removed and made again, hard
// links, xattrs and file capabilities, device nodes and a FIFO, setuid/setgid/sticky bits, files
// of other owners, absolute/relative/dangling symlinks, a sparse file and one over 2 GiB, a layer of
// 100,000 small files; plus the probe (test/harness/probe/fsprobe.c) that lists every file so that
// runc and cove can be compared on it. Images are cached by content (buildImage).
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ImageSpec, LayerSpec } from "./image.ts";
import { binary, type Entry } from "./image-tar.ts";

const here = dirname(fileURLToPath(import.meta.url));
export const PROBE_SOURCE = join(here, "probe", "fsprobe.c");
/** Where the probe sits in the images. */
export const PROBE_PATH = "/usr/local/bin/fsprobe";

export const FIDELITY_REF = "docker.io/cove-test/fidelity:1";
export const FIDELITY_USER_REF = "docker.io/cove-test/fidelity:user-by-name";
export const FIDELITY_UID_REF = "docker.io/cove-test/fidelity:user-by-number";
/** The file over 2 GiB: its size and where its non-zero bytes are (past 2 GiB included). */
export const BIG_FILE = { path: "opt/big/over-2g", size: 2 ** 31 + 3 * 2 ** 20 + 5 };
export const MANY_FILES = 100_000;

/** The probe, compiled static (gcc) once per source under cacheDir; returns the binary's path. */
export function buildProbe(cacheDir: string): string {
  const src = readFileSync(PROBE_SOURCE);
  const key = createHash("sha256").update(src).digest("hex").slice(0, 16);
  const out = join(cacheDir, `fsprobe-${key}`);
  if (existsSync(out)) return out;
  mkdirSync(cacheDir, { recursive: true });
  execFileSync("gcc", ["-static", "-O2", "-Wall", "-Werror", "-o", `${out}.tmp`, PROBE_SOURCE], { timeout: 120_000 });
  renameSync(`${out}.tmp`, out);
  return out;
}

const dir = (name: string, mode = 0o755, uid = 0, gid = 0): Entry => ({ name, type: "directory", mode, uid, gid });
const file = (name: string, content: string, mode = 0o644, more: Partial<Entry> = {}): Entry => ({
  name,
  type: "file",
  mode,
  content,
  ...more,
});

/**
 * security.capability, VFS_CAP_REVISION_2 with the effective bit: cap_net_raw (13) and
 * cap_net_bind_service (10) permitted, nothing inheritable. Every byte is < 0x80.
 */
export const NET_CAPS = binary([
  0x01, 0x00, 0x00, 0x02, 0x00, 0x24, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  0x00,
]);

/** Layer 2: every kind of entry, owners, modes, xattrs; paths that later layers remove or replace. */
function featuresLayer(probe: Buffer): Entry[] {
  return [
    dir("etc/"),
    file(
      "etc/passwd",
      "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    ),
    file("etc/group", "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n"),
    file("etc/app.conf", "removed by a whiteout in layer 3\n"),
    dir("home/"),
    dir("home/app/", 0o750, 1000, 1000),
    file("home/app/.profile", "export APP=1\n", 0o640, { uid: 1000, gid: 1000 }),
    dir("usr/"),
    dir("usr/local/"),
    dir("usr/local/bin/"),
    { name: PROBE_PATH.slice(1), type: "file", mode: 0o755, content: probe },
    file("usr/local/bin/setuid-tool", "#!/bin/sh\nid\n", 0o4755),
    file("usr/local/bin/setgid-tool", "#!/bin/sh\nid\n", 0o2755, { gid: 65534 }),
    file("usr/local/bin/net-tool", "#!/bin/sh\necho caps\n", 0o755, { xattrs: { "security.capability": NET_CAPS } }),
    dir("opt/"),
    dir("opt/data/", 0o2775, 0, 1000),
    file("opt/data/hl-a", "one inode, three names\n"),
    { name: "opt/data/hl-b", type: "link", mode: 0o644, linkname: "opt/data/hl-a" },
    { name: "opt/data/hl-c", type: "link", mode: 0o644, linkname: "opt/data/hl-a" },
    file("opt/data/notes", "xattrs\n", 0o600, {
      uid: 65534,
      gid: 65534,
      xattrs: { "user.comment": "kept by the layer image", "user.empty": "" },
    }),
    dir("opt/shared/", 0o1777),
    dir("opt/dev/"),
    { name: "opt/dev/null", type: "character-device", mode: 0o666, devmajor: 1, devminor: 3 },
    { name: "opt/dev/blk", type: "block-device", mode: 0o660, devmajor: 7, devminor: 0, gid: 6 },
    { name: "opt/dev/fifo", type: "fifo", mode: 0o620 },
    dir("opt/links/"),
    { name: "opt/links/absolute", type: "symlink", mode: 0o777, linkname: "/etc/passwd" },
    { name: "opt/links/relative", type: "symlink", mode: 0o777, linkname: "../data/hl-a" },
    { name: "opt/links/dangling", type: "symlink", mode: 0o777, linkname: "/does/not/exist" },
    { name: "opt/links/dir", type: "symlink", mode: 0o777, linkname: "../data" },
    dir("opt/gone/"),
    file("opt/gone/a", "removed with its directory in layer 3\n"),
    dir("opt/gone/sub/"),
    file("opt/gone/sub/b", "also removed\n"),
    dir("opt/old/"),
    file("opt/old/replaced", "hidden by the opaque directory of layer 3\n"),
    dir("opt/old/deep/"),
    file("opt/old/deep/x", "hidden too\n"),
    file("opt/changed", "version 1\n"),
    file("opt/mode-changed", "same content\n", 0o600),
  ];
}

/** Layer 3: whiteouts (a file, a whole tree), an opaque directory, a changed file and mode. */
function changesLayer(): Entry[] {
  return [
    dir("etc/"),
    file("etc/.wh.app.conf", ""),
    dir("opt/"),
    file("opt/.wh.gone", ""),
    dir("opt/old/"),
    file("opt/old/.wh..wh..opq", ""),
    file("opt/old/new", "the only file left in the opaque directory\n"),
    file("opt/changed", "version 2, longer than version 1\n"),
    file("opt/mode-changed", "same content\n", 0o644),
    dir("opt/data/", 0o2775, 0, 1000),
    file("opt/data/added-later", "layer 3\n"),
  ];
}

/** Layer 4: a removed path made again (as a file this time), and a whiteout of layer 3's file. */
function againLayer(): Entry[] {
  return [
    dir("opt/"),
    file("opt/gone", "back, as a file\n"),
    dir("opt/data/", 0o2775, 0, 1000),
    file("opt/data/.wh.added-later", ""),
  ];
}

/** Layer 5: MANY_FILES small files in 100 directories. */
function manyFiles(): Entry[] {
  const out: Entry[] = [dir("opt/many/")];
  const perDir = MANY_FILES / 100;
  for (let d = 0; d < 100; d++) {
    out.push(dir(`opt/many/d${String(d).padStart(3, "0")}/`));
    for (let f = 0; f < perDir; f++) {
      const n = d * perDir + f;
      out.push(file(`opt/many/d${String(d).padStart(3, "0")}/f${String(n).padStart(6, "0")}`, `small file ${n}\n`));
    }
  }
  return out;
}

/** Layer 6: a sparse 64 MiB file and the file over 2 GiB (zeros with data at its edges). */
function bigFiles(): Entry[] {
  const MiB = 2 ** 20;
  const GiB = 2 ** 30;
  const marks = (size: number, at: number[]) => at.map((offset) => ({ offset, text: `@${offset}/${size}\n` }));
  return [
    dir("opt/big/"),
    {
      name: "opt/big/sparse-64m",
      type: "file",
      mode: 0o644,
      content: { size: 64 * MiB, data: marks(64 * MiB, [0, 32 * MiB + 7, 64 * MiB - 20]) },
    },
    {
      name: BIG_FILE.path,
      type: "file",
      mode: 0o644,
      content: {
        size: BIG_FILE.size,
        data: marks(BIG_FILE.size, [0, 2 * GiB - 10, 2 * GiB + MiB, BIG_FILE.size - 30]),
      },
    },
  ];
}

/** The fidelity image's layers, bottom first (busybox is the base below them). */
export function fidelityLayers(cacheDir: string): LayerSpec[] {
  const probe = readFileSync(buildProbe(cacheDir));
  return [
    { entries: featuresLayer(probe) },
    { entries: changesLayer() },
    { entries: againLayer() },
    { entries: [dir("opt/"), ...manyFiles()], gzip: true },
    { entries: [dir("opt/"), ...bigFiles()], gzip: true },
  ];
}

/** The fidelity image (root, WORKDIR /), and the same layers with a USER by name or by number and a WORKDIR the image does not have. */
export function fidelityImages(cacheDir: string): { root: ImageSpec; byName: ImageSpec; byNumber: ImageSpec } {
  const layers = fidelityLayers(cacheDir);
  const common = { cmd: ["/bin/sh"], env: ["PATH=/usr/local/bin:/bin"], layers };
  return {
    root: { ref: FIDELITY_REF, workingDir: "/", ...common },
    byName: { ref: FIDELITY_USER_REF, user: "app", workingDir: "/srv/not/there", ...common },
    byNumber: { ref: FIDELITY_UID_REF, user: "4321:4322", workingDir: "/work/dir", ...common },
  };
}
