// The guest console's line splitter: CRLF and LF, UTF-8, and a line that never ends is cut.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ConsoleLines, MAX_CONSOLE_LINE } from "../../../src/vmm/console.ts";

test("console lines: CRLF and LF end a line; a line without end keeps its first MAX_CONSOLE_LINE bytes", () => {
  const got: string[] = [];
  const c = new ConsoleLines((l) => got.push(l));
  for (const b of Buffer.from("boot ok\r\nzwölf\n\n")) c.byte(b);
  assert.deepEqual(got, ["boot ok", "zwölf", ""]);
  for (let i = 0; i < MAX_CONSOLE_LINE + 1000; i++) c.byte(0x41);
  c.byte(0x0a);
  assert.equal(got.at(-1), "A".repeat(MAX_CONSOLE_LINE));
  assert.equal(c.truncatedBytes, 1000);
});
