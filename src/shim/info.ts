// `containerd-shim-cove-v2 -info`: reads the runtime options Any on stdin and prints a
// containerd.types.RuntimeInfo (containerd's api/types/introspection.proto). containerd 2.x runs it
// through its introspection service (PluginInfo) and before creating a task whose spec uses idmap
// mounts. The OCI features are the guest runtime's own `crun features` output, captured when the
// guest image was built (src/guest/crun.ts) and kept beside the image, so they describe the runtime
// that really runs the containers, not the host's.
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { dirname, join } from "node:path";
import protobuf from "protobufjs/minimal.js";
import { errorMessage } from "../common/errors.ts";
import { loadConfig } from "../config/config.ts";
import { RUNTIME_FEATURES_FILE } from "../guest/crun.ts";
import { decodeStartOptions } from "./options.ts";
import { VERSION } from "./version.ts";

export const RUNTIME_NAME = "io.containerd.cove.v2";
/** The type URL containerd registers for runtime-spec's features.Features (typeurl, JSON-encoded). */
export const FEATURES_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/features/Features";
export { RUNTIME_FEATURES_FILE };

/** Where the features of the guest image at `image` (a path or the published symlink) are. */
export function runtimeFeaturesPath(image: string): string {
  return join(dirname(existsSync(image) ? realpathSync(image) : image), RUNTIME_FEATURES_FILE);
}

function writeAny(w: protobuf.Writer, field: number, typeUrl: string, value: Uint8Array): void {
  w.uint32((field << 3) | 2)
    .fork()
    .uint32((1 << 3) | 2)
    .string(typeUrl)
    .uint32((2 << 3) | 2)
    .bytes(value)
    .ldelim();
}

/**
 * RuntimeInfo{name=1, version=2 RuntimeVersion{version=1, revision=2}, options=3 Any, features=4
 * Any}: options echo what came on stdin (an Any), features are the runtime's features JSON.
 */
export function encodeRuntimeInfo(features: Uint8Array, options?: Uint8Array): Uint8Array {
  const w = protobuf.Writer.create();
  w.uint32((1 << 3) | 2).string(RUNTIME_NAME);
  w.uint32((2 << 3) | 2)
    .fork()
    .uint32((1 << 3) | 2)
    .string(VERSION)
    .ldelim();
  // The stdin Any's bytes are the Any message itself: embed them as field 3.
  if (options && options.length > 0) w.uint32((3 << 3) | 2).bytes(options);
  writeAny(w, 4, FEATURES_TYPE_URL, features);
  return w.finish();
}

/** The whole -info action: stdin (options Any or empty) → the RuntimeInfo bytes to print. */
export function runtimeInfo(stdin: Uint8Array): Uint8Array {
  const opts = decodeStartOptions(stdin, "");
  const image = loadConfig({ configPath: opts.configPath }).guest.image;
  const path = runtimeFeaturesPath(image);
  let features: unknown;
  try {
    features = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new Error(
      `the guest image ${image} has no readable runtime features (${path}: ${errorMessage(e)}); rebuild it with \`cove guest build\``,
    );
  }
  return encodeRuntimeInfo(Buffer.from(JSON.stringify(features)), opts.form === "any" ? stdin : undefined);
}
