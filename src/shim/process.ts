// One process the shim tracks (a container's init, or an exec in it) and its state machine, with
// the errors containerd expects for each illegal transition (as runc's shim returns them).
import { CancelledError, type CoveError, NotFoundError, WrongStateError } from "../common/errors.ts";

export type ProcStatus = "created" | "running" | "paused" | "stopped" | "deleted";

/** containerd.v1.types.Status values. */
export const STATUS_ENUM: Record<ProcStatus, number> = {
  created: 1,
  running: 2,
  stopped: 3,
  paused: 4,
  deleted: 3, // a deleted process is reported as stopped if anyone still asks
};

export interface ProcStdio {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

export interface ExitInfo {
  status: number;
  at: Date;
}

/**
 * A process as containerd's task API sees it: the shim's own table. The sandbox runtime tracks
 * the same process as a PodProcess (src/sandbox/containers.ts), the guest agent as an AgentProcess.
 */
export class TaskProcess {
  status: ProcStatus = "created";
  pid = 0;
  exit?: ExitInfo;
  private readonly exited: Promise<ExitInfo>;
  private resolveExit!: (e: ExitInfo) => void;

  constructor(
    readonly containerId: string,
    /** "" for the init process. */
    readonly execId: string,
    readonly stdio: ProcStdio,
  ) {
    this.exited = new Promise((r) => {
      this.resolveExit = r;
    });
  }

  get isInit(): boolean {
    return this.execId === "";
  }

  /** The name containerd knows it by: the exec id, or the container id for init. */
  get name(): string {
    return this.execId || this.containerId;
  }

  private illegal(what: string): CoveError {
    if (this.status === "deleted") return new NotFoundError(`process ${this.name} was deleted: not found`);
    return new WrongStateError(`cannot ${what} a ${this.status} process`);
  }

  checkStart(): void {
    if (this.status !== "created") throw this.illegal("start");
  }

  started(pid: number): void {
    this.checkStart();
    this.pid = pid;
    this.status = "running";
  }

  checkKill(): void {
    if (this.status === "stopped" || this.status === "deleted") {
      throw new NotFoundError("process already finished: not found");
    }
  }

  checkPause(): void {
    if (this.status !== "running") throw this.illegal("pause");
  }

  checkResume(): void {
    if (this.status !== "paused") throw this.illegal("resume");
  }

  checkDelete(): void {
    if (this.status === "running" || this.status === "paused") throw this.illegal("delete");
    if (this.status === "deleted") throw this.illegal("delete");
  }

  /** Records the exit once; later calls are ignored. Returns false if it had already exited. */
  setExited(status: number, at: Date): boolean {
    if (this.exit) return false;
    this.exit = { status, at };
    if (this.status !== "deleted") this.status = "stopped";
    this.resolveExit(this.exit);
    return true;
  }

  deleted(): void {
    this.status = "deleted";
  }

  /** Resolves when the process has exited; rejects with CANCELLED if signal aborts first. */
  wait(signal?: AbortSignal): Promise<ExitInfo> {
    if (this.exit) return Promise.resolve(this.exit);
    if (!signal) return this.exited;
    return new Promise((resolve, reject) => {
      const onAbort = () => reject(new CancelledError(`wait for ${this.name} cancelled`));
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      this.exited.then((e) => {
        signal.removeEventListener("abort", onAbort);
        resolve(e);
      });
    });
  }
}
