// The layer image cache (src/rootfs/layers.ts) with the real mkfs.erofs: keyed by the committed
// snapshot's name when known (a re-pull or another containerd root reuses the image), converted once
// across processes, and a failed conversion names the layer and leaves nothing behind.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { chmodSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { test } from "node:test";
import { pino } from "pino";
import { CoveError } from "../../../src/common/errors.ts";
import { grpcStatus } from "../../../src/common/grpc-status.ts";
import { layerImage, layerKey, layersDir } from "../../../src/rootfs/layers.ts";
import { Code } from "../../../src/ttrpc/index.ts";
import { MKFS, withTmp } from "./tmp.ts";

const log = pino({ level: "silent" });
const skip = MKFS ? false : "mkfs.erofs is not installed (erofs-utils)";

function layerDir(root: string, name: string, content = "hello\n"): string {
  const d = join(root, name);
  mkdirSync(join(d, "etc"), { recursive: true });
  writeFileSync(join(d, "etc", "motd"), content);
  return d;
}

/**
 * A mkfs.erofs in front of the real one on PATH: counts its runs in `count` and sleeps `sleepS`
 * first (so concurrent callers overlap); with `fail`, writes part of an image and fails that way.
 */
function fakeMkfs(dir: string, opts: { sleepS?: number; fail?: string }): { path: string; count: string } {
  const bin = join(dir, "bin");
  mkdirSync(bin, { recursive: true });
  const count = join(dir, "mkfs-runs");
  const body = opts.fail
    ? `for a; do case "$a" in *.tmp) echo partial > "$a";; esac; done; echo ${JSON.stringify(opts.fail)} >&2; exit 1`
    : `exec ${MKFS} "$@"`;
  writeFileSync(join(bin, "mkfs.erofs"), `#!/bin/sh\necho run >> ${count}\nsleep ${opts.sleepS ?? 0}\n${body}\n`);
  chmodSync(join(bin, "mkfs.erofs"), 0o755);
  return { path: `${bin}:${process.env.PATH}`, count };
}

async function withPath<T>(path: string, f: () => Promise<T>): Promise<T> {
  const old = process.env.PATH;
  process.env.PATH = path;
  try {
    return await f();
  } finally {
    process.env.PATH = old;
  }
}

const runs = (count: string) => readFileSync(count, "utf8").split("\n").filter(Boolean).length;

test(
  "a committed snapshot's image is found again from another directory (re-pull, new containerd root)",
  { skip },
  withTmp(async (dir) => {
    const cache = join(dir, "cache");
    const snapshot = "overlayfs/sha256:0123456789abcdef";
    const a = await layerImage(cache, { dir: layerDir(dir, "root1-snap-7"), snapshot }, log);
    assert.equal(a.built, true);
    const b = await layerImage(cache, { dir: layerDir(dir, "root2-snap-3"), snapshot }, log);
    assert.equal(b.built, false, "the second directory of the same snapshot reuses the image");
    assert.equal(b.path, a.path);
    // Without a snapshot name the directory is the key: another directory is another image.
    const k1 = layerKey({ dir: join(dir, "root1-snap-7") });
    assert.notEqual(k1, layerKey({ dir: join(dir, "root2-snap-3") }));
    assert.notEqual(k1, a.key);
    assert.notEqual(layerKey({ dir, snapshot: "native/sha256:0123456789abcdef" }), a.key, "snapshotter is part of it");
    assert.deepEqual(
      readdirSync(layersDir(cache)).sort(),
      [`${a.key}.erofs`, `${a.key}.erofs.json`],
      "the image and its source record; no lock or temporary file is left",
    );
    const dump = execFileSync("dump.erofs", ["--path=/etc/motd", a.path], { encoding: "utf8" });
    assert.match(dump, /Size: 6/);
  }),
);

