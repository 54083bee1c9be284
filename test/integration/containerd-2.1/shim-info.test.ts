// containerd 2.1.9 runs `containerd-shim-cove-v2 -info` for its introspection service (PluginInfo of
// the runtime plugin, what clients ask about a runtime) and decodes the RuntimeInfo it prints: the
// guest runtime's features, as captured when the guest image was built, come back through containerd.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs";
import { guestArtifacts } from "../../../src/guest/paths.ts";
import { messageType } from "../../../src/proto/root.ts";
import { FEATURES_TYPE_URL, runtimeFeaturesPath } from "../../../src/shim/info.ts";
import { COVE_RUNTIME_TYPE, Containerd, REPO_ROOT } from "../../harness/containerd.ts";
import { requireIntegration } from "../../harness/skip.ts";

const art = guestArtifacts();
const skip = requireIntegration([
  { path: join(REPO_ROOT, "dist", "containerd-shim-cove-v2.cjs"), why: "the bundled shim (npm test builds first)" },
  { path: art.rootfs, why: "the guest image (npm run guest)" },
]);

const encode = (name: string, obj: Record<string, unknown>) => {
  const T = messageType(name);
  return T.encode(T.fromObject(obj)).finish();
};

describe("containerd 2.1.9 introspects the cove runtime through -info", { skip, timeout: 120_000 }, () => {
  let cd: Containerd;

  before(async () => {
    cd = await Containerd.start({ version: "2.1.9" });
  });

  after(async () => {
    await cd?.stop();
  });

  test("PluginInfo(io.containerd.runtime.v2, task) returns cove's RuntimeInfo with the guest crun's features", async () => {
    const cfg = join(cd.dir, "cove.toml");
    writeFileSync(cfg, `[guest]\nimage = "${art.rootfs}"\n`);
    // PluginInfoRequest{type=1, id=2, options=3 Any(RuntimeRequest{runtime_path=1, options=2})}
    // (containerd's api/services/introspection/v1/introspection.proto).
    const runtimeRequest = encode("containerd.types.RuntimeRequest", {
      runtime_path: COVE_RUNTIME_TYPE,
      options: {
        type_url: "runtimeoptions.v1.Options",
        value: encode("runtimeoptions.v1.Options", { config_path: cfg }),
      },
    });
    const w = protobuf.Writer.create();
    w.uint32(10).string("io.containerd.runtime.v2").uint32(18).string("task");
    w.uint32(26).fork().uint32(10).string("containerd.types.RuntimeRequest").uint32(18).bytes(runtimeRequest).ldelim();
    const request = Buffer.from(w.finish());

    const client = new grpc.Client(`unix://${cd.address}`, grpc.credentials.createInsecure());
    let response: Buffer;
    try {
      response = await new Promise<Buffer>((resolve, reject) =>
        client.makeUnaryRequest(
          "/containerd.services.introspection.v1.Introspection/PluginInfo",
          (b: Buffer) => b,
          (b: Buffer) => b,
          request,
          new grpc.Metadata(),
          { deadline: Date.now() + 30_000 },
          (e, r) => (e ? reject(e) : resolve(r!)),
        ),
      );
    } finally {
      client.close();
    }
    // PluginInfoResponse.extra (field 2) is an Any holding the RuntimeInfo.
    const r = protobuf.Reader.create(response);
    let extra: Uint8Array | undefined;
    while (r.pos < r.len) {
      const tag = r.uint32();
      if (tag >>> 3 === 2) extra = r.bytes();
      else r.skipType(tag & 7);
    }
    assert.ok(extra, "PluginInfoResponse carries extra");
    const any = messageType("google.protobuf.Any").decode(extra) as unknown as { type_url: string; value: Uint8Array };
    assert.match(any.type_url, /containerd\.types\.RuntimeInfo$/);
    const T = messageType("containerd.types.RuntimeInfo");
    const info = T.toObject(T.decode(any.value), { bytes: Buffer }) as {
      name: string;
      features: { type_url: string; value: Buffer };
    };
    assert.equal(info.name, COVE_RUNTIME_TYPE);
    assert.equal(info.features.type_url, FEATURES_TYPE_URL);
    const features = JSON.parse(info.features.value.toString()) as { annotations: Record<string, string> };
    assert.deepEqual(features, JSON.parse(readFileSync(runtimeFeaturesPath(art.rootfs), "utf8")));
    assert.equal(features.annotations["run.oci.crun.version"], "1.21", "the guest's crun, not the host's");
  });
});
