// The bounded layer cache (src/rootfs/cache-*.ts) on real files and real flock(2) locks, with users
// in other processes that are SIGKILLed: an image a live pod uses is never removed (not by prune, the
// size limit, a gone content or a full disk), a crashed pod's hold ends with its process, content
// containerd no longer has is removed, the size limit removes the least recently used first, and
// what crashed processes left is cleared.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, openSync, readdirSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { test } from "node:test";
import { pino } from "pino";
import { CoveError } from "../../../src/common/errors.ts";
import { grpcStatus } from "../../../src/common/grpc-status.ts";
import { tryLock } from "../../../src/native/flock.ts";
import { collectLayers, listCache } from "../../../src/rootfs/cache-gc.ts";
import type { LookupOpener } from "../../../src/rootfs/cache-source.ts";
import { clearDeadHolds, LayerUser, liveUsers, usersDir, writeHoldHint } from "../../../src/rootfs/cache-users.ts";
import { ContainerdError, GRPC_NOT_FOUND } from "../../../src/rootfs/containerd.ts";
import { layerImage, layerKey, layersDir } from "../../../src/rootfs/layers.ts";
import { Code } from "../../../src/ttrpc/index.ts";
import { MKFS, withTmp } from "./tmp.ts";

const log = pino({ level: "silent" });

let n = 0;
/** A fake image of `kib` KiB with a last use `ageS` seconds ago; its source record when given. */
function image(layers: string, opts: { kib?: number; ageS?: number; source?: object } = {}): string {
  mkdirSync(layers, { recursive: true });
  const key = (n++).toString(16).padStart(24, "0");
  const path = join(layers, `${key}.erofs`);
  writeFileSync(path, Buffer.alloc((opts.kib ?? 4) * 1024, 1));
  const t = new Date(Date.now() - (opts.ageS ?? 0) * 1000);
  utimesSync(path, t, t);
  if (opts.source) writeFileSync(`${path}.json`, JSON.stringify(opts.source));
  return key;
}

const keys = (layers: string) => listCache(layers).entries.map((e) => e.key);

/** A pod in another process: opens a user, lists `use`, says "ready", then lives until killed. */
async function podProcess(layers: string, use: string[]): Promise<ChildProcess> {
  const mod = resolve("src/rootfs/cache-users.ts");
  const code = `
    import { LayerUser } from ${JSON.stringify(mod)};
    const u = await LayerUser.open(${JSON.stringify(layers)}, { pod: "pod-in-child", namespace: "k8s.io" });
    for (const k of ${JSON.stringify(use)}) u.add(k);
    console.log("ready");
    setInterval(() => {}, 1 << 30);`;
  const p = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", code], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise<void>((res, rej) => {
    p.stdout!.on("data", (d: Buffer) => d.toString().includes("ready") && res());
    p.on("exit", (c) => rej(new Error(`pod process exited ${c}`)));
  });
  return p;
}

async function kill9(p: ChildProcess): Promise<void> {
  const gone = new Promise((r) => p.once("exit", r));
  p.kill("SIGKILL");
  await gone;
}

test(
  "an image a live pod uses survives prune; after the pod's shim is SIGKILLed its hold is gone",
  { timeout: 60_000 },
  withTmp(async (dir) => {
    const layers = join(dir, "layers");
    const used = image(layers, { ageS: 1000 });
    const unused = image(layers);
    const pod = await podProcess(layers, [used]);
    try {
      assert.deepEqual(
        listCache(layers).entries.find((e) => e.key === used)?.users,
        ["pod-in-child"],
        "ls shows the pod as the image's user",
      );
      const r = await collectLayers(layers, { maxBytes: 0, allUnused: true });
      assert.deepEqual(
        r.removed.map((x) => x.key),
        [unused],
      );
      assert.deepEqual(keys(layers), [used], "the image in use is kept");
      assert.equal(r.inUse, 1);
      // The size limit does not touch it either, however small.
      await collectLayers(layers, { maxBytes: 1 });
      assert.deepEqual(keys(layers), [used]);
    } finally {
      await kill9(pod);
    }
    // The kernel dropped the dead shim's flock: the image is unused now, and the user's files go.
    assert.deepEqual(liveUsers(layers), []);
    assert.deepEqual(readdirSync(usersDir(layers)), [], "the dead pod's lock and record are removed");
    const r = await collectLayers(layers, { maxBytes: 0, allUnused: true });
    assert.deepEqual(
      r.removed.map((x) => x.key),
      [used],
    );
  }),
);

test(
  "a pod's hold in this process: keys counted per use, closed with the pod",
  withTmp(async (dir) => {
    const layers = join(dir, "layers");
    const k = image(layers);
    const u = await LayerUser.open(layers, { pod: "p1" });
    u.add(k);
    u.add(k); // two containers of the pod
    u.drop(k);
    await collectLayers(layers, { maxBytes: 0, allUnused: true });
    assert.deepEqual(keys(layers), [k], "one container still uses it");
    u.drop(k);
    await collectLayers(layers, { maxBytes: 0, allUnused: true });
    assert.deepEqual(keys(layers), [], "unused once the last container gave it back");
    u.close();
    assert.deepEqual(readdirSync(usersDir(layers)), []);
  }),
);

