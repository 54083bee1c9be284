import assert from "node:assert/strict";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, test } from "node:test";
import { SYNC_MAX_BYTES, syncFiles } from "../../../agent/src/storage/sync-files.ts";
import { CoveError } from "../../../src/common/errors.ts";
import { grpcStatus } from "../../../src/common/grpc-status.ts";
import { type FileEntry, FileKind } from "../../../src/proto/agent.ts";
import { Code } from "../../../src/ttrpc/index.ts";

const dir = (path: string, mode = 0o755): FileEntry => ({ path, kind: FileKind.DIR, mode, uid: 0, gid: 0 });
const file = (path: string, text: string, mode = 0o644): FileEntry => ({
  path,
  kind: FileKind.FILE,
  mode,
  uid: 0,
  gid: 0,
  data: Buffer.from(text),
});
const link = (path: string, target: string): FileEntry => ({
  path,
  kind: FileKind.SYMLINK,
  mode: 0o777,
  uid: 0,
  gid: 0,
  target,
});
/** kubelet's AtomicWriter layout: a timestamped dir, `..data` → it, and one symlink per key. */
const kubelet = (stamp: string, keys: Record<string, string>): FileEntry[] => [
  dir(stamp),
  ...Object.entries(keys).map(([k, v]) => file(`${stamp}/${k}`, v)),
  link("..data", stamp),
  ...Object.keys(keys).map((k) => link(k, `..data/${k}`)),
];

const code = (c: number) => (e: unknown) => e instanceof CoveError && grpcStatus(e).code === c;

