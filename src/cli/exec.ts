// `cove exec <pod or container id> [cmd...]`: a command, or an interactive shell, in a pod's VM
// through its debug console (agent/src/debug/console.ts, protocol in
// src/sandbox/agent/console-protocol.ts). Finds the pod's VM from cove's run state (pod.json, as
// `cove ps` does), connects to the VM's hybrid vsock socket (root only), asks for port 1027 and runs
// the command. The pod must have started with `[debug] console = true`; otherwise it is refused at
// once with the reason. docs/debugging.md.
import { connect, type Socket } from "node:net";
import { constants } from "node:os";
import { join } from "node:path";
import type { Duplex, Readable, Writable } from "node:stream";
import { parseArgs } from "node:util";
import { errorMessage } from "../common/errors.ts";
import { printable } from "../common/text.ts";
import {
  CONSOLE_PORT,
  type ExitStatus,
  encodeData,
  encodeFrame,
  encodeResize,
  Frame,
  FrameDecoder,
  parseExit,
} from "../sandbox/agent/console-protocol.ts";
import { type PodRunState, readPodStates, VM_RUN_DIR } from "../sandbox/run-state.ts";
import { type Command, UsageError } from "./command.ts";

/** The hybrid vsock socket in a VM's work dir (src/sandbox/pod.ts). */
export const HYBRID_SOCKET = "hybrid.vsock";
const HANDSHAKE_TIMEOUT_MS = 15_000;

/** A refusal or failure with the message for the user and the exit status. */
export class ExecError extends Error {
  constructor(
    message: string,
    readonly status = 1,
  ) {
    super(message);
  }
}

/** The pod whose id, or one of whose containers' ids, is `id` (or starts with it, if only one does). */
export function findPod(id: string, runDir = VM_RUN_DIR): { dir: string; state: PodRunState } {
  const pods = readPodStates(runDir).flatMap((e) => (e.state ? [{ dir: e.dir, state: e.state }] : []));
  const exact = pods.filter((p) => p.state.id === id || p.state.containers.includes(id));
  if (exact.length === 1) return exact[0]!;
  const prefix = pods.filter((p) => p.state.id.startsWith(id) || p.state.containers.some((c) => c.startsWith(id)));
  if (exact.length === 0 && prefix.length === 1) return prefix[0]!;
  const found = exact.length ? exact : prefix;
  if (found.length === 0)
    throw new ExecError(`cove exec: no pod or container ${printable(id, 80)} on this host (cove ps lists them)`);
  throw new ExecError(
    `cove exec: ${printable(id, 80)} names ${found.length} pods (${found.map((p) => p.state.id.slice(0, 12)).join(", ")}): give more of the id`,
  );
}

export const DISABLED_MESSAGE =
  "its agent serves no debug console: the pod started with [debug] console = false. Set\n" +
  "  [debug]\n  console = true\nin the cove config the shim reads (cove env shows which), then start the pod again";

export interface ExecStreams {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable;
}

export interface ExecOptions {
  argv: string[];
  tty: boolean;
  rows?: number;
  cols?: number;
  term?: string;
  /** Registers a callback for terminal size changes; returns its removal. */
  onResize?: (cb: (rows: number, cols: number) => void) => () => void;
}

