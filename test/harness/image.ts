// OCI image tarballs built here from Debian's static busybox (no registry, no network), and their
// import into a harness containerd. The layout follows the OCI image spec: an uncompressed layer tar
// (diff_id = digest), a config, a manifest, index.json naming the image with
// `io.containerd.image.name` (what `ctr images import` uses) and `oci-layout`.
//
//   const tar = await buildImage(busyboxImage(), cacheDir);      // cached by content
//   await importImage(cd, tar);                                  // namespace "default"
//   await importImage(cd, await buildImage(pauseImage(), cacheDir), "k8s.io");
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pack as tarPack } from "tar-stream";
import { type Containerd, PAUSE_IMAGE_REF } from "./containerd.ts";
import { describeFailure } from "./exec.ts";

export const BUSYBOX_BIN = "/bin/busybox";
export const BUSYBOX_IMAGE_REF = "docker.io/library/bb:latest";
export { PAUSE_IMAGE_REF };

const MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar";
/** A fixed mtime keeps layer digests (and so the cache and containerd's snapshots) stable. */
const MTIME = new Date("2000-01-01T00:00:00Z");

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
  /** Extra files added to the layer (after busybox and /etc). */
  files?: ImageFile[];
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

type Entry = {
  name: string;
  type: "directory" | "file" | "symlink";
  mode: number;
  content?: Uint8Array;
  linkname?: string;
};

/** The rootfs entries of an image: dirs, /bin/busybox + applet symlinks, /etc/passwd and /etc/group, extras. */
export function layerEntries(spec: ImageSpec): Entry[] {
  const entries: Entry[] = [];
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

/** Packs entries into an uncompressed tar (root-owned, fixed mtime). */
export async function tarEntries(entries: Entry[]): Promise<Buffer> {
  const p = tarPack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  for (const e of entries) {
    const header = {
      name: e.name,
      type: e.type,
      mode: e.mode,
      mtime: MTIME,
      uid: 0,
      gid: 0,
      uname: "root",
      gname: "root",
    };
    if (e.type === "file") {
      await new Promise<void>((res, rej) =>
        p.entry({ ...header, size: e.content!.length }, Buffer.from(e.content!), (err) => (err ? rej(err) : res())),
      );
    } else if (e.type === "symlink") {
      p.entry({ ...header, linkname: e.linkname });
    } else {
      p.entry(header);
    }
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

export interface BuiltImage {
  ref: string;
  path: string;
  manifestDigest: string;
  configDigest: string;
  layerDigest: string;
}

/** Tag part of a reference ("latest" for docker.io/library/bb:latest). */
export function refTag(ref: string): string {
  const slash = ref.lastIndexOf("/");
  const colon = ref.lastIndexOf(":");
  return colon > slash ? ref.slice(colon + 1) : "latest";
}

/**
 * Builds the OCI layout tarball for `spec` into `cacheDir` (reused when the spec and the busybox
 * binary are unchanged) and returns its path and digests.
 */
export async function buildImage(spec: ImageSpec, cacheDir: string): Promise<BuiltImage> {
  mkdirSync(cacheDir, { recursive: true });
  const bb = statSync(BUSYBOX_BIN);
  const key = sha256(JSON.stringify({ spec, bb: [bb.size, bb.mtimeMs] })).slice(0, 16);
  const path = join(cacheDir, `${refTag(spec.ref)}-${key}.tar`);
  const metaPath = `${path}.json`;
  if (existsSync(path) && existsSync(metaPath)) return JSON.parse(readFileSync(metaPath, "utf8")) as BuiltImage;

  const layer = await tarEntries(layerEntries(spec));
  const layerDigest = `sha256:${sha256(layer)}`;
  const config = Buffer.from(
    JSON.stringify({
      architecture: "amd64",
      os: "linux",
      config: {
        Env: spec.env ?? ["PATH=/bin"],
        ...(spec.entrypoint ? { Entrypoint: spec.entrypoint } : {}),
        ...(spec.cmd ? { Cmd: spec.cmd } : {}),
        WorkingDir: spec.workingDir ?? "/",
      },
      rootfs: { type: "layers", diff_ids: [layerDigest] },
    }),
  );
  const configDigest = `sha256:${sha256(config)}`;
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_MANIFEST,
      config: { mediaType: MEDIA_CONFIG, digest: configDigest, size: config.length },
      layers: [{ mediaType: MEDIA_LAYER, digest: layerDigest, size: layer.length }],
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
  const outer = await tarEntries([
    {
      name: "oci-layout",
      type: "file",
      mode: 0o644,
      content: Buffer.from(JSON.stringify({ imageLayoutVersion: "1.0.0" })),
    },
    { name: "index.json", type: "file", mode: 0o644, content: Buffer.from(index) },
    { name: "blobs/", type: "directory", mode: 0o755 },
    { name: "blobs/sha256/", type: "directory", mode: 0o755 },
    { name: blob(manifestDigest), type: "file", mode: 0o644, content: manifest },
    { name: blob(configDigest), type: "file", mode: 0o644, content: config },
    { name: blob(layerDigest), type: "file", mode: 0o644, content: layer },
  ]);
  const built: BuiltImage = { ref: spec.ref, path, manifestDigest, configDigest, layerDigest };
  // Write then rename, so a concurrent or interrupted build never leaves a half-written cache entry.
  writeFileSync(`${path}.tmp`, outer);
  renameSync(`${path}.tmp`, path);
  writeFileSync(metaPath, JSON.stringify(built));
  return built;
}

/** `ctr images import` into `namespace` (unpacked for the default snapshotter); throws with ctr's output. */
export async function importImage(cd: Containerd, image: BuiltImage, namespace = "default"): Promise<void> {
  const r = await cd.ctr(["images", "import", image.path], { namespace, timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(describeFailure(`ctr -n ${namespace} images import ${image.path}`, r));
}