/** containerd as the collector sees it: which snapshots exist, or that it does not answer. */
function fakeContainerd(have: Set<string> | "down"): LookupOpener {
  return async () => ({
    container: async () => ({ snapshotter: "", snapshotKey: "" }),
    snapshot: async (snapshotter, key) => {
      if (have === "down") throw new ContainerdError("Stat", 14, "connection refused");
      if (!have.has(`${snapshotter}/${key}`)) throw new ContainerdError("Stat", GRPC_NOT_FOUND, "not found");
      return { name: key, parent: "", kind: "COMMITTED" };
    },
    close: () => {},
  });
}

test(
  "content containerd no longer has is removed; unreachable containerd (a restart) keeps it",
  withTmp(async (dir) => {
    const layers = join(dir, "layers");
    const sock = join(dir, "containerd.sock");
    writeFileSync(sock, ""); // stands for the socket: the collector only checks that it is there
    const at = [{ address: sock, namespace: "k8s.io" }];
    const held = image(layers, { source: { snapshot: "overlayfs/sha256:aa", dir: "/x", containerd: at } });
    const gone = image(layers, { source: { snapshot: "overlayfs/sha256:bb", dir: "/y", containerd: at } });
    const legacy = image(layers); // no record: made by an older cove
    const noSocket = image(layers, {
      source: {
        snapshot: "overlayfs/sha256:cc",
        dir: "/z",
        containerd: [{ address: join(dir, "gone.sock"), namespace: "default" }],
      },
    });
    const layerDir = join(dir, "layer");
    mkdirSync(layerDir);
    const byDir = image(layers, { source: { dir: layerDir, ident: "0:0:0", containerd: [] } });

    let r = await collectLayers(layers, { maxBytes: 0, open: fakeContainerd("down") });
    assert.deepEqual(
      r.removed.map((x) => x.key).sort(),
      [noSocket, byDir].sort(),
      "containerd not answering: only what is gone without asking it",
    );
    r = await collectLayers(layers, { maxBytes: 0, open: fakeContainerd(new Set(["overlayfs/sha256:aa"])) });
    assert.deepEqual(
      r.removed.map((x) => [x.key, x.reason]),
      [[gone, "content gone"]],
    );
    assert.deepEqual(keys(layers).sort(), [held, legacy].sort());
  }),
);

test(
  "over max_layers_gib: unused images go least recently used first, images in use never",
  withTmp(async (dir) => {
    const layers = join(dir, "layers");
    const oldestUsed = image(layers, { kib: 64, ageS: 5000 });
    const old = image(layers, { kib: 64, ageS: 4000 });
    const mid = image(layers, { kib: 64, ageS: 3000 });
    const recent = image(layers, { kib: 64, ageS: 10 });
    const u = await LayerUser.open(layers, { pod: "p" });
    u.add(oldestUsed);
    try {
      // Room for three: one must go, the oldest unused one.
      const r = await collectLayers(layers, { maxBytes: 3 * 64 * 1024 });
      assert.deepEqual(
        r.removed.map((x) => [x.key, x.reason]),
        [[old, "over max_layers_gib"]],
      );
      assert.deepEqual(keys(layers), [oldestUsed, mid, recent]);
      assert.equal(r.bytes, 3 * 64 * 1024);
      // Room for none: every unused image goes; the one in use stays, over the limit.
      await collectLayers(layers, { maxBytes: 1 });
      assert.deepEqual(keys(layers), [oldestUsed]);
    } finally {
      u.close();
    }
  }),
);

test(
  "an image taken while a pass runs is not removed: users are read again under the image's lock",
  withTmp(async (dir) => {
    const layers = join(dir, "layers");
    const sock = join(dir, "containerd.sock");
    writeFileSync(sock, "");
    const k = image(layers, {
      source: { snapshot: "overlayfs/sha256:aa", dir: "/x", containerd: [{ address: sock, namespace: "default" }] },
    });
    const u = await LayerUser.open(layers, { pod: "late" });
    // The pod lists the key after the pass read the users, while it asks containerd.
    const open: LookupOpener = async (at) => {
      u.add(k);
      return fakeContainerd(new Set())(at);
    };
    const r = await collectLayers(layers, { maxBytes: 0, open });
    assert.equal(r.removed.length, 0);
    assert.equal(r.busy, 1);
    assert.deepEqual(keys(layers), [k]);
    u.close();
  }),
);

test(
  "an image whose lock another process holds (converting, or being taken) is skipped",
  withTmp(async (dir) => {
    const layers = join(dir, "layers");
    const k = image(layers);
    const fd = openSync(join(layers, `${k}.erofs.lock`), "a+");
    assert.equal(tryLock(fd), true);
    const r = await collectLayers(layers, { maxBytes: 0, allUnused: true });
    assert.deepEqual([r.removed.length, r.busy], [0, 1]);
    assert.ok(existsSync(join(layers, `${k}.erofs`)));
  }),
);

