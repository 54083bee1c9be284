// `-info` (src/shim/info.ts): a RuntimeInfo as containerd's api/types/introspection.proto defines it
// (decoded here with proto/containerd/types/introspection.proto), whose features are the JSON the
// guest image build captured from the guest's crun, under containerd's type URL for them.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { messageType } from "../../../src/proto/root.ts";
import { FEATURES_TYPE_URL, RUNTIME_FEATURES_FILE, runtimeInfo } from "../../../src/shim/info.ts";

const encode = (name: string, obj: Record<string, unknown>) => {
  const T = messageType(name);
  return T.encode(T.fromObject(obj)).finish();
};

function guestCache(features?: object) {
  const root = mkdtempSync(join(tmpdir(), "cove-info-"));
  const built = join(root, "image", "k1");
  mkdirSync(built, { recursive: true });
  writeFileSync(join(built, "rootfs.erofs"), "");
  if (features) writeFileSync(join(built, RUNTIME_FEATURES_FILE), JSON.stringify(features));
  mkdirSync(join(root, "guest"));
  // The config names the published symlink; the features sit beside the image it points at.
  symlinkSync(join(built, "rootfs.erofs"), join(root, "guest", "rootfs.erofs"));
  const cfg = join(root, "cove.toml");
  writeFileSync(cfg, `[guest]\nimage = "${join(root, "guest", "rootfs.erofs")}"\n`);
  const stdin = encode("google.protobuf.Any", {
    type_url: "runtimeoptions.v1.Options",
    value: encode("runtimeoptions.v1.Options", { config_path: cfg }),
  });
  return { root, stdin };
}

test("-info prints a RuntimeInfo with the guest runtime's features and the options it was given", () => {
  const features = {
    ociVersionMin: "1.0.0",
    ociVersionMax: "1.1.0+dev",
    linux: { namespaces: ["cgroup", "user"], mountExtensions: { idmap: { enabled: true } } },
    annotations: { "run.oci.crun.version": "1.21" },
  };
  const { root, stdin } = guestCache(features);
  try {
    const T = messageType("containerd.types.RuntimeInfo");
    const info = T.toObject(T.decode(runtimeInfo(stdin)), { bytes: Buffer }) as {
      name: string;
      version: { version: string };
      options: { type_url: string };
      features: { type_url: string; value: Buffer };
    };
    assert.equal(info.name, "io.containerd.cove.v2");
    assert.match(info.version.version, /^\d+\.\d+\.\d+/);
    assert.equal(info.options.type_url, "runtimeoptions.v1.Options");
    assert.equal(info.features.type_url, FEATURES_TYPE_URL);
    assert.deepEqual(JSON.parse(info.features.value.toString()), features);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("-info fails, saying what to do, when the guest image has no captured features", () => {
  const { root, stdin } = guestCache();
  try {
    assert.throws(() => runtimeInfo(stdin), /no readable runtime features.*cove guest build/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
