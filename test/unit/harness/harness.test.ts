// Unit tests of the harness's pure parts: mountinfo parsing, the scratch containerd config, the OCI
// image layout builder and the shim socket address scheme.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { parse, stringify } from "smol-toml";
import { containerdConfig } from "../../harness/containerd.ts";
import { run } from "../../harness/exec.ts";
import { BUSYBOX_BIN, buildImage, busyboxImage, refTag } from "../../harness/image.ts";
import { parseMountInfo, shimSocketPath } from "../../harness/processes.ts";
import { untar as untarRaw } from "./untar.ts";

/** The shared reader, as name → type, mode, link target and data. */
async function untar(buf: Buffer) {
  const raw = await untarRaw(buf);
  return new Map(
    [...raw].map(([name, { h, data }]) => [
      name,
      { type: h.type ?? "file", mode: h.mode ?? 0, linkname: h.linkname ?? undefined, data },
    ]),
  );
}

const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

describe("parseMountInfo", () => {
  test("reads mount point, type and source, unescaping octal", () => {
    const text = [
      "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
      "99 27 0:50 / /tmp/a\\040b/rootfs rw,relatime shared:5 - overlay overlay rw,lowerdir=/x",
      "garbage line",
      "",
    ].join("\n");
    const m = parseMountInfo(text);
    assert.equal(m.length, 2);
    assert.deepEqual(m[1], {
      id: 99,
      parentId: 27,
      mountPoint: "/tmp/a b/rootfs",
      fsType: "overlay",
      source: "overlay",
    });
  });
});

describe("containerdConfig", () => {
  test("puts every path under the dir and registers the cove runtime with its options", () => {
    const cfg = containerdConfig("/t/x", {
      criRuntimes: { cove: { runtimeType: "io.containerd.cove.v2", configPath: "/t/c.toml" } },
    });
    const back = parse(stringify(cfg)) as Record<string, unknown>;
    const g = back.grpc as { address: string };
    assert.equal(g.address, "/t/x/containerd.sock");
    assert.equal(back.root, "/t/x/root");
    const cri = (back.plugins as Record<string, Record<string, unknown>>)["io.containerd.grpc.v1.cri"]!;
    const runtimes = (cri.containerd as { runtimes: Record<string, Record<string, unknown>> }).runtimes;
    assert.equal(runtimes.cove!.runtime_type, "io.containerd.cove.v2");
    assert.deepEqual({ ...(runtimes.cove!.options as object) }, { ConfigPath: "/t/c.toml" });
    assert.equal(runtimes.runc!.runtime_type, "io.containerd.runc.v2");
    assert.equal(cri.sandbox_image, "registry.k8s.io/pause:3.6");
  });
});

describe("shimSocketPath", () => {
  // The scheme itself is checked against a real runc shim in test/integration/harness.test.ts.
  test("is sha256 of filepath.Join(<address>, <ns>, <grouping>) under /run/containerd/s", () => {
    const p = shimSocketPath("/scratch/containerd.sock", "default", "t1");
    assert.equal(p, `/run/containerd/s/${sha(Buffer.from("/scratch/containerd.sock/default/t1")).slice(7)}`);
    assert.equal(
      shimSocketPath("/scratch/containerd.sock/", "k8s.io", "t1"),
      shimSocketPath("/scratch/containerd.sock", "k8s.io", "t1"),
    );
    assert.notEqual(shimSocketPath("/a.sock", "default", "t1"), shimSocketPath("/a.sock", "k8s.io", "t1"));
  });
});

describe("buildImage", { skip: existsSync(BUSYBOX_BIN) ? false : `needs ${BUSYBOX_BIN} (busybox-static)` }, () => {
  const dir = mkdtempSync(join(tmpdir(), "cove-img-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("writes an OCI layout whose digests match its blobs and whose layer holds busybox", async () => {
    const img = await buildImage(
      busyboxImage({ cmd: ["/bin/echo", "x"], files: [{ path: "/etc/motd", content: "hello" }] }),
      dir,
    );
    const files = await untar(readFileSync(img.path));
    assert.deepEqual(JSON.parse(files.get("oci-layout")!.data.toString()), { imageLayoutVersion: "1.0.0" });
    const index = JSON.parse(files.get("index.json")!.data.toString());
    assert.equal(index.manifests[0].digest, img.manifestDigest);
    assert.equal(index.manifests[0].annotations["io.containerd.image.name"], "docker.io/library/bb:latest");
    for (const [name, f] of files) {
      if (name.startsWith("blobs/sha256/") && f.type === "file")
        assert.equal(sha(f.data), `sha256:${name.slice(13)}`, name);
    }
    const blob = (d: string) => files.get(`blobs/sha256/${d.slice(7)}`)!.data;
    const manifest = JSON.parse(blob(img.manifestDigest).toString());
    assert.equal(manifest.config.digest, img.configDigest);
    assert.equal(manifest.layers[0].digest, img.layerDigest);
    assert.equal(manifest.layers[0].size, blob(img.layerDigest).length);
    const config = JSON.parse(blob(img.configDigest).toString());
    assert.deepEqual(config.config.Cmd, ["/bin/echo", "x"]);
    assert.deepEqual(config.rootfs.diff_ids, [img.layerDigest]);

    const layer = await untar(blob(img.layerDigest));
    assert.equal(layer.get("bin/busybox")!.data.length, statSync(BUSYBOX_BIN).size);
    assert.equal(layer.get("bin/busybox")!.mode & 0o777, 0o755);
    assert.equal(layer.get("bin/sh")!.type, "symlink");
    assert.equal(layer.get("bin/sh")!.linkname, "busybox");
    assert.match(layer.get("etc/passwd")!.data.toString(), /^root:x:0:0:/);
    assert.equal(layer.get("etc/motd")!.data.toString(), "hello");
    assert.equal(layer.get("tmp/")!.mode & 0o7777, 0o1777);
  });

  test("is cached by content and deterministic", async () => {
    const a = await buildImage(busyboxImage(), dir);
    const mtime = statSync(a.path).mtimeMs;
    const b = await buildImage(busyboxImage(), dir);
    assert.deepEqual(b, a);
    assert.equal(statSync(b.path).mtimeMs, mtime, "second build reused the cached tarball");
    const other = mkdtempSync(join(tmpdir(), "cove-img-"));
    try {
      const c = await buildImage(busyboxImage(), other);
      assert.equal(c.manifestDigest, a.manifestDigest, "same spec → same digests in a fresh cache");
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
    const d = await buildImage(busyboxImage({ cmd: ["/bin/true"] }), dir);
    assert.notEqual(d.configDigest, a.configDigest);
  });

  test("refTag", () => {
    assert.equal(refTag("docker.io/library/bb:latest"), "latest");
    assert.equal(refTag("localhost:5000/x"), "latest");
    assert.equal(refTag("registry.k8s.io/pause:3.6"), "3.6");
  });
});

describe("run", () => {
  test("captures output and exit code, and kills on timeout", async () => {
    const ok = await run("/bin/sh", ["-c", "echo a; echo b >&2; exit 4"]);
    assert.deepEqual([ok.code, ok.stdout, ok.stderr, ok.timedOut], [4, "a\n", "b\n", false]);
    const t0 = Date.now();
    const slow = await run("/bin/sh", ["-c", "sleep 30"], { timeoutMs: 200 });
    assert.equal(slow.timedOut, true);
    assert.ok(Date.now() - t0 < 5000);
  });
});
