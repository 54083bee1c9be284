import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { pino } from "pino";
import { Storages } from "../../../../agent/src/storage/storage.ts";

const root = process.getuid?.() === 0;

describe("agent storages: reference counts and sandbox lifetime", {
  skip: root ? false : "needs root (mounts tmpfs)",
}, () => {
  test("a container storage goes with its last user; a sandbox-lifetime one stays until releaseAll", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cove-storages-"));
    const s = new Storages(dir, pino({ level: "silent" }) as never);
    try {
      const tmp = { source: "tmpfs", fstype: "tmpfs", options: [], wait_ms: 0 };
      const a = await s.acquire({ id: "plain", ...tmp });
      const b = await s.acquire({ id: "empty-1", ...tmp, sandbox_lifetime: true });
      await s.acquire({ id: "empty-1", ...tmp, sandbox_lifetime: true }); // a second container
      writeFileSync(join(b, "data"), "kept");
      s.release("plain");
      assert.equal(s.path("plain"), undefined);
      assert.equal(existsSync(a), false);
      s.release("empty-1");
      s.release("empty-1"); // both containers gone: the pod still holds it
      assert.equal(readFileSync(join(b, "data"), "utf8"), "kept");
      await s.acquire({ id: "empty-1", ...tmp, sandbox_lifetime: true }); // a re-created container
      assert.equal(readFileSync(join(s.path("empty-1")!, "data"), "utf8"), "kept");
      s.releaseAll();
      assert.equal(s.path("empty-1"), undefined);
      assert.equal(existsSync(b), false, "unmounted and removed at DestroySandbox");
    } finally {
      s.releaseAll();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
