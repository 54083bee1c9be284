// cove.toml loading, the guest-artifact check (the error users see without a guest kernel) and the
// hypervisor backend choice, including the sandbox's whole Create path.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import pino from "pino";
import { CoveError, errorMessage } from "../../../src/common/errors.ts";
import { type GrpcStatus, grpcStatus } from "../../../src/common/grpc-status.ts";
import { ConfigError, defaultConfig, loadConfig, parseConfig, resolveConfigPath } from "../../../src/config/config.ts";
import { probeHost } from "../../../src/hypervisor/host.ts";
import { chooseBackend, registerBackend, unregisterBackend } from "../../../src/hypervisor/select.ts";
import { messageType } from "../../../src/proto/root.ts";
import { checkGuestArtifacts } from "../../../src/sandbox/guest.ts";
import { SandboxRuntime } from "../../../src/sandbox/sandbox.ts";
import { Code, TtrpcError } from "../../../src/ttrpc/index.ts";

function tmp(): string {
  return mkdtempSync(join(tmpdir(), "cove-cfg-"));
}

/** The gRPC status the thrown error reaches containerd with (it must be a coded error). */
function errorOf(fn: () => unknown): GrpcStatus {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof TtrpcError || e instanceof CoveError, String(e));
    return grpcStatus(e);
  }
  assert.fail("expected an error");
}

test("config/cove.toml holds exactly the built-in defaults", () => {
  const fromFile = parseConfig(readFileSync("config/cove.toml", "utf8"), "config/cove.toml");
  assert.deepEqual({ ...fromFile, source: "" }, { ...defaultConfig(), source: "" });
  assert.equal(defaultConfig().guest.kernel, "/var/cache/cove/guest/kernel");
  assert.equal(defaultConfig().guest.image, "/var/cache/cove/guest/rootfs.erofs");
});

test("values override defaults; guest paths follow cache_dir unless set", () => {
  const c = parseConfig(
    'hypervisor = "qemu"\ncache_dir = "/c"\n[guest]\nvcpus = 2\nmemory_mib = 512\n[log]\nlevel = "debug"\n',
    "x",
  );
  assert.deepEqual(
    [c.hypervisor, c.guest.kernel, c.guest.image, c.guest.vcpus, c.guest.memoryMib, c.log.level],
    ["qemu", "/c/guest/kernel", "/c/guest/rootfs.erofs", 2, 512, "debug"],
  );
  assert.equal(parseConfig('[guest]\nkernel = "/k"\n', "x").guest.kernel, "/k");
  assert.equal(parseConfig("[qemu]\ntcg_tb_size_mib = 0\n", "x").qemu.tcgTbSizeMib, 0);
  assert.throws(() => parseConfig("[qemu]\ntcg_tb_size_mib = -1\n", "x"), /"qemu.tcg_tb_size_mib" must be an integer/);
});

test("layer_slots / writable_slots (files cove install wrote) still load, with a deprecation each", () => {
  const c = parseConfig("[pod]\nlayer_slots = 4\nwritable_slots = 2\nwritable_layer_mib = 64\n", "/etc/cove/cove.toml");
  assert.equal(c.pod.writableLayerMib, 64);
  assert.equal(c.deprecations.length, 2);
  assert.match(c.deprecations[0]!, /\/etc\/cove\/cove\.toml: pod\.layer_slots is deprecated and ignored/);
  assert.match(c.deprecations[1]!, /pod\.writable_slots is deprecated/);
  assert.deepEqual(parseConfig("[pod]\nwritable_layer_mib = 64\n", "f").deprecations, []);
  assert.throws(() => parseConfig('[pod]\nlayer_slots = "many"\n', "f"), /"pod.layer_slots" must be an integer/);
});

