// One process in a container (the init, exec_id "", or an exec): its pid and exit, and its stdio.
// Non-terminal: pipes (the runtime hands the child ends to the process). Terminal: the pty master
// the runtime sent over the console socket. Output waits, unread, until the host attaches its
// connection (the process blocks on a full pipe, nothing is dropped).
import { closeSync } from "node:fs";
import type { Socket } from "node:net";
import { makePipe, setWinsize } from "../../../src/native/pty.ts";
import { socketFromFd } from "../../../src/native/vsock.ts";
import type { StdioStream } from "../../../src/proto/agent.ts";
import { precondition } from "../api/errors.ts";
import { pumpIn, pumpOut } from "../stdio/pump.ts";

/** A stdio stream's name, as the stdio port's header names it (src/proto/agent.ts). */
export type StreamName = StdioStream;
export type ProcStatus = "created" | "running" | "exited";

export interface StdioWanted {
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
}

/** How long WaitProcess waits, after the exit, for output held open by a process left behind. */
export const OUTPUT_GRACE_MS = 5000;
const PIPE_SIZE = 1 << 20;

class Output {
  conn: Socket | undefined;
  readonly done: Promise<void>;
  private resolveDone!: () => void;
  private src: Socket | undefined;

  constructor() {
    this.done = new Promise((r) => {
      this.resolveDone = r;
    });
  }

  setSource(src: Socket): void {
    this.src = src;
    src.on("error", () => {});
    if (this.conn) this.start();
  }

  attach(conn: Socket): void {
    this.conn = conn;
    if (this.src) this.start();
  }

  /** Nobody will read: let the process write on, and stop waiting. */
  abandon(): void {
    if (!this.conn && this.src) {
      this.src.on("data", () => {});
      this.src.resume();
      this.src.destroy();
    }
    this.resolveDone();
  }

  private start(): void {
    void pumpOut(this.src!, this.conn!).then(() => this.resolveDone());
  }
}

/** A process the guest agent started (init or exec); the host's records are PodProcess and TaskProcess. */
export class AgentProcess {
  pid = 0;
  status: ProcStatus = "created";
  exitStatus = 0;
  exitedAt: Date | undefined;
  readonly exited: Promise<void>;
  private markExited!: () => void;
  private readonly outputs = new Map<"stdout" | "stderr", Output>();
  private stdinSink: Socket | undefined;
  private stdinConn: Socket | undefined;
  private stdinClosed = false;
  private pty: Socket | undefined;
  private ptyFd = -1;
  /** fds for the runtime's child (closed here once the runtime ran). */
  private childFds: number[] = [];

  constructor(
    readonly containerId: string,
    readonly execId: string,
    readonly terminal: boolean,
    readonly wanted: StdioWanted,
  ) {
    this.exited = new Promise((r) => {
      this.markExited = r;
    });
    if (terminal) {
      // Terminal output is the stdout stream; input goes into the same pty.
      this.outputs.set("stdout", new Output());
    } else {
      if (wanted.stdout) this.outputs.set("stdout", new Output());
      if (wanted.stderr) this.outputs.set("stderr", new Output());
    }
  }

  /** The runtime's stdio for a non-terminal process: fds (ours to close later) or "ignore". */
  runtimeStdio(): Array<number | "ignore"> {
    if (this.terminal) return ["ignore", "ignore", "ignore"];
    const io: Array<number | "ignore"> = ["ignore", "ignore", "ignore"];
    if (this.wanted.stdin) {
      const p = makePipe(PIPE_SIZE);
      io[0] = p.read;
      this.childFds.push(p.read);
      this.stdinSink = socketFromFd(p.write, { readable: false });
      this.stdinSink.on("error", () => {});
      if (this.stdinConn) this.startStdin();
    }
    for (const [i, name] of [
      [1, "stdout"],
      [2, "stderr"],
    ] as const) {
      const out = this.outputs.get(name);
      if (!out) continue;
      const p = makePipe(PIPE_SIZE);
      io[i] = p.write;
      this.childFds.push(p.write);
      out.setSource(socketFromFd(p.read, { writable: false }));
    }
    return io;
  }

  /** After the runtime started the process: our copies of its fds go (EOF needs every writer closed). */
  closeChildFds(): void {
    for (const fd of this.childFds) closeSync(fd);
    this.childFds = [];
  }

  /** Terminal mode: the pty master from the console socket. */
  setPty(masterFd: number): void {
    this.ptyFd = masterFd;
    this.pty = socketFromFd(masterFd);
    this.pty.on("error", () => {});
    this.stdinSink = this.pty;
    this.outputs.get("stdout")!.setSource(this.pty);
    if (this.stdinConn) this.startStdin();
  }

  hasStream(name: StreamName): boolean {
    if (name === "stdin") return this.terminal || this.wanted.stdin;
    return this.outputs.has(name);
  }

  /** Attaches a host connection to a stream; false if that stream is not there or already taken. */
  attach(name: StreamName, conn: Socket): boolean {
    if (name === "stdin") {
      if (!this.hasStream("stdin") || this.stdinConn) return false;
      this.stdinConn = conn;
      if (this.stdinSink) this.startStdin();
      return true;
    }
    const out = this.outputs.get(name);
    if (!out || out.conn) return false;
    out.attach(conn);
    return true;
  }

  private startStdin(): void {
    pumpIn(this.stdinConn!, this.stdinSink!, () => this.closeStdin());
  }

  closeStdin(): void {
    if (this.stdinClosed) return;
    if (this.terminal) {
      this.pty?.write("\x04"); // the EOF character of a canonical-mode terminal
      return;
    }
    this.stdinClosed = true;
    const sink = this.stdinSink;
    // A pipe cannot be shut down (shutdown(2) is for sockets): close it once everything queued was written.
    if (sink && !sink.destroyed) sink.write(Buffer.alloc(0), () => sink.destroy());
  }

  resize(rows: number, cols: number): void {
    if (!this.terminal || this.ptyFd < 0) throw precondition(`process ${this.describe()} has no terminal`);
    setWinsize(this.ptyFd, rows, cols);
  }

  setRunning(pid: number): void {
    this.pid = pid;
    if (this.status === "created") this.status = "running";
  }

  /** Records the exit (once). */
  setExited(status: number, at = new Date()): void {
    if (this.status === "exited") return;
    this.status = "exited";
    this.exitStatus = status;
    this.exitedAt = at;
    this.markExited();
  }

  /** Resolves when the process exited and its attached output is complete (bounded by OUTPUT_GRACE_MS). */
  async waitComplete(): Promise<void> {
    await this.exited;
    const outs = [...this.outputs.values()];
    // Unattached output cannot be delivered any more (streams are attached before Start/Exec).
    for (const o of outs) if (!o.conn) o.abandon();
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((r) => {
      timer = setTimeout(r, OUTPUT_GRACE_MS);
    });
    await Promise.race([Promise.all(outs.map((o) => o.done)), grace]);
    clearTimeout(timer);
    if (!this.terminal && this.stdinSink && !this.stdinSink.destroyed) this.stdinSink.destroy();
  }

  /** Frees everything (the container is going away). */
  dispose(): void {
    this.closeChildFds();
    for (const o of this.outputs.values()) o.abandon();
    this.stdinSink?.destroy();
    this.pty?.destroy();
    this.stdinConn?.destroy();
  }

  describe(): string {
    return this.execId ? `${this.containerId}/${this.execId}` : this.containerId;
  }
}
