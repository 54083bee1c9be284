// The per-container writable layer: a sparse ext4 image (size from the config) that the guest
// overlays on the read-only layers. Journal-less: it lives and dies with the container.
import { closeSync, ftruncateSync, mkdirSync, openSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import { errorMessage, InternalError } from "../common/errors.ts";
import { runAsync } from "../common/exec.ts";

export const MKFS_EXT4 = "mkfs.ext4";

export async function createWritableLayer(path: string, sizeMiB: number): Promise<void> {
  mkdirSync(dirname(path), { recursive: true });
  const fd = openSync(path, "w", 0o600);
  try {
    ftruncateSync(fd, sizeMiB * 1024 * 1024);
  } finally {
    closeSync(fd);
  }
  try {
    await runAsync(
      [MKFS_EXT4, "-q", "-F", "-O", "^has_journal", "-E", "lazy_itable_init=1,nodiscard", "-m", "0", path],
      {
        timeoutMs: 60_000,
      },
    );
  } catch (e) {
    rmSync(path, { force: true });
    throw new InternalError(`cannot make the writable layer ${path}: ${errorMessage(e)}`);
  }
}
