// What the node installer image is: its reference, its entry point and the files it carries.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "../../src/guest/paths.ts";

const version = (JSON.parse(readFileSync(join(repoRoot(), "package.json"), "utf8")) as { version: string }).version;

/** No registry is assumed: the image is imported into each node's containerd under this name. */
export const IMAGE_REF = `localhost/cove/node-installer:${version}`;
/** The entry point (tools/node-installer/entrypoint.sh). */
export const ENTRYPOINT = "/usr/bin/cove-node-installer";
/** Written in the container once the node is installed and labelled: the readiness probe reads it. */
export const READY_FILE = "/run/cove-node-installer.installed";