test(
  "what crashed processes left is removed: stale locks, their temporary files, orphaned records",
  withTmp(async (dir) => {
    const layers = join(dir, "layers");
    mkdirSync(join(layers, ".users"), { recursive: true });
    const k = image(layers);
    const a = "a".repeat(24);
    const b = "b".repeat(24);
    writeFileSync(join(layers, `${a}.erofs.lock`), "12345"); // a conversion's holder crashed
    writeFileSync(join(layers, `${a}.erofs.tmp`), "partial");
    writeFileSync(join(layers, `${b}.erofs.json`), "{}"); // the record of a removed image
    writeFileSync(join(layers, `${b}.erofs.tmp`), "partial");
    writeFileSync(join(layers, ".users", "0123.json"), '{"pod":"x","images":[]}'); // a record without its lock
    // A conversion in progress in a live process: its lock and temporary file stay.
    const c = "c".repeat(24);
    const fd = openSync(join(layers, `${c}.erofs.lock`), "a+");
    assert.equal(tryLock(fd), true);
    writeFileSync(join(layers, `${c}.erofs.tmp`), "converting");
    const r = await collectLayers(layers, { maxBytes: 0 });
    assert.equal(r.leftovers, 4);
    assert.deepEqual(readdirSync(layers).sort(), [`${c}.erofs.lock`, `${c}.erofs.tmp`, `${k}.erofs`, ".users"].sort());
    assert.deepEqual(liveUsers(layers), []);
    assert.deepEqual(readdirSync(join(layers, ".users")), []);
  }),
);

test(
  "a full disk during a conversion removes unused images, never one in use, and tries once more",
  { skip: MKFS ? false : "mkfs.erofs is not installed (erofs-utils)", timeout: 60_000 },
  withTmp(async (dir) => {
    const cache = join(dir, "cache");
    const layers = layersDir(cache);
    const used = image(layers);
    const unused = image(layers);
    const pod = await podProcess(layers, [used]);
    // mkfs.erofs that fails for a full disk the first time, then is the real one.
    const bin = join(dir, "bin");
    mkdirSync(bin);
    const once = join(dir, "failed-once");
    writeFileSync(
      join(bin, "mkfs.erofs"),
      `#!/bin/sh\nif [ ! -e ${once} ]; then touch ${once}; echo "No space left on device" >&2; exit 1; fi\nexec ${MKFS} "$@"\n`,
    );
    chmodSync(join(bin, "mkfs.erofs"), 0o755);
    const layerDir = join(dir, "layer");
    mkdirSync(join(layerDir, "etc"), { recursive: true });
    writeFileSync(join(layerDir, "etc", "motd"), "hi\n");
    const oldPath = process.env.PATH;
    process.env.PATH = `${bin}:${oldPath}`;
    const u = await LayerUser.open(layers, { pod: "converting" });
    try {
      const img = await layerImage(cache, { dir: layerDir }, log, { user: u, collect: { maxBytes: 0 } });
      assert.equal(img.built, true);
      assert.deepEqual(keys(layers).sort(), [used, img.key].sort(), "the unused image made room, the used one stayed");
      // Full again with nothing unused to remove: the conversion fails, and nothing in use goes.
      rmSync(once);
      const other = join(dir, "other");
      mkdirSync(other);
      await assert.rejects(
        layerImage(cache, { dir: other }, log, { user: u, collect: { maxBytes: 0 } }),
        (e: unknown) => e instanceof CoveError && grpcStatus(e).code === Code.RESOURCE_EXHAUSTED,
      );
      assert.deepEqual(keys(layers).sort(), [used, img.key].sort());
      assert.deepEqual(u.keys, [img.key], "the failed layer is not listed as used");
      assert.equal(unused.length, 24);
    } finally {
      process.env.PATH = oldPath;
      u.close();
      await kill9(pod);
    }
    assert.equal(layerKey({ dir: layerDir }).length, 24);
  }),
);

test(
  "a SIGKILLed shim's hold is cleared by the shim's delete (the bundle's hint), or by the next pod",
  { timeout: 60_000 },
  withTmp(async (dir) => {
    const layers = join(dir, "layers");
    const k = image(layers);
    const bundle = join(dir, "bundle");
    mkdirSync(bundle);
    writeHoldHint(bundle, layers);
    let pod = await podProcess(layers, [k]);
    await kill9(pod);
    assert.equal(readdirSync(usersDir(layers)).length, 2, "the dead shim's lock and record are still there");
    clearDeadHolds(bundle);
    assert.deepEqual(readdirSync(usersDir(layers)), []);
    // Without a delete: the next pod's start clears it.
    pod = await podProcess(layers, [k]);
    await kill9(pod);
    const next = await LayerUser.open(layers, { pod: "next" });
    assert.deepEqual(readdirSync(usersDir(layers)).sort(), [`${next.id}.json`, `${next.id}.lock`]);
    next.close();
    assert.deepEqual(readdirSync(usersDir(layers)), []);
    clearDeadHolds(join(dir, "no-such-bundle")); // no hint: nothing to do, no error
  }),
);
