// The pod's containers as the sandbox runtime tracks them: one table, keyed by container id, each
// with its processes (init is exec id ""). Which rules a container follows is its `ops`: the CRI
// sandbox container (sandbox-container.ts) or a container the agent runs (guest-container.ts).
import { NotFoundError } from "../common/errors.ts";
import type { CreateSpec, ExecSpec } from "../shim/runtime.ts";
import type { ContainerDisks, PreparedDisks } from "./disks.ts";
import type { ProcessIo } from "./io.ts";
import type { Json } from "./oci.ts";
import type { PodVm } from "./pod.ts";

export interface PodProcess {
  io?: ProcessIo;
  /** The OCI process of an exec, sent to the agent at Start. */
  process?: unknown;
  started: boolean;
  exited: boolean;
}

export interface PodContainer {
  id: string;
  bundle: string;
  ops: ContainerOps;
  /** Disk extents and files held for its rootfs (released on delete). */
  disks: ContainerDisks;
  procs: Map<string, PodProcess>;
}

/**
 * What each task RPC does to one kind of container, once the runtime has found the container (and,
 * where the RPC needs the guest, checked that the pod VM is alive).
 */
export interface ContainerOps {
  /** It has a rootfs on the pod's disks (so, as the pod's first container, its disks are there at boot). */
  readonly hasDisks: boolean;
  /** After the pod is up and `c` is in the table: makes its init process; returns its pid. */
  create(pod: PodVm, c: PodContainer, spec: CreateSpec, oci: Json, disks?: PreparedDisks): Promise<{ pid: number }>;
  start(pod: PodVm, c: PodContainer, execId: string, p: PodProcess): Promise<{ pid: number }>;
  exec(c: PodContainer, execId: string, spec: ExecSpec): void;
  /** Checks for a live VM itself: the sandbox container needs none. */
  kill(c: PodContainer, execId: string, signal: number, all: boolean): Promise<void>;
  /** Delete of the init process: the container and what it holds go. `pod` is the VM if it still runs. */
  remove(c: PodContainer, pod: PodVm | undefined): Promise<void>;
  pids(pod: PodVm, c: PodContainer): Promise<{ pid: number }[]>;
  pause(pod: PodVm, c: PodContainer): Promise<void>;
  resume(pod: PodVm, c: PodContainer): Promise<void>;
  update(pod: PodVm, c: PodContainer, resources: unknown): Promise<void>;
  /** CloseIO of stdin the shim does not hold itself (checks for a live VM itself). */
  closeStdin(c: PodContainer, execId: string, p: PodProcess | undefined): Promise<void>;
  /** cgroup v2 metrics, as an object of io.containerd.cgroups.v2.Metrics. */
  stats(pod: PodVm, c: PodContainer): Promise<object>;
}

export class ContainerTable {
  private readonly byId = new Map<string, PodContainer>();
  /** Called after every add or delete (the pod's run state for `cove ps`). */
  onChange?: () => void;

  add(c: PodContainer): void {
    this.byId.set(c.id, c);
    this.onChange?.();
  }

  get(id: string): PodContainer | undefined {
    return this.byId.get(id);
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  /** The container, or NOT_FOUND as containerd words it. */
  need(id: string): PodContainer {
    const c = this.byId.get(id);
    if (!c) throw new NotFoundError(`container ${id}: container not created: not found`);
    return c;
  }

  delete(id: string): void {
    if (this.byId.delete(id)) this.onChange?.();
  }

  ids(): string[] {
    return [...this.byId.keys()];
  }

  values(): IterableIterator<PodContainer> {
    return this.byId.values();
  }

  /** Every process of every container, with its container. */
  *processes(): Generator<{ c: PodContainer; execId: string; p: PodProcess }> {
    for (const c of this.byId.values()) for (const [execId, p] of c.procs) yield { c, execId, p };
  }
}
