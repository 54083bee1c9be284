// Host bind mounts that cove can give the guest, which cannot see host paths:
//  - a read-only bind of a small host directory or file — a Kubernetes ConfigMap, Secret, projected
//    or downward-API volume, a service account token, `ctr run --mount …,ro` — is copied into a guest
//    tmpfs and kept in step by polling (kubelet rewrites such volumes in place: ConfigMap edits,
//    token rotation). The copy keeps kubelet's layout (`..data` symlink and all), modes and owners;
//  - a Kubernetes emptyDir (…/volumes/kubernetes.io~empty-dir/<name>) becomes a guest tmpfs shared
//    by the pod's containers (by host path): its content never needs to be on the host. It lives in
//    guest memory, disk-backed or not;
//  - CRI's pod-wide /dev/shm (a host tmpfs under the sandbox's state dir) becomes one guest tmpfs for
//    the pod, shared by its containers (with their shared IPC namespace: POSIX shm works across them);
//  - any other bind is left alone, and the agent refuses it with a clear error (a writable host
//    directory would need a shared filesystem cove does not have).
import { createHash } from "node:crypto";
import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  type Stats,
  statSync,
} from "node:fs";
import { join } from "node:path";
import { errorMessage, InvalidArgumentError } from "../common/errors.ts";
import { type FileEntry, FileKind } from "../proto/agent.ts";
import type { Storage } from "./agent/index.ts";

type Json = Record<string, unknown>;

/** What the agent takes in one SyncFiles (agent/src/storage/sync-files.ts). */
export const COPY_MAX_ENTRIES = 4096;
export const COPY_MAX_BYTES = 3 * 1024 * 1024;
/** The file a single-file volume is copied to, inside its storage. */
const FILE_NAME = "content";
/** Mount destinations the agent fills from the sandbox (hosts, resolv.conf, …), never copied here. */
const AGENT_DESTINATIONS = new Set(["/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/dev/termination-log"]);
/** The pod's /dev/shm in the guest (the size CRI gives the host's, 64 MiB). */
export const POD_SHM: Storage = {
  id: "pod-shm",
  source: "tmpfs",
  fstype: "tmpfs",
  options: ["nosuid", "nodev", "noexec", "mode=1777", "size=65536k"],
  sandbox_lifetime: true,
};
const EMPTY_DIR = /\/volumes\/kubernetes\.io~empty-dir\/[^/]+\/?$/;

/** A host directory or file copied into the guest storage `storageId`. */
export interface CopiedVolume {
  storageId: string;
  hostPath: string;
  /** A single file, kept as `content` in the storage; else the directory is the storage's root. */
  file: boolean;
}

export interface VolumePlan {
  spec: Json;
  storages: Storage[];
  copies: CopiedVolume[];
  notes: string[];
}

const idFor = (prefix: string, hostPath: string) =>
  `${prefix}-${createHash("sha256").update(hostPath).digest("hex").slice(0, 20)}`;

/** Rewrites the spec's host binds that cove can serve (see above) into `storage:<id>` sources. */
export function planVolumes(input: Json): VolumePlan {
  const spec = structuredClone(input);
  const storages = new Map<string, Storage>();
  const copies = new Map<string, CopiedVolume>();
  const notes: string[] = [];
  if (Array.isArray(spec.mounts)) {
    spec.mounts = (spec.mounts as Json[]).map((m) => {
      const opts = Array.isArray(m.options) ? (m.options as unknown[]).map(String) : [];
      const bind = m.type === "bind" || opts.includes("bind") || opts.includes("rbind");
      const src = typeof m.source === "string" ? m.source : "";
      const dest = typeof m.destination === "string" ? m.destination : "";
      if (!bind || !src.startsWith("/") || AGENT_DESTINATIONS.has(dest)) return m;
      if (dest === "/dev/shm") {
        storages.set(POD_SHM.id, POD_SHM);
        notes.push(`/dev/shm: host ${src} → the pod's guest tmpfs (storage ${POD_SHM.id})`);
        return {
          ...m,
          source: `storage:${POD_SHM.id}`,
          options: [...opts.filter((o) => o !== "ro"), "nosuid", "nodev", "noexec"],
        };
      }
      if (EMPTY_DIR.test(src)) {
        const id = idFor("empty", src);
        // Lives as long as the pod: a container removed and re-created finds its data.
        storages.set(id, { id, source: "tmpfs", fstype: "tmpfs", options: ["mode=0777"], sandbox_lifetime: true });
        notes.push(`${dest}: emptyDir ${src} → a guest tmpfs shared by the pod (storage ${id})`);
        return { ...m, source: `storage:${id}` };
      }
      if (!opts.includes("ro")) return m;
      let st: Stats;
      try {
        st = statSync(src);
      } catch (e) {
        throw new InvalidArgumentError(`mount ${dest}: host source ${src}: ${errorMessage(e)}`);
      }
      if (!st.isDirectory() && !st.isFile()) return m; // a device or socket: the agent says no
      const file = st.isFile();
      const id = idFor("copy", src);
      walk(src); // size and entry limits, now, with a clear error
      storages.set(id, { id, source: "tmpfs", fstype: "tmpfs", options: ["mode=0755"] });
      copies.set(id, { storageId: id, hostPath: src, file });
      notes.push(`${dest}: read-only ${file ? "file" : "directory"} ${src} → copied into the guest (storage ${id})`);
      return { ...m, source: file ? `storage:${id}/${FILE_NAME}` : `storage:${id}` };
    });
  }
  return { spec, storages: [...storages.values()], copies: [...copies.values()], notes };
}

