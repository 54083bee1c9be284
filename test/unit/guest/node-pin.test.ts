// The pinned Node (deploy/nodejs.env) and what must agree with it: package.json's engines and
// @types/node, the README's statement of the supported version.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { parseNodePin } from "../../../src/guest/node-pin.ts";

const PIN_TEXT = readFileSync("deploy/nodejs.env", "utf8");

test("parseNodePin reads the version and the install prefix; COVE_NODE_ROOT moves the prefix", () => {
  const text = "# comment\nNODE_ROOT=/usr/local/lib/cove\nNODE_VERSION=24.1.2\nNODE_INTEGRITY=sha512-x\n";
  assert.deepEqual(parseNodePin(text, {}), { version: "24.1.2", prefix: "/usr/local/lib/cove/node-v24.1.2" });
  assert.equal(parseNodePin(text, { COVE_NODE_ROOT: "/opt/n" }).prefix, "/opt/n/node-v24.1.2");
  assert.throws(() => parseNodePin("NODE_ROOT=/x\n", {}), /NODE_VERSION or NODE_ROOT missing/);
  assert.throws(() => parseNodePin("NODE_ROOT=/x\nNODE_VERSION=24\n", {}), /NODE_VERSION/);
  assert.throws(() => parseNodePin("NODE_VERSION=24.1.2\n", {}), /NODE_ROOT/);
});

test("the pin is an LTS major that package.json's engines and @types/node agree with", () => {
  const pin = parseNodePin(PIN_TEXT, {});
  const major = Number(pin.version.split(".")[0]);
  assert.equal(major % 2, 0, "odd majors are never LTS");
  assert.match(PIN_TEXT, /^NODE_INTEGRITY=sha512-[A-Za-z0-9+/]{86}==$/m);
  assert.match(PIN_TEXT, /^NPM_INTEGRITY=sha512-[A-Za-z0-9+/]{86}==$/m);
  const pkg = JSON.parse(readFileSync("package.json", "utf8")) as {
    engines: { node: string };
    devDependencies: Record<string, string>;
  };
  assert.match(pkg.engines.node, new RegExp(`^\\^${major}\\.`), "engines names the pinned major");
  assert.match(
    pkg.devDependencies["@types/node"] ?? "",
    new RegExp(`^\\^${major}\\.`),
    "@types/node of the pinned major",
  );
  const readme = readFileSync("README.md", "utf8");
  assert.ok(readme.includes(`Node ${major} (LTS)`) && readme.includes(pin.version), "README states the pinned version");
});
