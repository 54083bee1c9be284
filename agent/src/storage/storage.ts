// Filesystems the shim names (virtio-blk disks by serial or /dev path, or tmpfs), mounted once per id
// under <state>/storage/<id> and shared by every container that names the id (refcounted), and the
// per-container rootfs built from them: an overlay of read-only layers with a writable upper.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { errorMessage } from "../../../src/common/errors.ts";
import { MNT, MS, mount, umount2 } from "../../../src/native/mount.ts";
import { alreadyExists, checkId, internal, invalid, notFound } from "../api/errors.ts";
import type { Logger } from "../log.ts";
import { deletePartition, ensurePartition, parseExtentSource } from "./extents.ts";

export interface StorageSpec {
  id: string;
  source: string;
  fstype: string;
  options: string[];
  wait_ms: number;
  /** Kept until releaseAll (DestroySandbox): one reference belongs to the sandbox. */
  sandbox_lifetime?: boolean;
}

export interface RootfsSpec {
  lower: string[];
  upper: string;
  path: string;
}

interface Mounted {
  spec: StorageSpec;
  path: string;
  device: string;
  refs: number;
  /** The disk and partition number of an extent (its partition goes when the storage does). */
  extent?: { disk: string; pno: number };
}

const FLAG_OPTIONS: Record<string, number> = {
  ro: MS.RDONLY,
  nosuid: MS.NOSUID,
  nodev: MS.NODEV,
  noexec: MS.NOEXEC,
  noatime: MS.NOATIME,
  relatime: MS.RELATIME,
};
const IGNORED_OPTIONS = new Set(["rw", "defaults", "loop"]);

/** Splits mount options into mount(2) flags and the filesystem's data string. */
export function mountOptions(options: string[]): { flags: number; data: string } {
  let flags = 0;
  const data: string[] = [];
  for (const o of options) {
    if (o in FLAG_OPTIONS) flags |= FLAG_OPTIONS[o]!;
    else if (!IGNORED_OPTIONS.has(o)) data.push(o);
  }
  return { flags, data: data.join(",") };
}

/** The block device whose virtio-blk serial is `serial` (/sys/block/<dev>/serial), or undefined. */
export function deviceBySerial(serial: string, sysBlock = "/sys/block"): string | undefined {
  let names: string[];
  try {
    names = readdirSync(sysBlock);
  } catch {
    return undefined;
  }
  for (const name of names) {
    try {
      if (readFileSync(join(sysBlock, name, "serial"), "utf8").trim() === serial) return `/dev/${name}`;
    } catch {
      // no serial attribute (not virtio-blk)
    }
  }
  return undefined;
}

