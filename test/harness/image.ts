// OCI image tarballs built here (no registry, no network): Debian's static busybox as the base, and
// any number of layers on top (test/harness/image-tar.ts: whiteouts, hard links, xattrs, devices,
// big and many files), or layers made elsewhere (a Debian userland: test/harness/debian.ts); and
// their import into a harness containerd. The layout follows the OCI image spec: a layer tar per
// layer (gzip'd or not: diff_id = digest of the uncompressed tar), a config, a manifest, index.json
// naming the image with `io.containerd.image.name` (what `ctr images import` uses) and
// `oci-layout`. Tarballs are written as streams (a layer may be GiBs) and cached by content.
//
//   const tar = await buildImage(busyboxImage(), cacheDir);      // cached by content
//   await importImage(cd, tar);                                  // namespace "default"
//   await importImage(cd, await buildImage(pauseImage(), cacheDir), "k8s.io");
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  createReadStream,
  createWriteStream,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { pack as tarPack } from "tar-stream";
import { type Containerd, PAUSE_IMAGE_REF } from "./containerd.ts";
import { describeFailure } from "./exec.ts";
import { type Entry, MTIME, type WrittenBlob, writeLayer } from "./image-tar.ts";

export type { Entry } from "./image-tar.ts";

export const BUSYBOX_BIN = "/bin/busybox";
export const BUSYBOX_IMAGE_REF = "docker.io/library/bb:latest";
export { PAUSE_IMAGE_REF };

const MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar";
const MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";

export interface ImageFile {
  /** Path inside the image, without a leading slash. */
  path: string;
  content: string | Uint8Array;
  mode?: number;
}

export interface ImageSpec {
  /** Full reference, e.g. docker.io/library/bb:latest. */
  ref: string;
  entrypoint?: string[];
  cmd?: string[];
  env?: string[];
  workingDir?: string;
  /** The config's User: a name, a uid, or uid:gid. */
  user?: string;
  /** Extra files added to the busybox layer (after busybox and /etc). */
  files?: ImageFile[];
  /** "busybox" (default): the first layer is busybox + files; "none": only `layers`. */
  base?: "busybox" | "none";
  /** Layers on top of the base, bottom first. */
  layers?: LayerSpec[];
}

/** busybox with every applet linked in /bin; Cmd `sh`. */
export function busyboxImage(overrides: Partial<ImageSpec> = {}): ImageSpec {
  return { ref: BUSYBOX_IMAGE_REF, cmd: ["/bin/sh"], env: ["PATH=/bin"], workingDir: "/", ...overrides };
}

/** The CRI sandbox image: busybox `sleep` standing in for pause (imports into k8s.io). */
export function pauseImage(): ImageSpec {
  return { ref: PAUSE_IMAGE_REF, entrypoint: ["/bin/sleep"], cmd: ["1000000"], env: ["PATH=/bin"], workingDir: "/" };
}

function sha256(b: Uint8Array | string): string {
  return createHash("sha256").update(b).digest("hex");
}

/** Applet names the installed busybox provides (`busybox --list`). */
export function busyboxApplets(): string[] {
  return execFileSync(BUSYBOX_BIN, ["--list"], { encoding: "utf8", timeout: 5000 })
    .split("\n")
    .map((s) => s.trim())
    .filter((s) => s && s !== "busybox" && !s.includes("/"));
}

/** An entry of the busybox layer (what writeBusyboxRootfs-style helpers can lay out on disk). */
export type BusyboxEntry = Entry & { type: "directory" | "file" | "symlink"; content?: Uint8Array };

/** The rootfs entries of an image: dirs, /bin/busybox + applet symlinks, /etc/passwd and /etc/group, extras. */
export function layerEntries(spec: ImageSpec): BusyboxEntry[] {
  const entries: BusyboxEntry[] = [];
  for (const d of ["bin", "dev", "etc", "proc", "run", "sys", "var"])
    entries.push({ name: `${d}/`, type: "directory", mode: 0o755 });
  entries.push({ name: "root/", type: "directory", mode: 0o700 });
  entries.push({ name: "tmp/", type: "directory", mode: 0o1777 });
  entries.push({ name: "bin/busybox", type: "file", mode: 0o755, content: readFileSync(BUSYBOX_BIN) });
  for (const a of busyboxApplets())
    entries.push({ name: `bin/${a}`, type: "symlink", mode: 0o777, linkname: "busybox" });
  const passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
  const group = "root:x:0:\nnogroup:x:65534:\n";
  entries.push({ name: "etc/passwd", type: "file", mode: 0o644, content: Buffer.from(passwd) });
  entries.push({ name: "etc/group", type: "file", mode: 0o644, content: Buffer.from(group) });
  for (const f of spec.files ?? []) {
    const content = typeof f.content === "string" ? Buffer.from(f.content) : f.content;
    entries.push({ name: f.path.replace(/^\/+/, ""), type: "file", mode: f.mode ?? 0o644, content });
  }
  return entries;
}

