// cove.toml: where it is found, its keys, their defaults and their validation. The defaults here
// are the values in config/cove.toml (a unit test keeps the two in step).
import { existsSync, readFileSync } from "node:fs";
import { parse } from "smol-toml";
import { errorMessage } from "../common/errors.ts";
import { DEFAULT_CACHE_DIR, guestArtifacts } from "../guest/paths.ts";

export type HypervisorChoice = "auto" | "embedded" | "qemu";
export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "fatal";

export interface CoveConfig {
  hypervisor: HypervisorChoice;
  cacheDir: string;
  guest: GuestConfig;
  qemu: {
    binary: string;
    /** Under TCG: QEMU's translation-cache size in MiB; 0: QEMU's default (1 GiB on 7.2). */
    tcgTbSizeMib: number;
  };
  pod: PodConfig;
  /** The layer image cache (src/rootfs/cache-gc.ts): unused images go, oldest use first, above this size. */
  cache: { maxLayersGib: number };
  log: { level: LogLevel };
  /** Getting into a pod VM (docs/debugging.md). */
  debug: { console: boolean };
  /** Where the values came from: a file path, or "built-in defaults". */
  source: string;
  /** Deprecated keys the file still has (accepted, ignored): what to tell the operator. */
  deprecations: string[];
}

/** The guest a pod VM boots, and how big the VM is (src/sandbox/vm-size.ts). */
export interface GuestConfig {
  kernel: string;
  image: string;
  /** vCPUs of a pod without a CPU limit. */
  vcpus: number;
  /** What the guest itself needs: the VM of a pod without a memory limit; added to a pod's limit. */
  memoryMib: number;
  /** The most vCPUs a pod's CPU limit may give its VM; 0: the host's CPU count. */
  maxVcpus: number;
  /** The most memory a pod's memory limit may give its VM; 0: the host's memory. */
  maxMemoryMib: number;
}

/** How a pod VM is laid out and waited for. */
export interface PodConfig {
  /** Size of each container's writable layer (sparse ext4 image). */
  writableLayerMib: number;
  /** How long the agent may take to answer after the VM starts. */
  bootTimeoutMs: number;
  /** Pod annotations (glob list, `*` at the end) that may override guest.vcpus / guest.memory_mib. */
  allowedAnnotations: string[];
}

export const DEFAULT_CONFIG_PATH = "/etc/cove/cove.toml";
/** TCG's translation cache per pod VM, in MiB: see [qemu] tcg_tb_size_mib in config/cove.toml for
 * what it costs and saves (measured by `npm run bench -- tcg`). */
export const DEFAULT_TCG_TB_SIZE_MIB = 64;
const LOG_LEVELS: readonly LogLevel[] = ["trace", "debug", "info", "warn", "error", "fatal"];
const HYPERVISORS: readonly HypervisorChoice[] = ["auto", "embedded", "qemu"];

export class ConfigError extends Error {}

export function defaultConfig(): CoveConfig {
  return {
    hypervisor: "auto",
    cacheDir: DEFAULT_CACHE_DIR,
    guest: {
      kernel: guestArtifacts(DEFAULT_CACHE_DIR).kernel,
      image: guestArtifacts(DEFAULT_CACHE_DIR).rootfs,
      vcpus: 1,
      memoryMib: 256,
      maxVcpus: 0,
      maxMemoryMib: 0,
    },
    qemu: { binary: "qemu-system-x86_64", tcgTbSizeMib: DEFAULT_TCG_TB_SIZE_MIB },
    pod: { writableLayerMib: 1024, bootTimeoutMs: 120_000, allowedAnnotations: [] },
    cache: { maxLayersGib: 20 },
    log: { level: "info" },
    debug: { console: false },
    source: "built-in defaults",
    deprecations: [],
  };
}

type Table = Record<string, unknown>;

