// SyncFiles input as the agent gets it (through the protobuf codec): trees built from a few names
// so that parents, duplicates and kind changes (file → dir → symlink) happen, with bad paths
// (".", "..", absolute, empty components, reserved names, components longer than NAME_MAX, paths
// longer than PATH_MAX), unknown kinds, modes and owners out of range, symlink targets out of the
// tree, and a storage that already holds a symlink pointing outside it. Two or three requests run
// in a row against the same storage (on tmpfs).
// Invariants: a request either applies completely — the directory holds exactly the entries, each
// with its kind, mode, owner, bytes or target, and no temporary file — or is refused with a
// domain error (src/common/errors.ts) before anything changed; nothing outside the storage ever changes.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { SYNC_MAX_ENTRIES, syncFiles } from "../../agent/src/storage/sync-files.ts";
import { CoveError, errorMessage } from "../../src/common/errors.ts";
import { grpcStatus } from "../../src/common/grpc-status.ts";
import { FileKind, type SyncFilesRequest } from "../../src/proto/agent.ts";
import { root } from "../../src/proto/root.ts";
import { messageCodec } from "../../src/ttrpc/codec.ts";
import { type CaseContext, type Fuzzer, type Rng, runCases } from "./fuzz.ts";

const NAMES = ["a", "b", "..data", "..2024_01_01", "key", "x.y", "é"];

function component(rng: Rng): string {
  const k = rng.next();
  if (k < 0.9) return rng.pick(NAMES);
  return rng.pick([
    "",
    ".",
    "..",
    ".cove-sync-1",
    "n".repeat(rng.pick([255, 256, 300])),
    "é".repeat(128),
    "\0x",
    "a\\b",
  ]);
}

function genPath(rng: Rng): string {
  if (rng.chance(0.02)) return `${"d/".repeat(rng.pick([127, 128, 129, rng.range(130, 2100)]))}f`;
  if (rng.chance(0.02)) return `/${rng.pick(NAMES)}`;
  const parts = Array.from({ length: rng.range(1, 3) }, () => component(rng));
  return parts.join("/");
}

interface GenEntry {
  path: string;
  kind: number;
  mode: number;
  uid: number;
  gid: number;
  data?: Buffer;
  target?: string;
}

function genEntries(rng: Rng): GenEntry[] {
  const out: GenEntry[] = [];
  const have = new Set<string>();
  const n = rng.chance(0.005) ? SYNC_MAX_ENTRIES + 1 : rng.int(7);
  for (let i = 0; i < n; i++) {
    const path = genPath(rng);
    // Mostly: its parents first, as directories (what a well-formed request does).
    if (rng.chance(0.85)) {
      const parts = path.split("/");
      for (let j = 1; j < parts.length; j++) {
        const p = parts.slice(0, j).join("/");
        if (have.has(p)) continue;
        have.add(p);
        out.push({ path: p, kind: FileKind.DIR, mode: 0o755, uid: 0, gid: 0 });
      }
    }
    if (have.has(path) && rng.chance(0.9)) continue;
    have.add(path);
    const kind = rng.chance(0.95) ? rng.pick([FileKind.FILE, FileKind.DIR, FileKind.SYMLINK]) : rng.pick([3, 99]);
    out.push({
      path,
      kind,
      mode: rng.chance(0.9) ? rng.pick([0o644, 0o755, 0o600, 0o400]) : rng.pick([0o4755, 0o7777, 0o10000, 0xffffffff]),
      uid: rng.chance(0.9) ? rng.pick([0, 1000, 65534]) : rng.pick([0xfffffffe, 0xffffffff]),
      gid: rng.chance(0.9) ? rng.pick([0, 1000]) : 0xffffffff,
      data:
        kind === FileKind.FILE ? rng.bytes(rng.chance(0.003) ? rng.range(1 << 20, 4 << 20) : rng.int(32)) : undefined,
      target:
        kind === FileKind.SYMLINK
          ? rng.pick([
              "..data/key",
              "a",
              "/etc/passwd",
              "../../outside",
              "",
              "t".repeat(rng.pick([10, 4095, 4096, 5000])),
              "é".repeat(2000),
            ])
          : undefined,
    });
  }
  if (rng.chance(0.1)) out.sort(() => rng.next() - 0.5);
  return out;
}

type Snapshot = Map<string, string>;

