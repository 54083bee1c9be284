// The harness's layer writer (test/harness/image-tar.ts), multi-layer images (image.ts) and the
// Debian layer cutter's assignment (debian.ts): what goes into the tars is what the specs say.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { gunzipSync } from "node:zlib";
import { assignLayers } from "../../harness/debian.ts";
import { BUSYBOX_BIN, buildImage, busyboxImage } from "../../harness/image.ts";
import { binary, type Entry, writeLayer } from "../../harness/image-tar.ts";
import { untar } from "./untar.ts";

const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

describe("layer tars", () => {
  const dir = mkdtempSync(join(tmpdir(), "cove-layers-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("every entry kind, owners, modes, xattrs (binary-safe below 0x80) and whiteouts reach the tar", async () => {
    const caps = binary([1, 0, 0, 2, 0, 0x24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    const entries: Entry[] = [
      { name: "d/", type: "directory", mode: 0o2775, uid: 0, gid: 1000 },
      { name: "d/f", type: "file", mode: 0o4755, content: "x", xattrs: { "security.capability": caps } },
      { name: "d/h", type: "link", mode: 0o644, linkname: "d/f" },
      { name: "d/c", type: "character-device", mode: 0o666, devmajor: 1, devminor: 3 },
      { name: "d/b", type: "block-device", mode: 0o660, devmajor: 7, devminor: 1 },
      { name: "d/p", type: "fifo", mode: 0o600 },
      { name: "d/s", type: "symlink", mode: 0o777, linkname: "../etc/passwd" },
      { name: "d/.wh.gone", type: "file", mode: 0o644, content: "" },
      { name: "d/.wh..wh..opq", type: "file", mode: 0o644, content: "" },
      { name: "d/owned", type: "file", mode: 0o600, uid: 65534, gid: 65534, content: "n" },
    ];
    const path = join(dir, "l.tar");
    const w = await writeLayer(entries, path, false);
    const bytes = readFileSync(path);
    assert.equal(w.digest, sha(bytes));
    assert.equal(w.diffId, w.digest, "uncompressed: the blob is the diff");
    assert.equal(w.size, bytes.length);
    const t = await untar(bytes);
    assert.equal(t.get("d/")!.h.mode, 0o2775);
    assert.equal(t.get("d/")!.h.gid, 1000);
    assert.equal(t.get("d/f")!.h.mode, 0o4755);
    assert.equal((t.get("d/f")!.h.pax as Record<string, string>)["SCHILY.xattr.security.capability"], caps);
    assert.deepEqual([t.get("d/h")!.h.type, t.get("d/h")!.h.linkname], ["link", "d/f"]);
    assert.deepEqual(
      [t.get("d/c")!.h.type, t.get("d/c")!.h.devmajor, t.get("d/c")!.h.devminor],
      ["character-device", 1, 3],
    );
    assert.deepEqual([t.get("d/b")!.h.type, t.get("d/b")!.h.devminor], ["block-device", 1]);
    assert.equal(t.get("d/p")!.h.type, "fifo");
    assert.equal(t.get("d/s")!.h.linkname, "../etc/passwd");
    assert.ok(t.has("d/.wh.gone") && t.has("d/.wh..wh..opq"));
    assert.deepEqual([t.get("d/owned")!.h.uid, t.get("d/owned")!.h.gid], [65534, 65534]);
  });

  test("a generated file streams its zeros and data at any offset; gzip gives digest ≠ diff ID", async () => {
    const size = 3 * 2 ** 20 + 17;
    const entries: Entry[] = [
      {
        name: "big",
        type: "file",
        mode: 0o644,
        // one mark straddles the 1 MiB chunk boundary, one ends the file
        content: {
          size,
          data: [
            { offset: 2 ** 20 - 2, text: "ABCD" },
            { offset: size - 3, text: "end" },
          ],
        },
      },
    ];
    const path = join(dir, "g.tar.gz");
    const w = await writeLayer(entries, path, true);
    const gz = readFileSync(path);
    assert.equal(w.digest, sha(gz));
    const tar = gunzipSync(gz);
    assert.equal(w.diffId, sha(tar));
    assert.notEqual(w.diffId, w.digest);
    const data = (await untar(tar)).get("big")!.data;
    assert.equal(data.length, size);
    assert.equal(data.subarray(2 ** 20 - 2, 2 ** 20 + 2).toString(), "ABCD");
    assert.equal(data.subarray(size - 3).toString(), "end");
    assert.equal(
      data.subarray(0, 2 ** 20 - 2).every((b) => b === 0),
      true,
    );
  });
});

test("a random generated file is deterministic and does not compress", async () => {
  const dir = mkdtempSync(join(tmpdir(), "cove-rand-"));
  try {
    const e: Entry[] = [{ name: "r", type: "file", mode: 0o644, content: { size: 3 << 20, data: [], random: true } }];
    const a = await writeLayer(e, join(dir, "a.tar.gz"), true);
    const b = await writeLayer(e, join(dir, "b.tar.gz"), true);
    assert.equal(a.digest, b.digest);
    assert.ok(a.size > 3 << 20, `gzip could not shrink it (${a.size} bytes)`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

describe("multi-layer images", { skip: existsSync(BUSYBOX_BIN) ? false : `needs ${BUSYBOX_BIN}` }, () => {
  const dir = mkdtempSync(join(tmpdir(), "cove-img-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("layers stack on busybox, share blobs across images, and the config lists every diff ID and the user", async () => {
    const top = { entries: [{ name: "etc/motd", type: "file" as const, mode: 0o644, content: "top" }], gzip: true };
    const a = await buildImage(busyboxImage({ ref: "x/a:1", user: "app", layers: [top] }), dir);
    const b = await buildImage(busyboxImage({ ref: "x/b:1", layers: [top] }), dir);
    assert.equal(a.layerDigests.length, 2);
    assert.deepEqual(a.layerDigests, b.layerDigests, "same layers, same blobs");
    assert.notEqual(a.diffIds[1], a.layerDigests[1], "gzip'd layer");
    const outer = await untar(readFileSync(a.path));
    const blob = (d: string) => outer.get(`blobs/sha256/${d.slice(7)}`)!.data;
    const manifest = JSON.parse(blob(a.manifestDigest).toString());
    assert.deepEqual(
      manifest.layers.map((l: { mediaType: string }) => l.mediaType),
      ["application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip"],
    );
    const config = JSON.parse(blob(a.configDigest).toString());
    assert.deepEqual(config.rootfs.diff_ids, a.diffIds);
    assert.equal(config.config.User, "app");
    for (const d of a.layerDigests) assert.equal(sha(blob(d)), d);
  });
});

test("assignLayers: essential packages at the bottom, others in groups, unowned files on top, parents everywhere", () => {
  const all = [
    "bin",
    "bin/sh",
    "etc",
    "etc/nginx",
    "etc/nginx/nginx.conf",
    "etc/generated",
    "usr",
    "usr/bin",
    "usr/bin/py",
  ];
  const dirs = new Set(["bin", "etc", "etc/nginx", "usr", "usr/bin"]);
  const owned = new Map([
    ["dash", ["/bin", "/bin/sh"]],
    ["nginx", ["/etc/nginx", "/etc/nginx/nginx.conf"]],
    ["python3", ["/usr/bin/py", "/bin/sh"]],
  ]);
  const layers = assignLayers(all, owned, new Set(["dash"]), 2, (p) => dirs.has(p));
  assert.equal(layers.length, 4);
  assert.deepEqual(
    layers[0],
    ["bin", "bin/sh", "etc", "etc/nginx", "usr", "usr/bin"],
    "base: its files and every directory",
  );
  assert.deepEqual(layers[1], ["etc", "etc/nginx", "etc/nginx/nginx.conf"]);
  assert.deepEqual(layers[2], ["usr", "usr/bin", "usr/bin/py"]);
  assert.deepEqual(layers[3], ["etc", "etc/generated"], "not owned: the config layer");
});
