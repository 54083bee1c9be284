// What containerd's rootfs mounts mean as block devices for the guest: read-only layer directories
// (overlay lowerdirs, or a bind source), or a snapshot that already is a block device (devmapper).
// containerd's own upperdir is not used: the container writes to its own ext4 image instead.
import { statSync } from "node:fs";
import { InvalidArgumentError } from "../common/errors.ts";
import type { MountSpec } from "../shim/runtime.ts";

export type RootfsPlan =
  /**
   * Layer directories, top-most first, each converted to a read-only image. `committed`: they are
   * the committed snapshots below the container's own (overlay lowerdirs, or a read-only view's
   * bind source), so containerd can name them; a read-write bind is the container's own snapshot.
   */
  | { kind: "layers"; lowers: string[]; committed: boolean }
  /** A block device (devmapper snapshot) attached as it is; it is the writable rootfs itself. */
  | { kind: "block"; device: string; fstype: string; options: string[] };

function option(options: string[], key: string): string | undefined {
  const o = options.find((x) => x.startsWith(`${key}=`));
  return o?.slice(key.length + 1);
}

/** Classifies the CreateTaskRequest rootfs; INVALID_ARGUMENT for what cove cannot attach. */
export function planRootfs(mounts: MountSpec[], isBlockDevice = defaultIsBlock): RootfsPlan {
  if (mounts.length === 0) {
    throw new InvalidArgumentError("cove needs the container rootfs as snapshot mounts (none were given)");
  }
  if (mounts.length > 1) {
    throw new InvalidArgumentError(`cove supports exactly one rootfs mount, got ${mounts.length}`);
  }
  const m = mounts[0]!;
  if (m.type === "overlay") {
    const lower = option(m.options, "lowerdir");
    if (!lower) throw new InvalidArgumentError("overlay rootfs without lowerdir");
    return { kind: "layers", lowers: lower.split(":").filter((x) => x !== ""), committed: true };
  }
  if (m.type === "bind" || m.options.includes("bind") || m.options.includes("rbind")) {
    // A snapshot without parents (rw), or a read-only view of a one-layer image (ro: the layer itself).
    return { kind: "layers", lowers: [m.source], committed: m.options.includes("ro") };
  }
  if (isBlockDevice(m.source)) {
    return { kind: "block", device: m.source, fstype: m.type, options: m.options.filter((o) => o !== "loop") };
  }
  throw new InvalidArgumentError(
    `cove cannot attach a ${m.type} rootfs from ${m.source}: use the overlayfs, native or devmapper snapshotter`,
  );
}

function defaultIsBlock(path: string): boolean {
  try {
    return statSync(path).isBlockDevice();
  } catch {
    return false;
  }
}
