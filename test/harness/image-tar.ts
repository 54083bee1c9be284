// Layer tarballs for the harness's images, written as a stream (a layer may hold a file over 2 GiB or
// 100,000 entries): every kind of entry a registry image has — files, directories, symlinks, hard
// links, character/block devices, FIFOs, whiteouts (`.wh.<name>`) and opaque markers
// (`.wh..wh..opq`, both plain files by the OCI image spec), owners, setuid bits and xattrs (PAX
// `SCHILY.xattr.*` records, as containerd's applier reads them) — optionally gzip-compressed.
// Everything is described by plain data, so a spec's JSON is its cache key.
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { pack as tarPack } from "tar-stream";

/** A fixed mtime keeps layer digests (and so the cache and containerd's snapshots) stable. */
export const MTIME = new Date("2000-01-01T00:00:00Z");

/**
 * A generated file's content: `size` bytes of zeros with `data` written at the given offsets
 * (a "sparse" file, whatever its size, costs no memory to describe or to stream).
 */
export interface Generated {
  size: number;
  data: { offset: number; text: string }[];
  /** Pseudo-random bytes (deterministic, incompressible) instead of zeros under the data. */
  random?: boolean;
}

/** Deterministic pseudo-random bytes for chunk `at` (xorshift32 seeded by the offset). */
function randomChunk(at: number, n: number): Buffer {
  const b = Buffer.alloc(n);
  let x = (at / 4096 + 0x9e3779b9) >>> 0 || 1;
  for (let i = 0; i + 4 <= n; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeUInt32LE(x >>> 0, i);
  }
  return b;
}

export interface Entry {
  /** Path inside the layer, no leading slash; directories may end with "/". */
  name: string;
  type: "directory" | "file" | "symlink" | "link" | "character-device" | "block-device" | "fifo";
  mode: number;
  uid?: number;
  gid?: number;
  mtime?: Date;
  /** A file's bytes (string: UTF-8), or a generated file. */
  content?: string | Uint8Array | Generated;
  /** Symlink target, or for a hard link ("link") the path it links to (inside the image). */
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** xattrs, e.g. { "security.capability": "\x01\x00\x00\x02…" } (values as binary strings). */
  xattrs?: Record<string, string>;
}

function isGenerated(c: Entry["content"]): c is Generated {
  return typeof c === "object" && c !== null && !(c instanceof Uint8Array);
}

export function contentSize(c: Entry["content"]): number {
  if (c === undefined) return 0;
  if (isGenerated(c)) return c.size;
  return typeof c === "string" ? Buffer.byteLength(c) : c.length;
}

/** The chunks of a generated file, 1 MiB at a time. */
function* generatedChunks(g: Generated): Generator<Buffer> {
  const CHUNK = 1 << 20;
  const zero = Buffer.alloc(CHUNK);
  const data = [...g.data].sort((a, b) => a.offset - b.offset);
  for (let at = 0; at < g.size; at += CHUNK) {
    const n = Math.min(CHUNK, g.size - at);
    const inside = data.filter((d) => d.offset < at + n && d.offset + Buffer.byteLength(d.text) > at);
    if (inside.length === 0 && !g.random) {
      yield n === CHUNK ? zero : zero.subarray(0, n);
      continue;
    }
    const b = g.random ? randomChunk(at, n) : Buffer.alloc(n);
    for (const d of inside) {
      const bytes = Buffer.from(d.text);
      const s = Math.max(at, d.offset);
      const e = Math.min(at + n, d.offset + bytes.length);
      bytes.copy(b, s - at, s - d.offset, e - d.offset);
    }
    yield b;
  }
}

/** A byte value as one character of a binary string (PAX records carry xattr values as bytes). */
export function binary(bytes: number[]): string {
  return String.fromCharCode(...bytes);
}

/** The tar stream of `entries`, in order (root-owned unless said, fixed mtime unless said). */
export function tarStream(entries: Iterable<Entry>): Readable {
  const p = tarPack();
  void (async () => {
    try {
      for (const e of entries) {
        const pax: Record<string, string> = {};
        for (const [k, v] of Object.entries(e.xattrs ?? {})) pax[`SCHILY.xattr.${k}`] = v;
        const header = {
          name: e.name,
          type: e.type,
          mode: e.mode,
          mtime: e.mtime ?? MTIME,
          uid: e.uid ?? 0,
          gid: e.gid ?? 0,
          linkname: e.linkname,
          devmajor: e.devmajor,
          devminor: e.devminor,
          ...(Object.keys(pax).length ? { pax } : {}),
        };
        if (e.type !== "file") {
          p.entry(header);
          continue;
        }
        const c = e.content ?? "";
        const size = contentSize(c);
        await new Promise<void>((resolve, reject) => {
          const w = p.entry({ ...header, size }, (err) => (err ? reject(err) : resolve()));
          if (!isGenerated(c)) w.end(typeof c === "string" ? Buffer.from(c) : Buffer.from(c));
          else Readable.from(generatedChunks(c)).pipe(w);
        });
      }
      p.finalize();
    } catch (err) {
      p.destroy(err as Error);
    }
  })();
  return p as unknown as Readable;
}

export interface WrittenBlob {
  /** sha256 of the bytes written (the blob's digest). */
  digest: string;
  size: number;
  /** sha256 of the uncompressed tar (the layer's diff ID); equals digest when not compressed. */
  diffId: string;
}

/** Writes the layer's tar (gzip'd if asked) to `path`, hashing both forms on the way. */
export async function writeLayer(entries: Iterable<Entry>, path: string, gzip: boolean): Promise<WrittenBlob> {
  const diff = createHash("sha256");
  const blob = createHash("sha256");
  let size = 0;
  const tee = async function* (src: AsyncIterable<Buffer>, h: ReturnType<typeof createHash>) {
    for await (const c of src) {
      h.update(c);
      yield c;
    }
  };
  const counted = async function* (src: AsyncIterable<Buffer>) {
    for await (const c of src) {
      blob.update(c);
      size += c.length;
      yield c;
    }
  };
  if (gzip) {
    await pipeline(
      tarStream(entries),
      (src: AsyncIterable<Buffer>) => tee(src, diff),
      createGzip({ level: 6 }),
      counted,
      createWriteStream(path),
    );
  } else {
    await pipeline(
      tarStream(entries),
      (src: AsyncIterable<Buffer>) => tee(src, diff),
      counted,
      createWriteStream(path),
    );
  }
  const diffId = `sha256:${diff.digest("hex")}`;
  return { digest: `sha256:${blob.digest("hex")}`, size, diffId };
}