describe("SyncFiles (copied volumes in the guest)", () => {
  let root: string;
  let store: string;
  const path = (id: string) => (id === "vol1" ? store : undefined);
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), "cove-sync-"));
    store = join(root, "storage");
    mkdirSync(store);
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  test("mirrors kubelet's layout, then an update swaps ..data and drops the old generation", () => {
    syncFiles({ storage_id: "vol1", entries: kubelet("..2026_01", { "app.conf": "v1", token: "t1" }) }, path);
    assert.equal(readFileSync(join(store, "app.conf"), "utf8"), "v1");
    assert.equal(readlinkSync(join(store, "..data")), "..2026_01");
    assert.equal(lstatSync(join(store, "app.conf")).isSymbolicLink(), true);
    assert.equal(lstatSync(join(store, "..2026_01/token")).mode & 0o777, 0o644);

    syncFiles({ storage_id: "vol1", entries: kubelet("..2026_02", { "app.conf": "v2" }) }, path);
    assert.equal(readFileSync(join(store, "app.conf"), "utf8"), "v2");
    assert.equal(existsSync(join(store, "..2026_01")), false, "old generation removed");
    assert.equal(existsSync(join(store, "token")), false, "a key gone on the host is gone");
  });

  test("a single file in a subdir; modes applied; idempotent", () => {
    const req = { storage_id: "vol1", subdir: "a/b", entries: [file("content", "secret", 0o400)] };
    syncFiles(req, path);
    syncFiles(req, path);
    assert.equal(readFileSync(join(store, "a/b/content"), "utf8"), "secret");
    assert.equal(lstatSync(join(store, "a/b/content")).mode & 0o777, 0o400);
  });

  test("in_place rewrites an existing file in its inode (a file bind-mounted alone sees it); else a new inode", () => {
    syncFiles({ storage_id: "vol1", entries: [file("content", "one")] }, path);
    const ino = lstatSync(join(store, "content")).ino;
    syncFiles({ storage_id: "vol1", entries: [file("content", "two-longer", 0o600)], in_place: true }, path);
    assert.equal(lstatSync(join(store, "content")).ino, ino);
    assert.equal(readFileSync(join(store, "content"), "utf8"), "two-longer");
    assert.equal(lstatSync(join(store, "content")).mode & 0o777, 0o600);
    syncFiles({ storage_id: "vol1", entries: [file("content", "3")] }, path);
    assert.notEqual(lstatSync(join(store, "content")).ino, ino, "renamed into place by default");
    assert.equal(readFileSync(join(store, "content"), "utf8"), "3");
  });

  test("replaces a file by a directory and a directory by a file", () => {
    syncFiles({ storage_id: "vol1", entries: [file("x", "1"), dir("y"), file("y/z", "2")] }, path);
    syncFiles({ storage_id: "vol1", entries: [dir("x"), file("x/in", "3"), file("y", "4")] }, path);
    assert.equal(readFileSync(join(store, "x/in"), "utf8"), "3");
    assert.equal(readFileSync(join(store, "y"), "utf8"), "4");
  });

  test("never writes through a symlink already in the directory", () => {
    const outside = join(root, "outside");
    mkdirSync(outside);
    symlinkSync(outside, join(store, "d"));
    syncFiles({ storage_id: "vol1", entries: [dir("d"), file("d/f", "x")] }, path);
    assert.equal(existsSync(join(outside, "f")), false, "nothing written outside the storage");
    assert.equal(lstatSync(join(store, "d")).isDirectory(), true);
    // A subdir through a symlink is refused.
    symlinkSync(outside, join(store, "s"));
    assert.throws(
      () => syncFiles({ storage_id: "vol1", subdir: "s/x", entries: [] }, path),
      code(Code.INVALID_ARGUMENT),
    );
    assert.equal(existsSync(join(outside, "x")), false);
  });

  test("refuses bad requests before changing anything", () => {
    syncFiles({ storage_id: "vol1", entries: [file("keep", "k")] }, path);
    const bad: FileEntry[][] = [
      [file("../escape", "x")],
      [file("/abs", "x")],
      [file("a//b", "x")],
      [file("a/./b", "x")],
      [file("nul\0", "x")],
      [file("a/b", "x")], // parent missing
      [file("k", "x"), file("k", "y")], // twice
      [{ ...file("m", "x"), mode: 0o10000 }],
      [{ ...file("k", "x"), kind: 7 }],
      [link("l", "")],
      [file(".cove-sync-1", "x")],
      // Beyond the kernel's limits (the sync-files fuzzer found these failing half-way through):
      [dir("a"), file(`a/${"n".repeat(256)}`, "x")], // a component over NAME_MAX bytes
      [file("é".repeat(128), "x")], // 128 characters, 256 bytes
      [link("l", "t".repeat(4096))], // a target of PATH_MAX bytes
      [
        ...Array.from({ length: 128 }, (_, i) => dir("d/".repeat(i + 1).slice(0, -1))),
        file(`${"d/".repeat(128)}f`, "x"),
      ],
      // A path under PATH_MAX that the storage's own path pushes over it:
      [
        ...Array.from({ length: 16 }, (_, i) => dir(`${"n".repeat(250)}/`.repeat(i + 1).slice(0, -1))),
        file(`${`${"n".repeat(250)}/`.repeat(16)}${"f".repeat(60)}`, "x"),
      ],
    ];
    for (const entries of bad) {
      assert.throws(
        () => syncFiles({ storage_id: "vol1", entries }, path),
        code(Code.INVALID_ARGUMENT),
        JSON.stringify(entries[0]?.path),
      );
      assert.equal(readFileSync(join(store, "keep"), "utf8"), "k", "unchanged");
    }
    assert.throws(() => syncFiles({ storage_id: "nope", entries: [] }, path), code(Code.NOT_FOUND));
    assert.throws(() => syncFiles({ storage_id: "../x", entries: [] }, path), code(Code.INVALID_ARGUMENT));
    assert.throws(
      () => syncFiles({ storage_id: "vol1", entries: [file("big", "x".repeat(SYNC_MAX_BYTES + 1))] }, path),
      code(Code.RESOURCE_EXHAUSTED),
    );
    assert.throws(
      () => syncFiles({ storage_id: "vol1", entries: Array.from({ length: 4097 }, (_, i) => file(`f${i}`, "")) }, path),
      code(Code.RESOURCE_EXHAUSTED),
    );
    writeFileSync(join(store, "keep"), "k");
  });

  test("set-user-ID and set-group-ID bits survive the owner change (chown clears them: owner first)", () => {
    const entries = [
      { ...file("suid", "x", 0o4755), uid: 1000 },
      { ...file("sgid", "y", 0o2755), gid: 1000 },
    ];
    syncFiles({ storage_id: "vol1", entries }, path);
    assert.equal(lstatSync(join(store, "suid")).mode & 0o7777, 0o4755);
    assert.equal(lstatSync(join(store, "sgid")).mode & 0o7777, 0o2755);
    syncFiles({ storage_id: "vol1", entries, in_place: true }, path);
    assert.equal(lstatSync(join(store, "suid")).mode & 0o7777, 0o4755);
  });
});
