// The agent protocol module (src/proto/agent.ts) agrees with proto/agent/v1/agent.proto.
import assert from "node:assert/strict";
import { test } from "node:test";
import { AGENT_SERVICE, FileKind, formatStdioHeader, parseStdioHeader } from "../../../src/proto/agent.ts";
import { root } from "../../../src/proto/root.ts";

test("the service name and FileEntry.Kind are the .proto's", () => {
  assert.equal(root().lookupService(AGENT_SERVICE).fullName, `.${AGENT_SERVICE}`);
  assert.deepEqual({ ...root().lookupEnum("cove.agent.v1.FileEntry.Kind").values }, { ...FileKind });
});

test("a stdio header is parsed back as written; ids go through the given check", () => {
  const seen: string[] = [];
  const check = (id: string, kind: string) => {
    seen.push(`${kind}=${id}`);
    return id;
  };
  const line = formatStdioHeader({ containerId: "c1", execId: "", stream: "stderr" });
  assert.equal(line, "cove-stdio 1 c1 - stderr\n");
  assert.deepEqual(parseStdioHeader(line.trimEnd(), check), { containerId: "c1", execId: "", stream: "stderr" });
  assert.deepEqual(seen, ["container_id=c1"], "'-' (no exec id) is not an id to check");
  assert.deepEqual(parseStdioHeader("cove-stdio 1 c1 e1 stdin", check), {
    containerId: "c1",
    execId: "e1",
    stream: "stdin",
  });
  assert.throws(() => parseStdioHeader("cove-stdio 2 c1 e1 stdin", check), /version 2/);
  assert.throws(() => parseStdioHeader("cove-stdio 1 c1 e1 tty", check), /unknown stream tty/);
});
