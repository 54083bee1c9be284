// Bundles the entry points into dist/ (fast start for the shim binary; one file for the guest agent).
import { build } from "esbuild";
import { parseProtoDir } from "../src/proto/root.ts";

const protoJson = parseProtoDir("proto").toJSON({ keepComments: false });

const entries = {
  "containerd-shim-cove-v2": "src/shim/main.ts",
  cove: "src/cli/main.ts",
  agent: "agent/src/main.ts",
};

await Promise.all(
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
      // import.meta.url is only used behind a __filename check (src/native/load.ts).
      logOverride: { "empty-import-meta": "silent" },
      // Parsed protos baked in, so no .proto parsing at process start (src/proto/root.ts).
      define: { __COVE_PROTO_JSON__: JSON.stringify(protoJson) },
    }),
  ),
);
