// Bundles the entry points into dist/ (fast start for the shim binary; one file for the guest agent).
import { build } from "esbuild";
import { parseProtoDir } from "../src/proto/root.ts";

const protoJson = parseProtoDir("proto").toJSON({ keepComments: false });

const SHIM = "containerd-shim-cove-v2";
const entries = {
  [SHIM]: "src/shim/main.ts",
  cove: "src/cli/main.ts",
  agent: "agent/src/main.ts",
};

// The shim is one long-lived process per pod: V8 keeps its whole bundle's source in memory (1.8 MB
// of it cost 8 MiB of anonymous memory in each shim). Whitespace and syntax minified, identifiers
// kept (function names in stack traces; positions map back through the linked source map), it
// costs 5 MiB (docs/density.md).
const lean = { minifyWhitespace: true, minifySyntax: true };

// What the daemon bundle must never carry: the CLI, guest image building, tests and tools.
const NOT_IN_SHIM =
  /^(src\/cli\/|src\/guest\/(build|busybox|image|kernel|node-pin|progress|publish|rootfs)\.ts|test\/|tools\/|scripts\/|agent\/)/;

const results = await Promise.all(
  Object.entries(entries).map(([name, entry]) =>
    build({
      entryPoints: [entry],
      outfile: `dist/${name}.cjs`,
      bundle: true,
      platform: "node",
      target: "node20",
      format: "cjs",
      sourcemap: "linked",
      logLevel: "warning",
      metafile: name === SHIM,
      ...(name === SHIM ? lean : {}),
      // import.meta.url is only used behind a __filename check (src/native/load.ts).
      logOverride: { "empty-import-meta": "silent" },
      // Parsed protos baked in, so no .proto parsing at process start (src/proto/root.ts).
      define: { __COVE_PROTO_JSON__: JSON.stringify(protoJson) },
    }),
  ),
);

const shimInputs = Object.keys(results[Object.keys(entries).indexOf(SHIM)].metafile.inputs);
const stray = shimInputs.filter((f) => NOT_IN_SHIM.test(f));
if (stray.length) {
  console.error(`dist/${SHIM}.cjs must not bundle CLI, image-building, test or tool code: ${stray.join(", ")}`);
  process.exit(1);
}
