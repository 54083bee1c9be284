// One protobufjs Root holding every .proto file under proto/ (the project's own copies of
// containerd's, ttrpc's and the agent's definitions). Bundles get the parsed root baked in at build
// time (scripts/build.mjs defines __COVE_PROTO_JSON__), so the shim does not parse .proto at start;
// from source (tsx, tests) the files are parsed once, lazily.
import { existsSync, readdirSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";

declare const __COVE_PROTO_JSON__: protobuf.INamespace | undefined;

const here: string = typeof __filename !== "undefined" ? dirname(__filename) : dirname(fileURLToPath(import.meta.url));

/** The proto/ directory when running from source (src/proto/ → ../../proto). */
export function protoDir(): string {
  const candidates = [join(here, "..", "..", "proto"), join(here, "..", "proto"), join(here, "proto")];
  const dir = candidates.find((d) => existsSync(join(d, "ttrpc")));
  if (!dir) throw new Error(`proto/ directory not found (looked in ${candidates.join(", ")})`);
  return dir;
}

function protoFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (name.endsWith(".proto")) out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out;
}

/** Parses every .proto under dir into a fresh Root (imports resolve relative to dir). */
export function parseProtoDir(dir: string): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (target.startsWith("/") ? target : join(dir, target));
  root.loadSync(protoFiles(dir), { keepCase: true });
  root.resolveAll();
  return root;
}

let cached: protobuf.Root | undefined;

export function root(): protobuf.Root {
  if (cached) return cached;
  let r: protobuf.Root;
  if (typeof __COVE_PROTO_JSON__ !== "undefined" && __COVE_PROTO_JSON__) {
    r = protobuf.Root.fromJSON(__COVE_PROTO_JSON__);
    r.resolveAll();
  } else {
    r = parseProtoDir(protoDir());
  }
  cached = r;
  return r;
}

/** A message type by its full name, e.g. "containerd.task.v2.CreateTaskRequest". */
export function messageType(fullName: string): protobuf.Type {
  return root().lookupType(fullName);
}
