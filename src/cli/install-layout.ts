// What an installed cove is: one prefix (default /opt/cove) holding what the node needs and nothing
// of the checkout's build tooling, laid out like the checkout so the same code runs from either:
//
//   <prefix>/bin/{cove,containerd-shim-cove-v2}   the sh wrappers (they prefer <prefix>/bin/node)
//   <prefix>/bin/node                             the Node that runs them (the host needs none)
//   <prefix>/dist/{cove,containerd-shim-cove-v2}.cjs   the bundles
//   <prefix>/build/Release/cove_native.node       the addon (found beside ../build from dist/)
//   <prefix>/config/cove.toml, deploy/containerd/*.toml   defaults and containerd snippets
//   <prefix>/share/guest/{kernel,rootfs.erofs,runtime-features.json}   the guest artifacts
//   <prefix>/package.json                         names the tree "cove" (repoRoot() finds it)
//   <prefix>/install.json                         what install changed outside the prefix
import { existsSync, realpathSync } from "node:fs";
import { dirname, join } from "node:path";
import { RUNTIME_FEATURES_FILE } from "../guest/crun.ts";
import { cacheDir, guestArtifacts } from "../guest/paths.ts";

export const DEFAULT_PREFIX = "/opt/cove";
export const DEFAULT_BIN_DIR = "/usr/local/bin";
export const SHIM_NAME = "containerd-shim-cove-v2";
/** The commands linked into the bin dir. */
export const LINKED = [SHIM_NAME, "cove"] as const;
export const STATE_FILE = "install.json";

/** Files copied from the source tree (a checkout or an installed prefix), relative to both. */
export const TREE_FILES: readonly { path: string; optional?: boolean }[] = [
  { path: "bin/cove" },
  { path: `bin/${SHIM_NAME}` },
  { path: "dist/cove.cjs" },
  { path: `dist/${SHIM_NAME}.cjs` },
  { path: "dist/cove.cjs.map", optional: true },
  { path: `dist/${SHIM_NAME}.cjs.map`, optional: true },
  { path: "build/Release/cove_native.node" },
  { path: "config/cove.toml" },
  { path: "deploy/containerd/config.toml" },
  { path: "deploy/containerd/config-v3.toml" },
];

export const GUEST_DIR = "share/guest";

/** The guest artifacts to install, from an installed prefix's share/guest or the build's cache. */
export function guestSources(root: string, env: NodeJS.ProcessEnv = process.env): { path: string; from: string }[] {
  const installed = join(root, GUEST_DIR);
  const a = existsSync(join(installed, "kernel"))
    ? { kernel: join(installed, "kernel"), rootfs: join(installed, "rootfs.erofs") }
    : guestArtifacts(cacheDir(env));
  const out = [
    { path: `${GUEST_DIR}/kernel`, from: a.kernel },
    { path: `${GUEST_DIR}/rootfs.erofs`, from: a.rootfs },
  ];
  // -info reads the guest runtime's features beside the image (src/shim/info.ts).
  const features = existsSync(a.rootfs) ? join(dirname(realpathSync(a.rootfs)), RUNTIME_FEATURES_FILE) : "";
  if (features && existsSync(features)) out.push({ path: `${GUEST_DIR}/${RUNTIME_FEATURES_FILE}`, from: features });
  return out;
}

/** What install records in <prefix>/install.json, so that uninstall undoes exactly that. */
export interface InstallState {
  /** Files written under the prefix, relative to it. */
  files: string[];
  /** Symlinks made in the bin dir (absolute). */
  links: string[];
  /** The cove config install created (removed on uninstall if still as written). */
  coveConfig?: { path: string; text: string };
  /** containerd configs changed: the exact text appended, or the whole file if install created it. */
  containerd: { path: string; created: boolean; added: string }[];
}
