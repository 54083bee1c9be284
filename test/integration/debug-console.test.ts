// Getting into a pod VM, end to end under ctr (containerd → cove shim → microVM → agent): the
// agent's and the guest kernel's log lines reach the shim log (containerd's) tagged with the pod id
// and the container id; with [debug] console = true, `cove exec` runs commands in the VM through
// its hybrid vsock socket; with it off, `cove exec` is refused at once with the reason.
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type ExecError, findPod, HYBRID_SOCKET, openConsolePort } from "../../src/cli/exec.ts";
import { guestArtifacts } from "../../src/guest/paths.ts";
import { COVE_RUNTIME_TYPE, Containerd, containerdUnderTest, REPO_ROOT } from "../harness/containerd.ts";
import { run } from "../harness/exec.ts";
import { BUSYBOX_IMAGE_REF, buildImage, busyboxImage, importImage } from "../harness/image.ts";
import { waitFor } from "../harness/processes.ts";
import { requireIntegration } from "../harness/skip.ts";

const art = guestArtifacts();
const COVE = join(REPO_ROOT, "dist", "cove.cjs");
const skip = requireIntegration([
  { path: COVE, why: "the bundled cove CLI (npm test builds first)" },
  { path: art.kernel, why: "the guest kernel (npm run guest)" },
  { path: art.rootfs, why: "the guest image (npm run guest)" },
  { path: "/usr/bin/qemu-system-x86_64", why: "QEMU (qemu-system-x86)" },
]);

/** `cove …` as a user runs it (stdin not a terminal); never a hang: killed after timeoutMs. */
async function cove(args: string[], timeoutMs = 60_000) {
  const t0 = Date.now();
  const r = await run(process.execPath, [COVE, ...args], { timeoutMs });
  return { ...r, ms: Date.now() - t0 };
}

/** The shim's JSON lines in containerd's log (containerd may quote them), parsed. */
function shimLines(cd: Containerd): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const raw of cd.log().split("\n")) {
    const i = raw.indexOf('{"level"');
    const j = raw.indexOf('{\\"level\\"');
    let text: string | undefined;
    if (i >= 0) text = raw.slice(i);
    else if (j >= 0) text = JSON.parse(`"${raw.slice(j).replace(/"\s*$/, "").replace(/"$/, "")}"`);
    if (!text) continue;
    try {
      out.push(JSON.parse(text) as Record<string, unknown>);
    } catch {
      // not a shim line
    }
  }
  return out;
}