/** A layer on top of the base: entries (see image-tar.ts), or a tar made elsewhere. */
export type LayerSpec =
  | { entries: Entry[]; gzip?: boolean }
  /** A ready layer tar (uncompressed); `key` identifies its content (part of the image's cache key). */
  | { tarFile: string; key: string };

export interface BuiltImage {
  ref: string;
  path: string;
  manifestDigest: string;
  configDigest: string;
  /** The first (base) layer's digest. */
  layerDigest: string;
  /** Every layer's blob digest, base first. */
  layerDigests: string[];
  /** Every layer's diff ID (digest of the uncompressed tar), base first. */
  diffIds: string[];
}

/** Tag part of a reference ("latest" for docker.io/library/bb:latest). */
export function refTag(ref: string): string {
  const slash = ref.lastIndexOf("/");
  const colon = ref.lastIndexOf(":");
  return colon > slash ? ref.slice(colon + 1) : "latest";
}

const sha256File = async (path: string): Promise<string> => {
  const h = createHash("sha256");
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return `sha256:${h.digest("hex")}`;
};

/**
 * One layer's blob: a ready tar as it is, or entries written once per content into
 * <cacheDir>/layers/ (images that share a layer share its blob and its build).
 */
async function layerBlob(l: LayerSpec | Entry[], cacheDir: string): Promise<WrittenBlob & { file: string }> {
  if (!Array.isArray(l) && "tarFile" in l) {
    const digest = await sha256File(l.tarFile);
    return { digest, diffId: digest, size: statSync(l.tarFile).size, file: l.tarFile };
  }
  const entries = Array.isArray(l) ? l : l.entries;
  const gzip = !Array.isArray(l) && (l.gzip ?? false);
  const dir = join(cacheDir, "layers");
  const file = join(dir, `${sha256(JSON.stringify({ entries, gzip })).slice(0, 24)}${gzip ? ".tar.gz" : ".tar"}`);
  if (existsSync(file) && existsSync(`${file}.json`)) {
    return { ...(JSON.parse(readFileSync(`${file}.json`, "utf8")) as WrittenBlob), file };
  }
  mkdirSync(dir, { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    const written = await writeLayer(entries, tmp, gzip);
    renameSync(tmp, file);
    writeFileSync(`${file}.json`, JSON.stringify(written));
    return { ...written, file };
  } finally {
    rmSync(tmp, { force: true });
  }
}

/** The cache key of a spec: its JSON, with the busybox binary's identity when busybox is the base. */
function specKey(spec: ImageSpec): string {
  const bb = spec.base === "none" ? null : statSync(BUSYBOX_BIN);
  return sha256(JSON.stringify({ v: 2, spec, bb: bb && [bb.size, bb.mtimeMs] })).slice(0, 16);
}

/**
 * Builds the OCI layout tarball for `spec` into `cacheDir` (reused when the spec and the busybox
 * binary are unchanged) and returns its path and digests.
 */
export async function buildImage(spec: ImageSpec, cacheDir: string): Promise<BuiltImage> {
  mkdirSync(cacheDir, { recursive: true });
  const path = join(cacheDir, `${refTag(spec.ref)}-${specKey(spec)}.tar`);
  const metaPath = `${path}.json`;
  if (existsSync(path) && existsSync(metaPath)) return JSON.parse(readFileSync(metaPath, "utf8")) as BuiltImage;

  const specs: (LayerSpec | Entry[])[] = [
    ...(spec.base === "none" ? [] : [layerEntries(spec)]),
    ...(spec.layers ?? []),
  ];
  if (specs.length === 0) throw new Error(`image ${spec.ref} has no layers`);
  const layers = [];
  for (const l of specs) layers.push(await layerBlob(l, cacheDir));
  const config = Buffer.from(
    JSON.stringify({
      architecture: "amd64",
      os: "linux",
      config: {
        Env: spec.env ?? ["PATH=/bin"],
        ...(spec.entrypoint ? { Entrypoint: spec.entrypoint } : {}),
        ...(spec.cmd ? { Cmd: spec.cmd } : {}),
        ...(spec.user ? { User: spec.user } : {}),
        WorkingDir: spec.workingDir ?? "/",
      },
      rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
    }),
  );
  const configDigest = `sha256:${sha256(config)}`;
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_MANIFEST,
      config: { mediaType: MEDIA_CONFIG, digest: configDigest, size: config.length },
      layers: layers.map((l) => ({
        mediaType: l.digest === l.diffId ? MEDIA_LAYER : MEDIA_LAYER_GZIP,
        digest: l.digest,
        size: l.size,
      })),
    }),
  );
  const manifestDigest = `sha256:${sha256(manifest)}`;
  const index = JSON.stringify({
    schemaVersion: 2,
    manifests: [
      {
        mediaType: MEDIA_MANIFEST,
        digest: manifestDigest,
        size: manifest.length,
        annotations: { "io.containerd.image.name": spec.ref, "org.opencontainers.image.ref.name": refTag(spec.ref) },
      },
    ],
  });
  const blob = (d: string) => `blobs/sha256/${d.slice("sha256:".length)}`;
  const entries: OuterEntry[] = [
    { name: "oci-layout", content: Buffer.from(JSON.stringify({ imageLayoutVersion: "1.0.0" })) },
    { name: "index.json", content: Buffer.from(index) },
    { name: "blobs/" },
    { name: "blobs/sha256/" },
    { name: blob(manifestDigest), content: manifest },
    { name: blob(configDigest), content: config },
  ];
  // Write then rename, so a concurrent or interrupted build never leaves a half-written cache entry.
  const tmp = `${path}.${process.pid}.tmp`;
  await writeOuter(entries, layers, blob, tmp);
  renameSync(tmp, path);
  const built: BuiltImage = {
    ref: spec.ref,
    path,
    manifestDigest,
    configDigest,
    layerDigest: layers[0]!.digest,
    layerDigests: layers.map((l) => l.digest),
    diffIds: layers.map((l) => l.diffId),
  };
  writeFileSync(metaPath, JSON.stringify(built));
  return built;
}

