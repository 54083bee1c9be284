// The debug console: its frame codec, the agent's server (on a Unix socket, running the host's
// static busybox as the guest's), and `cove exec`'s side: the hybrid vsock handshake against a fake
// hybrid socket, a refusal when nothing listens, the exit status, a pty when asked.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { after, before, describe, test } from "node:test";
import pino from "pino";
import { consoleCommand, serveDebugConsole } from "../../../agent/src/debug/console.ts";
import type { PortServer } from "../../../agent/src/log-port.ts";
import { DISABLED_MESSAGE, ExecError, findPod, openConsolePort, runConsoleSession } from "../../../src/cli/exec.ts";
import {
  CONSOLE_PORT,
  decodeResize,
  encodeFrame,
  encodeResize,
  Frame,
  FrameDecoder,
  MAX_FRAME,
  parseExit,
  parseOpen,
} from "../../../src/sandbox/agent/console-protocol.ts";
import { parsePodState } from "../../../src/sandbox/run-state.ts";

const BUSYBOX = "/bin/busybox";

test("frames: split anywhere, several per chunk; unknown types and oversized lengths refused", () => {
  const bytes = Buffer.concat([
    encodeFrame(Frame.OPEN, '{"argv":[],"tty":false}'),
    encodeFrame(Frame.STDIN, "abc"),
    encodeResize(24, 80),
  ]);
  const dec = new FrameDecoder();
  const got = [...bytes].flatMap((b) => dec.push(Buffer.from([b])));
  assert.deepEqual(
    got.map((f) => f.type),
    [Frame.OPEN, Frame.STDIN, Frame.RESIZE],
  );
  assert.deepEqual(decodeResize(got[2]!.payload), { rows: 24, cols: 80 });
  assert.equal(dec.held, 0);
  assert.throws(() => new FrameDecoder().push(Buffer.from([99, 0, 0, 0, 0])), /unknown console frame type 99/);
  const big = Buffer.alloc(5);
  big[0] = Frame.STDOUT;
  big.writeUInt32BE(MAX_FRAME + 1, 1);
  assert.throws(() => new FrameDecoder().push(big), /most 65536/);
  assert.throws(() => encodeFrame(Frame.STDOUT, Buffer.alloc(MAX_FRAME + 1)));
});

test("OPEN and EXIT payloads are checked", () => {
  assert.deepEqual(parseOpen(Buffer.from('{"argv":["ls"],"tty":true,"rows":5,"cols":7,"term":"xterm-256color"}')), {
    argv: ["ls"],
    tty: true,
    rows: 5,
    cols: 7,
    term: "xterm-256color",
  });
  assert.deepEqual(parseOpen(Buffer.from('{"tty":false,"term":"a;b"}')), { argv: [], tty: false });
  assert.throws(() => parseOpen(Buffer.from('{"argv":[1],"tty":false}')), /argv/);
  assert.throws(() => parseOpen(Buffer.from('{"argv":["a\\u0000"],"tty":false}')), /argv/);
  assert.throws(() => parseOpen(Buffer.from('{"argv":[]}')), /tty/);
  assert.throws(() => parseOpen(Buffer.from("nope")), /not JSON/);
  assert.deepEqual(parseExit(Buffer.from('{"code":3,"signal":null}')), { code: 3, signal: null });
  assert.deepEqual(parseExit(Buffer.from('{"code":null,"signal":"SIGKILL"}')), { code: null, signal: "SIGKILL" });
  assert.throws(() => parseExit(Buffer.from('{"code":999}')));
  assert.throws(() => parseExit(Buffer.from('{"signal":"\\u001b[2J"}')));
});

test("what runs: sh -c 'exec \"$@\"' for a command, sh -i for none, under setsid -c with a pty", () => {
  assert.deepEqual(consoleCommand({ argv: ["cat", "/x"], tty: false }, "/bb"), [
    "/bb",
    "sh",
    "-c",
    'exec "$@"',
    "sh",
    "cat",
    "/x",
  ]);
  assert.deepEqual(consoleCommand({ argv: [], tty: true }, "/bb"), ["/bb", "setsid", "-c", "/bb", "sh", "-i"]);
});

