// Builds the native addon (`node-gyp rebuild`; npm runs this as the package's install script)
// against the headers of the Node running it, when that Node ships them beside its binary
// (<prefix>/include/node: Node's own builds, the pinned install, Debian's nodejs with its headers),
// so no header download from nodejs.org is needed. The addon uses N-API (NAPI_VERSION in
// binding.gyp) and libuv 1.x only, so one build loads in every Node that has that N-API version.
import { spawnSync } from "node:child_process";
import { existsSync, realpathSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const prefix = dirname(dirname(realpathSync(process.execPath)));
// Through the environment, not --nodedir: node-gyp lets npm_config_* variables (npm sets them from
// every npmrc, e.g. a user's nodedir=) override its command line.
const env = existsSync(join(prefix, "include/node/node_api.h"))
  ? { ...process.env, npm_config_nodedir: prefix }
  : process.env;
const nodeGyp = createRequire(import.meta.url).resolve("node-gyp/bin/node-gyp.js");
const r = spawnSync(process.execPath, [nodeGyp, "rebuild"], { stdio: "inherit", env });
process.exit(r.status ?? 1);