const tooBig = (src: string, what: string) =>
  new InvalidArgumentError(
    `read-only mount source ${src} has ${what}; cove copies at most ${COPY_MAX_ENTRIES} entries and ${COPY_MAX_BYTES} bytes into the guest`,
  );

interface Node {
  path: string;
  abs: string;
  st: Stats;
}

/** The tree under `src` (a directory, or a single file), parents first; symlinks are not followed. */
function walk(src: string): Node[] {
  const top = statSync(src);
  if (top.isFile()) return [{ path: FILE_NAME, abs: src, st: top }];
  const out: Node[] = [];
  let bytes = 0;
  const visit = (rel: string) => {
    const dir = rel ? join(src, rel) : src;
    for (const name of readdirSync(dir).sort()) {
      const path = rel ? `${rel}/${name}` : name;
      const abs = join(src, path);
      const st = lstatSync(abs);
      if (!st.isDirectory() && !st.isFile() && !st.isSymbolicLink()) continue; // sockets, fifos, devices
      out.push({ path, abs, st });
      if (out.length > COPY_MAX_ENTRIES) throw tooBig(src, `more than ${COPY_MAX_ENTRIES} entries`);
      if (st.isFile()) {
        bytes += st.size;
        if (bytes > COPY_MAX_BYTES) throw tooBig(src, `more than ${COPY_MAX_BYTES} bytes`);
      }
      if (st.isDirectory()) visit(path);
    }
  };
  visit("");
  return out;
}

/** A cheap fingerprint of the tree (names, kinds, modes, owners, sizes, mtimes, link targets). */
export function snapshotTree(src: string): string {
  return fingerprintOf(walk(src));
}

/** One walk: what SyncFiles needs to mirror `src` (file contents read now) and its fingerprint. */
export function copyTree(src: string): { fingerprint: string; entries: FileEntry[] } {
  const nodes = walk(src);
  const entries = nodes.map((n): FileEntry => {
    const base = { path: n.path, mode: n.st.mode & 0o7777, uid: n.st.uid, gid: n.st.gid };
    if (n.st.isDirectory()) return { ...base, kind: FileKind.DIR };
    if (n.st.isSymbolicLink()) return { ...base, kind: FileKind.SYMLINK, target: readlinkSync(n.abs) };
    return { ...base, kind: FileKind.FILE, data: readRegular(n.abs) };
  });
  return { fingerprint: fingerprintOf(nodes), entries };
}

function fingerprintOf(nodes: readonly Node[]): string {
  const h = createHash("sha256");
  for (const n of nodes) {
    const target = n.st.isSymbolicLink() ? readlinkSync(n.abs) : "";
    h.update(`${n.path}\0${n.st.mode}\0${n.st.uid}\0${n.st.gid}\0${n.st.size}\0${n.st.mtimeMs}\0${target}\n`);
  }
  return h.digest("hex");
}

/** A regular file's bytes, never through a symlink swapped in since the walk. */
function readRegular(abs: string): Buffer {
  const fd = openSync(abs, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    if (!fstatSync(fd).isFile()) throw new Error(`${abs} is no longer a regular file`);
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}
