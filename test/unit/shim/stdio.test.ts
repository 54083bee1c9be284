import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  closeSync,
  constants,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { errorMessage } from "../../../src/common/errors.ts";
import { grpcStatus } from "../../../src/common/grpc-status.ts";
import { openStdio, parseStdioUri } from "../../../src/shim/stdio.ts";
import { Code } from "../../../src/ttrpc/index.ts";

const openFds = () => readdirSync("/proc/self/fd").length;

function fifo(path: string): string {
  assert.equal(spawnSync("mkfifo", [path]).status, 0);
  return path;
}

test("FIFOs opened as ctr leaves them: bytes reach the client, nothing leaks", () => {
  const d = mkdtempSync(join(tmpdir(), "cove-stdio-"));
  const clientFds: number[] = [];
  try {
    const stdin = fifo(join(d, "t1-stdin"));
    const stdout = fifo(join(d, "t1-stdout"));
    const stderr = fifo(join(d, "t1-stderr"));
    // The client's ends, opened as containerd's cio does.
    clientFds.push(openSync(stdout, constants.O_RDONLY | constants.O_NONBLOCK));
    clientFds.push(openSync(stderr, constants.O_RDONLY | constants.O_NONBLOCK));
    const before = openFds();
    const s = openStdio({ stdin, stdout, stderr, terminal: false });
    clientFds.push(openSync(stdin, constants.O_WRONLY | constants.O_NONBLOCK));
    writeSync(s.stdout!, "out\n");
    writeSync(s.stderr!, "err\n");
    writeSync(clientFds[2]!, "in\n");
    const buf = Buffer.alloc(16);
    assert.equal(buf.subarray(0, readSync(clientFds[0]!, buf)).toString(), "out\n");
    assert.equal(buf.subarray(0, readSync(clientFds[1]!, buf)).toString(), "err\n");
    assert.equal(buf.subarray(0, readSync(s.stdin!, buf)).toString(), "in\n");
    assert.equal(s.keep.length, 2);
    s.close();
    assert.equal(openFds(), before + 1, "only the client's stdin writer, opened meanwhile, remains");
  } finally {
    for (const fd of clientFds) closeSync(fd);
    rmSync(d, { recursive: true, force: true });
  }
});

test("a writer opens before the client's reader, and terminal mode skips stderr", () => {
  const d = mkdtempSync(join(tmpdir(), "cove-stdio-"));
  try {
    const stdout = fifo(join(d, "o"));
    const s = openStdio({ stdin: "", stdout, stderr: join(d, "never-opened"), terminal: true });
    assert.equal(s.stderr, undefined);
    writeSync(s.stdout!, "early");
    const reader = openSync(stdout, constants.O_RDONLY | constants.O_NONBLOCK);
    const buf = Buffer.alloc(16);
    assert.equal(buf.subarray(0, readSync(reader, buf)).toString(), "early");
    closeSync(reader);
    s.close();
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test("file:// appends; binary:// and a missing FIFO are clear errors", () => {
  const d = mkdtempSync(join(tmpdir(), "cove-stdio-"));
  try {
    const f = join(d, "logs", "out.log");
    const s = openStdio({ stdin: "", stdout: `file://${f}`, stderr: "", terminal: false });
    writeSync(s.stdout!, "a");
    s.close();
    const s2 = openStdio({ stdin: "", stdout: `file://${f}`, stderr: "", terminal: false });
    writeSync(s2.stdout!, "b");
    s2.close();
    assert.equal(readFileSync(f, "utf8"), "ab");
    assert.throws(
      () => parseStdioUri("binary:///usr/bin/logger?x=1"),
      (e: unknown) => grpcStatus(e).code === Code.UNIMPLEMENTED,
    );
    const before = openFds();
    assert.throws(
      () => openStdio({ stdin: join(d, "nope-in"), stdout: "", stderr: "", terminal: false }),
      (e: unknown) => grpcStatus(e).code === Code.FAILED_PRECONDITION && /nope-in: ENOENT/.test(errorMessage(e)),
    );
    assert.equal(openFds(), before);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});
