// The shim binary's `start` and `delete` actions (containerd runs them as short-lived processes), kept
// apart from the serving daemon. `start` stays light: no proto root, no logger, no sandbox code.

import { spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import protobuf from "protobufjs/minimal.js";
import { errorMessage } from "../common/errors.ts";
import { closeFd, unixListen } from "../native/fdpass.ts";
import { clearDeadHolds } from "../rootfs/cache-users.ts";
import { reapOrphanVm } from "../sandbox/cleanup.ts";
import { addressPath, DEFAULT_SOCKET_DIR, groupingOf, socketAddress, socketPath } from "./address.ts";
import { daemonArgs, type ShimFlags } from "./flags.ts";
import { decodeStartOptions, logLevelName } from "./options.ts";
import { callerOf, encodeStartAnswer, startAnswerFor } from "./protocol.ts";

/** The OCI annotations of the bundle's config.json (empty when there is none or it is unreadable). */
export function bundleAnnotations(bundle: string): Record<string, string> {
  try {
    const spec = JSON.parse(readFileSync(join(bundle, "config.json"), "utf8")) as { annotations?: unknown };
    const a = spec.annotations;
    if (a && typeof a === "object" && !Array.isArray(a)) {
      return Object.fromEntries(Object.entries(a).filter(([, v]) => typeof v === "string")) as Record<string, string>;
    }
  } catch {
    // No or malformed config.json: the task is its own group.
  }
  return {};
}

/** True if something accepts connections on the unix socket at path (bounded by timeoutMs). */
export function canConnect(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
  });
}

export type ListenResult = { kind: "listening"; fd: number } | { kind: "existing" };

/**
 * Binds and listens on path outside libuv (a raw fd for the daemon; this process never accepts on
 * it, and closing it here does not unlink the path as closing a net.Server would). If a live shim
 * already serves path (another task of the same pod), reports "existing"; a stale socket file
 * (nobody accepting) is removed and the listen retried.
 */
export async function listenOrReuse(path: string): Promise<ListenResult> {
  for (let attempt = 0; attempt < 3; attempt++) {
    // The socket must be 0600: only root (containerd) may talk to the shim.
    const old = process.umask(0o177);
    try {
      const fd = unixListen(path, 128);
      chmodSync(path, 0o600);
      return { kind: "listening", fd };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EADDRINUSE") throw e;
    } finally {
      process.umask(old);
    }
    if (await canConnect(path)) return { kind: "existing" };
    try {
      unlinkSync(path);
    } catch (u) {
      if ((u as NodeJS.ErrnoException).code !== "ENOENT") throw u;
    }
  }
  throw new Error(`cannot listen on ${path}: address stays in use`);
}

/** containerd's shim gets oom_score_adj one above containerd's, so the OOM killer prefers it. */
export function raiseOomScore(pid: number | "self"): void {
  try {
    const mine = Number.parseInt(readFileSync("/proc/self/oom_score_adj", "utf8"), 10);
    writeFileSync(`/proc/${pid}/oom_score_adj`, String(Math.min(1000, mine + 1)));
  } catch {
    // Not fatal (e.g. not permitted in a user namespace).
  }
}

/**
 * The daemon's environment: ours, minus a Node IPC channel we may have been given (e.g. under a
 * test runner): the daemon would take NODE_CHANNEL_FD=3 as its IPC channel, i.e. our socket.
 */
export function daemonEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out = { ...env };
  delete out.NODE_CHANNEL_FD;
  delete out.NODE_CHANNEL_SERIALIZATION_MODE;
  return out;
}

export interface StartIO {
  stdin: Uint8Array;
  /** The bundle (containerd runs `start` with the bundle as cwd). */
  cwd: string;
  /** How to run this binary again as the daemon; default: this very process's node + script. */
  self?: { command: string; args: string[] };
  /** Override of the socket directory (tests); else BootstrapParams.socket_dir, else /run/containerd/s. */
  socketDir?: string;
  /** The environment containerd gave us (MAX_SHIM_VERSION); default process.env. */
  env?: NodeJS.ProcessEnv;
  /** How to learn the calling containerd's major version (tests); default runs -publish-binary --version. */
  probeContainerd?: (binary: string) => number | undefined;
}

