// TypeScript types of every message under proto/, generated with protobufjs-cli (pbjs static code,
// then pbts declarations) into src/proto/generated/protos.d.ts. Types only: at run time the ttrpc
// codec works from the reflected root (src/proto/root.ts), so code imports these with `import type`
// and no generated JavaScript ships. The options match the codec's toObject contract
// (src/ttrpc/codec.ts): field names as written in the .proto (keepCase), 64-bit integers as numbers.
// Built, not committed: `npm run build`, `lint` and `typecheck` run this first; it is skipped when
// the .proto files, this script and protobufjs-cli are unchanged.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..");
const protoDir = join(repo, "proto");
const outDir = join(repo, "src", "proto", "generated");
const out = join(outDir, "protos.d.ts");
const stamp = join(outDir, "protos.stamp");

function protoFiles(dir) {
  const files = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) files.push(...protoFiles(p));
    else if (name.endsWith(".proto")) files.push(relative(protoDir, p));
  }
  return files;
}

const require = createRequire(import.meta.url);
const cliPkg = require.resolve("protobufjs-cli/package.json");
const cliDir = dirname(cliPkg);
const files = protoFiles(protoDir);
const hash = createHash("sha256");
hash.update(readFileSync(fileURLToPath(import.meta.url)));
hash.update(readFileSync(cliPkg));
for (const f of files) hash.update(`${f}\0`).update(readFileSync(join(protoDir, f)));
const key = hash.digest("hex");

if (existsSync(out) && existsSync(stamp) && readFileSync(stamp, "utf8") === key) process.exit(0);

/**
 * pbts types a message class's nested messages as their `$Properties` (every field optional). The
 * codec decodes with defaults, so a nested message has every field too: in class bodies (the shapes
 * of decoded messages), nested messages get their class type. `$Properties` stays what is sent.
 */
function decodedNested(dts) {
  let classEnd;
  return dts
    .split("\n")
    .map((line) => {
      if (classEnd === undefined) {
        const m = /^(\s*)class \w+ \{$/.exec(line);
        if (m) classEnd = `${m[1]}}`;
        return line;
      }
      if (line === classEnd) classEnd = undefined;
      else if (!line.includes("constructor(")) return line.replace(/\.\$Properties\b/g, "");
      return line;
    })
    .join("\n");
}

/**
 * `$Services`: for each service, each method's request and response, as decoded (`request`,
 * `response`) and as sent (`requestInit`, `responseInit`). Typed handlers and clients are keyed by it.
 * `$Messages`: every message by its full name, as decoded (`decoded`) and as sent (`init`), for
 * messages named at run time (events, Any payloads).
 */
function serviceMap() {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (target.startsWith("/") ? target : join(protoDir, target));
  root.loadSync(files, { keepCase: true }).resolveAll();
  const out = ["export interface $Services {"];
  const messages = ["export interface $Messages {"];
  const walk = (ns) => {
    for (const o of ns.nestedArray) {
      if (o instanceof protobuf.Type) {
        const name = o.fullName.slice(1);
        messages.push(`    "${name}": { decoded: ${name}; init: ${name}.$Properties };`);
      }
      if (o instanceof protobuf.Service) {
        out.push(`    "${o.fullName.slice(1)}": {`);
        for (const [name, m] of Object.entries(o.methods)) {
          const req = m.resolvedRequestType.fullName.slice(1);
          const res = m.resolvedResponseType.fullName.slice(1);
          out.push(
            `        ${name}: { request: ${req}; requestInit: ${req}.$Properties; response: ${res}; responseInit: ${res}.$Properties };`,
          );
        }
        out.push("    };");
      } else if (o.nestedArray) walk(o);
    }
  };
  walk(root);
  out.push("}", "", ...messages, "}", "");
  return out.join("\n");
}

const tmp = mkdtempSync(join(tmpdir(), "cove-proto-"));
try {
  const js = join(tmp, "protos.js");
  const node = (script, args) =>
    execFileSync(process.execPath, [join(cliDir, "bin", script), ...args], { cwd: repo, stdio: "inherit" });
  // Only what pbts needs to see the message shapes: no encoders, decoders, converters or services.
  node("pbjs", [
    ...["-t", "static-module", "-w", "es6", "--keep-case", "--force-number"],
    ...["--no-create", "--no-encode", "--no-decode", "--no-verify", "--no-convert", "--no-delimited", "--no-service"],
    ...["-p", "proto", "-o", js, ...files], // files found through -p, as their imports are
  ]);
  node("pbts", ["--no-comments", "-o", join(tmp, "protos.d.ts"), js]);
  // With --force-number nothing refers to Long; its `import = require` does not type-check as ESM.
  const dts = readFileSync(join(tmp, "protos.d.ts"), "utf8").replace(/^import Long = require\("long"\);\n/m, "");
  mkdirSync(outDir, { recursive: true });
  writeFileSync(
    out,
    `// Generated by scripts/gen-proto.mjs from proto/: do not edit.\n${decodedNested(dts)}\n${serviceMap()}`,
  );
  writeFileSync(stamp, key);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
