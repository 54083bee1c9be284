// A real containerd on a scratch config in a temp dir, for end-to-end tests: Debian 12's 1.6.20
// (/usr/bin/containerd) by default, or another tested version (`version`, else $COVE_CONTAINERD;
// containerd-versions.ts fetches those from Debian's archive into the cache), with the config
// version it reads (2 for 1.6/1.7, 3 for 2.x). Every path it owns (root, state, sockets, opt, CNI dirs, log) lives under one
// temp dir; the shims it may start are found through a PATH whose first entry is a temp bin/ dir
// holding `containerd-shim-cove-v2` (a symlink to the repo's bin/ entry).
//
//   const cd = await Containerd.start();
//   await cd.ctr(["images", "import", tar]);
//   ...
//   await cd.stop();   // kills containerd and every shim/process it left, unmounts, removes the dir
//
// Caveat: shim sockets always go to /run/containerd/s (hard-coded in containerd 1.6/1.7), so
// stop() removes only the sockets it can attribute to this instance (computed from its bundles).
import { type ChildProcess, spawn } from "node:child_process";
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { stringify } from "smol-toml";
import {
  type ContainerdBinaries,
  type ContainerdVersion,
  ensureContainerd,
  resolveContainerdVersion,
} from "./containerd-versions.ts";
import { describeFailure, type RunResult, run } from "./exec.ts";
import {
  killProcesses,
  processesWithArg,
  processesWithCwdUnder,
  shimSocketPath,
  sleep,
  unmountUnder,
} from "./processes.ts";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
/** Debian 12's containerd and ctr (version 1.6.20); `Containerd.containerdBin` / `ctrBin` are the ones in use. */
export const CONTAINERD_BIN = "/usr/bin/containerd";
export const CTR_BIN = "/usr/bin/ctr";
/** The default CRI sandbox image; the harness builds it from busybox (see image.ts). */
export const PAUSE_IMAGE_REF = "registry.k8s.io/pause:3.6";

export interface CriRuntime {
  /** e.g. "io.containerd.cove.v2" → containerd looks up `containerd-shim-cove-v2` on its PATH. */
  runtimeType: string;
  /** Sent to the shim on `start` stdin as runtimeoptions.v1.Options{config_path}. */
  configPath?: string;
  podAnnotations?: string[];
  containerAnnotations?: string[];
}

export interface ContainerdOptions {
  /** Which containerd ("1.6", "1.7.24", "2.1", …); default $COVE_CONTAINERD, else Debian 12's 1.6.20. */
  version?: string;
  /** Binaries to put first on containerd's PATH: name → target. Default: the cove shim from bin/. */
  shims?: Record<string, string>;
  /** CRI runtime handlers besides `runc` (which is always there and the default). Default: `cove`. */
  criRuntimes?: Record<string, CriRuntime>;
  /** CNI config and plugin dirs; default: empty dirs under the temp dir (fine for host-network pods). */
  cniConfDir?: string;
  cniBinDir?: string;
  sandboxImage?: string;
  logLevel?: "trace" | "debug" | "info" | "warn";
  /** How long to wait for containerd to serve (`ctr version`). */
  startTimeoutMs?: number;
  /**
   * Put a recording wrapper in front of every shim: each invocation (start, delete, and a daemon
   * re-exec through the same path) appends its cwd and argv to `shimCallsPath`; see shimCalls().
   */
  traceShims?: boolean;
  /** Parent of the temp dir (default os.tmpdir()). Keep it short: unix socket paths max 107 bytes. */
  parentDir?: string;
}

export interface CtrOptions {
  namespace?: string;
  timeoutMs?: number;
  input?: string | Uint8Array;
}

export const COVE_RUNTIME_TYPE = "io.containerd.cove.v2";

/**
 * For tests outside the smoke set (ctr run, a CRI pod, exec): a reason to skip when the file runs as
 * a smoke run ($COVE_E2E_SMOKE, set by test/integration/containerd-1.7/), else false.
 */
export function beyondSmoke(): false | string {
  return process.env.COVE_E2E_SMOKE === "1"
    ? `smoke run on containerd ${containerdUnderTest()}: ctr run, a CRI pod, exec only`
    : false;
}

/** The containerd version a test file runs against ($COVE_CONTAINERD, else Debian 12's), for titles. */
export function containerdUnderTest(): string {
  return resolveContainerdVersion(process.env.COVE_CONTAINERD).version;
}

type ConfigOptions = Pick<ContainerdOptions, "criRuntimes" | "cniConfDir" | "cniBinDir" | "sandboxImage" | "logLevel">;

