// What the layer cache tests share: a temporary directory per test, and the real mkfs.erofs.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The test body with a fresh temporary directory, removed afterwards. */
export function withTmp(f: (dir: string) => Promise<void>) {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), "cove-layers-"));
    try {
      await f(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

/** mkfs.erofs on PATH ("" when erofs-utils is not installed). */
export const MKFS = (() => {
  try {
    return execFileSync("sh", ["-c", "command -v mkfs.erofs"], { encoding: "utf8" }).trim();
  } catch {
    return "";
  }
})();
