// The cove configuration the shim would run with, for `cove env` and `cove check`. The shim reads,
// in order: the runtime options' ConfigPath (what containerd's `cove` runtime sets in its
// `options` table), $COVE_CONFIG, /etc/cove/cove.toml, the built-in defaults (src/config/config.ts).
// From the command line, the ConfigPath is read from containerd's config (and its imports).
import { readFileSync } from "node:fs";
import { parse } from "smol-toml";
import { type CoveConfig, loadConfig, resolveConfigPath } from "../config/config.ts";
import { runtimesPath } from "./containerd-block.ts";
import { COVE_RUNTIME_TYPE, coveRuntimeConfig, DEFAULT_CONTAINERD_CONFIG } from "./containerd-runtime.ts";

export interface EffectiveConfig {
  config: CoveConfig;
  /** Where the file came from, in words ("ConfigPath of containerd's runtime "cove" in …"). */
  how: string;
}

type Table = Record<string, unknown>;
const isTable = (v: unknown): v is Table => typeof v === "object" && v !== null && !Array.isArray(v);

/** ConfigPath of the first CRI runtime running cove in containerd's config (or its imports). */
export function containerdConfigPath(containerdConfig: string): { handler: string; path: string } | undefined {
  let files: string[];
  try {
    files = coveRuntimeConfig(containerdConfig).files;
  } catch {
    return undefined;
  }
  for (const f of files) {
    const doc = parse(readFileSync(f, "utf8")) as Table;
    for (const v of [3, 2] as const) {
      const runtimes = runtimesPath(v).reduce<unknown>((t, k) => (isTable(t) ? t[k] : undefined), doc);
      if (!isTable(runtimes)) continue;
      for (const [handler, rt] of Object.entries(runtimes)) {
        if (!isTable(rt) || rt.runtime_type !== COVE_RUNTIME_TYPE) continue;
        const path = isTable(rt.options) ? rt.options.ConfigPath : undefined;
        if (typeof path === "string" && path) return { handler, path };
      }
    }
  }
  return undefined;
}

export interface ConfigSources {
  /** --config on the command line: wins, as the runtime options do for the shim. */
  configPath?: string;
  containerdConfig?: string;
  env?: NodeJS.ProcessEnv;
  /** The system default file (tests). */
  defaultPath?: string;
}

/** Loads the configuration the shim would load; throws ConfigError as the shim would fail. */
export function effectiveConfig(s: ConfigSources = {}): EffectiveConfig {
  const env = s.env ?? process.env;
  const ctd = s.containerdConfig ?? (env.COVE_CONTAINERD_CONFIG || DEFAULT_CONTAINERD_CONFIG);
  const fromCtd = s.configPath ? undefined : containerdConfigPath(ctd);
  const configPath = s.configPath ?? fromCtd?.path;
  const lookup = {
    env,
    ...(configPath ? { configPath } : {}),
    ...(s.defaultPath ? { defaultPath: s.defaultPath } : {}),
  };
  const config = loadConfig(lookup);
  const resolved = resolveConfigPath(lookup);
  const how = s.configPath
    ? "--config"
    : fromCtd
      ? `ConfigPath of containerd's runtime "${fromCtd.handler}" in ${ctd}`
      : resolved.path === undefined
        ? "no config file: built-in defaults"
        : env.COVE_CONFIG
          ? "$COVE_CONFIG"
          : "the default path";
  return { config, how };
}
