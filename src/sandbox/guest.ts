// The guest artifacts a pod VM boots from (kernel and read-only guest image): present and readable,
// or an error that names each missing file and the command that builds it.
import { accessSync, constants, statSync } from "node:fs";
import { errorMessage, WrongStateError } from "../common/errors.ts";
import type { CoveConfig } from "../config/config.ts";

export const GUEST_BUILD_COMMAND = "cove guest build";
export const GUEST_BUILD_COMMAND_CHECKOUT = "npm run guest";

/** Why a file cannot be used ("" if it can): missing, not a regular file, or unreadable. */
export function fileProblem(path: string): string {
  try {
    const st = statSync(path);
    if (!st.isFile()) return "is not a regular file";
    accessSync(path, constants.R_OK);
    return "";
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return "does not exist";
    if (code === "EACCES") return "is not readable";
    return `cannot be read (${code ?? errorMessage(e)})`;
  }
}

/** Throws FAILED_PRECONDITION unless the configured guest kernel and image can be read. */
export function checkGuestArtifacts(config: CoveConfig): void {
  const problems: string[] = [];
  const k = fileProblem(config.guest.kernel);
  if (k) problems.push(`guest kernel ${config.guest.kernel} ${k}`);
  const i = fileProblem(config.guest.image);
  if (i) problems.push(`guest image ${config.guest.image} ${i}`);
  if (problems.length === 0) return;
  throw new WrongStateError(
    `cove cannot start the pod VM: ${problems.join("; ")}. ` +
      `Build the guest kernel and image with \`${GUEST_BUILD_COMMAND}\` ` +
      `(from a source checkout: \`${GUEST_BUILD_COMMAND_CHECKOUT}\`), which writes them under ${config.cacheDir}/guest, ` +
      `or set [guest] kernel and image in the cove config (${config.source})`,
  );
}