/** The CRI runtime handlers: runc (the default) and cove, or those asked for. */
function criRuntimeTable(opts: ConfigOptions): Record<string, unknown> {
  const runtimes: Record<string, unknown> = { runc: { runtime_type: "io.containerd.runc.v2" } };
  const extra = opts.criRuntimes ?? { cove: { runtimeType: COVE_RUNTIME_TYPE } };
  for (const [name, rt] of Object.entries(extra)) {
    runtimes[name] = {
      runtime_type: rt.runtimeType,
      pod_annotations: rt.podAnnotations ?? ["io.cove.*", "cove.io/*"],
      container_annotations: rt.containerAnnotations ?? ["io.cove.*", "cove.io/*"],
      ...(rt.configPath ? { options: { ConfigPath: rt.configPath } } : {}),
    };
  }
  return runtimes;
}

/** What both config versions share: dirs, sockets, log level, plugins this machine cannot back. */
function configBase(dir: string, opts: ConfigOptions): Record<string, unknown> {
  return {
    root: join(dir, "root"),
    state: join(dir, "state"),
    // Snapshotters this machine cannot back; disabling them keeps the log free of load errors. NRI
    // (on by default in 2.x) would serve one machine-wide socket, /var/run/nri/nri.sock.
    disabled_plugins: [
      "io.containerd.snapshotter.v1.aufs",
      "io.containerd.snapshotter.v1.btrfs",
      "io.containerd.snapshotter.v1.zfs",
      "io.containerd.snapshotter.v1.devmapper",
      "io.containerd.nri.v1.nri",
    ],
    grpc: { address: join(dir, "containerd.sock") },
    ttrpc: { address: join(dir, "containerd.sock.ttrpc") },
    debug: { level: opts.logLevel ?? "debug" },
  };
}

/**
 * The scratch config.toml as a plain object: version 2 (containerd 1.6/1.7: one CRI plugin) or
 * version 3 (2.x: CRI split into the runtime, images and grpc plugins).
 */
export function containerdConfig(
  dir: string,
  opts: ConfigOptions = {},
  configVersion: 2 | 3 = 2,
): Record<string, unknown> {
  const runtimes = criRuntimeTable(opts);
  const cniBin = opts.cniBinDir ?? join(dir, "cni", "bin");
  const cniConf = opts.cniConfDir ?? join(dir, "cni", "conf");
  const sandboxImage = opts.sandboxImage ?? PAUSE_IMAGE_REF;
  if (configVersion === 3) {
    return {
      version: 3,
      ...configBase(dir, opts),
      plugins: {
        "io.containerd.internal.v1.opt": { path: join(dir, "opt") },
        "io.containerd.cri.v1.images": { snapshotter: "overlayfs", pinned_images: { sandbox: sandboxImage } },
        "io.containerd.cri.v1.runtime": {
          enable_selinux: false,
          restrict_oom_score_adj: true,
          containerd: { default_runtime_name: "runc", runtimes },
          cni: { bin_dirs: [cniBin], conf_dir: cniConf },
        },
        "io.containerd.grpc.v1.cri": {
          disable_tcp_service: true,
          stream_server_address: "127.0.0.1",
          stream_server_port: "0",
        },
      },
    };
  }
  return {
    version: 2,
    ...configBase(dir, opts),
    plugins: {
      "io.containerd.internal.v1.opt": { path: join(dir, "opt") },
      "io.containerd.grpc.v1.cri": {
        sandbox_image: sandboxImage,
        disable_tcp_service: true,
        stream_server_address: "127.0.0.1",
        stream_server_port: "0",
        enable_selinux: false,
        restrict_oom_score_adj: true,
        containerd: { snapshotter: "overlayfs", default_runtime_name: "runc", runtimes },
        cni: { bin_dir: cniBin, conf_dir: cniConf },
      },
    },
  };
}

export class Containerd {
  /** The temp dir holding everything below. */
  readonly dir: string;
  readonly root: string;
  readonly state: string;
  /** gRPC socket (ctr -a, CRI). */
  readonly address: string;
  /** ttrpc socket (events from shims; TTRPC_ADDRESS). */
  readonly ttrpcAddress: string;
  readonly configPath: string;
  readonly logPath: string;
  /** First entry of containerd's PATH. */
  readonly binDir: string;
  /** With traceShims: one line per shim invocation, cwd and argv separated by tabs. */
  readonly shimCallsPath: string;
  /** The containerd version in use and its binaries. */
  readonly version: ContainerdVersion;
  readonly containerdBin: string;
  readonly ctrBin: string;
  private readonly versionBinDir: string;
  private child: ChildProcess | undefined;
  private readonly opts: ContainerdOptions;
  private readonly onExit = () => this.child?.kill("SIGKILL");