/** Connects to a hybrid vsock socket and asks for the console port; resolves with the raw stream. */
export function openConsolePort(socketPath: string, podId: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(socketPath);
    let buf = "";
    let done = false;
    const fail = (e: ExecError) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      reject(e);
    };
    const timer = setTimeout(
      () => fail(new ExecError(`cove exec: pod ${podId}: no answer from its VM within ${HANDSHAKE_TIMEOUT_MS} ms`)),
      HANDSHAKE_TIMEOUT_MS,
    );
    s.once("error", (e: NodeJS.ErrnoException) => {
      if (e.code === "EACCES")
        fail(new ExecError(`cove exec: ${socketPath}: permission denied (the socket is root's: run as root)`));
      else if (e.code === "ENOENT" || e.code === "ECONNREFUSED")
        fail(
          new ExecError(
            `cove exec: pod ${podId}: its VM's socket ${socketPath} is not there (is the pod still running?)`,
          ),
        );
      else fail(new ExecError(`cove exec: ${socketPath}: ${e.message}`));
    });
    s.once("connect", () => s.write(`CONNECT ${CONSOLE_PORT}\n`));
    const onData = (d: Buffer) => {
      buf += d.toString("latin1");
      const nl = buf.indexOf("\n");
      if (nl < 0) {
        if (buf.length > 64)
          fail(new ExecError(`cove exec: pod ${podId}: the VM's socket does not speak hybrid vsock`));
        return;
      }
      if (!/^OK \d+$/.test(buf.slice(0, nl))) {
        fail(new ExecError(`cove exec: pod ${podId}: the VM's socket does not speak hybrid vsock`));
        return;
      }
      done = true;
      clearTimeout(timer);
      s.off("data", onData);
      s.off("close", onClose);
      s.pause();
      const rest = Buffer.from(buf.slice(nl + 1), "latin1");
      if (rest.length) s.unshift(rest);
      resolve(s);
    };
    // The hybrid socket closes without OK when the guest resets the connection: nothing listens there.
    const onClose = () =>
      fail(new ExecError(`cove exec: pod ${podId}: the VM refused the debug console port: ${DISABLED_MESSAGE}`));
    s.on("data", onData);
    s.on("close", onClose);
  });
}

/** Runs one console session on a connected stream; resolves with the exit status for `cove exec`. */
export function runConsoleSession(conn: Duplex, opts: ExecOptions, io: ExecStreams): Promise<number> {
  return new Promise((resolve) => {
    const dec = new FrameDecoder();
    let ready = false;
    let finished = false;
    let offResize: (() => void) | undefined;
    const finish = (status: number, message?: string) => {
      if (finished) return;
      finished = true;
      offResize?.();
      io.stdin.off("data", onStdin);
      io.stdin.off("end", onStdinEnd);
      io.stdin.pause();
      if (message) io.stderr.write(`${message}\n`);
      conn.destroy();
      resolve(status);
    };
    const onStdin = (d: Buffer) => {
      let ok = true;
      for (const f of encodeData(Frame.STDIN, d)) ok = conn.write(f) && ok;
      if (!ok) {
        io.stdin.pause();
        conn.once("drain", () => io.stdin.resume());
      }
    };
    const onStdinEnd = () => conn.write(encodeFrame(Frame.STDIN_EOF));
    conn.on("error", () => {});
    conn.on("data", (d: Buffer) => {
      let frames: ReturnType<FrameDecoder["push"]>;
      try {
        frames = dec.push(d);
      } catch (e) {
        finish(255, `cove exec: malformed data from the pod VM: ${errorMessage(e)}`);
        return;
      }
      for (const f of frames) {
        if (finished) return;
        if (!ready) {
          if (f.type === Frame.REFUSED)
            return finish(1, `cove exec: the pod VM's agent refused: ${printable(f.payload.toString("utf8"), 1000)}`);
          if (f.type !== Frame.READY) return finish(255, `cove exec: the pod VM's agent sent frame ${f.type} first`);
          ready = true;
          io.stdin.on("data", onStdin);
          io.stdin.once("end", onStdinEnd);
          io.stdin.resume();
          offResize = opts.onResize?.((rows, cols) => conn.write(encodeResize(rows, cols)));
          continue;
        }
        switch (f.type) {
          case Frame.STDOUT:
            io.stdout.write(f.payload);
            break;
          case Frame.STDERR:
            io.stderr.write(f.payload);
            break;
          case Frame.EXIT: {
            let st: ExitStatus;
            try {
              st = parseExit(f.payload);
            } catch (e) {
              return finish(255, `cove exec: ${errorMessage(e)}`);
            }
            return finish(st.code ?? 128 + signalNumber(st.signal));
          }
          default:
            return finish(255, `cove exec: unexpected frame ${f.type} from the pod VM`);
        }
      }
    });
    conn.on("close", () => finish(255, "cove exec: the connection to the pod VM ended without an exit status"));
    conn.write(
      encodeFrame(
        Frame.OPEN,
        JSON.stringify({
          argv: opts.argv,
          tty: opts.tty,
          ...(opts.rows && { rows: opts.rows }),
          ...(opts.cols && { cols: opts.cols }),
          ...(opts.term && { term: opts.term }),
        }),
      ),
    );
    conn.resume();
  });
}

