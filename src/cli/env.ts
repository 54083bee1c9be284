// `cove env`: the configuration the shim would run with (and where it came from), which backend
// `hypervisor` picks on this host and why, and the guest artifacts in use.
import { existsSync, realpathSync, statSync } from "node:fs";
import { parseArgs } from "node:util";
import { errorMessage } from "../common/errors.ts";
import { which } from "../common/exec.ts";
import type { CoveConfig } from "../config/config.ts";
import { type HostKvm, probeHost } from "../hypervisor/host.ts";
import { type BackendChoice, chooseBackend } from "../hypervisor/select.ts";
import { runtimeFeaturesPath } from "../shim/info.ts";
import { type Command, UsageError } from "./command.ts";
import { effectiveConfig } from "./effective-config.ts";

export interface Artifact {
  path: string;
  /** The file behind the path (the cache's content-keyed dir for a built guest). */
  real?: string;
  bytes?: number;
}

export interface CoveEnv {
  config: Omit<CoveConfig, "source"> & { file: string; how: string };
  host: HostKvm;
  backend: BackendChoice | { error: string };
  guest: { kernel: Artifact; image: Artifact; runtimeFeatures: Artifact };
  qemu: Artifact;
  shim?: Artifact;
}

function artifact(path: string): Artifact {
  if (!existsSync(path)) return { path };
  const real = realpathSync(path);
  return { path, ...(real !== path ? { real } : {}), bytes: statSync(real).size };
}

export function coveEnv(c: { config: CoveConfig; how: string }, host: HostKvm = probeHost()): CoveEnv {
  const { source, ...rest } = c.config;
  let backend: CoveEnv["backend"];
  try {
    backend = chooseBackend(c.config.hypervisor, host);
  } catch (e) {
    backend = { error: errorMessage(e) };
  }
  const qemu = c.config.qemu.binary.includes("/") ? c.config.qemu.binary : which(c.config.qemu.binary);
  const shim = which("containerd-shim-cove-v2");
  return {
    config: { ...rest, file: source, how: c.how },
    host,
    backend,
    guest: {
      kernel: artifact(c.config.guest.kernel),
      image: artifact(c.config.guest.image),
      runtimeFeatures: artifact(runtimeFeaturesPath(c.config.guest.image)),
    },
    qemu: qemu ? artifact(qemu) : { path: `${c.config.qemu.binary} (not on PATH)` },
    ...(shim ? { shim: artifact(shim) } : {}),
  };
}

/** A config table as its TOML keys: `writable_layer_mib 1024, allowed_annotations [io.cove.*]`. */
function settings(t: object): string {
  const snake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
  return Object.entries(t)
    .map(([k, v]) => `${snake(k)} ${Array.isArray(v) ? `[${v.join(", ")}]` : String(v)}`)
    .join(", ");
}

const size = (b: number) => (b >= 1048576 ? `${(b / 1048576).toFixed(1)} MiB` : `${(b / 1024).toFixed(1)} KiB`);

function describe(a: Artifact): string {
  if (a.bytes === undefined) return `${a.path} (missing)`;
  return `${a.path}${a.real ? ` -> ${a.real}` : ""} (${size(a.bytes)})`;
}

export function formatEnv(e: CoveEnv): string {
  const c = e.config;
  const b =
    "error" in e.backend
      ? `cannot run: ${e.backend.error}`
      : `${e.backend.kind} (${e.backend.accel}): ${e.backend.reason}`;
  const rows: [string, string][] = [
    ["config", `${c.file} (${c.how})`],
    ["hypervisor", `${c.hypervisor} -> ${b}`],
    [
      "host",
      `/dev/kvm ${e.host.kvm ? "usable" : "not usable"}, hardware virtualization ${e.host.hwVirt ?? "none"}${e.host.pvm ? ", kvm_pvm loaded" : ""}`,
    ],
    ["cache_dir", c.cacheDir],
    ["guest kernel", describe(e.guest.kernel)],
    ["guest image", describe(e.guest.image)],
    ["runtime features", describe(e.guest.runtimeFeatures)],
    [
      "guest size",
      settings({
        vcpus: c.guest.vcpus,
        memoryMib: c.guest.memoryMib,
        maxVcpus: c.guest.maxVcpus,
        maxMemoryMib: c.guest.maxMemoryMib,
      }),
    ],
    ["qemu", `${describe(e.qemu)}, tcg_tb_size_mib ${c.qemu.tcgTbSizeMib}`],
    ["pod", settings(c.pod)],
    ["log level", c.log.level],
    ["shim on PATH", e.shim ? describe(e.shim) : "containerd-shim-cove-v2 not on PATH"],
  ];
  const w = Math.max(...rows.map((r) => r[0].length));
  return `${rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join("\n")}\n`;
}

export const envCommand: Command = {
  path: ["env"],
  summary: "print the effective configuration, the backend `auto` picks here and why, the guest artifacts",
  usage: `cove env [--json] [--config FILE] [--containerd-config FILE]

The configuration the shim would run with, read as the shim reads it: the ConfigPath containerd's
cove runtime passes (from containerd's config, $COVE_CONTAINERD_CONFIG or /etc/containerd/config.toml),
else $COVE_CONFIG, else /etc/cove/cove.toml, else the built-in defaults. Then the backend the
\`hypervisor\` setting picks on this host and why, and the guest kernel, image and runtime features
in use (with the content-keyed files behind them).

  --json                    the same as one JSON object
  --config FILE             read this cove config instead (as a runtime ConfigPath would)
  --containerd-config FILE  where to look for the cove runtime's ConfigPath`,
  async run(args) {
    let v: { json?: boolean; config?: string; "containerd-config"?: string };
    try {
      v = parseArgs({
        args,
        options: { json: { type: "boolean" }, config: { type: "string" }, "containerd-config": { type: "string" } },
      }).values;
    } catch (e) {
      throw new UsageError(errorMessage(e));
    }
    const e = coveEnv(
      effectiveConfig({
        ...(v.config ? { configPath: v.config } : {}),
        ...(v["containerd-config"] ? { containerdConfig: v["containerd-config"] } : {}),
      }),
    );
    process.stdout.write(v.json ? `${JSON.stringify(e, null, 2)}\n` : formatEnv(e));
    return 0;
  },
};
