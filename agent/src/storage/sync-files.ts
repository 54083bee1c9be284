// SyncFiles: make a directory inside a storage hold exactly the tree the shim copied from the host
// (read-only volumes: ConfigMaps, Secrets, projected/downward-API volumes, tokens, small ro binds).
// Files and symlinks are written under a temporary name and renamed into place, so a container
// reading the volume never sees half a file, and kubelet's atomic `..data` symlink swap stays
// atomic in the guest. Nothing here follows a symlink that is already in the directory.
import {
  chmodSync,
  closeSync,
  constants,
  fsyncSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { LimitError } from "../../../src/common/errors.ts";
import { type FileEntry, FileKind, type SyncFilesRequest } from "../../../src/proto/agent.ts";
import { checkId, invalid, notFound } from "../api/errors.ts";

export const SYNC_MAX_ENTRIES = 4096;
export const SYNC_MAX_BYTES = 3 * 1024 * 1024;
/** Linux's PATH_MAX (bytes, the NUL included) and NAME_MAX (bytes of one component). */
const PATH_MAX = 4096;
const NAME_MAX = 255;
/**
 * Directory levels of a path. Deeper trees are refused: removing one (a directory replaced by a
 * file) recurses once per level, and Node's recursive rmSync runs out of stack near 2,000.
 */
export const SYNC_MAX_DEPTH = 128;
const TMP_PREFIX = ".cove-sync-";
/** Room a temporary name beside an entry needs (TMP_PREFIX, pid, sequence number). */
const TMP_NAME_ROOM = 48;

/**
 * Checks a relative path the shim sent: "/"-separated, no empty/"."/".." component, no NUL, and
 * within the kernel's limits (a name the kernel refuses would fail half-way through applying).
 */
export function checkRelPath(p: unknown, what: string): string {
  if (typeof p !== "string" || p === "" || Buffer.byteLength(p) >= PATH_MAX) throw invalid(`${what}: bad path`);
  if (p.includes("\0") || p.startsWith("/")) throw invalid(`${what}: path ${JSON.stringify(p)} must be relative`);
  const parts = p.split("/");
  if (parts.length > SYNC_MAX_DEPTH)
    throw invalid(`${what}: path ${JSON.stringify(p)} is deeper than ${SYNC_MAX_DEPTH}`);
  for (const c of parts) {
    if (c === "" || c === "." || c === "..") throw invalid(`${what}: path ${JSON.stringify(p)} has a bad component`);
    if (c.startsWith(TMP_PREFIX)) throw invalid(`${what}: path ${JSON.stringify(p)} uses a reserved name`);
    if (Buffer.byteLength(c) > NAME_MAX) throw invalid(`${what}: a component of ${JSON.stringify(p)} is too long`);
  }
  return p;
}

/** Validates the whole request before anything changes; returns the entries as sent. */
export function checkEntries(entries: unknown): FileEntry[] {
  if (!Array.isArray(entries)) throw invalid("SyncFiles: entries must be a list");
  if (entries.length > SYNC_MAX_ENTRIES)
    throw new LimitError(`SyncFiles: ${entries.length} entries (at most ${SYNC_MAX_ENTRIES})`);
  const seen = new Map<string, number>();
  let bytes = 0;
  for (const e of entries as FileEntry[]) {
    const path = checkRelPath(e?.path, "SyncFiles");
    if (seen.has(path)) throw invalid(`SyncFiles: ${path} listed twice`);
    const slash = path.lastIndexOf("/");
    if (slash > 0 && seen.get(path.slice(0, slash)) !== FileKind.DIR)
      throw invalid(`SyncFiles: ${path} comes before (or without) its parent directory`);
    if (![FileKind.FILE, FileKind.DIR, FileKind.SYMLINK].includes(e.kind as 0 | 1 | 2))
      throw invalid(`SyncFiles: ${path}: unknown kind ${e.kind}`);
    if (!Number.isInteger(e.mode) || e.mode < 0 || e.mode > 0o7777) throw invalid(`SyncFiles: ${path}: bad mode`);
    for (const id of [e.uid, e.gid])
      if (!Number.isInteger(id) || id < 0 || id > 0xfffffffe) throw invalid(`SyncFiles: ${path}: bad owner`);
    if (e.kind === FileKind.SYMLINK) {
      if (
        typeof e.target !== "string" ||
        e.target === "" ||
        e.target.includes("\0") ||
        Buffer.byteLength(e.target) >= PATH_MAX
      )
        throw invalid(`SyncFiles: ${path}: bad symlink target`);
    }
    if (e.kind === FileKind.FILE) bytes += e.data?.length ?? 0;
    seen.set(path, e.kind);
  }
  if (bytes > SYNC_MAX_BYTES)
    throw new LimitError(`SyncFiles: ${bytes} bytes of file data (at most ${SYNC_MAX_BYTES})`);
  return entries as FileEntry[];
}

/** What is at `p` without following a symlink there: "file", "dir", "symlink", "other" or undefined. */
function kindAt(p: string): string | undefined {
  try {
    const s = lstatSync(p);
    if (s.isSymbolicLink()) return "symlink";
    if (s.isDirectory()) return "dir";
    if (s.isFile()) return "file";
    return "other";
  } catch {
    return undefined;
  }
}

let tmpSeq = 0;
const tmpName = (dir: string) => join(dir, `${TMP_PREFIX}${process.pid}-${++tmpSeq}`);

/**
 * Applies checked entries under `root` (a directory the caller made, inside a mounted storage).
 * Order: directories and new content first (parents before children), removals last.
 */
export function applyEntries(root: string, entries: readonly FileEntry[], inPlace = false): void {
  const wanted = new Set(entries.map((e) => e.path));
  for (const e of entries) {
    const dest = join(root, e.path);
    const slash = e.path.lastIndexOf("/");
    const dir = slash < 0 ? root : join(root, e.path.slice(0, slash));
    const have = kindAt(dest);
    if (e.kind === FileKind.DIR) {
      if (have !== "dir") {
        if (have) rmSync(dest, { recursive: true, force: true });
        mkdirSync(dest, { mode: 0o700 });
      }
    } else if (inPlace && e.kind === FileKind.FILE && have === "file") {
      // O_NOFOLLOW: `have` said file, but never write through a symlink swapped in since.
      const fd = openSync(dest, constants.O_WRONLY | constants.O_TRUNC | constants.O_NOFOLLOW);
      try {
        writeAll(fd, e.data ?? new Uint8Array(0));
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    } else {
      const tmp = tmpName(dir);
      if (e.kind === FileKind.FILE) {
        const fd = openSync(tmp, "wx", 0o600);
        try {
          writeAll(fd, e.data ?? new Uint8Array(0));
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
      } else {
        symlinkSync(e.target!, tmp);
      }
      // Owner first: chown(2) clears the set-user-ID and set-group-ID bits of an executable.
      lchownSync(tmp, e.uid, e.gid);
      if (e.kind === FileKind.FILE) chmodSync(tmp, e.mode);
      // rename() replaces a file or symlink atomically, not a directory: clear one out of the way.
      if (have === "dir") rmSync(dest, { recursive: true, force: true });
      renameSync(tmp, dest);
      continue;
    }
    lchownSync(dest, e.uid, e.gid);
    chmodSync(dest, e.mode);
  }
  removeUnwanted(root, "", wanted);
}

function writeAll(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += writeSync(fd, data, off, data.length - off);
}

function removeUnwanted(root: string, rel: string, wanted: Set<string>): void {
  const dir = rel ? join(root, rel) : root;
  for (const name of readdirSync(dir)) {
    const r = rel ? `${rel}/${name}` : name;
    if (!wanted.has(r)) {
      rmSync(join(root, r), { recursive: true, force: true });
      continue;
    }
    if (kindAt(join(root, r)) === "dir") removeUnwanted(root, r, wanted);
  }
}

/**
 * SyncFiles against a storage: `storagePath` gives the mounted storage's directory (undefined: not
 * mounted). The subdirectory is made component by component, refusing a symlink on the way.
 */
export function syncFiles(req: SyncFilesRequest, storagePath: (id: string) => string | undefined): void {
  const id = checkId(req.storage_id, "storage_id");
  const subdir = req.subdir ? checkRelPath(req.subdir, "SyncFiles subdir") : "";
  const entries = checkEntries(req.entries ?? []);
  const base = storagePath(id);
  if (!base) throw notFound(`storage ${id}`);
  // Every entry, and the temporary name made beside it, must fit PATH_MAX under this storage.
  const room = PATH_MAX - Buffer.byteLength(join(base, subdir)) - 1 - TMP_NAME_ROOM;
  for (const e of entries) {
    if (Buffer.byteLength(e.path) > room) throw invalid(`SyncFiles: ${JSON.stringify(e.path)} is too long a path here`);
  }
  let root = base;
  for (const c of subdir ? subdir.split("/") : []) {
    root = join(root, c);
    const have = kindAt(root);
    if (have === undefined) mkdirSync(root, { mode: 0o755 });
    else if (have !== "dir") throw invalid(`SyncFiles: ${subdir} crosses a ${have} in storage ${id}`);
  }
  applyEntries(root, entries, req.in_place === true);
}