describe("the agent's console server and cove exec's client", {
  skip: !existsSync(BUSYBOX) && `${BUSYBOX} missing (apt-get install busybox-static)`,
}, () => {
  let dir: string;
  let server: PortServer;
  let hybrid: Server;
  const log = pino({ level: "silent" });

  /** A fake hybrid vsock socket: CONNECT 1027 reaches the console server; any other port is reset. */
  function fakeHybrid(path: string, consolePath: string | undefined): Promise<Server> {
    const srv = createServer((c) => {
      c.once("data", (d) => {
        const port = /^CONNECT (\d+)\n/.exec(d.toString())?.[1];
        if (Number(port) !== CONSOLE_PORT || !consolePath) return c.destroy();
        const g = connect(consolePath);
        g.once("connect", () => {
          c.write("OK 49152\n");
          c.pipe(g);
          g.pipe(c);
        });
        g.on("error", () => c.destroy());
        c.on("error", () => g.destroy());
      });
    });
    return new Promise((res) => srv.listen(path, () => res(srv)));
  }

  async function exec(argv: string[], tty = false, input = "") {
    const conn = await openConsolePort(join(dir, "hybrid.vsock"), "pod1");
    const stdin = new PassThrough();
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let out = "";
    let err = "";
    stdout.on("data", (d) => {
      out += d;
    });
    stderr.on("data", (d) => {
      err += d;
    });
    stdin.end(input);
    const code = await runConsoleSession(conn, { argv, tty, rows: 30, cols: 100 }, { stdin, stdout, stderr });
    return { code, out, err };
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "cove-console-"));
    server = await serveDebugConsole({ kind: "unix", path: join(dir, "agent") }, log, { busybox: BUSYBOX });
    hybrid = await fakeHybrid(join(dir, "hybrid.vsock"), join(dir, "agent.console"));
  });
  after(async () => {
    await server?.close();
    await new Promise((r) => hybrid?.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  test("a command: its stdout and stderr apart, its exit status, busybox applets without links", async () => {
    const r = await exec(["sh", "-c", "echo out; echo err >&2; cat /proc/self/comm; exit 7"]);
    assert.equal(r.code, 7, r.err);
    assert.equal(r.out, "out\ncat\n");
    assert.equal(r.err, "err\n");
  });

  test("stdin reaches the command, and its end is the command's EOF", async () => {
    const r = await exec(["wc", "-l"], false, "a\nb\nc\n");
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out.trim(), "3");
  });

  test("a signal death is 128 + n; a missing program is the shell's 127", async () => {
    assert.equal((await exec(["sh", "-c", "kill -9 $$"])).code, 137);
    const r = await exec(["no-such-program"]);
    assert.equal(r.code, 127);
    assert.match(r.err, /not found/);
  });

  test("with a pty: a terminal of the asked size, stdin from the caller", async () => {
    const r = await exec(["sh", "-c", "tty; stty size; read x; echo got:$x"], true, "hello\n");
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /\/dev\/pts\/\d+/);
    assert.match(r.out, /30 100/);
    assert.match(r.out, /got:hello/);
  });

  test("nothing listening on the console port: a refusal that says why, at once", async () => {
    const off = await fakeHybrid(join(dir, "off.vsock"), undefined);
    try {
      const t0 = Date.now();
      await assert.rejects(openConsolePort(join(dir, "off.vsock"), "pod2"), (e: ExecError) => {
        assert.ok(e instanceof ExecError);
        assert.equal(e.status, 1);
        assert.match(e.message, /refused the debug console port/);
        assert.ok(e.message.includes(DISABLED_MESSAGE));
        return true;
      });
      assert.ok(Date.now() - t0 < 5000);
      await assert.rejects(openConsolePort(join(dir, "none.vsock"), "pod3"), /not there/);
    } finally {
      await new Promise((r) => off.close(r));
    }
  });

  test("a bad OPEN is refused by the agent with its reason", async () => {
    const s: Socket = connect(join(dir, "agent.console"));
    const dec = new FrameDecoder();
    const frames: { type: number; payload: Buffer }[] = [];
    s.on("data", (d) => frames.push(...dec.push(d)));
    s.write(encodeFrame(Frame.OPEN, '{"argv":"ls"}'));
    await new Promise((r) => s.on("close", r));
    assert.equal(frames[0]?.type, Frame.REFUSED);
    assert.match(frames[0]!.payload.toString(), /argv/);
  });

  test("findPod: by pod id, container id or a unique prefix", () => {
    const run = join(dir, "run");
    const state = (id: string, containers: string[]) => ({
      id,
      namespace: "k8s.io",
      bundle: "/b",
      shimPid: 1,
      vmmPid: 1,
      backend: "qemu",
      vcpus: 1,
      memoryMib: 256,
      startedAt: new Date().toISOString(),
      bootMs: 1,
      containers,
      debugConsole: true,
    });
    for (const [d, s] of [
      ["a", state("podaaaa", ["podaaaa", "ctr1"])],
      ["b", state("podbbbb", ["podbbbb", "ctr2"])],
    ] as const) {
      const p = join(run, d);
      rmSync(p, { recursive: true, force: true });
      mkdirSync(p, { recursive: true });
      writeFileSync(join(p, "pod.json"), JSON.stringify(s));
    }
    assert.equal(findPod("ctr2", run).state.id, "podbbbb");
    assert.equal(findPod("podaaaa", run).state.id, "podaaaa");
    assert.equal(findPod("poda", run).state.id, "podaaaa");
    assert.throws(() => findPod("pod", run), /names 2 pods/);
    assert.throws(() => findPod("zzz", run), /no pod or container zzz/);
    // pod.json from elsewhere: debugConsole is a boolean or absent (an older cove), never anything else.
    assert.throws(() => parsePodState(JSON.stringify({ ...state("p", []), debugConsole: "yes" })), /not a pod state/);
    const { debugConsole: _, ...older } = state("p", []);
    assert.equal(parsePodState(JSON.stringify(older)).debugConsole, undefined);
  });
});
