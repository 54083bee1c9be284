// The cove CLI: command lookup, help, and `cove check` on an empty cache.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { type Command, findCommand } from "../../../src/cli/command.ts";
import { COMMANDS } from "../../../src/cli/commands.ts";

const cmd = (path: string[]): Command => ({ path, summary: "", usage: "", run: async () => 0 });

test("findCommand picks the longest matching command path", () => {
  const cs = [cmd(["guest"]), cmd(["guest", "build"]), cmd(["check"])];
  assert.deepEqual(findCommand(cs, ["guest", "build", "--force"])?.rest, ["--force"]);
  assert.deepEqual(findCommand(cs, ["guest", "build"])?.cmd.path, ["guest", "build"]);
  assert.deepEqual(findCommand(cs, ["guest", "other"])?.cmd.path, ["guest"]);
  assert.equal(findCommand(cs, ["nope"]), undefined);
});

test("the registry has guest build, check and help, each path unique", () => {
  const names = COMMANDS.map((c) => c.path.join(" "));
  for (const n of ["guest build", "check", "help"]) assert.ok(names.includes(n), n);
  assert.equal(new Set(names).size, names.length);
});

function cove(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, ["dist/cove.cjs", ...args], {
    encoding: "utf8",
    env: { ...process.env, ...env },
    timeout: 30_000,
  });
}

test("cove help lists the commands; unknown commands exit 2", () => {
  const h = cove(["help"]);
  assert.equal(h.status, 0, h.stderr);
  assert.match(h.stdout, /guest build/);
  assert.match(h.stdout, /check/);
  const u = cove(["frobnicate"]);
  assert.equal(u.status, 2);
  assert.match(u.stderr, /unknown command: frobnicate/);
  const bad = cove(["guest", "build", "--only", "nothing"]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--only takes kernel or image/);
});

test("cove check on an empty cache reports the guest missing, with the fix, and exits 1", () => {
  const cache = mkdtempSync(join(tmpdir(), "cove-check-"));
  try {
    // cove check reads the config the shim reads: its cache_dir, not $COVE_CACHE_DIR.
    writeFileSync(join(cache, "cove.toml"), `cache_dir = "${cache}"\n`);
    const env = { COVE_CONFIG: join(cache, "cove.toml"), COVE_CONTAINERD_CONFIG: join(cache, "none.toml") };
    const r = cove(["check"], env);
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`MISSING\\s+guest kernel\\s+${join(cache, "guest/kernel")} missing`));
    assert.match(r.stdout, /fix: npm run guest/);
    const j = cove(["check", "--json"], env);
    const results = JSON.parse(j.stdout) as { name: string; ok: boolean; required: boolean; fix?: string }[];
    const image = results.find((c) => c.name === "guest image");
    assert.equal(image?.ok, false);
    assert.equal(image?.required, true);
    assert.ok(image?.fix?.includes("npm run guest"));
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
});
