// Who uses which layer images: one "user" per pod, held by the pod's shim for as long as the pod
// lives. A user is two files in <cache_dir>/layers/.users/:
//
//   <id>.lock  flock(2)ed by the shim while the pod lives; the kernel drops it when the shim exits or
//              crashes, so a dead pod's hold needs no takeover and survives nothing it should not:
//              not a SIGKILL, not a reboot, and it does not depend on pids (no reuse, no namespaces).
//   <id>.json  the pod (id, namespace, shim pid) and the keys of the images it uses, replaced
//              atomically (write + rename) on every change; written only while the lock is held.
//
// The collector (cache-gc.ts) treats a user as live exactly when it cannot take its lock. A user's
// key is written before the user looks at the image (under the image's own lock), and the collector
// reads the users only after taking the image's lock, so an image is never removed between a user
// finding it and using it (docs/rootfs.md, "Removing images").
import { randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { LimitError } from "../common/errors.ts";
import { acquireLock } from "../guest/lock.ts";
import { tryLock } from "../native/flock.ts";

export const USERS_DIR = ".users";

export interface UserInfo {
  /** The pod's id (its first task: the CRI sandbox id, or the container `ctr run` made). */
  pod: string;
  /** containerd namespace, when known. */
  namespace?: string;
}

interface UserRecord extends UserInfo {
  pid: number;
  images: string[];
}

export function usersDir(layers: string): string {
  return join(layers, USERS_DIR);
}

/**
 * Takes the lock at `path` if nobody holds it, without waiting: the release function (unlinks the
 * file, then drops the lock), or undefined when another open file holds it. Like acquireLock, it
 * checks after locking that the path still names the locked inode (a holder unlinks before letting go).
 */
export function tryAcquire(path: string, create = true): (() => void) | undefined {
  let fd: number;
  try {
    fd = openSync(path, create ? "a+" : "r", 0o644);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  let same = false;
  if (tryLock(fd)) {
    try {
      const a = fstatSync(fd);
      const b = statSync(path);
      same = a.ino === b.ino && a.dev === b.dev;
    } catch {
      same = false;
    }
  }
  if (!same) {
    closeSync(fd);
    return undefined;
  }
  return () => {
    rmSync(path, { force: true });
    closeSync(fd);
  };
}

/** A pod's hold on the images it uses. Counts uses per key: a key is listed while its count is > 0. */
export class LayerUser {
  private readonly uses = new Map<string, number>();
  private closed = false;

  private constructor(
    private readonly dir: string,
    readonly id: string,
    private readonly info: UserInfo,
    private readonly release: () => void,
  ) {
    this.write();
  }

  /** Registers a user in the cache `layers` dir (its lock held from now until close or exit). */
  static async open(layers: string, info: UserInfo): Promise<LayerUser> {
    const dir = usersDir(layers);
    mkdirSync(dir, { recursive: true });
    const id = randomBytes(8).toString("hex");
    // Nobody else uses this id; only a collector may hold the lock for a moment (it finds the file
    // before our record exists), which acquireLock waits out.
    const release = await acquireLock(join(dir, `${id}.lock`), () => {}, { pollMs: 10, timeoutMs: 60_000 });
    liveUsers(layers); // clears the holds of pods whose shims died since
    return new LayerUser(dir, id, info, release);
  }

  /** Lists `key` as used by this pod (before the image is looked at). */
  add(key: string): void {
    if (this.closed) throw new Error("the pod's layer cache hold is closed");
    const n = this.uses.get(key) ?? 0;
    this.uses.set(key, n + 1);
    if (n > 0) return;
    try {
      this.write();
    } catch (e) {
      this.uses.delete(key);
      throw new LimitError(
        `cannot list layer image ${key} as used in ${this.dir}: ${(e as NodeJS.ErrnoException).code ?? e}`,
      );
    }
  }

  /** Gives back one use of `key`; the key is unlisted when its last use goes. */
  drop(key: string): void {
    const n = this.uses.get(key);
    if (n === undefined || this.closed) return;
    if (n > 1) this.uses.set(key, n - 1);
    else {
      this.uses.delete(key);
      try {
        this.write();
      } catch {
        // A full disk: the key stays listed (its image kept) until the next write succeeds.
      }
    }
  }

  get keys(): string[] {
    return [...this.uses.keys()];
  }

  /** Removes the record, then the lock: every image of this pod is unused from now on. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    rmSync(join(this.dir, `${this.id}.json`), { force: true });
    this.release();
    try {
      liveUsers(join(this.dir, ".."));
    } catch {
      // a record another cove wrote: the collector reports it
    }
  }

  private write(): void {
    const rec: UserRecord = { ...this.info, pid: process.pid, images: this.keys };
    const path = join(this.dir, `${this.id}.json`);
    try {
      writeFileSync(`${path}.tmp`, `${JSON.stringify(rec)}\n`, { mode: 0o644 });
      renameSync(`${path}.tmp`, path);
    } catch (e) {
      rmSync(`${path}.tmp`, { force: true });
      throw e;
    }
  }
}

export interface LiveUser extends UserRecord {
  id: string;
}

function parseRecord(text: string): UserRecord {
  const v = JSON.parse(text) as Partial<UserRecord>;
  if (typeof v.pod !== "string" || !Array.isArray(v.images) || !v.images.every((k) => typeof k === "string")) {
    throw new Error("not a layer cache user record");
  }
  return { pod: v.pod, namespace: v.namespace, pid: Number(v.pid) || 0, images: v.images };
}

/**
 * The live users and what they use. A user whose lock nobody holds is dead (its shim exited or
 * crashed): its files are removed here. A live user's record that cannot be read makes this throw:
 * what it uses is unknown, so nothing may be removed.
 */
export function liveUsers(layers: string): LiveUser[] {
  const dir = usersDir(layers);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const live: LiveUser[] = [];
  const ids = new Set(names.filter((n) => n.endsWith(".lock")).map((n) => n.slice(0, -5)));
  for (const id of ids) {
    const lock = join(dir, `${id}.lock`);
    const json = join(dir, `${id}.json`);
    const dead = tryAcquire(lock, false);
    if (dead) {
      rmSync(json, { force: true });
      rmSync(`${json}.tmp`, { force: true });
      dead();
      continue;
    }
    let text: string;
    try {
      text = readFileSync(json, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") continue; // locked, nothing listed yet
      throw e;
    }
    live.push({ id, ...parseRecord(text) });
  }
  // A record whose lock file is gone: a live user's lock exists before its record and goes only
  // after it, so this is a leftover (the lock is looked at now: the listing may predate it).
  for (const n of names) {
    const id = n.replace(/\.json(\.tmp)?$/, "");
    if (id !== n && !ids.has(id) && !existsSync(join(dir, `${id}.lock`))) rmSync(join(dir, n), { force: true });
  }
  return live;
}

/** key → the pods using it. */
export function usersByKey(users: LiveUser[]): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const u of users) for (const k of u.images) m.set(k, [...(m.get(k) ?? []), u.pod]);
  return m;
}

/** Beside a pod's task, where its hold is: the `delete` after a shim crash clears dead holds there. */
export const HOLD_HINT = "cove-layer-cache";

/** Records in a task's bundle which cache the pod holds images of. */
export function writeHoldHint(bundle: string, layers: string): void {
  try {
    writeFileSync(join(bundle, HOLD_HINT), layers, { mode: 0o600 });
  } catch {
    // no bundle (tests): the next pod's start clears dead holds instead
  }
}

/**
 * For the shim's `delete` after its daemon died: clears the dead pods' holds in the cache the
 * bundle's hint names (the dead shim's among them), so they do not wait for the next pod.
 */
export function clearDeadHolds(bundle: string): void {
  try {
    liveUsers(readFileSync(join(bundle, HOLD_HINT), "utf8"));
  } catch {
    // no hint (the task had no layers), or no cache: nothing to clear
  }
}