/** A small entry of the outer tarball: a file from memory, or a directory (no content). */
type OuterEntry = { name: string; content?: Buffer };

/** The outer tarball: small entries from memory, layer blobs streamed from their files (each once). */
async function writeOuter(
  entries: OuterEntry[],
  layers: { digest: string; size: number; file: string }[],
  blob: (d: string) => string,
  out: string,
): Promise<void> {
  const p = tarPack();
  const done = pipeline(p, createWriteStream(out));
  for (const e of entries) {
    if (!e.content) p.entry({ name: e.name, type: "directory", mode: 0o755, mtime: MTIME });
    else p.entry({ name: e.name, type: "file", mode: 0o644, mtime: MTIME, size: e.content.length }, e.content);
  }
  const seen = new Set<string>();
  for (const l of layers) {
    if (seen.has(l.digest)) continue; // the same layer twice in one image is one blob
    seen.add(l.digest);
    await new Promise<void>((resolve, reject) => {
      const w = p.entry({ name: blob(l.digest), type: "file", mode: 0o644, mtime: MTIME, size: l.size }, (err) =>
        err ? reject(err) : resolve(),
      );
      createReadStream(l.file).on("error", reject).pipe(w);
    });
  }
  p.finalize();
  await done;
}

/** `ctr images import` into `namespace` (unpacked for the default snapshotter); throws with ctr's output. */
export async function importImage(
  cd: Containerd,
  image: BuiltImage,
  namespace = "default",
  timeoutMs = 60_000,
): Promise<void> {
  const r = await cd.ctr(["images", "import", image.path], { namespace, timeoutMs });
  if (r.code !== 0) throw new Error(describeFailure(`ctr -n ${namespace} images import ${image.path}`, r));
}