  private constructor(opts: ContainerdOptions, bins: ContainerdBinaries) {
    this.opts = opts;
    this.version = bins.version;
    this.containerdBin = bins.containerd;
    this.ctrBin = bins.ctr;
    this.versionBinDir = bins.binDir;
    this.dir = mkdtempSync(join(opts.parentDir ?? tmpdir(), "cove-ctd-"));
    this.root = join(this.dir, "root");
    this.state = join(this.dir, "state");
    this.address = join(this.dir, "containerd.sock");
    this.ttrpcAddress = `${this.address}.ttrpc`;
    this.configPath = join(this.dir, "config.toml");
    this.logPath = join(this.dir, "containerd.log");
    this.binDir = join(this.dir, "bin");
    this.shimCallsPath = join(this.dir, "shim-calls.log");
  }

  /** Writes the config, starts containerd and waits until `ctr version` answers. */
  static async start(opts: ContainerdOptions = {}): Promise<Containerd> {
    // Fetched once into the cache (.ci/run does it before the tests); a failure throws, never skips.
    const bins = await ensureContainerd(resolveContainerdVersion(opts.version ?? process.env.COVE_CONTAINERD));
    const cd = new Containerd(opts, bins);
    try {
      mkdirSync(cd.binDir, { recursive: true });
      mkdirSync(join(cd.dir, "cni", "bin"), { recursive: true });
      mkdirSync(join(cd.dir, "cni", "conf"), { recursive: true });
      const shims = opts.shims ?? { "containerd-shim-cove-v2": join(REPO_ROOT, "bin", "containerd-shim-cove-v2") };
      for (const [name, target] of Object.entries(shims)) {
        if (opts.traceShims) cd.writeTraceWrapper(name, target);
        else symlinkSync(target, join(cd.binDir, name));
      }
      writeFileSync(cd.configPath, stringify(containerdConfig(cd.dir, opts, bins.version.configVersion)));
      await cd.launch();
    } catch (e) {
      await cd.stop();
      throw e;
    }
    return cd;
  }

  /** A sh wrapper that records the invocation and execs the real shim (so containerd still sees one process). */
  private writeTraceWrapper(name: string, target: string): void {
    const q = (x: string) => `'${x.replace(/'/g, "'\\''")}'`;
    const script = [
      "#!/bin/sh",
      `{ printf '%s\\t%s' "$PWD" ${q(name)}; for a in "$@"; do printf '\\t%s' "$a"; done; printf '\\n'; } >> ${q(this.shimCallsPath)}`,
      `exec ${q(target)} "$@"`,
      "",
    ].join("\n");
    writeFileSync(join(this.binDir, name), script, { mode: 0o755 });
  }

  /** With traceShims: every shim invocation so far, in order. */
  shimCalls(): { cwd: string; argv: string[]; action: string; id?: string }[] {
    if (!existsSync(this.shimCallsPath)) return [];
    return readFileSync(this.shimCallsPath, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((line) => {
        const [cwd, ...argv] = line.split("\t");
        const idAt = argv.indexOf("-id");
        const last = argv[argv.length - 1] ?? "";
        return {
          cwd: cwd!,
          argv,
          action: last === "start" || last === "delete" ? last : "serve",
          id: idAt >= 0 ? argv[idAt + 1] : undefined,
        };
      });
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** containerd's environment: ours, with binDir first on PATH, then this version's own shims. */
  env(): NodeJS.ProcessEnv {
    const path = process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin";
    return { ...process.env, PATH: `${this.binDir}:${this.versionBinDir}:${path}` };
  }

  private async launch(): Promise<void> {
    const logFd = openSync(this.logPath, "a");
    const child = spawn(this.containerdBin, ["--config", this.configPath], {
      env: this.env(),
      stdio: ["ignore", logFd, logFd],
    });
    closeSync(logFd);
    this.child = child;
    process.once("exit", this.onExit);
    let exited: string | undefined;
    child.once("exit", (code, signal) => {
      exited = `containerd exited (${signal ?? code})`;
      process.removeListener("exit", this.onExit);
      if (this.child === child) this.child = undefined;
    });
    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 20_000);
    let last: RunResult | undefined;
    while (Date.now() < deadline) {
      if (exited) throw new Error(`${exited} before serving; log tail:\n${this.logTail()}`);
      if (existsSync(this.address)) {
        last = await this.ctr(["version"], { timeoutMs: 5000 });
        if (last.code === 0) return;
      }
      await sleep(100);
    }
    throw new Error(
      `containerd did not serve within ${this.opts.startTimeoutMs ?? 20_000} ms` +
        (last ? `\n${describeFailure("ctr version", last)}` : "") +
        `\nlog tail:\n${this.logTail()}`,
    );
  }

  /** `ctr -a <sock> -n <ns> args…` with a timeout (default 60 s); never throws on a non-zero exit. */
  ctr(args: string[], opts: CtrOptions = {}): Promise<RunResult> {
    return run(this.ctrBin, ["-a", this.address, "-n", opts.namespace ?? "default", ...args], {
      timeoutMs: opts.timeoutMs ?? 60_000,
      input: opts.input,
      env: this.env(),
    });
  }

  /** Like ctr(), but throws with the output unless it exits 0. */
  async ctrOk(args: string[], opts: CtrOptions = {}): Promise<RunResult> {
    const r = await this.ctr(args, opts);
    if (r.code !== 0) throw new Error(describeFailure(`ctr ${args.join(" ")}`, r));
    return r;
  }

  /** The whole containerd log so far (includes lines shims write to their bundle `log` FIFO). */
  log(): string {
    return existsSync(this.logPath) ? readFileSync(this.logPath, "utf8") : "";
  }

  logTail(lines = 40): string {
    return this.log().split("\n").slice(-lines).join("\n");
  }

  /** Bundle dirs of tasks: <state>/io.containerd.runtime.v2.task/<ns>/<id>. */
  bundleDir(id: string, namespace = "default"): string {
    return join(this.state, "io.containerd.runtime.v2.task", namespace, id);
  }

  /** Where the runc-style address scheme puts the shim socket for this containerd. */
  shimSocketPath(grouping: string, namespace = "default"): string {
    return shimSocketPath(this.address, namespace, grouping);
  }

  /** Stops containerd (SIGTERM, then SIGKILL) and starts it again on the same dirs; shims keep running. */
  async restart(): Promise<void> {
    await this.killDaemon();
    await this.launch();
  }

  private async killDaemon(timeoutMs = 10_000): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    await gone;
    clearTimeout(timer);
  }

