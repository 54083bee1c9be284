// What the Task service needs from whatever actually runs the containers: the pod sandbox (a VM with
// an agent in it). The service owns containerd's semantics (state machines, errors, events); the
// runtime owns execution. Tests substitute a fake.
import type { ProcStdio } from "./process.ts";

export interface MountSpec {
  type: string;
  source: string;
  target: string;
  options: string[];
}

export interface AnyValue {
  type_url: string;
  value: Uint8Array;
}

export interface CreateSpec extends ProcStdio {
  id: string;
  bundle: string;
  rootfs: MountSpec[];
  checkpoint: string;
  /** CreateTaskRequest.options (e.g. runtimeoptions.v1.Options), if any. */
  options?: AnyValue;
}

export interface ExecSpec extends ProcStdio {
  /** The OCI runtime-spec Process, parsed from the request's JSON Any. */
  process: unknown;
}

export interface ExitEvent {
  id: string;
  execId: string;
  status: number;
  at: Date;
}

export interface RuntimeEvents {
  exit(e: ExitEvent): void;
  oom(containerId: string): void;
}

export interface PtySize {
  id: string;
  execId: string;
  width: number;
  height: number;
}

export interface TaskRuntime {
  /** Prepares the container (and, for the first one, the pod) without starting it; returns the init pid. */
  create(spec: CreateSpec): Promise<{ pid: number }>;
  start(id: string, execId: string): Promise<{ pid: number }>;
  exec(id: string, execId: string, spec: ExecSpec): Promise<void>;
  kill(id: string, execId: string, signal: number, all: boolean): Promise<void>;
  /** Releases what the process (or, for init, the container) holds. */
  delete(id: string, execId: string): Promise<void>;
  pids(id: string): Promise<{ pid: number }[]>;
  pause(id: string): Promise<void>;
  resume(id: string): Promise<void>;
  /** A terminal's window size (named, so that width and height cannot swap). */
  resizePty(r: PtySize): Promise<void>;
  closeIO(id: string, execId: string, stdin: boolean): Promise<void>;
  update(id: string, resources: unknown, annotations: Record<string, string>): Promise<void>;
  /** cgroup metrics as an Any (io.containerd.cgroups.v2.Metrics or v1). */
  stats(id: string): Promise<AnyValue>;
  /** Tears down the pod (VM) when the shim exits. */
  shutdown(): Promise<void>;
  /** Where the runtime reports exits and OOMs. */
  setEvents(events: RuntimeEvents): void;
}
