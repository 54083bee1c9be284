// The pinned Node (deploy/nodejs.env): the version scripts/install-node.sh installs on the host and
// the binary the guest image takes, whatever `node` the host's PATH finds.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

export interface NodePin {
  version: string;
  /** The install's prefix: <prefix>/bin/node. */
  prefix: string;
}

/** Parses deploy/nodejs.env: KEY=value lines, # comments. */
export function parseNodePin(text: string, env: NodeJS.ProcessEnv = process.env): NodePin {
  const vars = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^([A-Z_]+)=(\S*)\s*$/.exec(line);
    if (m) vars.set(m[1]!, m[2]!);
  }
  const version = vars.get("NODE_VERSION");
  const root = env.COVE_NODE_ROOT || vars.get("NODE_ROOT");
  if (!version || !/^\d+\.\d+\.\d+$/.test(version) || !root)
    throw new Error("nodejs.env: NODE_VERSION or NODE_ROOT missing");
  return { version, prefix: join(root, `node-v${version}`) };
}

/** The pinned node binary; throws naming the command that installs it. */
export function pinnedNode(pinFile: string, env: NodeJS.ProcessEnv = process.env): { path: string; version: string } {
  const pin = parseNodePin(readFileSync(pinFile, "utf8"), env);
  const path = join(pin.prefix, "bin/node");
  if (!existsSync(path))
    throw new Error(`the pinned Node v${pin.version} is not installed at ${path}: run scripts/install-node.sh`);
  return { path, version: pin.version };
}
