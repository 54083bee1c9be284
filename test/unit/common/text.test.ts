// printable(): guest text bounded and escaped before it reaches a log or containerd.
import assert from "node:assert/strict";
import { test } from "node:test";
import { printable } from "../../../src/common/text.ts";

test("controls are escaped; newlines, tabs and ordinary text stay", () => {
  assert.equal(printable("a\tb\nc", 100), "a\tb\nc");
  assert.equal(printable("\x1b[31mred\r\x00\x7f\x85", 100), "\\x1b[31mred\\x0d\\x00\\x7f\\x85");
  assert.equal(printable("\u202eevil\u2066\u2028", 100), "\\u202eevil\\u2066\\u2028");
  assert.equal(printable("ünïcødé ✓", 100), "ünïcødé ✓");
});

test("bounded, keeping the head or the tail, the cut marked", () => {
  const s = `${"a".repeat(50)}${"b".repeat(50)}`;
  assert.equal(printable(s, 10), `${"a".repeat(9)}…`);
  assert.equal(printable(s, 10, "end"), `…${"b".repeat(9)}`);
  assert.equal(printable("\x1b".repeat(100), 12).length, 12);
  assert.equal(printable("\x1b".repeat(100), 12, "end").length, 12);
  assert.equal(printable("short", 5), "short");
  assert.ok(printable("x".repeat(1 << 22), 2000, "end").length <= 2000);
});