function isTable(v: unknown): v is Table {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

/** Checks a table has only known keys, so a typo is an error instead of a silently ignored setting. */
function onlyKeys(t: Table, where: string, keys: readonly string[], file: string): void {
  for (const k of Object.keys(t)) {
    if (!keys.includes(k)) {
      throw new ConfigError(`${file}: unknown key "${where}${k}" (known: ${keys.map((x) => where + x).join(", ")})`);
    }
  }
}

function str(t: Table, key: string, where: string, file: string, fallback: string): string {
  const v = t[key];
  if (v === undefined) return fallback;
  if (typeof v !== "string") throw new ConfigError(`${file}: "${where}${key}" must be a string`);
  return v;
}

function int(t: Table, key: string, where: string, file: string, fallback: number, min: number, max: number): number {
  const v = t[key];
  if (v === undefined) return fallback;
  const n = typeof v === "bigint" ? Number(v) : v;
  if (typeof n !== "number" || !Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(`${file}: "${where}${key}" must be an integer from ${min} to ${max}`);
  }
  return n;
}

function subTable(t: Table, key: string, file: string): Table {
  const v = t[key];
  if (v === undefined) return {};
  if (!isTable(v)) throw new ConfigError(`${file}: [${key}] must be a table`);
  return v;
}

/** Parses cove.toml text; `file` names it in errors. Missing keys take the defaults. */
export function parseConfig(text: string, file: string): CoveConfig {
  let doc: Table;
  try {
    doc = parse(text) as Table;
  } catch (e) {
    throw new ConfigError(`${file}: not valid TOML: ${errorMessage(e)}`);
  }
  const d = defaultConfig();
  onlyKeys(doc, "", ["hypervisor", "cache_dir", "guest", "qemu", "pod", "cache", "log", "debug"], file);
  const hypervisor = str(doc, "hypervisor", "", file, d.hypervisor);
  if (!HYPERVISORS.includes(hypervisor as HypervisorChoice)) {
    throw new ConfigError(`${file}: "hypervisor" must be one of ${HYPERVISORS.join(", ")} (got "${hypervisor}")`);
  }
  const cacheDir = str(doc, "cache_dir", "", file, d.cacheDir) || d.cacheDir;

  const guest = subTable(doc, "guest", file);
  onlyKeys(guest, "guest.", ["kernel", "image", "vcpus", "memory_mib", "max_vcpus", "max_memory_mib"], file);
  const qemu = subTable(doc, "qemu", file);
  onlyKeys(qemu, "qemu.", ["binary", "tcg_tb_size_mib"], file);
  const pod = subTable(doc, "pod", file);
  onlyKeys(
    pod,
    "pod.",
    ["layer_slots", "writable_slots", "writable_layer_mib", "boot_timeout_ms", "allowed_annotations"],
    file,
  );
  // Disk slots are gone (one disk of extents holds every layer, one every writable layer): files
  // `cove install` wrote with them still load.
  const deprecations: string[] = [];
  for (const key of ["layer_slots", "writable_slots"]) {
    if (!(key in pod)) continue;
    int(pod, key, "pod.", file, 0, 0, 1 << 20);
    deprecations.push(
      `${file}: pod.${key} is deprecated and ignored: a pod's containers have no disk slot limit (remove the key)`,
    );
  }
  const allowed = pod.allowed_annotations ?? d.pod.allowedAnnotations;
  if (!Array.isArray(allowed) || !allowed.every((a) => typeof a === "string")) {
    throw new ConfigError(`${file}: "pod.allowed_annotations" must be a list of strings`);
  }
  const cache = subTable(doc, "cache", file);
  onlyKeys(cache, "cache.", ["max_layers_gib"], file);
  const log = subTable(doc, "log", file);
  onlyKeys(log, "log.", ["level"], file);
  const level = str(log, "level", "log.", file, d.log.level);
  if (!LOG_LEVELS.includes(level as LogLevel)) {
    throw new ConfigError(`${file}: "log.level" must be one of ${LOG_LEVELS.join(", ")} (got "${level}")`);
  }
  const debug = subTable(doc, "debug", file);
  onlyKeys(debug, "debug.", ["console"], file);
  const debugConsole = debug.console ?? d.debug.console;
  if (typeof debugConsole !== "boolean") throw new ConfigError(`${file}: "debug.console" must be true or false`);

  return {
    hypervisor: hypervisor as HypervisorChoice,
    cacheDir,
    guest: {
      // Empty means "what the guest build produced", which follows cache_dir.
      kernel: str(guest, "kernel", "guest.", file, "") || guestArtifacts(cacheDir).kernel,
      image: str(guest, "image", "guest.", file, "") || guestArtifacts(cacheDir).rootfs,
      vcpus: int(guest, "vcpus", "guest.", file, d.guest.vcpus, 1, 255),
      memoryMib: int(guest, "memory_mib", "guest.", file, d.guest.memoryMib, 64, 1 << 20),
      maxVcpus: int(guest, "max_vcpus", "guest.", file, d.guest.maxVcpus, 0, 255),
      maxMemoryMib: int(guest, "max_memory_mib", "guest.", file, d.guest.maxMemoryMib, 0, 1 << 20),
    },
    qemu: {
      binary: str(qemu, "binary", "qemu.", file, d.qemu.binary) || d.qemu.binary,
      tcgTbSizeMib: int(qemu, "tcg_tb_size_mib", "qemu.", file, d.qemu.tcgTbSizeMib, 0, 4096),
    },
    pod: {
      writableLayerMib: int(pod, "writable_layer_mib", "pod.", file, d.pod.writableLayerMib, 16, 1 << 22),
      bootTimeoutMs: int(pod, "boot_timeout_ms", "pod.", file, d.pod.bootTimeoutMs, 1000, 3_600_000),
      allowedAnnotations: allowed as string[],
    },
    cache: { maxLayersGib: int(cache, "max_layers_gib", "cache.", file, d.cache.maxLayersGib, 0, 1 << 20) },
    log: { level: level as LogLevel },
    debug: { console: debugConsole },
    source: file,
    deprecations,
  };
}

export interface ConfigLookup {
  /** From the runtime options (runtimeoptions.v1.Options.config_path); wins over everything. */
  configPath?: string;
  env?: NodeJS.ProcessEnv;
  /** The system-wide default file; overridable for tests. */
  defaultPath?: string;
}

/** Which file to read: options' config_path, else $COVE_CONFIG, else /etc/cove/cove.toml if present. */
export function resolveConfigPath(lookup: ConfigLookup = {}): { path?: string; required: boolean } {
  const env = lookup.env ?? process.env;
  if (lookup.configPath) return { path: lookup.configPath, required: true };
  if (env.COVE_CONFIG) return { path: env.COVE_CONFIG, required: true };
  const def = lookup.defaultPath ?? DEFAULT_CONFIG_PATH;
  return existsSync(def) ? { path: def, required: false } : { required: false };
}

/** Loads the effective configuration. A path named explicitly must exist; the default file may not. */
export function loadConfig(lookup: ConfigLookup = {}): CoveConfig {
  const { path } = resolveConfigPath(lookup);
  if (!path) return defaultConfig();
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(`cannot read cove config ${path}: ${code ?? errorMessage(e)}`);
  }
  return parseConfig(text, path);
}
