// HOME as runc sets it: a process whose environment has no HOME gets its user's home directory from
// the container's /etc/passwd, or "/" when the user has none there. crun (the guest's runtime) looks
// the user up too but leaves HOME unset for a user /etc/passwd does not name, so the agent decides.
import { readFileSync, realpathSync, statSync } from "node:fs";
import { isAbsolute, join } from "node:path";

/** Larger /etc/passwd files are not read (a hostile image must not make the agent read gigabytes). */
const MAX_PASSWD_BYTES = 4 << 20;

/** The home directory of `uid` in an /etc/passwd text; undefined when no entry names the uid. */
export function homeInPasswd(passwd: string, uid: number): string | undefined {
  for (const line of passwd.split("\n")) {
    const f = line.split(":");
    if (f.length >= 7 && f[2] === String(uid) && f[5]) return f[5];
  }
  return undefined;
}

/** `uid`'s home in `<rootfs>/etc/passwd`; undefined when the file is absent, too large or links out. */
export function homeInRootfs(rootfs: string, uid: number): string | undefined {
  try {
    const root = realpathSync(rootfs);
    const file = realpathSync(join(root, "etc", "passwd"));
    // A symlink resolved against the guest's root, not the container's: not the container's file.
    if (!file.startsWith(`${root}/`)) return undefined;
    const st = statSync(file);
    if (!st.isFile() || st.size > MAX_PASSWD_BYTES) return undefined;
    return homeInPasswd(readFileSync(file, "utf8"), uid);
  } catch {
    return undefined;
  }
}

/** `uid`'s home in the rootfs of the OCI bundle at `bundle` (for an exec: its config.json names it). */
export function homeInBundle(bundle: string, uid: number): string | undefined {
  try {
    const root = (JSON.parse(readFileSync(join(bundle, "config.json"), "utf8")) as { root?: { path?: unknown } }).root;
    if (typeof root?.path !== "string") return undefined;
    return homeInRootfs(isAbsolute(root.path) ? root.path : join(bundle, root.path), uid);
  } catch {
    return undefined;
  }
}

/** Adds HOME to an OCI process's env when it has none (runc's rule); `homeOf` looks the uid up. */
export function withHome(process: Record<string, unknown>, homeOf: (uid: number) => string | undefined): void {
  const env = Array.isArray(process.env) ? (process.env as unknown[]).map(String) : [];
  if (env.some((e) => e.startsWith("HOME="))) return;
  const user = process.user as { uid?: unknown } | undefined;
  const uid = typeof user?.uid === "number" ? user.uid : 0;
  process.env = [...env, `HOME=${homeOf(uid) ?? "/"}`];
}