  /** Sockets in /run/containerd/s this instance's shims may have made (from bundle dirs and address files). */
  private ownedShimSockets(): string[] {
    const out = new Set<string>();
    const tasks = join(this.state, "io.containerd.runtime.v2.task");
    if (!existsSync(tasks)) return [];
    for (const ns of readdirSync(tasks)) {
      for (const id of readdirSync(join(tasks, ns))) {
        const bundle = join(tasks, ns, id);
        out.add(this.shimSocketPath(id, ns));
        try {
          const addr = readFileSync(join(bundle, "address"), "utf8").trim();
          if (addr.startsWith("unix://")) out.add(addr.slice("unix://".length));
        } catch {}
        try {
          const spec = JSON.parse(readFileSync(join(bundle, "config.json"), "utf8")) as {
            annotations?: Record<string, string>;
          };
          const sandbox = spec.annotations?.["io.kubernetes.cri.sandbox-id"];
          if (sandbox) out.add(this.shimSocketPath(sandbox, ns));
        } catch {}
      }
    }
    return [...out];
  }

  /**
   * Kills running tasks (best effort), containerd, and every process it left behind (shims: argv
   * holds our socket path or cwd is under our dir), removes their sockets, unmounts everything under
   * the temp dir and deletes it. Safe to call twice and after a failed start.
   */
  async stop(): Promise<void> {
    if (this.child) {
      // Ask containerd to kill tasks first so runc containers do not outlive their shims.
      try {
        const nss = (await this.ctr(["namespaces", "ls", "-q"], { timeoutMs: 5000 })).stdout.split("\n");
        for (const ns of nss.map((s) => s.trim()).filter(Boolean)) {
          const tasks = (await this.ctr(["tasks", "ls", "-q"], { namespace: ns, timeoutMs: 5000 })).stdout;
          for (const id of tasks
            .split("\n")
            .map((s) => s.trim())
            .filter(Boolean)) {
            await this.ctr(["tasks", "kill", "-a", "-s", "SIGKILL", id], { namespace: ns, timeoutMs: 5000 });
            await this.ctr(["tasks", "delete", "-f", id], { namespace: ns, timeoutMs: 10_000 });
          }
        }
      } catch {
        // containerd is not answering; the process sweep below still runs
      }
    }
    const sockets = this.ownedShimSockets();
    await this.killDaemon();
    const leftovers = new Set<number>();
    for (const p of processesWithArg(this.address)) leftovers.add(p.pid);
    for (const p of processesWithCwdUnder(this.dir)) leftovers.add(p.pid);
    await killProcesses([...leftovers]);
    for (const s of [...sockets, ...this.ownedShimSockets()]) {
      try {
        unlinkSync(s);
      } catch {}
    }
    // $COVE_TEST_KEEP_LOGS=<dir>: keep containerd's log (with the shims' lines) for a post-mortem.
    const keep = process.env.COVE_TEST_KEEP_LOGS;
    if (keep && existsSync(this.logPath)) {
      mkdirSync(keep, { recursive: true });
      copyFileSync(this.logPath, join(keep, `${basename(this.dir)}.log`));
    }
    const stuck = unmountUnder(this.dir);
    if (stuck.length === 0) rmSync(this.dir, { recursive: true, force: true });
    else throw new Error(`could not unmount under ${this.dir}: ${stuck.join(", ")}`);
  }
}
