// Shared by the agent tests and benchmark: a busybox rootfs (directory or erofs image), an OCI spec
// from the runtime's own template, and the agent run on this host in its own mount, pid and UTS
// namespaces (unshare), so that it touches none of the host's mounts or processes.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { AgentClient, unixDialer } from "../../src/sandbox/agent/index.ts";
import { BUSYBOX_BIN, busyboxImage, layerEntries } from "../harness/image.ts";

const REPO = join(dirname(new URL(import.meta.url).pathname), "..", "..");

/** Why the host agent tests cannot run here, or false. */
export function hostAgentSkip(): false | string {
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push("root");
  for (const [p, why] of [
    [BUSYBOX_BIN, "busybox-static"],
    ["/usr/bin/crun", "crun"],
    ["/usr/bin/unshare", "util-linux unshare"],
    ["/usr/bin/mkfs.erofs", "erofs-utils"],
  ] as const)
    if (!existsSync(p)) missing.push(`${p} (${why})`);
  if (missing.length === 0) return false;
  const reason = `!!! SKIPPED: the agent host tests need ${missing.join(", ")}`;
  console.error(reason);
  return reason;
}

/** Writes a busybox root filesystem (the harness's image layer, plus extra files) into `dir`. */
export function writeBusyboxRootfs(
  dir: string,
  extra: Array<{ path: string; content: string; mode?: number }> = [],
): void {
  for (const e of layerEntries(busyboxImage({ files: extra }))) {
    const p = join(dir, e.name);
    if (e.type === "directory") {
      mkdirSync(p, { recursive: true });
      chmodSync(p, e.mode); // mkdir's mode is masked by the umask (/tmp must stay 1777)
    } else {
      mkdirSync(dirname(p), { recursive: true });
      if (e.type === "symlink") symlinkSync(e.linkname!, p);
      else writeFileSync(p, e.content!, { mode: e.mode });
    }
  }
}

/** An erofs image of a busybox rootfs. */
export function busyboxErofs(out: string): void {
  const dir = `${out}.d`;
  rmSync(dir, { recursive: true, force: true });
  writeBusyboxRootfs(dir);
  execFileSync("mkfs.erofs", ["--quiet", "-T0", "--all-root", out, dir], { timeout: 60_000 });
  rmSync(dir, { recursive: true, force: true });
}

let template: Record<string, unknown> | undefined;

/** An OCI spec (crun's default template) running `args`. */
export function ociSpec(args: string[], opts: { terminal?: boolean; env?: string[]; memoryLimit?: number } = {}) {
  if (!template) {
    const d = mkdtempSync(join(tmpdir(), "cove-spec-"));
    execFileSync("crun", ["spec", "--bundle", d], { timeout: 10_000 });
    template = JSON.parse(readFileSync(join(d, "config.json"), "utf8")) as Record<string, unknown>;
    rmSync(d, { recursive: true, force: true });
  }
  const spec = structuredClone(template) as {
    process: Record<string, unknown>;
    linux: Record<string, unknown>;
    [k: string]: unknown;
  };
  spec.process.args = args;
  spec.root = { path: "rootfs", readonly: false };
  spec.process.terminal = !!opts.terminal;
  spec.process.env = ["PATH=/bin", "TERM=xterm", ...(opts.env ?? [])];
  if (opts.memoryLimit) spec.linux.resources = { memory: { limit: opts.memoryLimit, swap: opts.memoryLimit } };
  return spec;
}

export interface HostAgent {
  socket: string;
  dir: string;
  client: AgentClient;
  child: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

/** Starts the agent from source under `unshare` and connects a client. */
export async function startHostAgent(opts: { useBundle?: boolean; logLevel?: string } = {}): Promise<HostAgent> {
  const dir = mkdtempSync(join(tmpdir(), "cove-agent-"));
  const socket = join(dir, "agent.sock");
  const entry = opts.useBundle
    ? [join(REPO, "dist", "agent.cjs")]
    : ["--import", "tsx", join(REPO, "agent", "src", "main.ts")];
  const child = spawn(
    "unshare",
    [
      "--kill-child",
      "--mount",
      "--pid",
      "--uts",
      "--fork",
      "--mount-proc",
      // A cgroup v1 host with an (almost empty) cgroup2 at /sys/fs/cgroup/unified is "hybrid", which
      // crun refuses; hiding it in the agent's own mount namespace leaves plain v1, which crun runs.
      "/bin/sh",
      "-c",
      'if [ -d /sys/fs/cgroup/memory ]; then umount -l /sys/fs/cgroup/unified 2>/dev/null; fi; exec "$@"',
      "sh",
      process.execPath,
      ...entry,
      "--listen",
      `unix:${socket}`,
      "--state-dir",
      join(dir, "state"),
    ],
    {
      stdio: ["ignore", "pipe", "pipe"],
      cwd: REPO,
      env: { ...process.env, COVE_AGENT_LOG_LEVEL: opts.logLevel ?? "info" },
    },
  );
  let out = "";
  child.stdout!.on("data", (d: Buffer) => {
    out += d.toString();
    if (out.length > 4 << 20) out = out.slice(-(2 << 20));
  });
  child.stderr!.on("data", (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 30_000;
  while (!out.includes("cove-agent ready")) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`agent did not start:\n${out.slice(-4000)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const client = await AgentClient.connect(unixDialer(socket));
  return {
    socket,
    dir,
    client,
    child,
    output: () => out,
    stop: async () => {
      client.close();
      await stop();
    },
  };
}

/** Reads a stream to its end. */
export function readAll(s: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("end", () => resolve(Buffer.concat(chunks)));
    s.on("error", reject);
  });
}
