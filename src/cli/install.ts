// `cove install`: copies cove into one prefix (install-layout.ts), links `cove` and the shim into a
// bin dir on containerd's PATH (containerd 1.6.20 ignores runtime_path), writes the cove config if
// there is none, and appends the `cove` runtime to containerd's config (containerd-block.ts).
// Running it twice changes nothing; containerd is restarted only when asked. `cove uninstall`
// (uninstall.ts) undoes exactly what install.json records.
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  constants,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  statSync,
  symlinkSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { errorMessage } from "../common/errors.ts";
import { which } from "../common/exec.ts";
import { DEFAULT_CONFIG_PATH } from "../config/config.ts";
import { repoRoot } from "../guest/paths.ts";
import { type Command, UsageError } from "./command.ts";
import { addBlock, chooseVersion, configShape, runtimeBlock, snippetFile } from "./containerd-block.ts";
import { containerdVersion, DEFAULT_CONTAINERD_CONFIG } from "./containerd-runtime.ts";
import {
  DEFAULT_BIN_DIR,
  DEFAULT_PREFIX,
  GUEST_DIR,
  guestSources,
  type InstallState,
  LINKED,
  STATE_FILE,
  TREE_FILES,
} from "./install-layout.ts";

export { SHIM_NAME } from "./install-layout.ts";

export interface InstallOptions {
  prefix?: string;
  binDir?: string;
  /** The cove config to create when absent. */
  configPath?: string;
  /** cache_dir of a created cove config (layer images, writable layers); default the config's own. */
  cacheDir?: string;
  containerdConfig?: string;
  /** containerd's version ("1.7.24"); default: `containerd --version` of the one on PATH. */
  containerdVersion?: string;
  /** A shell command that restarts containerd; run only when given and the config changed. */
  restart?: string;
  /** Replace a `cove` or shim in the bin dir that is not ours. */
  force?: boolean;
  /** The source tree (a checkout or an installed prefix); default: the one this code runs from. */
  root?: string;
  /** The Node binary to put in the prefix; default the one running. */
  node?: string;
  env?: NodeJS.ProcessEnv;
  /** Runs the restart command (tests replace it). */
  runRestart?: (cmd: string) => void;
}

export interface InstallResult {
  prefix: string;
  lines: string[];
  /** Whether anything outside or inside the prefix changed. */
  changed: boolean;
  restarted: boolean;
}

/** Writes via a temp file and rename, so a reader never sees half a file. */
function writeAtomic(path: string, data: string | Uint8Array, mode?: number): void {
  const tmp = `${path}.cove-tmp`;
  writeFileSync(tmp, data, mode === undefined ? {} : { mode });
  if (mode === undefined && existsSync(path)) chmodSync(tmp, statSync(path).mode & 0o7777);
  renameSync(tmp, path);
}

/** Copies src to dst unless dst already has its size and mtime (then nothing is touched). Sources
 * are build outputs, replaced by new files when rebuilt, so size + mtime tell a change. */
function copyIfChanged(src: string, dst: string): boolean {
  const s = statSync(src);
  if (existsSync(dst)) {
    const d = statSync(dst);
    // Millisecond precision: what utimes below keeps of the source's mtime.
    if (d.size === s.size && Math.abs(d.mtimeMs - s.mtimeMs) < 1) return false;
  }
  mkdirSync(dirname(dst), { recursive: true });
  const tmp = `${dst}.cove-tmp`;
  copyFileSync(src, tmp, constants.COPYFILE_FICLONE);
  chmodSync(tmp, s.mode & 0o7777);
  utimesSync(tmp, s.atime, s.mtime);
  renameSync(tmp, dst);
  return true;
}

function readState(prefix: string): InstallState {
  const p = join(prefix, STATE_FILE);
  if (!existsSync(p)) return { files: [], links: [], containerd: [] };
  return JSON.parse(readFileSync(p, "utf8")) as InstallState;
}

/** The prefix's files: the tree, the guest artifacts, Node and a package.json naming the tree. */
function installTree(
  root: string,
  prefix: string,
  node: string,
  env: NodeJS.ProcessEnv,
  lines: string[],
): { files: string[]; changed: boolean } {
  const copies: { path: string; from: string }[] = [];
  for (const f of TREE_FILES) {
    const from = join(root, f.path);
    if (!existsSync(from)) {
      if (f.optional) continue;
      throw new Error(`${from} is missing: run \`npm ci && npm run build\` in the checkout first`);
    }
    copies.push({ path: f.path, from });
  }
  for (const g of guestSources(root, env)) {
    if (!existsSync(g.from)) throw new Error(`${g.from} is missing: build the guest first (npm run guest)`);
    copies.push(g);
  }
  copies.push({ path: "bin/node", from: node });
  let copied = 0;
  for (const c of copies) if (copyIfChanged(c.from, join(prefix, c.path))) copied++;
  const version = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version?: string }).version;
  const pkg = `${JSON.stringify({ name: "cove", version, private: true }, null, 2)}\n`;
  const pkgPath = join(prefix, "package.json");
  if (!existsSync(pkgPath) || readFileSync(pkgPath, "utf8") !== pkg) {
    writeAtomic(pkgPath, pkg, 0o644);
    copied++;
  }
  lines.push(copied ? `${prefix}: ${copied} file(s) written` : `${prefix}: up to date`);
  return { files: [...copies.map((c) => c.path), "package.json"], changed: copied > 0 };
}

