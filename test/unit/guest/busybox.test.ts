// The guest's static busybox: which package version apt offers (parsed from `apt-cache show`), and,
// when it was fetched into this cache, that the binary is static and runs its applets without links.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { builtBusybox, parseAptShow } from "../../../src/guest/busybox.ts";
import { cacheDir } from "../../../src/guest/paths.ts";

const SHA = "3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744";

test("parseAptShow takes the candidate's Version and SHA256, and nothing less", () => {
  const text = `Package: busybox-static\nVersion: 1:1.35.0-4+deb12u1+b1\nSHA256: ${SHA}\nSHA256sum-not: x\nDescription: rescue\n`;
  assert.deepEqual(parseAptShow(text), { version: "1:1.35.0-4+deb12u1+b1", sha256: SHA });
  assert.equal(parseAptShow(`Version: 1\n`), undefined);
  assert.equal(parseAptShow(`Version: 1\nSHA256: ${SHA.slice(1)}\n`), undefined);
  assert.equal(parseAptShow(`Version: 1\nSHA256: ${SHA.toUpperCase()}\n`), undefined);
  assert.equal(parseAptShow(""), undefined);
});

test("the fetched busybox is static and runs applets from sh without applet links", (t) => {
  let hit: ReturnType<typeof builtBusybox>;
  try {
    hit = builtBusybox(cacheDir());
  } catch (e) {
    t.skip(`apt has no busybox-static candidate here: ${(e as Error).message}`);
    return;
  }
  if (!hit) {
    t.skip("busybox not fetched into this cache yet (npm run guest fetches it)");
    return;
  }
  assert.notEqual(spawnSync("ldd", [hit.binary]).status, 0, "ldd must call it not dynamic");
  const r = spawnSync(hit.binary, ["sh", "-c", "ls -d / && cat /proc/self/comm"], {
    encoding: "utf8",
    env: { PATH: "/nonexistent" },
  });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, "/\ncat\n");
});
