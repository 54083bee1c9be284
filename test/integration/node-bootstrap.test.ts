// The Node bootstrap of scripts/setup.sh (scripts/install-node.sh) on a machine with no Node at all:
// a minimal Debian 12 root from Debian's archive (mmdebstrap minbase, no nodejs; curl and
// ca-certificates, which setup.sh's apt step installs before the bootstrap), entered with chroot in
// a private mount namespace. The pinned Node must end up installed from the npm registry, be what
// `node`/`npm` resolve to, and run; a tarball that does not match its pinned integrity must be
// refused with nothing installed.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { parseNodePin } from "../../src/guest/node-pin.ts";
import { debianRootTarball, runInRoot, unpackRoot } from "../harness/debian-root.ts";

const CHECKOUT = resolve(import.meta.dirname, "../..");
const PIN_TEXT = readFileSync(join(CHECKOUT, "deploy/nodejs.env"), "utf8");
const PIN = parseNodePin(PIN_TEXT, {});
const NPM_VERSION = /^NPM_VERSION=(\S+)$/m.exec(PIN_TEXT)?.[1];
/** Where the checkout's bootstrap files are copied inside the root. */
const IN_ROOT = "/opt/cove";

function skipReason(): string | false {
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push("root (mmdebstrap, chroot and mounts need it)");
  if (!existsSync("/usr/bin/mmdebstrap"))
    missing.push("mmdebstrap (apt-get install mmdebstrap; scripts/test-setup.sh does)");
  if (missing.length === 0) return false;
  const reason = `SKIPPED — this machine lacks: ${missing.join("; ")}`;
  console.error(`\n!!! ${reason}\n`);
  return reason;
}
const skip = skipReason();

let dir = "";
let root = "";

before(async () => {
  if (skip) return;
  const tar = await debianRootTarball({ suite: "bookworm", variant: "minbase", include: ["curl", "ca-certificates"] });
  dir = mkdtempSync(join(tmpdir(), "cove-node-bootstrap-"));
  root = join(dir, "root");
  unpackRoot(tar, root);
  for (const f of ["scripts/install-node.sh", "deploy/nodejs.env"]) {
    mkdirSync(join(root, IN_ROOT, f, ".."), { recursive: true });
    cpSync(join(CHECKOUT, f), join(root, IN_ROOT, f));
  }
});

after(() => {
  if (!dir) return;
  // The root's /proc and /dev were mounted only inside each command's own mount namespace; refuse
  // to delete anything if one is visible here all the same.
  const mounts = readFileSync("/proc/self/mountinfo", "utf8");
  if (mounts.includes(` ${root}/`)) throw new Error(`${root} still has mounts: not removed`);
  rmSync(dir, { recursive: true, force: true });
});

function inRoot(argv: string[], env: Record<string, string> = {}) {
  const r = runInRoot(root, argv, env);
  if (r.error) throw r.error;
  return { status: r.status, out: r.stdout.trim(), err: r.stderr.trim() };
}

test("the root has no Node: no node on PATH, no nodejs package", { skip }, () => {
  assert.notEqual(inRoot(["sh", "-c", "command -v node"]).status, 0, "node found in the fresh root");
  assert.notEqual(inRoot(["dpkg-query", "-W", "nodejs"]).status, 0, "nodejs installed in the fresh root");
});

test("install-node.sh installs the pinned Node from the registry; node and npm resolve to it and run", { skip }, () => {
  const r = inRoot(["bash", `${IN_ROOT}/scripts/install-node.sh`]);
  assert.equal(r.status, 0, `install-node.sh failed:\n${r.out}\n${r.err}`);
  assert.match(r.out, new RegExp(`v${PIN.version} \\(npm ${NPM_VERSION}\\) installed in ${PIN.prefix}`));
  assert.equal(r.err, "", "install-node.sh warned (PATH should find the pinned node first)");

  assert.equal(inRoot(["sh", "-c", 'readlink -f "$(command -v node)"']).out, `${PIN.prefix}/bin/node`);
  assert.equal(inRoot(["node", "--version"]).out, `v${PIN.version}`);
  const sum = inRoot([
    "node",
    "-e",
    "process.stdout.write(require('node:crypto').createHash('sha256').update('cove').digest('hex'))",
  ]);
  assert.equal(sum.out, createHash("sha256").update("cove").digest("hex"), sum.err);
  assert.equal(inRoot(["npm", "--version"]).out, NPM_VERSION);
  assert.equal(inRoot(["npx", "--version"]).out, NPM_VERSION);
  // The headers node-gyp builds the native addon against come with it (no download from nodejs.org).
  assert.ok(existsSync(join(root, PIN.prefix, "include/node/node_api.h")), "no node_api.h in the install");

  const again = inRoot(["bash", `${IN_ROOT}/scripts/install-node.sh`]);
  assert.equal(again.status, 0, again.err);
  assert.match(again.out, /already in/);
});

test("a tarball that does not match its pinned integrity is refused and nothing is installed", { skip }, () => {
  const bad = PIN_TEXT.replace(
    /^NODE_INTEGRITY=sha512-(.)/m,
    (_m, c: string) => `NODE_INTEGRITY=sha512-${c === "A" ? "B" : "A"}`,
  );
  assert.notEqual(bad, PIN_TEXT);
  writeFileSync(join(root, IN_ROOT, "deploy/nodejs.env"), bad);
  try {
    const r = inRoot(["bash", `${IN_ROOT}/scripts/install-node.sh`], {
      COVE_NODE_ROOT: "/opt/other",
      COVE_NODE_LINKS: "/opt/other-bin",
    });
    assert.notEqual(r.status, 0, "a tampered tarball was accepted");
    assert.match(r.err, /does not match its pinned integrity/);
    assert.deepEqual(existsSync(join(root, "opt/other")) ? readdirSync(join(root, "opt/other")) : [], []);
    assert.ok(!existsSync(join(root, "opt/other-bin")), "links made for a refused install");
  } finally {
    writeFileSync(join(root, IN_ROOT, "deploy/nodejs.env"), PIN_TEXT);
  }
});