describe(`guest logs in the shim log, and cove exec (containerd ${containerdUnderTest()})`, {
  skip,
  timeout: 900_000,
}, () => {
  let cd: Containerd;
  const configs: Record<"on" | "off", string> = { on: "", off: "" };

  /** A pod of one busybox container, kept running, started with the given cove config. */
  const runDetached = (id: string, config: string) => {
    const runtime = ["--runtime", COVE_RUNTIME_TYPE, "--runtime-config-path", config];
    return cd.ctrOk(["run", "-d", ...runtime, BUSYBOX_IMAGE_REF, id, "sleep", "1000"], { timeoutMs: 180_000 });
  };
  const remove = async (id: string) => {
    await cd.ctr(["task", "kill", "-s", "SIGKILL", id]);
    await waitFor(`${id} to stop`, async () => !/RUNNING/.test((await cd.ctr(["task", "ls"])).stdout), 30_000);
    await cd.ctr(["task", "rm", id]);
    await cd.ctr(["container", "rm", id]);
  };

  /** An interactive shell through a real terminal (tmux): prompt, pty size and its change, exit. */
  async function interactive(id: string) {
    const sock = join(cd.dir, "tmux.sock");
    const tmux = (args: string[]) => run("tmux", ["-S", sock, ...args], { timeoutMs: 10_000 });
    let last = "";
    const onScreen = (what: string, re: RegExp, ms = 30_000) =>
      waitFor(
        what,
        async () => {
          last = (await tmux(["capture-pane", "-p", "-t", "t"])).stdout;
          return re.test(last);
        },
        ms,
      ).catch((e) => {
        throw new Error(`${(e as Error).message}; screen:\n${last}`);
      });
    const cmd = `${process.execPath} ${COVE} exec ${id}; echo cove-exec-status=$?; sleep 60`;
    const started = await tmux(["-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "80", "-y", "24", cmd]);
    assert.equal(started.code, 0, started.stderr);
    try {
      // PS1 is \h:\w\$ : the guest's hostname is the pod's.
      await onScreen("the VM's shell prompt", new RegExp(`^${id}:/# ?$`, "m"));
      await tmux(["send-keys", "-t", "t", "stty size; echo $((6*7))", "Enter"]);
      await onScreen("the pty's size and the shell's arithmetic", /^24 80\n42$/m);
      await tmux(["resize-window", "-t", "t", "-x", "132", "-y", "50"]);
      // The resize (SIGWINCH → RESIZE frame) and the typed keys travel apart: type again until it shows.
      for (let i = 0; ; i++) {
        await tmux(["send-keys", "-t", "t", "clear; stty size", "Enter"]);
        try {
          await onScreen("the new size", /^50 132$/m, 5_000);
          break;
        } catch (e) {
          if (i === 3) throw e;
        }
      }
      await tmux(["send-keys", "-t", "t", "exit 4", "Enter"]);
      await onScreen("cove exec's exit status", /^cove-exec-status=4$/m);
    } finally {
      await tmux(["kill-server"]);
    }
  }

  before(async () => {
    // containerd at info: the shim then runs at its own [log] level (at debug, containerd passes -debug).
    cd = await Containerd.start({ logLevel: "info" });
    await importImage(cd, await buildImage(busyboxImage(), join(cd.dir, "images")));
    const dir = join(cd.dir, "cove");
    mkdirSync(dir);
    for (const on of [true, false]) {
      const path = join(dir, `cove-${on ? "on" : "off"}.toml`);
      writeFileSync(
        path,
        `cache_dir = "${join(dir, "cache")}"\n\n[guest]\nkernel = "${art.kernel}"\nimage = "${art.rootfs}"\n\n[pod]\nwritable_layer_mib = 64\n\n[log]\nlevel = "info"\n\n[debug]\nconsole = ${on}\n`,
      );
      configs[on ? "on" : "off"] = path;
    }
  });

  after(async () => {
    await cd?.stop();
  });

  test("console on: agent and kernel lines in the shim log with the pod id; cove exec runs in the VM", async () => {
    const id = "dbg-on";
    await runDetached(id, configs.on);
    try {
      const guest = (src: string) => shimLines(cd).filter((l) => l.guest === src && l.pod === id);
      await waitFor(
        "the agent's 'container started' line in the shim log",
        () => guest("agent").some((l) => l.msg === "container started" && l.container === id),
        60_000,
      );
      assert.ok(
        guest("agent").some((l) => /debug console enabled/.test(String(l.msg))),
        "the agent says it serves the console",
      );
      // KERN_NOTICE, from the very start of the boot: read from /dev/kmsg's buffer.
      assert.ok(
        guest("kernel").some((l) => String(l.msg).startsWith("Linux version")),
        `a kernel boot line:\n${JSON.stringify(guest("kernel").slice(0, 5))}`,
      );
      // [log] level = info: the agent got it, so no debug lines of its own come.
      assert.ok(!guest("agent").some((l) => l.level === 20), "no agent debug lines at level info");

      const mem = await cove(["exec", id, "cat", "/proc/meminfo"]);
      assert.equal(mem.code, 0, mem.stderr);
      const kib = Number(/^MemTotal:\s+(\d+) kB$/m.exec(mem.stdout)?.[1]);
      assert.ok(kib > 64 * 1024 && kib < 1024 * 1024, `the VM's memory, not the host's: ${kib} KiB`);
      const cmdline = await cove(["exec", id, "--", "sh", "-c", "cat /proc/cmdline; exit 3"]);
      assert.equal(cmdline.code, 3, cmdline.stderr);
      assert.match(cmdline.stdout, /cove\.debug_console=1/);
      assert.match(cmdline.stdout, /cove\.log_level=info/);

      // A kernel message made now reaches the shim log too.
      const probe = await cove(["exec", id, "sh", "-c", "echo '<4>cove-kmsg-probe' > /dev/kmsg"]);
      assert.equal(probe.code, 0, probe.stderr);
      await waitFor(
        "the kernel line in the shim log",
        () => guest("kernel").some((l) => l.msg === "cove-kmsg-probe" && l.level === 40),
        20_000,
      );
      assert.ok(
        guest("agent").some((l) => /debug console: process started/.test(String(l.msg))),
        "console sessions are logged",
      );
      await interactive(id);
    } finally {
      await remove(id);
    }
  });

  test("console off: cove exec is refused at once, saying why; the VM itself refuses the port", async () => {
    const id = "dbg-off";
    await runDetached(id, configs.off);
    try {
      const r = await cove(["exec", id, "cat", "/proc/meminfo"]);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stdout, "");
      assert.match(r.stderr, /\[debug\] console = false/);
      assert.ok(r.ms < 10_000, `refused in ${r.ms} ms`);
      // Past cove exec's own check: the agent does not listen, the hybrid socket closes.
      const { dir } = findPod(id);
      const t0 = Date.now();
      await assert.rejects(openConsolePort(join(dir, HYBRID_SOCKET), id), (e: ExecError) => {
        assert.match(e.message, /refused the debug console port/);
        return true;
      });
      assert.ok(Date.now() - t0 < 10_000);
    } finally {
      await remove(id);
    }
  });
});