/** Links bin/<name> into the bin dir; an existing entry that is not ours needs `force`. */
function linkCommands(
  prefix: string,
  binDir: string,
  force: boolean,
  lines: string[],
): { links: string[]; changed: boolean } {
  mkdirSync(binDir, { recursive: true });
  const links: string[] = [];
  let changed = false;
  for (const name of LINKED) {
    const link = join(binDir, name);
    const target = join(prefix, "bin", name);
    let present: string | undefined;
    try {
      present = lstatSync(link).isSymbolicLink() ? readlinkSync(link) : "(a file)";
    } catch {
      present = undefined;
    }
    links.push(link);
    if (present === target) continue;
    if (present !== undefined) {
      if (!force) throw new Error(`${link} exists (${present}); pass --force to replace it`);
      unlinkSync(link);
    }
    symlinkSync(target, link);
    lines.push(`${link} -> ${target}`);
    changed = true;
  }
  return { links, changed };
}

/** The default cove.toml with the guest artifacts of the prefix (and cache_dir when given). */
export function installedCoveConfig(defaults: string, prefix: string, cacheDir?: string): string {
  let t = defaults
    .replace(/^kernel = ""$/m, `kernel = ${JSON.stringify(join(prefix, GUEST_DIR, "kernel"))}`)
    .replace(/^image = ""$/m, `image = ${JSON.stringify(join(prefix, GUEST_DIR, "rootfs.erofs"))}`);
  if (cacheDir) t = t.replace(/^cache_dir = ".*"$/m, `cache_dir = ${JSON.stringify(cacheDir)}`);
  return t;
}

function majorOf(version: string | undefined): number | undefined {
  const m = version ? /^v?(\d+)\./.exec(version) : null;
  return m ? Number(m[1]) : undefined;
}

/** Appends (or refreshes) the runtime block; returns the state entry, or undefined when not ours. */
function configureContainerd(
  prefix: string,
  path: string,
  coveConfig: string,
  version: string | undefined,
  previous: InstallState["containerd"][number] | undefined,
  lines: string[],
): { entry?: InstallState["containerd"][number]; changed: boolean } {
  const exists = existsSync(path);
  const original = exists ? readFileSync(path, "utf8") : "";
  const shape = exists ? configShape(original) : undefined;
  if (shape?.foreignCove) {
    lines.push(`${path}: already has a runtime named "cove" (not added by cove install): left as it is`);
    return { changed: false };
  }
  const v = chooseVersion(shape, majorOf(version));
  const block = runtimeBlock(readFileSync(join(prefix, snippetFile(v)), "utf8"), coveConfig);
  const r = addBlock(original, block, v, shape);
  const created = previous?.created ?? !exists;
  const entry = { path, created, added: created ? r.text : r.added };
  if (!r.changed) {
    lines.push(`${path}: has the cove runtime (config version ${v})`);
    return { entry, changed: false };
  }
  mkdirSync(dirname(path), { recursive: true });
  writeAtomic(path, r.text, exists ? undefined : 0o644);
  lines.push(`${path}: cove runtime added (config version ${v}${version ? `, containerd ${version}` : ""})`);
  return { entry, changed: true };
}

function containerdOnPath(env: NodeJS.ProcessEnv): string | undefined {
  const bin = which("containerd", `${env.PATH ?? ""}:/usr/sbin:/sbin`);
  return bin ? containerdVersion(bin) : undefined;
}

export function install(opts: InstallOptions = {}): InstallResult {
  const env = opts.env ?? process.env;
  const prefix = opts.prefix ?? DEFAULT_PREFIX;
  const root = opts.root ?? repoRoot();
  const lines: string[] = [];
  const state = readState(prefix);
  mkdirSync(prefix, { recursive: true });
  const tree = installTree(root, prefix, opts.node ?? process.execPath, env, lines);
  let changed = tree.changed;

  const linked = linkCommands(prefix, opts.binDir ?? DEFAULT_BIN_DIR, opts.force ?? false, lines);
  changed ||= linked.changed;

  const configPath = opts.configPath ?? DEFAULT_CONFIG_PATH;
  let coveConfig = state.coveConfig;
  if (!existsSync(configPath)) {
    const text = installedCoveConfig(readFileSync(join(prefix, "config/cove.toml"), "utf8"), prefix, opts.cacheDir);
    mkdirSync(dirname(configPath), { recursive: true });
    writeAtomic(configPath, text, 0o644);
    coveConfig = { path: configPath, text };
    lines.push(`${configPath} written (defaults, guest from ${join(prefix, GUEST_DIR)})`);
    changed = true;
  } else if (coveConfig?.path !== configPath) {
    lines.push(`${configPath} exists: left as it is`);
  }

  const ctdPath = opts.containerdConfig ?? DEFAULT_CONTAINERD_CONFIG;
  const version = opts.containerdVersion ?? containerdOnPath(env);
  const previous = state.containerd.find((c) => c.path === ctdPath);
  const ctd = configureContainerd(prefix, ctdPath, configPath, version, previous, lines);
  changed ||= ctd.changed;

  const next: InstallState = {
    files: tree.files,
    links: [...new Set([...state.links, ...linked.links])],
    ...(coveConfig ? { coveConfig } : {}),
    containerd: [...state.containerd.filter((c) => c.path !== ctdPath), ...(ctd.entry ? [ctd.entry] : [])],
  };
  const stateText = `${JSON.stringify(next, null, 2)}\n`;
  const statePath = join(prefix, STATE_FILE);
  if (!existsSync(statePath) || readFileSync(statePath, "utf8") !== stateText) writeAtomic(statePath, stateText, 0o644);

  let restarted = false;
  if (opts.restart && ctd.changed) {
    (opts.runRestart ?? runShell)(opts.restart);
    lines.push(`containerd restarted (${opts.restart})`);
    restarted = true;
  } else if (ctd.changed) {
    lines.push("restart containerd to load the runtime (or run cove install --restart-containerd)");
  }
  return { prefix, lines, changed, restarted };
}

