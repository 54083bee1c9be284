// The node installer's program (bundled as <payload>/node-installer.cjs). entrypoint.sh runs it
// chrooted into the node's root, with the payload's own Node, so that `cove install` runs on the
// node exactly as an operator's would: same paths, the node's containerd and systemd.
//   node-installer.cjs install [cove install args]      cove install, then label the node
//   node-installer.cjs uninstall [cove uninstall args]  unlabel the node, then cove uninstall
// Environment: NODE_NAME (the downward API), KUBERNETES_SERVICE_HOST/PORT (kubelet), COVE_SA_DIR
// (the service account's token and CA, as entrypoint.sh mounted them), COVE_RESTART_CONTAINERD
// ("true": restart containerd when its config changes) and COVE_RESTART_COMMAND (how).
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import {
  inClusterApi,
  type LabelOptions,
  NODE_LABEL,
  NODE_LABEL_VALUE,
  SERVICE_ACCOUNT_DIR,
  setNodeLabel,
} from "./label.ts";

/** Restarts the node's containerd from inside the chroot: systemctl refuses to act in a chroot,
 * so it runs in the mount namespace of the node's init (the node's /proc is the chroot's). */
export const DEFAULT_RESTART_COMMAND = "nsenter --target 1 --mount -- systemctl restart containerd";

/** The `cove install|uninstall` arguments: the caller's, plus the restart command when configured. */
export function coveArgs(verb: "install" | "uninstall", args: string[], env: NodeJS.ProcessEnv): string[] {
  const out = [verb, ...args];
  const restart = env.COVE_RESTART_CONTAINERD ?? "false";
  if (restart !== "true" && restart !== "false")
    throw new Error(`COVE_RESTART_CONTAINERD is ${JSON.stringify(restart)}: "true" or "false"`);
  const given = args.some((a) => a === "--restart-containerd" || a.startsWith("--restart-command"));
  if (restart === "true" && !given) out.push("--restart-command", env.COVE_RESTART_COMMAND || DEFAULT_RESTART_COMMAND);
  return out;
}

export interface RunOptions {
  env: NodeJS.ProcessEnv;
  /** The payload (an installed-prefix layout) whose bin/cove runs. */
  payload: string;
  log: (line: string) => void;
  label?: LabelOptions;
}

function runCove(opts: RunOptions, args: string[]): number {
  const cove = join(opts.payload, "bin", "cove");
  opts.log(`cove ${args.join(" ")}`);
  const r = spawnSync(cove, args, { stdio: "inherit", env: opts.env });
  if (r.error) throw new Error(`${cove}: ${r.error.message}`);
  return r.status ?? 128;
}

/** Labels (value "true") or unlabels (null) the node; says so and does nothing outside a pod. */
async function label(opts: RunOptions, value: string | null): Promise<void> {
  const api = inClusterApi(opts.env, opts.env.COVE_SA_DIR || SERVICE_ACCOUNT_DIR);
  if (!api) {
    opts.log("not in a Kubernetes pod (no KUBERNETES_SERVICE_HOST): no node label");
    return;
  }
  const node = opts.env.NODE_NAME;
  if (!node) throw new Error("NODE_NAME is not set (the DaemonSet sets it from spec.nodeName)");
  await setNodeLabel(api, node, value, opts.label);
  opts.log(
    value === null ? `node ${node}: label ${NODE_LABEL} removed` : `node ${node}: labelled ${NODE_LABEL}=${value}`,
  );
}

export async function run(argv: string[], opts: RunOptions): Promise<number> {
  const [verb, ...args] = argv;
  if (verb === "install") {
    const code = runCove(opts, coveArgs("install", args, opts.env));
    if (code !== 0) return code;
    await label(opts, NODE_LABEL_VALUE);
    return 0;
  }
  if (verb === "uninstall") {
    // The label goes first, so that no new cove pod is scheduled here while cove is being removed;
    // a failure to remove it does not keep cove installed.
    let labelError: Error | undefined;
    await label(opts, null).catch((e: Error) => {
      labelError = e;
    });
    const code = runCove(opts, coveArgs("uninstall", args, opts.env));
    if (labelError) throw labelError;
    return code;
  }
  opts.log("usage: node-installer.cjs install|uninstall [cove install|uninstall arguments]");
  return 2;
}

// Run as the bundle (not when a test imports this module).
if (process.argv[1]?.endsWith("node-installer.cjs")) {
  const log = (l: string) => process.stdout.write(`cove-node-installer: ${l}\n`);
  run(process.argv.slice(2), { env: process.env, payload: dirname(process.argv[1]), log }).then(
    (code) => process.exit(code),
    (e: Error) => {
      log(`error: ${e.message}`);
      process.exit(1);
    },
  );
}
