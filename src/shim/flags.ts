// The shim's command line, parsed the way Go's `flag` package does for containerd's shims:
// `-name value`, `-name=value`, `--name value`, boolean `-debug` / `-debug=true`; parsing stops at the
// first non-flag argument, which is the action (`start`, `delete`, or none = serve as the daemon).

export interface ShimFlags {
  namespace: string;
  address: string;
  publishBinary: string;
  id: string;
  bundle: string;
  /** The socket address the daemon serves on (set by `start` when it re-executes itself). */
  socket: string;
  debug: boolean;
  version: boolean;
  info: boolean;
  /** cove's own: the cove.toml path taken from the start options, handed to the daemon. */
  configPath: string;
  action: "start" | "delete" | "serve";
}

const STRING_FLAGS = {
  namespace: "namespace",
  address: "address",
  "publish-binary": "publishBinary",
  id: "id",
  bundle: "bundle",
  socket: "socket",
  "config-path": "configPath",
} as const;
const BOOL_FLAGS = { debug: "debug", v: "version", info: "info" } as const;

export class FlagError extends Error {}

export function parseFlags(argv: readonly string[]): ShimFlags {
  const f: ShimFlags = {
    namespace: "",
    address: "",
    publishBinary: "",
    id: "",
    bundle: "",
    socket: "",
    debug: false,
    version: false,
    info: false,
    configPath: "",
    action: "serve",
  };
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") {
      i++;
      break;
    }
    if (!arg.startsWith("-") || arg === "-") break;
    const body = arg.replace(/^--?/, "");
    const eq = body.indexOf("=");
    const name = eq >= 0 ? body.slice(0, eq) : body;
    const inline = eq >= 0 ? body.slice(eq + 1) : undefined;
    if (name in BOOL_FLAGS) {
      const key = BOOL_FLAGS[name as keyof typeof BOOL_FLAGS];
      if (inline === undefined || inline === "true" || inline === "1") f[key] = true;
      else if (inline === "false" || inline === "0") f[key] = false;
      else throw new FlagError(`invalid boolean value "${inline}" for -${name}`);
    } else if (name in STRING_FLAGS) {
      const key = STRING_FLAGS[name as keyof typeof STRING_FLAGS];
      let value = inline;
      if (value === undefined) {
        if (i + 1 >= argv.length) throw new FlagError(`flag needs an argument: -${name}`);
        value = argv[++i]!;
      }
      f[key] = value;
    } else {
      throw new FlagError(`flag provided but not defined: -${name}`);
    }
  }
  const rest = argv.slice(i);
  if (rest.length > 0) {
    const action = rest[0];
    if (action !== "start" && action !== "delete") throw new FlagError(`unknown action "${action}"`);
    f.action = action;
  }
  return f;
}

/** The daemon's argv: the same identity flags, plus where to serve, without an action. */
export function daemonArgs(f: ShimFlags, socket: string, configPath: string): string[] {
  const a = ["-namespace", f.namespace, "-id", f.id, "-address", f.address];
  if (f.publishBinary) a.push("-publish-binary", f.publishBinary);
  a.push("-socket", socket);
  if (configPath) a.push("-config-path", configPath);
  if (f.debug) a.push("-debug");
  return a;
}