export function runShell(cmd: string): void {
  const r = spawnSync("sh", ["-c", cmd], { stdio: "inherit", timeout: 120_000 });
  if (r.status !== 0) throw new Error(`\`${cmd}\` failed (${r.error?.message ?? `exit ${r.status ?? r.signal}`})`);
}

export const DEFAULT_RESTART = "systemctl restart containerd";

/** The options both install and uninstall take. */
export const COMMON_OPTIONS = {
  prefix: { type: "string" },
  "bin-dir": { type: "string" },
  config: { type: "string" },
  "containerd-config": { type: "string" },
  "restart-containerd": { type: "boolean" },
  "restart-command": { type: "string" },
} as const;

export function parseCommon<T extends Record<string, { type: "string" | "boolean" }>>(
  args: string[],
  extra: T,
): Record<string, string | boolean | undefined> {
  try {
    return parseArgs({ args, options: { ...COMMON_OPTIONS, ...extra }, strict: true }).values as Record<
      string,
      string | boolean | undefined
    >;
  } catch (e) {
    throw new UsageError(errorMessage(e));
  }
}

/** --restart-containerd runs the default command; --restart-command CMD implies it. */
export function restartCommand(v: Record<string, string | boolean | undefined>): string | undefined {
  const cmd = v["restart-command"];
  if (typeof cmd === "string") return cmd;
  return v["restart-containerd"] ? DEFAULT_RESTART : undefined;
}

const str = (v: string | boolean | undefined): string | undefined => (typeof v === "string" ? v : undefined);

export const installCommand: Command = {
  path: ["install"],
  summary: "install cove under a prefix, put cove and the shim on PATH, add the runtime to containerd's config",
  usage: `cove install [--prefix DIR] [--bin-dir DIR] [--config FILE] [--cache-dir DIR]
             [--containerd-config FILE] [--containerd-version X.Y.Z]
             [--restart-containerd | --restart-command CMD] [--force]

Copies the shim, cove, Node, the native addon and the guest kernel and image into the prefix,
links cove and ${LINKED[0]} into the bin dir, writes the cove config if absent (guest from the
prefix), and appends the cove runtime (CRI handler "cove") to containerd's config as a marked block
in the file's own config version (2 for containerd 1.6/1.7, 3 for 2.x; deploy/containerd/). Running
it again changes nothing. \`cove uninstall\` undoes it, restoring containerd's config byte for byte.

  --prefix DIR              where cove is installed (default ${DEFAULT_PREFIX})
  --bin-dir DIR             where containerd looks for shims (default ${DEFAULT_BIN_DIR})
  --config FILE             cove config to create when absent (default ${DEFAULT_CONFIG_PATH})
  --cache-dir DIR           cache_dir of a created cove config (default /var/cache/cove)
  --containerd-config FILE  containerd's config (default ${DEFAULT_CONTAINERD_CONFIG})
  --containerd-version V    containerd's version (default: containerd --version on PATH)
  --restart-containerd      restart containerd if its config changed (${DEFAULT_RESTART})
  --restart-command CMD     the same, with this command
  --force                   replace a cove or ${LINKED[0]} in the bin dir that is not ours`,
  async run(args) {
    const v = parseCommon(args, {
      "cache-dir": { type: "string" },
      "containerd-version": { type: "string" },
      force: { type: "boolean" },
    });
    const r = install({
      prefix: str(v.prefix),
      binDir: str(v["bin-dir"]),
      configPath: str(v.config),
      cacheDir: str(v["cache-dir"]),
      containerdConfig: str(v["containerd-config"]),
      containerdVersion: str(v["containerd-version"]),
      restart: restartCommand(v),
      force: v.force === true,
    });
    for (const l of r.lines) process.stdout.write(`${l}\n`);
    return 0;
  },
};