test(
  "three processes needing one unconverted layer at once convert it once",
  { skip, timeout: 60_000 },
  withTmp(async (dir) => {
    const cache = join(dir, "cache");
    const src = { dir: layerDir(dir, "layer"), snapshot: "overlayfs/sha256:feed" };
    const fake = fakeMkfs(dir, { sleepS: 1 });
    const layersTs = resolve("src/rootfs/layers.ts");
    const child = () => {
      const code = `
        import { layerImage } from ${JSON.stringify(layersTs)};
        import { pino } from "pino";
        const r = await layerImage(${JSON.stringify(cache)}, ${JSON.stringify(src)}, pino({ level: "silent" }));
        console.log(JSON.stringify(r));`;
      const p = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", code], {
        env: { ...process.env, PATH: fake.path },
        stdio: ["ignore", "pipe", "inherit"],
      });
      let out = "";
      p.stdout.on("data", (d: Buffer) => (out += d));
      return new Promise<{ path: string; built: boolean }>((res, rej) =>
        p.on("exit", (c) => (c === 0 ? res(JSON.parse(out)) : rej(new Error(`child exited ${c}: ${out}`)))),
      );
    };
    const [x, y, z, w] = await withPath(fake.path, () =>
      Promise.all([child(), child(), layerImage(cache, src, log), layerImage(cache, src, log)]),
    );
    assert.equal(runs(fake.count), 1, "mkfs.erofs ran once");
    assert.equal(new Set([x.path, y.path, z.path, w.path]).size, 1);
    assert.equal([x, y, z].filter((r) => r.built).length, 1, "one of the processes built it");
    assert.equal(w, z, "callers in one process share one promise");
  }),
);

test(
  "a full cache disk: RESOURCE_EXHAUSTED naming the layer and the cache, and no partial image",
  { skip },
  withTmp(async (dir) => {
    const cache = join(dir, "cache");
    const fake = fakeMkfs(dir, { fail: "<E> erofs: Could not format the device : [Error 28] No space left on device" });
    const snapshot = "overlayfs/sha256:beef";
    await withPath(fake.path, () =>
      assert.rejects(layerImage(cache, { dir: layerDir(dir, "layer"), snapshot }, log), (e: unknown) => {
        assert.ok(e instanceof CoveError);
        assert.equal(grpcStatus(e).code, Code.RESOURCE_EXHAUSTED);
        assert.match(e.message, /cannot convert layer overlayfs\/sha256:beef \(.*\/layer\)/);
        assert.match(e.message, /the layer cache .*cache\/layers is full/);
        return true;
      }),
    );
    assert.deepEqual(readdirSync(layersDir(cache)), [], "nothing left in the cache");
    // The next attempt (space freed) converts it.
    const ok = await layerImage(cache, { dir: join(dir, "layer"), snapshot }, log);
    assert.equal(ok.built, true);
  }),
);

test(
  "a tree mkfs.erofs refuses (a path longer than PATH_MAX): a clear error and nothing left",
  { skip },
  withTmp(async (dir) => {
    const cache = join(dir, "cache");
    const layer = layerDir(dir, "deep");
    const cwd = process.cwd();
    try {
      // Made one relative step at a time: the full path is longer than one syscall may take.
      process.chdir(layer);
      for (let i = 0; i < 25; i++) {
        mkdirSync("x".repeat(200));
        process.chdir("x".repeat(200));
      }
      process.chdir(cwd);
      await assert.rejects(layerImage(cache, { dir: layer }, log), (e: unknown) => {
        assert.ok(e instanceof CoveError);
        assert.equal(grpcStatus(e).code, Code.INTERNAL);
        assert.match(e.message, new RegExp(`cannot convert layer ${layer} to an erofs image: .+`));
        return true;
      });
      assert.deepEqual(readdirSync(layersDir(cache)), []);
    } finally {
      process.chdir(cwd);
      execFileSync("rm", ["-rf", layer]); // rm walks relative to each directory; Node's rmSync cannot
    }
  }),
);
