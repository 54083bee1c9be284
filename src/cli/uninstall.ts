// `cove uninstall`: undoes what `cove install` recorded in <prefix>/install.json — the runtime block
// cut out of containerd's config (the exact text added, so the file is byte for byte what it was;
// a file install created is removed), the links in the bin dir that still point into the prefix,
// the cove config install wrote if it is unchanged, and the prefix's files.
import {
  existsSync,
  lstatSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmdirSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import type { Command } from "./command.ts";
import { removeBlock } from "./containerd-block.ts";
import { DEFAULT_CONTAINERD_CONFIG } from "./containerd-runtime.ts";
import { parseCommon, restartCommand, runShell } from "./install.ts";
import { DEFAULT_PREFIX, type InstallState, STATE_FILE } from "./install-layout.ts";

export interface UninstallOptions {
  prefix?: string;
  /** A containerd config to clean even if install.json does not name it (e.g. the prefix is gone). */
  containerdConfig?: string;
  restart?: string;
  runRestart?: (cmd: string) => void;
}

/** Removes dirs under the prefix that became empty, deepest first, and the prefix itself if empty. */
function removeEmptyDirs(dir: string): void {
  if (!existsSync(dir) || !lstatSync(dir).isDirectory()) return;
  for (const e of readdirSync(dir)) removeEmptyDirs(join(dir, e));
  if (readdirSync(dir).length === 0) rmdirSync(dir);
}

function restoreContainerd(entry: InstallState["containerd"][number], lines: string[]): boolean {
  if (!existsSync(entry.path)) {
    lines.push(`${entry.path}: gone already`);
    return false;
  }
  const text = readFileSync(entry.path, "utf8");
  if (entry.created && text === entry.added) {
    unlinkSync(entry.path);
    lines.push(`${entry.path}: removed (cove install had created it)`);
    return true;
  }
  const r = removeBlock(text, entry.created ? undefined : entry.added);
  if (!r.removed) {
    lines.push(`${entry.path}: has no cove runtime block: left as it is`);
    return false;
  }
  const tmp = `${entry.path}.cove-tmp`;
  writeFileSync(tmp, r.text, { mode: lstatSync(entry.path).mode & 0o7777 });
  renameSync(tmp, entry.path);
  lines.push(`${entry.path}: cove runtime removed`);
  return true;
}

export function uninstall(opts: UninstallOptions = {}): { lines: string[]; restarted: boolean } {
  const prefix = opts.prefix ?? DEFAULT_PREFIX;
  const statePath = join(prefix, STATE_FILE);
  const lines: string[] = [];
  const state: InstallState = existsSync(statePath)
    ? (JSON.parse(readFileSync(statePath, "utf8")) as InstallState)
    : { files: [], links: [], containerd: [] };
  if (!existsSync(statePath))
    lines.push(`${statePath} not found: removing only the marked block from containerd's config`);

  const entries = [...state.containerd];
  const extra = opts.containerdConfig ?? (entries.length === 0 ? DEFAULT_CONTAINERD_CONFIG : undefined);
  if (extra && !entries.some((e) => e.path === extra)) entries.push({ path: extra, created: false, added: "" });
  let ctdChanged = false;
  for (const e of entries) ctdChanged = restoreContainerd(e, lines) || ctdChanged;

  for (const link of state.links) {
    try {
      if (lstatSync(link).isSymbolicLink() && readlinkSync(link).startsWith(`${prefix}/`)) {
        unlinkSync(link);
        lines.push(`${link} removed`);
      } else lines.push(`${link}: not ours any more: left as it is`);
    } catch {
      // gone already
    }
  }
  const cc = state.coveConfig;
  if (cc && existsSync(cc.path)) {
    if (readFileSync(cc.path, "utf8") === cc.text) {
      unlinkSync(cc.path);
      lines.push(`${cc.path} removed`);
      removeEmptyDirs(dirname(cc.path));
    } else lines.push(`${cc.path}: changed since install: left as it is`);
  }
  for (const f of [...state.files, STATE_FILE]) {
    try {
      unlinkSync(join(prefix, f));
    } catch {
      // gone already
    }
  }
  removeEmptyDirs(prefix);
  if (state.files.length) lines.push(`${prefix}: removed`);

  let restarted = false;
  if (opts.restart && ctdChanged) {
    (opts.runRestart ?? runShell)(opts.restart);
    lines.push(`containerd restarted (${opts.restart})`);
    restarted = true;
  } else if (ctdChanged) lines.push("restart containerd to drop the runtime");
  return { lines, restarted };
}

export const uninstallCommand: Command = {
  path: ["uninstall"],
  summary: "undo cove install: containerd's config restored byte for byte, links and the prefix removed",
  usage: `cove uninstall [--prefix DIR] [--containerd-config FILE] [--restart-containerd | --restart-command CMD]

Reads <prefix>/install.json and undoes what cove install did: cuts the exact text it appended out
of containerd's config (a file it created is removed), removes the links into the prefix, the cove
config it wrote (if unchanged) and the prefix. Without install.json, it removes only the marked
cove block from containerd's config (--containerd-config, default ${DEFAULT_CONTAINERD_CONFIG}).

  --prefix DIR              where cove was installed (default ${DEFAULT_PREFIX})
  --containerd-config FILE  also clean this containerd config
  --restart-containerd      restart containerd if its config changed
  --restart-command CMD     the same, with this command`,
  async run(args) {
    const v = parseCommon(args, {});
    const r = uninstall({
      prefix: typeof v.prefix === "string" ? v.prefix : undefined,
      containerdConfig: typeof v["containerd-config"] === "string" ? v["containerd-config"] : undefined,
      restart: restartCommand(v),
    });
    for (const l of r.lines) process.stdout.write(`${l}\n`);
    return 0;
  },
};
