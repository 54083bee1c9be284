// Points the stable artifact names (<cache>/guest/*) at a build, atomically.
import { existsSync, mkdirSync, readlinkSync, renameSync, rmSync, symlinkSync } from "node:fs";
import { dirname, relative } from "node:path";

/** Makes `link` a relative symlink to `target`, replacing whatever was there in one rename. */
export function publishLink(link: string, target: string): void {
  if (!existsSync(target)) throw new Error(`cannot publish ${link}: ${target} does not exist`);
  mkdirSync(dirname(link), { recursive: true });
  const rel = relative(dirname(link), target);
  try {
    if (readlinkSync(link) === rel) return;
  } catch {
    // missing or not a symlink: replace
  }
  const tmp = `${link}.tmp-${process.pid}`;
  rmSync(tmp, { force: true });
  symlinkSync(rel, tmp);
  renameSync(tmp, link);
}