/** The disk's size in 512-byte sectors from /sys/block/<name>/size; undefined when unknown (partitions). */
export function blockSectors(dev: string, sysBlock = "/sys/block"): number | undefined {
  try {
    const n = Number.parseInt(readFileSync(join(sysBlock, dev.slice(dev.lastIndexOf("/") + 1), "size"), "utf8"), 10);
    return Number.isFinite(n) ? n : undefined;
  } catch {
    return undefined;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class Storages {
  private readonly mounted = new Map<string, Mounted>();

  constructor(
    private readonly dir: string,
    private readonly log: Logger,
  ) {}

  path(id: string): string | undefined {
    return this.mounted.get(id)?.path;
  }

  /** The directory every storage is mounted under. */
  get root(): string {
    return this.dir;
  }

  /** Mounts `spec` (or takes another reference if the same id is mounted with the same source). */
  async acquire(spec: StorageSpec): Promise<string> {
    checkId(spec.id, "storage id");
    const have = this.mounted.get(spec.id);
    if (have) {
      if (have.spec.source !== spec.source || have.spec.fstype !== spec.fstype)
        throw alreadyExists(`storage ${spec.id} (mounted from ${have.spec.source})`);
      have.refs++;
      return have.path;
    }
    if (!spec.fstype || !/^[a-z0-9_.]+$/.test(spec.fstype))
      throw invalid(`storage ${spec.id}: bad fstype "${spec.fstype}"`);
    const { device, extent } = await this.resolveSource(spec);
    const target = join(this.dir, spec.id);
    mkdirSync(target, { recursive: true });
    const { flags, data } = mountOptions(spec.options);
    try {
      mount(device, target, spec.fstype, flags, data || null);
    } catch (e) {
      rmSync(target, { recursive: true, force: true });
      if (extent) this.dropPartition(extent);
      throw internal(`storage ${spec.id}: mount ${device} (${spec.fstype}) on ${target}: ${errorMessage(e)}`);
    }
    this.log.info({ id: spec.id, device, fstype: spec.fstype, target }, "storage mounted");
    this.mounted.set(spec.id, { spec, path: target, device, refs: spec.sandbox_lifetime ? 2 : 1, extent });
    return target;
  }

  /** Drops one reference; unmounts at zero. */
  release(id: string): void {
    const m = this.mounted.get(id);
    if (!m) return;
    if (--m.refs > 0) return;
    this.mounted.delete(id);
    unmountQuietly(m.path, this.log);
    rmSync(m.path, { recursive: true, force: true });
    if (m.extent) this.dropPartition(m.extent);
    this.log.info({ id }, "storage unmounted");
  }

  private dropPartition(x: { disk: string; pno: number }): void {
    try {
      deletePartition(x.disk, x.pno);
    } catch (e) {
      this.log.warn({ ...x, err: errorMessage(e) }, "deleting the extent's partition failed");
    }
  }

  /** Unmounts everything regardless of references (DestroySandbox). */
  releaseAll(): void {
    for (const id of [...this.mounted.keys()]) {
      const m = this.mounted.get(id)!;
      m.refs = 1;
      this.release(id);
    }
  }

  private async resolveSource(spec: StorageSpec): Promise<{ device: string; extent?: { disk: string; pno: number } }> {
    if (spec.source === "tmpfs" || spec.fstype === "tmpfs") return { device: "tmpfs" };
    const deadline = Date.now() + (spec.wait_ms || 5000);
    const ext = parseExtentSource(spec.source);
    if (ext) return this.resolveExtent(spec.id, ext, deadline);
    return { device: await this.resolveDisk(spec, deadline) };
  }

  /** The extent's partition, made once the disk has grown to hold it (a config change away). */
  private async resolveExtent(
    id: string,
    ext: NonNullable<ReturnType<typeof parseExtentSource>>,
    deadline: number,
  ): Promise<{ device: string; extent: { disk: string; pno: number } }> {
    for (;;) {
      const disk = deviceBySerial(ext.serial);
      const sectors = disk ? blockSectors(disk) : undefined;
      if (disk && sectors !== undefined && sectors >= ext.start + ext.sectors) {
        let part: string | undefined;
        try {
          part = ensurePartition(disk, ext);
        } catch (e) {
          throw internal(`storage ${id}: partition ${ext.pno} of ${disk}: ${errorMessage(e)}`);
        }
        if (part) return { device: part, extent: { disk, pno: ext.pno } };
      }
      if (Date.now() > deadline) {
        throw notFound(
          `storage ${id}: extent ${ext.pno} of disk ${ext.serial} (${disk ?? "not found"}, ${sectors ?? "?"} of ${ext.start + ext.sectors} sectors)`,
        );
      }
      await sleep(20);
    }
  }

  private async resolveDisk(spec: StorageSpec, deadline: number): Promise<string> {
    for (;;) {
      let dev: string | undefined;
      if (spec.source.startsWith("serial:")) dev = deviceBySerial(spec.source.slice("serial:".length));
      else if (spec.source.startsWith("/dev/")) {
        if (spec.source.split("/").includes("..")) throw invalid(`storage ${spec.id}: bad source ${spec.source}`);
        dev = existsSync(spec.source) ? spec.source : undefined;
      } else throw invalid(`storage ${spec.id}: source must be serial:<s>, /dev/<dev> or tmpfs, not "${spec.source}"`);
      if (dev) {
        if (!statSync(dev).isBlockDevice()) throw invalid(`storage ${spec.id}: ${dev} is not a block device`);
        // Media inserted into an empty slot reaches the guest as a config change; until the driver
        // has re-read the capacity the disk has size 0 and a mount would fail: wait for it.
        if (blockSectors(dev) !== 0) return dev;
        if (Date.now() > deadline) throw notFound(`storage ${spec.id}: ${dev} (${spec.source}) has no media (size 0)`);
      } else if (Date.now() > deadline) throw notFound(`storage ${spec.id}: block device ${spec.source}`);
      await sleep(50);
    }
  }
}

/** Unmounts (which writes the filesystem back); lazily if it is still busy. */
export function unmountQuietly(path: string, log: Logger): void {
  try {
    umount2(path, 0);
    return;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EBUSY") {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== "EINVAL" && code !== "ENOENT") log.warn({ path, err: e }, "unmount failed");
      return;
    }
  }
  try {
    umount2(path, MNT.DETACH);
    log.warn({ path }, "busy: unmounted lazily");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "EINVAL" && code !== "ENOENT") log.warn({ path, err: e }, "unmount failed");
  }
}

