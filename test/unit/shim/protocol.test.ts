// What `start` answers per containerd version (src/shim/protocol.ts). Messages are encoded and
// decoded with proto/containerd/runtime/bootstrap/v1/bootstrap.proto, whose field numbers are those
// of containerd's api/runtime/bootstrap/v1/bootstrap.proto (v2.3.4): containerd 2.3 sends
// BootstrapParams on stdin and decodes stdout as a BootstrapResult first.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { closeFd } from "../../../src/native/fdpass.ts";
import { messageType } from "../../../src/proto/root.ts";
import { parseFlags } from "../../../src/shim/flags.ts";
import { planStart } from "../../../src/shim/manager.ts";
import {
  callerOf,
  containerdMajor,
  encodeBootstrapResult,
  encodeStartAnswer,
  startAnswerFor,
} from "../../../src/shim/protocol.ts";

const T = (name: string) => messageType(name);
const encode = (name: string, obj: Record<string, unknown>) => T(name).encode(T(name).fromObject(obj)).finish();
const decode = (name: string, b: Uint8Array) => T(name).toObject(T(name).decode(b), { defaults: true });

test("`containerd --version` of each tested version gives its major version", () => {
  assert.equal(containerdMajor("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3"), 1);
  assert.equal(containerdMajor("containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-6+deb13u1"), 1);
  assert.equal(containerdMajor("containerd github.com/containerd/containerd/v2 2.1.9+unknown \n"), 2);
  assert.equal(containerdMajor("containerd github.com/containerd/containerd/v2 v2.3.4 abcdef"), 2);
  assert.equal(containerdMajor("2.3.4"), 2);
  assert.equal(containerdMajor("garbage"), undefined);
  assert.equal(containerdMajor(""), undefined);
});

test("the answer is the highest version the calling containerd accepts", () => {
  const none = { form: "empty" as const };
  const noProbe = () => assert.fail("containerd must not be asked");
  // 1.6: no MAX_SHIM_VERSION → bare address.
  assert.deepEqual(startAnswerFor(callerOf({}, none, "/usr/bin/containerd", noProbe)), { form: "bare", version: 2 });
  // 1.7 and 2.0–2.2 both set MAX_SHIM_VERSION=2; the binary tells them apart.
  const env = { MAX_SHIM_VERSION: "2" };
  assert.deepEqual(startAnswerFor(callerOf(env, none, "/c", () => 1)), { form: "json", version: 2 });
  assert.deepEqual(startAnswerFor(callerOf(env, none, "/c", () => 2)), { form: "json", version: 3 });
  // A binary that cannot say: version 2, which every containerd from 1.7 on accepts.
  assert.deepEqual(startAnswerFor(callerOf(env, none, "/c", () => undefined)), { form: "json", version: 2 });
  assert.deepEqual(startAnswerFor(callerOf({ MAX_SHIM_VERSION: "junk" }, none, "/c", noProbe)), {
    form: "bare",
    version: 2,
  });
  // A containerd that announces 3 itself needs no probe.
  assert.deepEqual(startAnswerFor(callerOf({ MAX_SHIM_VERSION: "3" }, none, "/c", noProbe)), {
    form: "json",
    version: 3,
  });
  // 2.3+: BootstrapParams on stdin → BootstrapResult.
  assert.deepEqual(startAnswerFor(callerOf(env, { form: "bootstrap" }, "/c", noProbe)), {
    form: "bootstrap-result",
    version: 3,
  });
});

test("the encoded answers: bare, JSON as containerd 1.7/2.x unmarshal it, BootstrapResult", () => {
  const a = "unix:///run/containerd/s/abc";
  assert.equal(Buffer.from(encodeStartAnswer({ form: "bare", version: 2 }, a)).toString(), a);
  assert.deepEqual(JSON.parse(Buffer.from(encodeStartAnswer({ form: "json", version: 3 }, a)).toString()), {
    version: 3,
    address: a,
    protocol: "ttrpc",
  });
  const pb = encodeStartAnswer({ form: "bootstrap-result", version: 3 }, a);
  assert.deepEqual(decode("containerd.runtime.bootstrap.v1.BootstrapResult", pb), {
    version: 3,
    address: a,
    protocol: "ttrpc",
    capabilities: [],
    metadata: {},
  });
  // Byte for byte what protobufjs makes of the same message from the proto definition.
  assert.deepEqual(
    Buffer.from(encodeBootstrapResult(3, a, "ttrpc")),
    Buffer.from(
      encode("containerd.runtime.bootstrap.v1.BootstrapResult", { version: 3, address: a, protocol: "ttrpc" }),
    ),
  );
  // bin/containerd-shim-cove-v2 recognises the protobuf form by its first byte.
  assert.equal(pb[0], 0x08);
});

test("start under containerd 2.3: BootstrapParams in, a BootstrapResult out, socket in socket_dir", async () => {
  const root = mkdtempSync(join(tmpdir(), "cove-proto-"));
  try {
    const bundle = join(root, "b1");
    mkdirSync(bundle);
    writeFileSync(join(bundle, "config.json"), JSON.stringify({ ociVersion: "1.2.1" }));
    const socketDir = join(root, "s");
    const cfg = join(root, "cove.toml");
    const stdin = encode("containerd.runtime.bootstrap.v1.BootstrapParams", {
      instance_id: "b1",
      namespace: "k8s.io",
      log_level: -4,
      containerd_version: "v2.3.4",
      containerd_ttrpc_address: "/run/containerd/containerd.sock.ttrpc",
      containerd_grpc_address: "/run/containerd/containerd.sock",
      containerd_binary: "/usr/bin/containerd",
      extensions: [
        {
          value: {
            type_url: "runtimeoptions.v1.Options",
            value: encode("runtimeoptions.v1.Options", { config_path: cfg }),
          },
        },
      ],
      socket_dir: socketDir,
    });
    const flags = parseFlags([
      "-namespace",
      "k8s.io",
      "-address",
      "/run/containerd/containerd.sock",
      "-id",
      "b1",
      "start",
    ]);
    const plan = await planStart(flags, {
      stdin,
      cwd: bundle,
      env: { MAX_SHIM_VERSION: "2" },
      probeContainerd: () => assert.fail("2.3 is known from its stdin"),
    });
    try {
      const result = decode("containerd.runtime.bootstrap.v1.BootstrapResult", plan.answer);
      assert.equal(result.version, 3);
      assert.equal(result.protocol, "ttrpc");
      assert.equal(result.address, plan.address);
      assert.ok(plan.path.startsWith(`${socketDir}/`), plan.path);
      assert.equal(plan.daemonFlags.configPath, cfg);
      assert.equal(plan.daemonFlags.debug, true, "log level DEBUG from BootstrapParams");
      // ./address keeps the bare address (restart recovery of 1.x; 2.x writes bootstrap.json itself).
      assert.equal(readFileSync(join(bundle, "address"), "utf8"), plan.address);
    } finally {
      if (plan.listenFd !== undefined) closeFd(plan.listenFd);
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
