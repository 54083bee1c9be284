// The daemon's log FIFO: opening and writing never block, whether or not containerd reads.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { closeSync, constants, mkdtempSync, openSync, readSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { createLogger, openLogFifo } from "../../../src/common/logger.ts";

test("with nobody reading, logging drops lines instead of blocking; a later reader gets what fit", () => {
  const d = mkdtempSync(join(tmpdir(), "cove-log-"));
  try {
    const path = join(d, "log");
    assert.equal(spawnSync("mkfifo", [path]).status, 0);
    const dest = openLogFifo(path); // would block forever with a plain O_WRONLY open
    const log = createLogger({ level: "info", destination: dest, base: { shim: "t1" } });
    const t0 = Date.now();
    for (let i = 0; i < 5000; i++) log.info({ i, pad: "x".repeat(100) }, "line");
    assert.ok(Date.now() - t0 < 5000, "bounded time");
    assert.ok(dest.dropped > 0, "the pipe filled and lines were dropped");
    const reader = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const buf = Buffer.alloc(4096);
      const first = buf.subarray(0, readSync(reader, buf)).toString().split("\n")[0]!;
      const o = JSON.parse(first) as { i: number; msg: string; shim: string; level: number };
      assert.deepEqual([o.i, o.msg, o.shim, o.level], [0, "line", "t1", 30]);
    } finally {
      closeSync(reader);
      dest.close();
    }
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});
