// `cove cache ls / prune / gc` on a real cache dir: what ls shows (size, last use, users, source),
// and that prune removes the unused images and keeps the one a pod holds.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { cacheGcCommand, cacheLsCommand, cachePruneCommand } from "../../../src/cli/cache.ts";
import { LayerUser } from "../../../src/rootfs/cache-users.ts";

async function output(f: () => Promise<number>): Promise<{ code: number; out: string }> {
  const write = process.stdout.write.bind(process.stdout);
  let out = "";
  process.stdout.write = ((s: string) => {
    out += s;
    return true;
  }) as typeof process.stdout.write;
  try {
    return { code: await f(), out };
  } finally {
    process.stdout.write = write;
  }
}

test("cove cache ls shows size, last use, users and source; prune keeps what a pod uses", async () => {
  const dir = mkdtempSync(join(tmpdir(), "cove-cache-cli-"));
  try {
    const layers = join(dir, "layers");
    mkdirSync(layers);
    // The config names the cache; ls reads cache_dir from it, the others are given --cache-dir.
    const config = join(dir, "cove.toml");
    writeFileSync(config, `cache_dir = "${dir}"\n[cache]\nmax_layers_gib = 20\n`);
    const used = "1".repeat(24);
    const unused = "2".repeat(24);
    for (const k of [used, unused]) writeFileSync(join(layers, `${k}.erofs`), Buffer.alloc(3 << 20, 1));
    const old = new Date(Date.now() - 3 * 3600_000);
    utimesSync(join(layers, `${unused}.erofs`), old, old);
    writeFileSync(
      join(layers, `${used}.erofs.json`),
      JSON.stringify({ snapshot: "overlayfs/sha256:abc", dir: "/d", containerd: [] }),
    );
    const u = await LayerUser.open(layers, { pod: "pod-0123456789abcdef" });
    u.add(used);
    try {
      const ls = await output(() => cacheLsCommand.run(["--config", config]));
      assert.equal(ls.code, 0);
      const lines = ls.out.trim().split("\n");
      assert.match(lines[0]!, /^IMAGE\s+SIZE\s+LAST USE\s+USERS\s+SOURCE$/);
      assert.match(lines[1]!, new RegExp(`^${unused}\\s+3\\.0 MiB\\s+3h ago\\s+-\\s+\\(no record\\)$`));
      assert.match(
        lines[2]!,
        new RegExp(`^${used}\\s+3\\.0 MiB\\s+\\d+s ago\\s+pod-01234567\\s+overlayfs/sha256:abc$`),
      );
      assert.match(lines[3]!, /^2 image\(s\), 6\.0 MiB, 1 in use$/);
      const json = JSON.parse((await output(() => cacheLsCommand.run(["--config", config, "--json"]))).out);
      assert.deepEqual(
        json.map((e: { key: string; users: string[] }) => [e.key, e.users]),
        [
          [unused, []],
          [used, ["pod-0123456789abcdef"]],
        ],
      );
      // gc: nothing is gone and there is no size pressure (a config with the default 20 GiB).
      const gc = await output(() => cacheGcCommand.run(["--config", config]));
      assert.match(gc.out, /removed 0 image\(s\)/);
      const dry = await output(() => cachePruneCommand.run(["--config", config, "--cache-dir", dir, "--dry-run"]));
      assert.match(dry.out, new RegExp(`would remove ${unused}\\s+3\\.0 MiB\\s+unused`));
      assert.equal(readdirSync(layers).filter((n) => n.endsWith(".erofs")).length, 2, "dry run removes nothing");
      const prune = await output(() => cachePruneCommand.run(["--config", config, "--cache-dir", dir]));
      assert.match(prune.out, /removed 1 image\(s\), 3\.0 MiB; left 1 image\(s\), 3\.0 MiB, 1 in use/);
      assert.deepEqual(
        readdirSync(layers)
          .filter((n) => n.endsWith(".erofs"))
          .sort(),
        [`${used}.erofs`],
      );
    } finally {
      u.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
