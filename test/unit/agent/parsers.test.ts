// Small parsers of the agent: the stdio header, ids, mount options, cgroup files, listen specs.
import assert from "node:assert/strict";
import { test } from "node:test";
import { checkId } from "../../../agent/src/api/errors.ts";
import { parseIoStat, parseKeyValues } from "../../../agent/src/cgroups/cgroups.ts";
import { parseListen } from "../../../agent/src/serve.ts";
import { parseStdioHeader } from "../../../agent/src/stdio/server.ts";
import { mountOptions } from "../../../agent/src/storage/storage.ts";
import { CoveError } from "../../../src/common/errors.ts";
import { grpcStatus } from "../../../src/common/grpc-status.ts";
import { formatStdioHeader } from "../../../src/proto/agent.ts";
import { stdioHeader } from "../../../src/sandbox/agent/stdio.ts";
import { Code } from "../../../src/ttrpc/index.ts";

test("stdio header: host and agent agree; bad headers are refused", () => {
  const line = stdioHeader("c1", "", "stdout");
  assert.equal(line, "cove-stdio 1 c1 - stdout\n");
  assert.deepEqual(parseStdioHeader(line.trimEnd()), { containerId: "c1", execId: "", stream: "stdout" });
  assert.equal(formatStdioHeader({ containerId: "c", execId: "e", stream: "stdin" }), stdioHeader("c", "e", "stdin"));
  for (const bad of [
    "",
    "GET / HTTP/1.1",
    "cove-stdio 2 c - stdout",
    "cove-stdio 1 c - stdpipe",
    "cove-stdio 1 c stdout",
    // Ids are checked as in every request (the handshakes fuzzer found the empty one accepted).
    "cove-stdio 1  e7 stderr",
    "cove-stdio 1 ../x - stdout",
    "cove-stdio 1 c .. stdin",
  ])
    assert.throws(() => parseStdioHeader(bad));
});

test("ids: path-safe names only", () => {
  assert.equal(checkId("abc-1.2_x", "id"), "abc-1.2_x");
  assert.equal(checkId("", "exec_id", true), "");
  for (const bad of ["", "../x", "a/b", ".hidden", "a b", "x".repeat(129), 5])
    assert.throws(
      () => checkId(bad, "id"),
      (e: unknown) => e instanceof CoveError && grpcStatus(e).code === Code.INVALID_ARGUMENT,
    );
});

test("mount options split into flags and data", () => {
  const r = mountOptions(["ro", "noatime", "loop", "rw", "errors=remount-ro", "nosuid"]);
  assert.equal(r.flags, 0x1 | 0x400 | 0x2);
  assert.equal(r.data, "errors=remount-ro");
});

test("cgroup files", () => {
  const kv = parseKeyValues("anon 4096\nfile 8192\nbogus\nx y\n");
  assert.equal(kv.get("anon"), 4096);
  assert.equal(kv.get("file"), 8192);
  assert.equal(kv.has("x"), false);
  assert.deepEqual(parseIoStat("254:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\njunk\n"), [
    { major: 254, minor: 0, rbytes: 10, wbytes: 20, rios: 1, wios: 2 },
  ]);
});

test("listen specs", () => {
  assert.deepEqual(parseListen(undefined), { kind: "vsock", port: 1024, stdioPort: 1025 });
  assert.deepEqual(parseListen("vsock:2000"), { kind: "vsock", port: 2000, stdioPort: 2001 });
  assert.deepEqual(parseListen("unix:/run/a.sock"), { kind: "unix", path: "/run/a.sock" });
  assert.throws(() => parseListen("unix:rel"));
  assert.throws(() => parseListen("tcp:1"));
});