/** Every entry under `dir`, without following symlinks: kind, mode, owner and content or target. */
function snapshot(dir: string, rel = "", out: Snapshot = new Map()): Snapshot {
  let names: string[];
  try {
    names = readdirSync(join(dir, rel));
  } catch {
    return out;
  }
  for (const name of names) {
    const r = rel ? `${rel}/${name}` : name;
    const p = join(dir, r);
    const s = lstatSync(p);
    const head = `${s.mode.toString(8)} ${s.uid}:${s.gid}`;
    if (s.isSymbolicLink()) out.set(r, `${head} -> ${readlinkSync(p)}`);
    else if (s.isDirectory()) {
      out.set(r, `${head} dir`);
      snapshot(dir, r, out);
    } else out.set(r, `${head} ${createHash("sha1").update(readFileSync(p)).digest("hex")}`);
  }
  return out;
}

function expected(entries: GenEntry[]): Snapshot {
  const out: Snapshot = new Map();
  for (const e of entries) {
    const type = e.kind === FileKind.DIR ? 0o040000 : e.kind === FileKind.SYMLINK ? 0o120000 : 0o100000;
    const mode = e.kind === FileKind.SYMLINK ? 0o777 : e.mode & 0o7777;
    const head = `${(type | mode).toString(8)} ${e.uid}:${e.gid}`;
    if (e.kind === FileKind.SYMLINK) out.set(e.path, `${head} -> ${e.target}`);
    else if (e.kind === FileKind.DIR) out.set(e.path, `${head} dir`);
    else
      out.set(
        e.path,
        `${head} ${createHash("sha1")
          .update(e.data ?? Buffer.alloc(0))
          .digest("hex")}`,
      );
  }
  return out;
}

function diff(a: Snapshot, b: Snapshot): string | undefined {
  for (const [k, v] of a)
    if (b.get(k) !== v) return `${JSON.stringify(k.slice(0, 80))}: ${b.get(k) ?? "missing"}, want ${v}`;
  for (const k of b.keys()) if (!a.has(k)) return `${JSON.stringify(k.slice(0, 80))} should not be there`;
  return undefined;
}

/** rmSync, or rm -rf for a tree too deep for Node's recursive rmSync (its stack). */
function removeTree(p: string): void {
  try {
    rmSync(p, { recursive: true, force: true });
  } catch {
    spawnSync("rm", ["-rf", "--one-file-system", p]);
  }
}

const codec = () => messageCodec(root().lookupType("cove.agent.v1.SyncFilesRequest"));
let base: string | undefined;

async function oneCase({ rng, rec }: CaseContext): Promise<void> {
  base ??= mkdtempSync(join(process.platform === "linux" ? "/dev/shm" : "/tmp", "cove-fuzz-sync-"));
  removeTree(base);
  const store = join(base, "store");
  const outside = join(base, "outside");
  mkdirSync(store, { recursive: true });
  mkdirSync(outside);
  writeFileSync(join(outside, "secret"), "host data");
  if (rng.chance(0.3)) {
    // A storage that already holds links out of itself (as a hostile earlier state could leave).
    symlinkSync("../outside", join(store, rng.pick(NAMES)));
    rec.state("plantedLink");
  }
  const outside0 = snapshot(outside);
  for (let round = rng.range(1, 2); round > 0; round--) {
    const entries = genEntries(rng);
    const subdir = rng.chance(0.8) ? "" : rng.pick(["a", "a/b", "..", "/abs", "..data"]);
    const req = codec().decode(
      codec().encode({
        storage_id: rng.chance(0.95) ? "vol" : rng.pick(["other", "", "../vol"]),
        subdir,
        entries,
        in_place: rng.chance(0.3),
      }),
    ) as unknown as SyncFilesRequest;
    const dir = subdir ? join(store, subdir) : store;
    const before = snapshot(store);
    rec.bounded("entries", entries.length, SYNC_MAX_ENTRIES + 1);
    try {
      syncFiles(req, (id) => (id === "vol" ? store : undefined));
      rec.state("applied");
      const bad = diff(expected(entries), snapshot(dir));
      if (bad) rec.violate(`applied, but ${bad}`);
    } catch (e) {
      if (!(e instanceof CoveError)) {
        rec.state("threwRaw");
        rec.violate(`threw ${errorMessage(e)} (not a checked refusal)`);
      } else rec.state(`refused:${grpcStatus(e).code}`);
      const bad = diff(before, snapshot(store));
      if (bad) rec.violate(`refused after a change: ${bad}`);
    }
    rec.op(req.in_place ? "syncInPlace" : "sync");
  }
  const bad = diff(outside0, snapshot(outside));
  if (bad) rec.violate(`outside the storage: ${bad}`);
}

export const fuzzer: Fuzzer = {
  name: "sync-files",
  async run(opts) {
    try {
      return await runCases("sync-files", opts, oneCase);
    } finally {
      if (base) removeTree(base);
      base = undefined;
    }
  },
};
