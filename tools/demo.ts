// The quickstart's last step (scripts/quickstart.sh): one `ctr run` in a cove microVM through the
// machine's containerd. If no containerd serves /run/containerd/containerd.sock, it starts Debian's
// with its default config (logging to a file it names) and stops it again at the end, so the demo
// leaves the machine as it found it. The image is busybox built locally (no registry needed).
//
//   node --import tsx tools/demo.ts
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, openSync } from "node:fs";
import { join } from "node:path";
import { run } from "../test/harness/exec.ts";
import { BUSYBOX_IMAGE_REF, buildImage, busyboxImage } from "../test/harness/image.ts";

const SOCKET = "/run/containerd/containerd.sock";
const CONTAINERD = "/usr/bin/containerd";
const LOG = "/var/log/cove-demo-containerd.log";
const RUNTIME = "io.containerd.cove.v2";
const CACHE = join(process.env.COVE_CACHE_DIR ?? "/var/cache/cove", "demo");
/** A cold TCG boot plus layer conversion takes tens of seconds on a small machine. */
const RUN_TIMEOUT_MS = 300_000;

class DemoError extends Error {}

const ctr = (args: string[], timeoutMs = 30_000) => run("ctr", ["--address", SOCKET, ...args], { timeoutMs });

async function containerdAnswers(): Promise<boolean> {
  if (!existsSync(SOCKET)) return false;
  const r = await ctr(["version"], 5_000);
  return r.code === 0;
}

/** Starts Debian's containerd in the background (default config); resolves once it answers. */
async function startContainerd(): Promise<ChildProcess> {
  if (!existsSync(CONTAINERD))
    throw new DemoError(`no containerd is running and ${CONTAINERD} is missing: apt-get install -y containerd`);
  const log = openSync(LOG, "a");
  console.log(`==> no containerd on ${SOCKET}: starting ${CONTAINERD} (default config), log in ${LOG}`);
  const child = spawn(CONTAINERD, [], { stdio: ["ignore", log, log], detached: true });
  const exited = new Promise<string>((resolve) =>
    child.once("exit", (code, sig) => resolve(`exited (${code ?? sig})`)),
  );
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const why = await Promise.race([exited, new Promise<null>((r) => setTimeout(() => r(null), 250))]);
    if (why) throw new DemoError(`containerd ${why} right after starting; see ${LOG}`);
    if (await containerdAnswers()) return child;
  }
  child.kill("SIGKILL");
  throw new DemoError(`containerd did not answer on ${SOCKET} within 30 s; see ${LOG}`);
}

async function stopContainerd(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  await gone;
  clearTimeout(timer);
  console.log("==> stopped the containerd the demo started");
}

async function demo(): Promise<void> {
  mkdirSync(CACHE, { recursive: true });
  console.log(`==> building the busybox image ${BUSYBOX_IMAGE_REF} (cached in ${CACHE})`);
  const image = await buildImage(busyboxImage(), CACHE);
  const imp = await ctr(["images", "import", image.path], 120_000);
  if (imp.code !== 0) throw new DemoError(`ctr images import failed:\n${imp.stderr || imp.stdout}`);

  const id = `cove-demo-${randomBytes(4).toString("hex")}`;
  const cmd = ["/bin/sh", "-c", "echo hello from a cove microVM; uname -r"];
  console.log(
    `==> ctr run --rm --runtime ${RUNTIME} ${BUSYBOX_IMAGE_REF} ${id} ${cmd.map((a) => (a.includes(" ") ? `'${a}'` : a)).join(" ")}`,
  );
  const t0 = process.hrtime.bigint();
  const r = await ctr(["run", "--rm", "--runtime", RUNTIME, BUSYBOX_IMAGE_REF, id, ...cmd], RUN_TIMEOUT_MS);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  process.stdout.write(r.stdout);
  if (r.timedOut) throw new DemoError(`ctr run did not finish within ${RUN_TIMEOUT_MS / 1000} s`);
  if (r.code !== 0) {
    // A failed run may leave the container record behind; remove it so a re-run starts clean.
    await ctr(["container", "rm", id]);
    throw new DemoError(`ctr run exited with ${r.code ?? r.signal}:\n${r.stderr.trim()}`);
  }
  if (!r.stdout.includes("hello from a cove microVM"))
    throw new DemoError(`unexpected output from the container: ${JSON.stringify(r.stdout)}`);
  console.log(`==> ok: ctr run took ${(ms / 1000).toFixed(2)} s (VM boot, rootfs attach, command, teardown)`);
}

async function main(): Promise<number> {
  let started: ChildProcess | undefined;
  try {
    if (!(await containerdAnswers())) started = await startContainerd();
    else console.log(`==> using the containerd on ${SOCKET}`);
    await demo();
    return 0;
  } catch (e) {
    console.error(`demo failed: ${e instanceof DemoError ? e.message : (e as Error).stack}`);
    if (started) console.error(`containerd's log: ${LOG}`);
    return 1;
  } finally {
    if (started) await stopContainerd(started);
  }
}

process.exitCode = await main();
