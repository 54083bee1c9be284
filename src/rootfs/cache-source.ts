// What a layer image was made from, recorded beside it as <key>.erofs.json, so the collector can ask
// whether that content still exists: a committed snapshot (containerd is asked, at every socket and
// namespace a pod used the image from), or, for an image keyed by directory, the directory itself.
// Written under the image's lock (cache-users.ts explains the locks), replaced atomically.
import { existsSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { type ContainerdAddress, ContainerdError, type ContainerdLookup, GRPC_NOT_FOUND } from "./containerd.ts";

export interface SourceRecord {
  /** "<snapshotter>/<name>" of the committed snapshot (its chain ID), when containerd named it. */
  snapshot?: string;
  /** The directory it was made from (the latest seen). */
  dir: string;
  /** "<dev>:<ino>:<ctime>" of the directory: the key of an image keyed by directory. */
  ident?: string;
  /** Where the snapshot was named: every containerd socket and namespace a pod used it from. */
  containerd: ContainerdAddress[];
}

export function sourcePath(image: string): string {
  return `${image}.json`;
}

export function dirIdent(dir: string): string | undefined {
  try {
    const st = statSync(dir);
    return `${st.dev}:${st.ino}:${st.ctimeMs}`;
  } catch {
    return undefined;
  }
}

export function readSource(image: string): SourceRecord | undefined {
  try {
    const v = JSON.parse(readFileSync(sourcePath(image), "utf8")) as Partial<SourceRecord>;
    if (typeof v.dir !== "string" || !Array.isArray(v.containerd)) return undefined;
    const containerd = v.containerd.filter(
      (a): a is ContainerdAddress => typeof a?.address === "string" && typeof a.namespace === "string",
    );
    return {
      dir: v.dir,
      containerd,
      ...(typeof v.snapshot === "string" ? { snapshot: v.snapshot } : {}),
      ...(typeof v.ident === "string" ? { ident: v.ident } : {}),
    };
  } catch {
    return undefined;
  }
}

/** Adds this use's source to the record (new, or another containerd/namespace); the caller holds the image's lock. */
export function recordSource(
  image: string,
  src: { dir: string; snapshot?: string },
  at: ContainerdAddress | undefined,
): void {
  const old = readSource(image);
  const containerd = [...(old?.containerd ?? [])];
  const known = (a: ContainerdAddress) =>
    containerd.some((b) => b.address === a.address && b.namespace === a.namespace);
  if (old && (!src.snapshot || !at || known(at))) return;
  if (src.snapshot && at && !known(at)) containerd.push({ address: at.address, namespace: at.namespace });
  const rec: SourceRecord = src.snapshot
    ? { snapshot: src.snapshot, dir: src.dir, containerd }
    : { dir: src.dir, ident: dirIdent(src.dir) ?? "", containerd };
  const path = sourcePath(image);
  try {
    writeFileSync(`${path}.tmp`, `${JSON.stringify(rec)}\n`, { mode: 0o644 });
    renameSync(`${path}.tmp`, path);
  } catch {
    // A full disk: without a record the image is kept as of unknown source (the size limit still
    // applies), which is safe; failing the container for it would not be.
    rmSync(`${path}.tmp`, { force: true });
  }
}

export type Held = "held" | "gone" | "unknown";

/** Opens a client for one socket and namespace (tests substitute fakes). */
export type LookupOpener = (at: ContainerdAddress) => Promise<ContainerdLookup>;

const socketPath = (address: string) => address.replace(/^unix:\/\//, "");

/**
 * Whether the image's content still exists. "gone": every containerd it was named at says it has no
 * such snapshot (or no longer listens at that socket at all), or the directory it was keyed by is no
 * longer that directory. "unknown": no record (an older cove made it), or containerd did not answer
 * (restarting, overloaded): such images are kept, and only the size limit removes them.
 */
export async function contentHeld(rec: SourceRecord | undefined, open: LookupOpener): Promise<Held> {
  if (!rec) return "unknown";
  if (!rec.snapshot) return rec.ident && dirIdent(rec.dir) === rec.ident ? "held" : "gone";
  const slash = rec.snapshot.indexOf("/");
  const snapshotter = rec.snapshot.slice(0, slash);
  const name = rec.snapshot.slice(slash + 1);
  if (slash <= 0 || rec.containerd.length === 0) return "unknown";
  let unknown = false;
  for (const at of rec.containerd) {
    if (!existsSync(socketPath(at.address))) continue;
    let ctd: ContainerdLookup | undefined;
    try {
      ctd = await open(at);
      await ctd.snapshot(snapshotter, name);
      return "held";
    } catch (e) {
      if (!(e instanceof ContainerdError && e.code === GRPC_NOT_FOUND)) unknown = true;
    } finally {
      ctd?.close();
    }
  }
  return unknown ? "unknown" : "gone";
}
