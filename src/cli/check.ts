// `cove check`: what is present and what is missing on this machine, with the command that fixes
// each missing piece. Exit 1 when something required is missing.

import { spawnSync } from "node:child_process";
import { existsSync, realpathSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { errorMessage } from "../common/errors.ts";
import { which } from "../common/exec.ts";
import { type CoveConfig, defaultConfig } from "../config/config.ts";
import { imageRecipe } from "../guest/build.ts";
import { builtBusybox } from "../guest/busybox.ts";
import { builtCrun } from "../guest/crun.ts";
import { kernelKeys, LINUX_SOURCE_TARBALL } from "../guest/kernel.ts";
import { pinnedNode } from "../guest/node-pin.ts";
import { guestArtifacts, guestInputs, repoRoot } from "../guest/paths.ts";
import { describeHost, type HostKvm, probeHost } from "../hypervisor/host.ts";
import type { Command } from "./command.ts";
import { containerdVersion, coveRuntimeConfig, DEFAULT_CONTAINERD_CONFIG } from "./containerd-runtime.ts";
import { type ConfigSources, effectiveConfig } from "./effective-config.ts";
import { hostChecks } from "./host-checks.ts";

export interface CheckResult {
  name: string;
  ok: boolean;
  required: boolean;
  detail: string;
  /** The exact command that fixes it (when not ok). */
  fix?: string;
}

const MiB = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

function version(argv: string[]): string {
  const [cmd, ...args] = argv;
  const r = spawnSync(cmd!, args, { encoding: "utf8" });
  return `${r.stdout ?? ""}${r.stderr ?? ""}`.trim().split("\n")[0] ?? "";
}

function artifact(name: string, path: string, required: boolean, fix: string): CheckResult {
  if (!existsSync(path)) return { name, ok: false, required, detail: `${path} missing`, fix };
  const real = realpathSync(path);
  const shown = real === path ? path : `${path} -> ${real}`;
  return { name, ok: true, required, detail: `${shown} (${MiB(statSync(real).size)})` };
}

function program(name: string, bin: string, pkg: string, required: boolean, versionArgs = ["--version"]): CheckResult {
  const path = which(bin, `${process.env.PATH ?? ""}:/usr/sbin:/sbin`);
  if (!path) return { name, ok: false, required, detail: `${bin} not on PATH`, fix: `apt-get install -y ${pkg}` };
  return { name, ok: true, required, detail: `${path} (${version([path, ...versionArgs])})` };
}

/** KVM, and whether it is backed by hardware virtualization or by PVM (see docs/hosts.md). */
export function kvmKind(host: HostKvm): "hardware" | "pvm" | "unknown" {
  if (host.pvm) return "pvm";
  return host.hwVirt !== null ? "hardware" : "unknown";
}

function kvm(host: HostKvm): CheckResult {
  const name = "/dev/kvm";
  if (!host.kvm)
    return {
      name,
      ok: false,
      required: false,
      detail: `${describeHost(host)}: only the qemu backend under TCG (slow) can run`,
      fix: "modprobe kvm_intel || modprobe kvm_amd  # and enable virtualization (or nested virtualization) for this machine",
    };
  const kind = kvmKind(host);
  const detail =
    kind === "hardware"
      ? "present, hardware virtualization: the embedded VMM can run"
      : kind === "pvm"
        ? "present but PVM (no hardware virtualization): a stock Linux guest cannot run on it; the qemu backend (TCG) is used"
        : "present; no vmx/svm flag in /proc/cpuinfo: the qemu backend (TCG) is used";
  return { name, ok: true, required: false, detail };
}

/** The pinned Node (deploy/nodejs.env): installed, and what `node` on PATH resolves to. */
function pinnedNodeCheck(root: string): CheckResult {
  const name = "node (pinned)";
  const fix = `${join(root, "scripts/install-node.sh")}`;
  let pinned: { path: string; version: string };
  try {
    pinned = pinnedNode(guestInputs(root).nodePin);
  } catch (e) {
    return { name, ok: false, required: true, detail: errorMessage(e).split(":")[0] ?? "", fix };
  }
  const onPath = which("node");
  if (!onPath || realpathSync(onPath) !== realpathSync(pinned.path))
    return {
      name,
      ok: false,
      required: false,
      detail: `v${pinned.version} at ${pinned.path}, but PATH finds ${onPath ? `${onPath} (${version([onPath, "--version"])})` : "no node"}`,
      fix: `${fix}   # links node, npm, npx into /usr/local/bin; put /usr/local/bin before ${onPath ? dirname(onPath) : "the rest"} in PATH`,
    };
  return { name, ok: true, required: true, detail: `${onPath} -> ${pinned.path} (v${pinned.version})` };
}

/** Whether the published kernel and image match the checkout's current inputs (fragment, agent, ...). */
function freshness(a: ReturnType<typeof guestArtifacts>, root: string): CheckResult {
  const name = "guest up to date";
  if (!existsSync(a.kernel) || !existsSync(a.rootfs))
    return { name, ok: false, required: false, detail: "not built yet", fix: "npm run guest" };
  try {
    const gi = guestInputs(root);
    const stale: string[] = [];
    if (
      basename(dirname(realpathSync(a.kernel))) !==
      kernelKeys({ fragment: gi.kernelFragment, patchesDir: gi.patchesDir }).key
    )
      stale.push("kernel");
    const imageKeyNow = basename(dirname(realpathSync(a.rootfs)));
    // The guest's crun is built into the cache; without a build for today's inputs the image is stale.
    const crun = builtCrun(dirname(a.dir));
    const busybox = builtBusybox(dirname(a.dir));
    if (!crun) stale.push("crun");
    if (!busybox) stale.push("busybox");
    if (
      crun &&
      busybox &&
      imageKeyNow !== imageRecipe(root, undefined, crun, busybox).key &&
      imageKeyNow !== imageRecipe(root, "lz4hc", crun, busybox).key
    )
      stale.push("image");
    return stale.length
      ? {
          name,
          ok: false,
          required: false,
          detail: `${stale.join(" and ")} built from older inputs`,
          fix: "npm run guest",
        }
      : { name, ok: true, required: false, detail: "kernel and image match the checkout's inputs" };
  } catch (e) {
    return {
      name,
      ok: false,
      required: false,
      detail: `cannot tell: ${errorMessage(e).split("\n")[0]}`,
      fix: "npm run guest",
    };
  }
}

/** Whether the containerd found on PATH has a CRI handler running cove, and its name(s). */
export function containerdRuntimeCheck(configPath = DEFAULT_CONTAINERD_CONFIG): CheckResult {
  const name = "cove in containerd";
  const bin = which("containerd", `${process.env.PATH ?? ""}:/usr/sbin:/sbin`);
  const version = bin ? containerdVersion(bin) : undefined;
  const major = version ? Number(version.split(".")[0]) : undefined;
  const snippet = `deploy/containerd/${major !== undefined && major >= 2 ? "config-v3.toml" : "config.toml"}`;
  const who = `containerd${version ? ` ${version}` : ""}`;
  const fix = `merge ${snippet} into ${configPath} (or: cove install), then restart containerd`;
  if (!existsSync(configPath)) {
    return { name, ok: false, required: false, detail: `${who}: no ${configPath}, so no cove runtime handler`, fix };
  }
  try {
    const c = coveRuntimeConfig(configPath);
    const where = `${configPath} (config version ${c.version}${c.files.length > 1 ? `, ${c.files.length - 1} import(s)` : ""})`;
    if (c.handlers.length === 0) {
      return {
        name,
        ok: false,
        required: false,
        detail: `${who}: ${where} has no runtime with runtime_type = "io.containerd.cove.v2"`,
        fix,
      };
    }
    const list = c.handlers.map((h) => `"${h}"`).join(", ");
    const detail = `${who}: ${where}: CRI handler ${list} runs cove (RuntimeClass handler: ${c.handlers[0]})`;
    if (c.version >= 3 && major !== undefined && major < 2) {
      return {
        name,
        ok: false,
        required: false,
        detail: `${detail}, but ${who} cannot read config version ${c.version}`,
        fix,
      };
    }
    return { name, ok: true, required: false, detail };
  } catch (e) {
    return {
      name,
      ok: false,
      required: false,
      detail: `cannot read ${configPath}: ${errorMessage(e).split("\n")[0]}`,
      fix,
    };
  }
}

/** The cove config the shim would read, as a check (a config the shim would refuse is missing). */
function configCheck(sources: ConfigSources): { result: CheckResult; config: CoveConfig } {
  try {
    const e = effectiveConfig(sources);
    return {
      result: { name: "cove config", ok: true, required: true, detail: `${e.config.source} (${e.how})` },
      config: e.config,
    };
  } catch (err) {
    return {
      result: {
        name: "cove config",
        ok: false,
        required: true,
        detail: errorMessage(err),
        fix: "fix the file named (config/cove.toml in the checkout lists every key)",
      },
      config: { ...defaultConfig(), source: "built-in defaults (the file could not be read)" },
    };
  }
}

export function runChecks(sources: ConfigSources = {}): CheckResult[] {
  // What the shim reads: its config's guest artifacts and cache_dir, not $COVE_CACHE_DIR.
  const cfg = configCheck(sources);
  const config = cfg.config;
  const a = { ...guestArtifacts(config.cacheDir), kernel: config.guest.kernel, rootfs: config.guest.image };
  let root: string | undefined;
  try {
    root = repoRoot();
  } catch {
    root = undefined;
  }
  // An installed prefix (cove install) has the runtime's files but no sources to build from.
  const checkout = root !== undefined && existsSync(join(root, "src"));
  const buildGuest = checkout
    ? "npm run guest   # or: cove guest build"
    : "cove install from a checkout with a built guest";
  const host = probeHost();
  const r: CheckResult[] = [
    cfg.result,
    artifact("guest kernel", a.kernel, true, buildGuest),
    artifact("guest image", a.rootfs, true, buildGuest),
    ...hostChecks(config, host),
    program("containerd", "containerd", "containerd", true),
    containerdRuntimeCheck(process.env.COVE_CONTAINERD_CONFIG || DEFAULT_CONTAINERD_CONFIG),
  ];
  const crun = program("OCI runtime", "crun", "crun", true);
  r.push(crun.ok ? crun : program("OCI runtime", "runc", "crun", true));
  r.push(program("erofs-utils", "mkfs.erofs", "erofs-utils", true, ["-V"]));
  r.push(
    existsSync(LINUX_SOURCE_TARBALL)
      ? { name: "kernel source", ok: true, required: false, detail: LINUX_SOURCE_TARBALL }
      : {
          name: "kernel source",
          ok: false,
          required: !existsSync(a.kernel),
          detail: `${LINUX_SOURCE_TARBALL} missing (needed to build the guest kernel)`,
          fix: "apt-get install -y linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev",
        },
  );
  if (root && checkout) r.push(pinnedNodeCheck(root), freshness(a, root));
  r.push(kvm(host));
  if (root) {
    r.push(
      artifact(
        "native addon",
        join(root, "build/Release/cove_native.node"),
        true,
        `cd ${root} && npx node-gyp rebuild`,
      ),
    );
    if (checkout) r.push(artifact("bundles", join(root, "dist/agent.cjs"), true, `cd ${root} && npm run build`));
  }
  const shim = which("containerd-shim-cove-v2");
  r.push(
    shim
      ? { name: "shim on PATH", ok: true, required: true, detail: shim }
      : {
          name: "shim on PATH",
          ok: false,
          required: true,
          detail: "containerd-shim-cove-v2 not on PATH (containerd looks it up there)",
          fix: "cove install   # from a checkout: bin/cove install",
        },
  );
  return r;
}

export function formatChecks(results: CheckResult[]): string {
  const w = Math.max(...results.map((c) => c.name.length));
  const lines: string[] = [];
  for (const c of results) {
    const status = c.ok ? "ok     " : c.required ? "MISSING" : "warn   ";
    lines.push(`${status}  ${c.name.padEnd(w)}  ${c.detail}`);
    if (!c.ok && c.fix) lines.push(`${" ".repeat(w + 11)}fix: ${c.fix}`);
  }
  const missing = results.filter((c) => !c.ok && c.required).length;
  lines.push(missing ? `\n${missing} required item(s) missing.` : "\neverything required is present.");
  return `${lines.join("\n")}\n`;
}

export const checkCommand: Command = {
  path: ["check"],
  summary: "report what cove needs that is present or missing, with the command that fixes each",
  usage: `cove check [--json] [--config FILE]

Checks the pinned Node (in a checkout). Reads the cove config the shim would read (the ConfigPath of containerd's cove runtime, else
$COVE_CONFIG, else /etc/cove/cove.toml, else the defaults; or --config FILE) and checks what it
names — the guest kernel and image, cache_dir's guest build — and what the runtime needs on this
host: the backend the \`hypervisor\` setting picks (KVM with hardware virtualization, or QEMU), /dev/net/tun,
tc and nsenter (ingress qdisc, u32, mirred), cgroups; containerd and whether its config
(/etc/containerd/config.toml, or $COVE_CONTAINERD_CONFIG) has a CRI handler running cove, crun/runc,
erofs-utils, the kernel source, /dev/kvm (hardware or PVM), the native addon, the bundles and the
shim on PATH. Prints the command that fixes each missing item. Exit 1 if a required item is missing.`,
  async run(args) {
    const { values } = parseArgs({
      args,
      options: { json: { type: "boolean" }, config: { type: "string" } },
      strict: true,
    });
    const results = runChecks(values.config ? { configPath: values.config } : {});
    process.stdout.write(values.json ? `${JSON.stringify(results, null, 2)}\n` : formatChecks(results));
    return results.some((c) => !c.ok && c.required) ? 1 : 0;
  },
};