/** What `start` settled: the address, and either a fresh listening fd for a new daemon or a live shim. */
export interface StartPlan {
  address: string;
  /** What to print: the address in the form and version the calling containerd accepts (protocol.ts). */
  answer: Uint8Array;
  path: string;
  bundle: string;
  /** A raw listening socket fd the new daemon serves on; absent when a live shim serves the pod. */
  listenFd?: number;
  /** The daemon's flags: -debug also from a 2.3 BootstrapParams log level, the socket, the config path. */
  daemonFlags: ShimFlags;
}

/** The part of `start` before any daemon exists: options, grouping, socket (bound or reused), ./address. */
export async function planStart(flags: ShimFlags, io: StartIO): Promise<StartPlan> {
  if (!flags.id) throw new Error("start: -id is required");
  if (!flags.namespace) throw new Error("start: -namespace is required");
  const bundle = flags.bundle || io.cwd;
  const opts = decodeStartOptions(io.stdin, flags.id);
  const grouping = groupingOf(flags.id, bundleAnnotations(bundle));
  const dir = io.socketDir ?? opts.socketDir ?? DEFAULT_SOCKET_DIR;
  mkdirSync(dir, { recursive: true, mode: 0o711 });
  const path = socketPath(flags.address, flags.namespace, grouping, dir);
  const address = socketAddress(path);
  // containerd 2.3 passes its log level in BootstrapParams instead of -debug.
  const level = logLevelName(opts.logLevel);
  const daemonFlags: ShimFlags = {
    ...flags,
    action: "serve",
    socket: address,
    configPath: opts.configPath ?? "",
    debug: flags.debug || level === "debug" || level === "trace",
  };
  const answer = encodeStartAnswer(
    startAnswerFor(callerOf(io.env ?? process.env, opts, flags.publishBinary, io.probeContainerd)),
    address,
  );
  const listened = await listenOrReuse(path);
  writeFileSync(join(bundle, "address"), address, { mode: 0o600 });
  return {
    address,
    answer,
    path,
    bundle,
    listenFd: listened.kind === "listening" ? listened.fd : undefined,
    daemonFlags,
  };
}

/**
 * `start` as containerd's Go shims do it: plan, then re-execute this binary as the daemon with the
 * listening socket as fd 3, and return the address to print. (bin/containerd-shim-cove-v2 normally
 * takes the faster path, where the start process itself becomes the daemon: main.ts.) Returns what
 * to print (the plan's answer).
 */
export async function start(flags: ShimFlags, io: StartIO): Promise<Uint8Array> {
  const plan = await planStart(flags, io);
  if (plan.listenFd === undefined) return plan.answer;
  const fd = plan.listenFd;
  const self = io.self ?? { command: process.execPath, args: [...process.execArgv, process.argv[1]!] };
  const f = plan.daemonFlags;
  const child = spawn(self.command, [...self.args, ...daemonArgs(f, f.socket, f.configPath)], {
    cwd: plan.bundle,
    detached: true, // own session and process group, as containerd's Setpgid
    // Never inherit fds 1/2: they are containerd's CombinedOutput pipe, which it reads to EOF.
    stdio: ["ignore", "ignore", "ignore", fd],
    env: daemonEnv(process.env),
  });
  let spawned: number;
  try {
    spawned = await new Promise<number>((resolve, reject) => {
      child.once("spawn", () => resolve(child.pid!));
      child.once("error", reject);
    });
  } catch (e) {
    closeFd(fd);
    unlinkSync(plan.path);
    throw e;
  }
  child.unref();
  // The daemon owns the socket now.
  closeFd(fd);
  raiseOomScore(spawned);
  return plan.answer;
}

