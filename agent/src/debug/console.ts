// The debug console (docs/debugging.md): with `[debug] console = true` in the shim's config the
// kernel command line carries cove.debug_console=1 and the agent serves a shell on vsock port 1027
// (on a host: `<listen path>.console`), speaking console-protocol.ts. Each connection runs one
// process in the VM (not in a container): the caller's argv, or an interactive busybox sh; under a
// pty when the caller has a terminal. Without the flag nothing listens on the port, and the shim's
// hybrid vsock socket answers a connection to it with a reset.
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync } from "node:fs";
import type { Socket } from "node:net";
import type { Readable, Writable } from "node:stream";
import { errorMessage } from "../../../src/common/errors.ts";
import { openPty, setWinsize } from "../../../src/native/pty.ts";
import { socketFromFd } from "../../../src/native/vsock.ts";
import {
  CONSOLE_PORT,
  decodeResize,
  encodeData,
  encodeFrame,
  Frame,
  FrameDecoder,
  type OpenRequest,
  parseOpen,
} from "../../../src/sandbox/agent/console-protocol.ts";
import type { Logger } from "../log.ts";
import { listenPort, type PortServer } from "../log-port.ts";
import type { ListenSpec } from "../serve.ts";

/** The guest image's busybox (src/guest/busybox.ts GUEST_BUSYBOX). */
export const BUSYBOX = "/usr/bin/busybox";
const OPEN_TIMEOUT_MS = 10_000;
const PTY_LINGER_MS = 300;
const PATH = "/usr/sbin:/usr/bin:/sbin:/bin";

export interface ConsoleOptions {
  /** The shell binary (tests on a host point it at the host's busybox). */
  busybox?: string;
}

/** What runs: busybox sh, interactive or `-c 'exec "$@"'` (sh finds busybox's applets without links). */
export function consoleCommand(req: OpenRequest, busybox = BUSYBOX): string[] {
  const sh = req.argv.length ? [busybox, "sh", "-c", 'exec "$@"', "sh", ...req.argv] : [busybox, "sh", "-i"];
  // With a pty, the shell needs it as its controlling terminal (job control, ^C).
  return req.tty ? [busybox, "setsid", "-c", ...sh] : sh;
}

export function serveDebugConsole(spec: ListenSpec, log: Logger, opts: ConsoleOptions = {}): Promise<PortServer> {
  return listenPort(spec, CONSOLE_PORT, ".console", (s) => serveConnection(s, log, opts));
}