test("bad configs are rejected with the file and key named", () => {
  assert.throws(
    () => parseConfig('hypervisr = "qemu"', "/etc/cove/cove.toml"),
    /\/etc\/cove\/cove.toml: unknown key "hypervisr"/,
  );
  assert.throws(() => parseConfig('[guest]\nkernal = "/k"', "f"), /unknown key "guest.kernal"/);
  assert.throws(() => parseConfig('hypervisor = "kvm"', "f"), /"hypervisor" must be one of auto, embedded, qemu/);
  assert.throws(() => parseConfig("[guest]\nvcpus = 0", "f"), /"guest.vcpus" must be an integer/);
  assert.throws(() => parseConfig('[log]\nlevel = "loud"', "f"), /"log.level"/);
  assert.throws(() => parseConfig("hypervisor = ", "f"), /not valid TOML/);
});

test("lookup order: options' config_path, then $COVE_CONFIG, then the default file, then built-ins", () => {
  const d = tmp();
  try {
    const a = join(d, "a.toml");
    const b = join(d, "b.toml");
    const def = join(d, "default.toml");
    writeFileSync(a, 'hypervisor = "qemu"\n');
    writeFileSync(b, 'hypervisor = "embedded"\n');
    const env = { COVE_CONFIG: b };
    assert.equal(loadConfig({ configPath: a, env, defaultPath: def }).hypervisor, "qemu");
    assert.equal(loadConfig({ env, defaultPath: def }).hypervisor, "embedded");
    assert.equal(loadConfig({ env: {}, defaultPath: def }).source, "built-in defaults");
    writeFileSync(def, "[guest]\nvcpus = 3\n");
    assert.equal(loadConfig({ env: {}, defaultPath: def }).guest.vcpus, 3);
    assert.deepEqual(resolveConfigPath({ env: {}, defaultPath: def }), { path: def, required: false });
    // A file named explicitly must exist.
    assert.throws(() => loadConfig({ configPath: join(d, "missing.toml"), env: {} }), ConfigError);
    assert.throws(() => loadConfig({ env: { COVE_CONFIG: join(d, "missing.toml") } }), /ENOENT/);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test("no guest kernel: FAILED_PRECONDITION naming the missing files and the build command", () => {
  const d = tmp();
  try {
    const c = parseConfig(`cache_dir = "${d}"`, join(d, "cove.toml"));
    const e = errorOf(() => checkGuestArtifacts(c));
    assert.equal(e.code, Code.FAILED_PRECONDITION);
    assert.ok(e.message.includes(`guest kernel ${d}/guest/kernel does not exist`), e.message);
    assert.ok(e.message.includes(`guest image ${d}/guest/rootfs.erofs does not exist`), e.message);
    assert.ok(e.message.includes("`cove guest build`"), e.message);
    assert.ok(e.message.includes("`npm run guest`"), e.message);
    mkdirSync(join(d, "guest"));
    writeFileSync(join(d, "guest", "kernel"), "k");
    const e2 = errorOf(() => checkGuestArtifacts(c));
    assert.ok(!e2.message.includes(`guest kernel ${d}/guest/kernel`), "a present kernel is not reported");
    mkdirSync(join(d, "guest", "rootfs.erofs"));
    assert.match(errorOf(() => checkGuestArtifacts(c)).message, /rootfs.erofs is not a regular file/);
    rmSync(join(d, "guest", "rootfs.erofs"), { recursive: true });
    writeFileSync(join(d, "guest", "rootfs.erofs"), "i");
    checkGuestArtifacts(c);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test("backend choice: auto → embedded with vmx/svm, qemu+TCG on PVM; embedded refused on PVM", () => {
  const hw = { kvm: true, hwVirt: "svm" as const, pvm: false };
  const pvm = { kvm: true, hwVirt: null, pvm: true };
  const none = { kvm: false, hwVirt: null, pvm: false };
  assert.deepEqual([chooseBackend("auto", hw).kind, chooseBackend("auto", hw).accel], ["embedded", "kvm"]);
  const p = chooseBackend("auto", pvm);
  assert.deepEqual([p.kind, p.accel], ["qemu", "tcg"]);
  assert.match(p.reason, /no vmx\/svm.*kvm_pvm/);
  assert.equal(chooseBackend("qemu", hw).accel, "kvm");
  assert.equal(chooseBackend("qemu", none).accel, "tcg");
  assert.equal(errorOf(() => chooseBackend("embedded", pvm)).code, Code.FAILED_PRECONDITION);
  assert.match(errorOf(() => chooseBackend("embedded", none)).message, /\/dev\/kvm is not available/);
});

test("probeHost reads /dev/kvm access, cpu flags and the PVM module", () => {
  const d = tmp();
  try {
    writeFileSync(join(d, "cpuinfo"), "processor\t: 0\nflags\t\t: fpu vme svm sse\n");
    writeFileSync(join(d, "kvm"), "");
    const h = probeHost({ kvm: join(d, "kvm"), cpuinfo: join(d, "cpuinfo"), pvmModule: join(d, "nope") });
    assert.deepEqual(h, { kvm: true, hwVirt: "svm", pvm: false });
    writeFileSync(join(d, "cpuinfo"), "flags\t\t: fpu sse\n");
    mkdirSync(join(d, "kvm_pvm"));
    const h2 = probeHost({ kvm: join(d, "absent"), cpuinfo: join(d, "cpuinfo"), pvmModule: join(d, "kvm_pvm") });
    assert.deepEqual(h2, { kvm: false, hwVirt: null, pvm: true });
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test("sandbox Create: missing kernel first; with artifacts, backend selection says what is missing", async () => {
  const d = tmp();
  const logger = pino({ level: "silent" });
  const pvm = () => ({ kvm: true, hwVirt: null, pvm: true });
  try {
    const cfg = join(d, "cove.toml");
    writeFileSync(cfg, `cache_dir = "${d}"\n`);
    const spec = {
      id: "p1",
      bundle: d,
      rootfs: [],
      checkpoint: "",
      stdin: "",
      stdout: "",
      stderr: "",
      terminal: false,
    };
    const rt = new SandboxRuntime({ logger, configPath: cfg, probe: pvm });
    await assert.rejects(
      rt.create(spec),
      (e: unknown) => grpcStatus(e).code === Code.FAILED_PRECONDITION && /kernel/.test(errorMessage(e)),
    );

    mkdirSync(join(d, "guest"));
    writeFileSync(join(d, "guest", "kernel"), "k");
    writeFileSync(join(d, "guest", "rootfs.erofs"), "i");
    await assert.rejects(
      rt.create(spec),
      (e: unknown) =>
        grpcStatus(e).code === Code.UNIMPLEMENTED &&
        /qemu hypervisor backend \(tcg\) is not available in this build/.test(errorMessage(e)),
    );

    // The runtime options in Create win over the shim's config: a config with another cache dir.
    const other = join(d, "other.toml");
    writeFileSync(other, `cache_dir = "${join(d, "elsewhere")}"\n`);
    const T = messageType("runtimeoptions.v1.Options");
    const options = {
      type_url: "runtimeoptions.v1.Options",
      value: T.encode(T.fromObject({ config_path: other })).finish(),
    };
    await assert.rejects(rt.create({ ...spec, options }), (e: unknown) =>
      errorMessage(e).includes(join(d, "elsewhere")),
    );

    // With a registered backend, selection gets past "not available" to the pod's own checks: a
    // spec without a network namespace (host network) is refused before any VM starts.
    let made = 0;
    registerBackend("qemu", (_config, choice) => {
      made++;
      assert.equal(choice.accel, "tcg");
      return { name: "fake-qemu", start: async () => assert.fail("no VM may be started for a host-network pod") };
    });
    writeFileSync(join(d, "config.json"), JSON.stringify({ ociVersion: "1.0.2", linux: { namespaces: [] } }));
    try {
      await assert.rejects(
        rt.create(spec),
        (e: unknown) =>
          grpcStatus(e).code === Code.FAILED_PRECONDITION && /host's network namespace/.test(errorMessage(e)),
      );
      assert.equal(made, 1);
    } finally {
      unregisterBackend("qemu");
    }
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});
