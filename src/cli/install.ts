// `cove install`: puts containerd-shim-cove-v2 where containerd finds it (its PATH: containerd 1.6.20
// ignores runtime_path) and writes the default cove config if there is none.
import { copyFileSync, existsSync, lstatSync, mkdirSync, readlinkSync, symlinkSync, unlinkSync } from "node:fs";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_CONFIG_PATH } from "../config/config.ts";
import { repoRoot } from "../guest/paths.ts";
import { type Command, UsageError } from "./command.ts";

export const SHIM_NAME = "containerd-shim-cove-v2";

export interface InstallResult {
  shim: string;
  config: string;
  lines: string[];
}

export function install(opts: { binDir: string; configPath: string; root?: string; force?: boolean }): InstallResult {
  const root = opts.root ?? repoRoot();
  const target = join(root, "bin", SHIM_NAME);
  if (!existsSync(target)) throw new Error(`${target} does not exist: run cove install from a cove checkout`);
  if (!existsSync(join(root, "dist", `${SHIM_NAME}.cjs`))) {
    throw new Error(`${join(root, "dist", `${SHIM_NAME}.cjs`)} is missing: run \`npm run build\` first`);
  }
  const lines: string[] = [];
  mkdirSync(opts.binDir, { recursive: true });
  const link = join(opts.binDir, SHIM_NAME);
  let present: string | undefined;
  try {
    present = lstatSync(link).isSymbolicLink() ? readlinkSync(link) : "(a file)";
  } catch {
    present = undefined;
  }
  if (present === target) lines.push(`${link} -> ${target} (already installed)`);
  else {
    if (present !== undefined) {
      if (!opts.force) throw new Error(`${link} exists (${present}); pass --force to replace it`);
      unlinkSync(link);
    }
    symlinkSync(target, link);
    lines.push(`${link} -> ${target}`);
  }
  if (existsSync(opts.configPath)) lines.push(`${opts.configPath} exists: left as it is`);
  else {
    mkdirSync(dirname(opts.configPath), { recursive: true });
    copyFileSync(join(root, "config", "cove.toml"), opts.configPath);
    lines.push(`${opts.configPath} written (defaults)`);
  }
  lines.push(
    `containerd: add deploy/containerd/config.toml's runtime section, restart containerd, then ` +
      `ctr run --runtime io.containerd.cove.v2 … or a RuntimeClass with handler "cove" (deploy/kubernetes/runtimeclass.yaml)`,
  );
  return { shim: link, config: opts.configPath, lines };
}

export const installCommand: Command = {
  path: ["install"],
  summary: "put containerd-shim-cove-v2 on containerd's PATH and write /etc/cove/cove.toml if absent",
  usage: `cove install [--bin-dir DIR] [--config FILE] [--force]

  --bin-dir DIR   where containerd looks for shims (default /usr/local/bin)
  --config FILE   cove config to create when absent (default ${DEFAULT_CONFIG_PATH})
  --force         replace an existing ${SHIM_NAME} in DIR`,
  async run(args) {
    let v: { "bin-dir"?: string; config?: string; force?: boolean };
    try {
      v = parseArgs({
        args,
        options: { "bin-dir": { type: "string" }, config: { type: "string" }, force: { type: "boolean" } },
      }).values;
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    const r = install({
      binDir: v["bin-dir"] ?? "/usr/local/bin",
      configPath: v.config ?? DEFAULT_CONFIG_PATH,
      force: v.force,
    });
    for (const l of r.lines) process.stdout.write(`${l}\n`);
    return 0;
  },
};