function signalNumber(name: string | null): number {
  const n = name ? constants.signals[name as NodeJS.Signals] : undefined;
  return typeof n === "number" ? n : 0;
}

export const execCommand: Command = {
  path: ["exec"],
  summary: "run a command (or a shell) in a pod's VM through its debug console ([debug] console = true)",
  usage: `cove exec [-t | -T] [--run-dir DIR] <pod or container id> [--] [command [args...]]

Runs the command in the pod's VM — the guest itself, not inside a container — as root, with
busybox's applets (ls, cat, ps, dmesg, ...) and the guest's node; without a command, an interactive
busybox sh. The id is a pod's or a container's (or the start of one, as cove ps shows it). The pod
must have started with

  [debug]
  console = true

in the cove config; otherwise its agent does not serve the console and cove exec says so and exits
with 1. Connects through the VM's hybrid vsock socket (${VM_RUN_DIR}/<vm>/${HYBRID_SOCKET}, root
only) to the agent's port ${CONSOLE_PORT}. Exit status: the command's (128 + n for signal n).

  -t, --tty       give the command a pty (default when stdin and stdout are terminals)
  -T, --no-tty    no pty: stdout and stderr stay apart (for scripts)
  --run-dir DIR   where the pod VMs' work dirs are (default ${VM_RUN_DIR})`,
  async run(args) {
    let parsed: ReturnType<typeof parse>;
    const parse = (a: string[]) =>
      parseArgs({
        args: a,
        allowPositionals: true,
        // Options stop at the id: everything after it is the command's.
        strict: true,
        options: {
          tty: { type: "boolean", short: "t" },
          "no-tty": { type: "boolean", short: "T" },
          "run-dir": { type: "string" },
        },
      });
    const idAt = args.findIndex((a, i) => !a.startsWith("-") && args[i - 1] !== "--run-dir");
    const ours = idAt < 0 ? args : args.slice(0, idAt + 1);
    try {
      parsed = parse(ours);
    } catch (e) {
      throw new UsageError(errorMessage(e));
    }
    const id = parsed.positionals[0];
    if (!id) throw new UsageError("a pod or container id is needed");
    let argv = idAt < 0 ? [] : args.slice(idAt + 1);
    if (argv[0] === "--") argv = argv.slice(1);
    const stdin = process.stdin;
    const tty = parsed.values["no-tty"] ? false : (parsed.values.tty ?? Boolean(stdin.isTTY && process.stdout.isTTY));
    try {
      const { dir, state } = findPod(id);
      if (state.debugConsole === false) throw new ExecError(`cove exec: pod ${state.id}: ${DISABLED_MESSAGE}`);
      const conn = await openConsolePort(join(dir, HYBRID_SOCKET), state.id);
      const raw = tty && stdin.isTTY;
      if (raw) stdin.setRawMode(true);
      try {
        return await runConsoleSession(
          conn,
          {
            argv,
            tty,
            ...(process.stdout.isTTY && { rows: process.stdout.rows, cols: process.stdout.columns }),
            ...(process.env.TERM && { term: process.env.TERM }),
            onResize: (cb) => {
              const f = () => cb(process.stdout.rows, process.stdout.columns);
              process.stdout.on("resize", f);
              return () => process.stdout.off("resize", f);
            },
          },
          { stdin, stdout: process.stdout, stderr: process.stderr },
        );
      } finally {
        if (raw) stdin.setRawMode(false);
      }
    } catch (e) {
      if (!(e instanceof ExecError)) throw e;
      process.stderr.write(`${e.message}\n`);
      return e.status;
    }
  },
};
