import assert from "node:assert/strict";
import { test } from "node:test";
import { messageType } from "../../../src/proto/root.ts";
import { decodeStartOptions, logLevelName, OptionsError } from "../../../src/shim/options.ts";

function encode(name: string, obj: Record<string, unknown>): Uint8Array {
  const T = messageType(name);
  return T.encode(T.fromObject(obj)).finish();
}

function runtimeOptionsAny(configPath: string, typeUrl = "runtimeoptions.v1.Options"): Uint8Array {
  return encode("google.protobuf.Any", {
    type_url: typeUrl,
    value: encode("runtimeoptions.v1.Options", { config_path: configPath }),
  });
}

test("empty stdin: no options", () => {
  assert.deepEqual(decodeStartOptions(new Uint8Array(), "t1"), { form: "empty" });
});

test("1.6–2.2 form: an Any of runtimeoptions.v1.Options (what CRI sends for ConfigPath)", () => {
  const buf = runtimeOptionsAny("/etc/NAME/config.toml");
  // {1:"runtimeoptions.v1.Options", 2:{2:"/etc/NAME/config.toml"}}
  assert.equal(Buffer.from(buf).subarray(0, 2).toString("hex"), "0a19");
  const o = decodeStartOptions(buf, "t1");
  assert.equal(o.form, "any");
  assert.equal(o.configPath, "/etc/NAME/config.toml");
  assert.equal(o.optionsType, "runtimeoptions.v1.Options");
});

test("an Any of another runtime's options is accepted and yields no config path", () => {
  const buf = encode("google.protobuf.Any", { type_url: "containerd.runc.v1.Options", value: Buffer.from([8, 1]) });
  const o = decodeStartOptions(buf, "t1");
  assert.equal(o.form, "any");
  assert.equal(o.configPath, undefined);
});

test("2.3 form: BootstrapParams with options in an extension and a socket dir", () => {
  const buf = encode("containerd.runtime.bootstrap.v1.BootstrapParams", {
    instance_id: "t1",
    namespace: "default",
    log_level: -4,
    containerd_ttrpc_address: "/run/containerd/containerd.sock.ttrpc",
    extensions: [
      {
        value: {
          type_url: "types.googleapis.com/runtimeoptions.v1.Options",
          value: encode("runtimeoptions.v1.Options", { config_path: "/etc/cove/x.toml" }),
        },
      },
    ],
    socket_dir: "/run/k3s/containerd/s",
  });
  const o = decodeStartOptions(buf, "t1");
  assert.equal(o.form, "bootstrap");
  assert.equal(o.configPath, "/etc/cove/x.toml");
  assert.equal(o.socketDir, "/run/k3s/containerd/s");
  assert.equal(o.logLevel, -4);
  assert.equal(logLevelName(o.logLevel), "debug");
});

test("BootstrapParams with only instance_id and namespace is told apart from an Any by the id", () => {
  const buf = encode("containerd.runtime.bootstrap.v1.BootstrapParams", { instance_id: "t1", namespace: "ns" });
  assert.equal(decodeStartOptions(buf, "t1").form, "bootstrap");
});

test("BootstrapParams as JSON", () => {
  const json = JSON.stringify({
    instanceId: "t1",
    socketDir: "/s",
    logLevel: "LOG_LEVEL_TRACE",
    extensions: [{ value: { "@type": "type.googleapis.com/runtimeoptions.v1.Options", configPath: "/c.toml" } }],
  });
  const o = decodeStartOptions(Buffer.from(json), "t1");
  assert.deepEqual(
    [o.form, o.socketDir, o.configPath, logLevelName(o.logLevel)],
    ["bootstrap-json", "/s", "/c.toml", "trace"],
  );
});

test("garbage on stdin is a clear error", () => {
  assert.throws(() => decodeStartOptions(Buffer.from([0x0a, 0xff, 0xff, 0xff]), "t1"), OptionsError);
  assert.throws(() => decodeStartOptions(Buffer.from("{nope"), "t1"), /not valid JSON/);
});

test("a JSON log level named after an Object.prototype property is no level", () => {
  for (const name of ["constructor", "toString", "__proto__", "hasOwnProperty", "valueOf"]) {
    const o = decodeStartOptions(Buffer.from(JSON.stringify({ instanceId: "t1", logLevel: name })), "t1");
    assert.equal(o.logLevel, undefined, name);
    assert.equal(logLevelName(o.logLevel), undefined, name);
  }
  const ok = decodeStartOptions(Buffer.from(JSON.stringify({ instanceId: "t1", log_level: "LOG_LEVEL_WARN" })), "t1");
  assert.equal(logLevelName(ok.logLevel), "warn");
});
