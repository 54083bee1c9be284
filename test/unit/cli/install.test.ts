// `cove install` / `cove uninstall` on a fake source tree and scratch files: the runtime block in the
// config version of the file (or of containerd for a new file), a second install changes nothing,
// uninstall gives back containerd's config byte for byte, restarts only when asked.
import assert from "node:assert/strict";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { afterEach, beforeEach, test } from "node:test";
import { parse } from "smol-toml";
import { addBlock, BLOCK_BEGIN, configShape, removeBlock, runtimeBlock } from "../../../src/cli/containerd-block.ts";
import { coveRuntimeConfig } from "../../../src/cli/containerd-runtime.ts";
import { type InstallOptions, install } from "../../../src/cli/install.ts";
import { TREE_FILES } from "../../../src/cli/install-layout.ts";
import { uninstall } from "../../../src/cli/uninstall.ts";

let d: string;
let root: string;
let cache: string;
let prefix: string;
let binDir: string;
let ctd: string;
let coveToml: string;

/** A source tree with every file install copies (the real snippets and default config). */
function fakeTree(): void {
  for (const f of TREE_FILES) {
    mkdirSync(join(root, f.path, ".."), { recursive: true });
    const real = resolve(f.path);
    writeFileSync(
      join(root, f.path),
      f.path.startsWith("deploy/") || f.path.startsWith("config/") ? readFileSync(real) : `${f.path}\n`,
    );
  }
  writeFileSync(join(root, "package.json"), JSON.stringify({ name: "cove", version: "0.1.0" }));
  mkdirSync(join(cache, "guest"), { recursive: true });
  writeFileSync(join(cache, "guest", "kernel"), "bzImage");
  writeFileSync(join(cache, "guest", "rootfs.erofs"), "erofs");
  writeFileSync(join(d, "node"), "node");
}

beforeEach(() => {
  d = mkdtempSync(join(tmpdir(), "cove-install-"));
  root = join(d, "src");
  cache = join(d, "cache");
  prefix = join(d, "opt", "cove");
  binDir = join(d, "bin");
  ctd = join(d, "etc", "containerd", "config.toml");
  coveToml = join(d, "etc", "cove", "cove.toml");
  fakeTree();
});
afterEach(() => rmSync(d, { recursive: true, force: true }));

const opts = (o: Partial<InstallOptions> = {}): InstallOptions => ({
  prefix,
  binDir,
  configPath: coveToml,
  containerdConfig: ctd,
  root,
  node: join(d, "node"),
  env: { COVE_CACHE_DIR: cache, PATH: "" },
  ...o,
});