function encodeDeleteResponse(pid: number, exitStatus: number, at: Date): Uint8Array {
  const w = protobuf.Writer.create();
  if (pid) w.uint32((1 << 3) | 0).uint32(pid);
  w.uint32((2 << 3) | 0).uint32(exitStatus);
  const ms = at.getTime();
  w.uint32((3 << 3) | 2)
    .fork()
    .uint32((1 << 3) | 0)
    .int64(Math.floor(ms / 1000))
    .uint32((2 << 3) | 0)
    .int32((ms % 1000) * 1e6)
    .ldelim();
  return w.finish();
}

/** Mount points at or below dir, deepest first (from /proc/self/mountinfo, octal escapes decoded). */
export function mountsUnder(dir: string, mountinfo?: string): string[] {
  const text = mountinfo ?? readFileSync("/proc/self/mountinfo", "utf8");
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const raw = line.split(" ")[4];
    if (!raw) continue;
    const p = raw.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
    if (p === dir || p.startsWith(`${dir}/`)) out.push(p);
  }
  return out.sort((a, b) => b.length - a.length);
}

export interface DeleteIO {
  cwd: string;
  /** Unmount hook (tests); default runs umount(8), since Node has no umount(2). */
  unmount?: (path: string) => void;
  warn?: (msg: string) => void;
  /** Orphaned-VM cleanup hook (tests); default src/sandbox/cleanup.ts. */
  reapVm?: (bundle: string) => void | Promise<void>;
}

/**
 * `delete`: cleans what this id may have left after its shim went away, and returns the encoded
 * DeleteResponse to print. Idempotent and per id; never touches a live pod shim's socket.
 */
export async function deleteTask(flags: ShimFlags, io: DeleteIO): Promise<Uint8Array> {
  const bundle = flags.bundle || io.cwd;
  const warn = io.warn ?? ((m: string) => process.stderr.write(`${m}\n`));
  // cove never mounts the rootfs on the host, but a bundle may still carry mounts (e.g. left by a
  // crashed older shim or by hand); unmount them so containerd can remove the bundle.
  const unmount =
    io.unmount ??
    ((p: string) => {
      const r = umount(p);
      if (r) warn(r);
    });
  for (const m of mountsUnder(join(bundle, "rootfs"))) unmount(m);

  const addrFile = join(bundle, "address");
  let daemonAlive = false;
  if (existsSync(addrFile)) {
    const sock = addressPath(readFileSync(addrFile, "utf8").trim());
    // A socket nobody serves is stale (the daemon died); a live one may serve other tasks of the pod.
    daemonAlive = sock.startsWith("/") && existsSync(sock) && (await canConnect(sock));
    if (sock.startsWith("/") && existsSync(sock) && !daemonAlive) {
      try {
        unlinkSync(sock);
      } catch (e) {
        warn(`cannot remove stale socket ${sock}: ${errorMessage(e)}`);
      }
    }
  }
  // A dead daemon may have left its pod VM running (this bundle's, if it started the pod).
  // (and its pod network's tc redirects, which outlive the shim's taps).
  if (!daemonAlive) await (io.reapVm ?? (async (b: string) => void (await reapOrphanVm(b, warn))))(bundle);
  if (!daemonAlive) clearDeadHolds(bundle); // the dead pod's hold on layer images (src/rootfs/cache-users.ts)
  let pid = 0;
  try {
    pid = Number.parseInt(readFileSync(join(bundle, "init.pid"), "utf8"), 10) || 0;
  } catch {
    // No init process was ever started.
  }
  // 137 = killed by SIGKILL, what runc's shim reports for a task cleaned up this way.
  return encodeDeleteResponse(pid, 137, new Date());
}

/** Unmounts with umount(8) (Node has no umount(2)); lazily if busy. Returns a warning on failure. */
function umount(path: string): string | undefined {
  const opts = { stdio: ["ignore", "ignore", "pipe"] as ("ignore" | "pipe")[], timeout: 10_000 };
  if (spawnSync("umount", [path], opts).status === 0) return undefined;
  const lazy = spawnSync("umount", ["-l", path], opts);
  return lazy.status === 0 ? undefined : `cannot unmount ${path}: ${String(lazy.stderr ?? "").trim()}`;
}