/** Resolves "<storage id>[/sub]" to a guest path. */
function layerPath(storages: Storages, ref: string): string {
  const slash = ref.indexOf("/");
  const id = slash < 0 ? ref : ref.slice(0, slash);
  const sub = slash < 0 ? "" : ref.slice(slash);
  if (sub.split("/").includes("..")) throw invalid(`rootfs: ".." in ${ref}`);
  const base = storages.path(id);
  if (!base) throw invalid(`rootfs: storage ${id} is not attached`);
  return base + sub;
}

/** overlayfs mount data is one page (Linux 6.1 has no lowerdir+): room for about 80 absolute lowers. */
const MOUNT_DATA_MAX = 4095;

/**
 * Mounts the overlay; when the lowers' absolute paths do not fit in one page, they are given
 * relative to the storage root (the kernel resolves them against the caller's working directory,
 * so the mount runs with that directory as cwd): "l7" instead of "/run/cove/storage/l7", which
 * leaves room for the 500 lowers overlayfs stacks at most.
 */
export function mountOverlay(target: string, lowers: string[], upper: string, work: string, root: string): void {
  const data = (l: string[]) => `lowerdir=${l.join(":")},upperdir=${upper},workdir=${work}`;
  const abs = data(lowers);
  if (abs.length <= MOUNT_DATA_MAX) {
    mount("overlay", target, "overlay", 0, abs);
    return;
  }
  const prefix = `${root}/`;
  if (!lowers.every((l) => l.startsWith(prefix)))
    throw new Error(`${lowers.length} lower layers do not fit in one page`);
  const rel = data(lowers.map((l) => l.slice(prefix.length)));
  if (rel.length > MOUNT_DATA_MAX) throw new Error(`${lowers.length} lower layers do not fit in one page`);
  const cwd = process.cwd();
  process.chdir(root);
  try {
    mount("overlay", target, "overlay", 0, rel);
  } finally {
    process.chdir(cwd);
  }
}

/**
 * Builds the container's rootfs at `<dir>/rootfs` and returns it with an undo function:
 * path → as is; lower layers → overlay (upper on the writable storage, or a tmpfs);
 * only upper → that storage itself.
 */
export function buildRootfs(
  storages: Storages,
  spec: RootfsSpec,
  dir: string,
  log: Logger,
): { path: string; teardown: () => void } {
  if (spec.path) {
    if (spec.lower.length || spec.upper) throw invalid("rootfs: path excludes lower/upper");
    if (!spec.path.startsWith("/") || !existsSync(spec.path)) throw invalid(`rootfs: ${spec.path} does not exist`);
    return { path: spec.path, teardown: () => {} };
  }
  if (spec.lower.length === 0) {
    if (!spec.upper) throw invalid("rootfs: give path, lower layers, or an upper storage");
    return { path: layerPath(storages, spec.upper), teardown: () => {} };
  }
  const lowers = spec.lower.map((l) => layerPath(storages, l));
  const rootfs = join(dir, "rootfs");
  mkdirSync(rootfs, { recursive: true });
  let scratch: string | undefined;
  let base: string;
  if (spec.upper) base = layerPath(storages, spec.upper);
  else {
    scratch = join(dir, "scratch");
    mkdirSync(scratch, { recursive: true });
    mount("tmpfs", scratch, "tmpfs", 0, "mode=0755");
    base = scratch;
  }
  const upper = join(base, "upper");
  const work = join(base, "work");
  mkdirSync(upper, { recursive: true });
  mkdirSync(work, { recursive: true });
  try {
    mountOverlay(rootfs, lowers, upper, work, storages.root);
  } catch (e) {
    if (scratch) unmountQuietly(scratch, log);
    throw internal(`rootfs: overlay on ${rootfs}: ${errorMessage(e)}`);
  }
  return {
    path: rootfs,
    teardown: () => {
      unmountQuietly(rootfs, log);
      if (scratch) unmountQuietly(scratch, log);
    },
  };
}