/** Every file under a dir with its bytes and mtime: what "changes nothing" compares. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (p: string) => {
    const st = lstatSync(p);
    if (st.isDirectory()) for (const e of readdirSync(p)) walk(join(p, e));
    else
      out[relative(d, p)] = st.isSymbolicLink() ? `-> ${readlinkSync(p)}` : `${st.mtimeMs} ${readFileSync(p, "hex")}`;
  };
  walk(dir);
  return out;
}

// A user's file: comments, odd spacing, a runc runtime, no blank line at the end.
const USER_V2 = `# my containerd\nversion = 2\nroot = "/var/lib/containerd"   # keep\n\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n  runtime_type = "io.containerd.runc.v2"\n`;
const USER_V3 = `version = 3\n\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\nruntime_type = "io.containerd.runc.v2"`;

test("install: prefix, links, cove config, the v2 block; twice changes nothing; uninstall restores every byte", () => {
  mkdirSync(join(ctd, ".."), { recursive: true });
  writeFileSync(ctd, USER_V2);
  const r = install(opts({ containerdVersion: "1.7.24" }));
  assert.equal(r.changed, true);
  assert.equal(readlinkSync(join(binDir, "cove")), join(prefix, "bin", "cove"));
  assert.equal(readlinkSync(join(binDir, "containerd-shim-cove-v2")), join(prefix, "bin", "containerd-shim-cove-v2"));
  assert.equal(readFileSync(join(prefix, "share/guest/rootfs.erofs"), "utf8"), "erofs");
  assert.equal(readFileSync(join(prefix, "bin/node"), "utf8"), "node");
  const text = readFileSync(ctd, "utf8");
  assert.ok(text.startsWith(USER_V2), "the user's text is kept as it was, the block appended");
  assert.deepEqual(coveRuntimeConfig(ctd).handlers, ["cove"]);
  const doc = parse(text) as { plugins: Record<string, { containerd: { runtimes: Record<string, unknown> } }> };
  const cove = doc.plugins["io.containerd.grpc.v1.cri"]!.containerd.runtimes.cove as { options: object };
  assert.deepEqual({ ...cove.options }, { ConfigPath: coveToml });
  const cfg = readFileSync(coveToml, "utf8");
  assert.match(cfg, new RegExp(`^kernel = "${join(prefix, "share/guest/kernel")}"$`, "m"));
  assert.match(cfg, /^# cove: the default configuration/, "comments of the defaults kept");

  const before = snapshot(d);
  const again = install(opts({ containerdVersion: "1.7.24" }));
  assert.equal(again.changed, false, again.lines.join("\n"));
  assert.deepEqual(snapshot(d), before, "a second install touches no file");

  const u = uninstall({ prefix });
  assert.equal(readFileSync(ctd, "utf8"), USER_V2, u.lines.join("\n"));
  assert.equal(existsSync(prefix), false);
  assert.equal(existsSync(join(binDir, "cove")), false);
  assert.equal(existsSync(coveToml), false, "the cove config install wrote, unchanged, is removed");
});

test("a version 3 file gets the v3 snippet; a file without a final newline comes back exactly", () => {
  mkdirSync(join(ctd, ".."), { recursive: true });
  writeFileSync(ctd, USER_V3);
  install(opts({ containerdVersion: "2.1.9" }));
  const text = readFileSync(ctd, "utf8");
  assert.match(text, /\[plugins\.'io\.containerd\.cri\.v1\.runtime'\.containerd\.runtimes\.cove\]/);
  assert.deepEqual(coveRuntimeConfig(ctd), { version: 3, handlers: ["cove"], files: [ctd] });
  uninstall({ prefix });
  assert.equal(readFileSync(ctd, "utf8"), USER_V3);
});

test("a version 2 file on containerd 2.x stays version 2 (2.x migrates it); version 3 on 1.x is refused", () => {
  mkdirSync(join(ctd, ".."), { recursive: true });
  writeFileSync(ctd, USER_V2);
  install(opts({ containerdVersion: "2.1.9" }));
  assert.deepEqual(coveRuntimeConfig(ctd).version, 2);
  assert.deepEqual(coveRuntimeConfig(ctd).handlers, ["cove"]);
  uninstall({ prefix });
  writeFileSync(ctd, USER_V3);
  assert.throws(() => install(opts({ containerdVersion: "1.6.20" })), /version 3, which containerd 1\.x cannot read/);
  assert.equal(readFileSync(ctd, "utf8"), USER_V3);
});

test("no containerd config: one is made in containerd's version; uninstall removes it", () => {
  install(opts({ containerdVersion: "2.1.9" }));
  assert.deepEqual(coveRuntimeConfig(ctd), { version: 3, handlers: ["cove"], files: [ctd] });
  uninstall({ prefix });
  assert.equal(existsSync(ctd), false);
  install(opts({ containerdVersion: "1.6.20" }));
  assert.equal(coveRuntimeConfig(ctd).version, 2);
});

test("a runtime named cove that install did not add is left alone, and uninstall keeps it", () => {
  mkdirSync(join(ctd, ".."), { recursive: true });
  const mine = `${USER_V2}\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.cove]\n  runtime_type = "io.containerd.cove.v2"\n`;
  writeFileSync(ctd, mine);
  const r = install(opts({ containerdVersion: "1.7.24" }));
  assert.match(r.lines.join("\n"), /already has a runtime named "cove"/);
  assert.equal(readFileSync(ctd, "utf8"), mine);
  uninstall({ prefix });
  assert.equal(readFileSync(ctd, "utf8"), mine);
});

test("refused, file untouched: no version (containerd's version 1), runtimes as an inline table", () => {
  mkdirSync(join(ctd, ".."), { recursive: true });
  const v1 = `[plugins.cri.containerd]\nsnapshotter = "overlayfs"\n`;
  writeFileSync(ctd, v1);
  assert.throws(() => install(opts({ containerdVersion: "1.6.20" })), /no version.*containerd config migrate/);
  assert.equal(readFileSync(ctd, "utf8"), v1);
  const inline = `version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\nruntimes = { runc = { runtime_type = "io.containerd.runc.v2" } }\n`;
  writeFileSync(ctd, inline);
  assert.throws(() => install(opts({ containerdVersion: "1.6.20" })));
  assert.equal(readFileSync(ctd, "utf8"), inline);
});

test("containerd is restarted only when asked and only when its config changed", () => {
  const ran: string[] = [];
  const runRestart = (c: string) => ran.push(c);
  install(opts({ containerdVersion: "1.7.24", runRestart }));
  assert.deepEqual(ran, []);
  uninstall({ prefix });
  assert.equal(install(opts({ containerdVersion: "1.7.24", restart: "my-restart", runRestart })).restarted, true);
  assert.equal(install(opts({ containerdVersion: "1.7.24", restart: "my-restart", runRestart })).restarted, false);
  assert.equal(uninstall({ prefix, restart: "my-restart", runRestart }).restarted, true);
  assert.deepEqual(ran, ["my-restart", "my-restart"]);
});

test("a cove or shim in the bin dir that is not ours needs --force; an existing cove config is kept", () => {
  mkdirSync(binDir, { recursive: true });
  writeFileSync(join(binDir, "cove"), "other");
  mkdirSync(join(coveToml, ".."), { recursive: true });
  writeFileSync(coveToml, "mine\n");
  assert.throws(() => install(opts({ containerdVersion: "1.7.24" })), /exists.*--force/);
  install(opts({ containerdVersion: "1.7.24", force: true }));
  assert.equal(readlinkSync(join(binDir, "cove")), join(prefix, "bin", "cove"));
  assert.equal(readFileSync(coveToml, "utf8"), "mine\n");
  uninstall({ prefix });
  assert.equal(readFileSync(coveToml, "utf8"), "mine\n", "a config install did not write stays");
});

test("install from an installed prefix (the node-installer image) reads its guest from share/guest", () => {
  install(opts({ containerdVersion: "1.7.24" }));
  const second = join(d, "opt2");
  install({
    ...opts({ containerdVersion: "1.7.24" }),
    root: prefix,
    prefix: second,
    binDir: join(d, "bin2"),
    env: { PATH: "" },
  });
  assert.equal(readFileSync(join(second, "share/guest/kernel"), "utf8"), "bzImage");
  assert.equal(statSync(join(second, "bin/cove")).size, statSync(join(root, "bin/cove")).size);
});

test("block helpers: an edited block is refreshed in place; without the record, the markers still find it", () => {
  const snippet = readFileSync(resolve("deploy/containerd/config.toml"), "utf8");
  const shape = configShape(USER_V2);
  const a = addBlock(USER_V2, runtimeBlock(snippet, "/etc/cove/a.toml"), 2, shape);
  const b = addBlock(a.text, runtimeBlock(snippet, "/etc/cove/b.toml"), 2, configShape(a.text));
  assert.equal(b.changed, true);
  assert.equal(b.text.split(BLOCK_BEGIN).length, 2, "one block");
  assert.match(b.text, /b\.toml/);
  assert.equal(removeBlock(b.text).text, USER_V2);
  assert.equal(removeBlock(`${b.text}# later\n`, b.added).text, `${USER_V2}# later\n`, "text after the block kept");
});