function serveConnection(conn: Socket, log: Logger, opts: ConsoleOptions): void {
  conn.on("error", () => {});
  const dec = new FrameDecoder();
  let child: ChildProcess | undefined;
  let stdin: Writable | undefined;
  let ptyFd = -1;
  let pty: Socket | undefined;
  let stdinFull = false;
  const timer = setTimeout(() => refuse("no OPEN frame in time"), OPEN_TIMEOUT_MS);
  const refuse = (why: string) => {
    clearTimeout(timer);
    if (!conn.destroyed) conn.end(encodeFrame(Frame.REFUSED, why));
    if (child && child.exitCode === null) child.kill("SIGKILL");
  };
  const send = (type: typeof Frame.STDOUT | typeof Frame.STDERR, src: Readable) => {
    src.on("data", (d: Buffer) => {
      let ok = true;
      for (const f of encodeData(type, d)) ok = conn.write(f) && ok;
      if (!ok) {
        src.pause();
        conn.once("drain", () => src.resume());
      }
    });
    src.on("error", () => {}); // EIO on the pty master: the last slave fd closed
  };
  const open = (req: OpenRequest) => {
    clearTimeout(timer);
    const argv = consoleCommand(req, opts.busybox);
    const env: NodeJS.ProcessEnv = { PATH, HOME: "/root", TERM: req.term ?? "dumb", PS1: "\\h:\\w\\$ " };
    let slave = -1;
    try {
      if (req.tty) {
        const p = openPty();
        ptyFd = p.master;
        slave = p.slave;
        if (req.rows && req.cols) setWinsize(ptyFd, req.rows, req.cols);
        child = spawn(argv[0]!, argv.slice(1), { stdio: [slave, slave, slave], env, cwd: "/" });
      } else {
        child = spawn(argv[0]!, argv.slice(1), { stdio: ["pipe", "pipe", "pipe"], env, cwd: "/" });
      }
    } catch (e) {
      refuse(`cannot start ${argv[0]}: ${errorMessage(e)}`);
      return;
    } finally {
      if (slave >= 0) closeSync(slave);
    }
    const c = child;
    log.info({ argv: req.argv.length ? req.argv : ["sh"], tty: req.tty, pid: c.pid }, "debug console: process started");
    conn.write(encodeFrame(Frame.READY));
    let spawnError: string | undefined;
    c.on("error", (e) => {
      spawnError = e.message;
    });
    let outputsOpen = req.tty ? 1 : 2;
    let exit: { code: number | null; signal: string | null } | undefined;
    // EXIT goes last: after the process ended and its output was read to the end.
    const maybeFinish = () => {
      if (!exit || outputsOpen > 0 || conn.destroyed) return;
      if (spawnError) conn.write(encodeFrame(Frame.STDERR, `cove: ${spawnError}\n`));
      conn.end(encodeFrame(Frame.EXIT, JSON.stringify(exit)));
      log.info({ pid: c.pid, ...exit }, "debug console: process ended");
    };
    const outputEnded = () => {
      outputsOpen--;
      maybeFinish();
    };
    if (req.tty) {
      pty = socketFromFd(ptyFd);
      stdin = pty;
      send(Frame.STDOUT, pty);
      pty.once("close", outputEnded);
    } else {
      stdin = c.stdin ?? undefined;
      stdin?.on("error", () => {});
      for (const [type, s] of [
        [Frame.STDOUT, c.stdout],
        [Frame.STDERR, c.stderr],
      ] as const) {
        if (!s) {
          outputsOpen--;
          continue;
        }
        send(type, s);
        s.once("close", outputEnded);
      }
    }
    c.once("close", (code, signal) => {
      exit = { code, signal };
      // A pty's master sees EIO only when every holder of the slave closed it; a background
      // process may keep it: shortly after the shell's end (its last output read), the session ends.
      if (req.tty) setTimeout(() => pty?.destroy(), PTY_LINGER_MS).unref();
      maybeFinish();
    });
  };
  conn.on("data", (d: Buffer) => {
    let frames: ReturnType<FrameDecoder["push"]>;
    try {
      frames = dec.push(d);
    } catch (e) {
      refuse(errorMessage(e));
      return;
    }
    for (const f of frames) {
      if (!child) {
        if (f.type !== Frame.OPEN) return refuse("the first frame must be OPEN");
        let req: OpenRequest;
        try {
          req = parseOpen(f.payload);
        } catch (e) {
          return refuse(errorMessage(e));
        }
        open(req);
        if (!child) return;
        continue;
      }
      switch (f.type) {
        case Frame.STDIN:
          if (stdin && !stdin.destroyed && !stdin.write(f.payload) && !stdinFull) {
            stdinFull = true;
            conn.pause();
            stdin.once("drain", () => {
              stdinFull = false;
              conn.resume();
            });
          }
          break;
        case Frame.STDIN_EOF:
          if (pty) pty.write("\x04");
          else stdin?.end();
          break;
        case Frame.RESIZE:
          try {
            const { rows, cols } = decodeResize(f.payload);
            if (ptyFd >= 0 && pty && !pty.destroyed) setWinsize(ptyFd, rows, cols);
          } catch {
            // a bad resize is ignored
          }
          break;
        default:
          return refuse(`unexpected frame ${f.type}`);
      }
    }
  });
  // The caller went away: the process goes too (a debug shell must not outlive its session).
  conn.on("close", () => {
    clearTimeout(timer);
    if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGHUP");
  });
}

/** Serves the console when the kernel command line (or, on a host, the environment) asks for it. */
export function startDebugConsole(log: Logger, spec: ListenSpec, enabled: boolean): void {
  if (!enabled) return;
  serveDebugConsole(spec, log).then(
    () =>
      log.warn(
        { port: spec.kind === "vsock" ? CONSOLE_PORT : `${spec.path}.console` },
        "debug console enabled: a root shell in this VM for whoever reaches the port (the host's hybrid vsock socket)",
      ),
    (err: unknown) => log.error({ err }, "cannot serve the debug console"),
  );
}
