// The CRI sandbox container (io.kubernetes.cri.container-type=sandbox) is the pod VM itself: cove
// runs no pause image. Kata runs pause so that containers can join its namespaces; in cove the VM
// is the pod's isolation boundary, and the pod's shared pid/ipc/uts namespaces are held in the guest
// by the agent's namespace holder (one small process per pod, started by CreateSandbox), so a pause
// container would only cost guest memory and an image conversion. Every rule for it is here:
// - its task pid is the VMM's pid; it has no rootfs and no disks;
// - Start only marks it started; it runs no execs; pause, resume, update and CloseIO do nothing;
//   its stats are empty;
// - Kill ends the "process" with a synthesised exit (128 + signal); the VM keeps running;
// - Delete tears the VM down (and with it the pod network and every container's disks).
import { NotFoundError, WrongStateError } from "../common/errors.ts";
import type { ExitEvent } from "../shim/runtime.ts";
import type { ContainerOps, PodContainer } from "./containers.ts";
import { annotationsOf, type Json } from "./oci.ts";
import type { PodVm } from "./pod.ts";

export const CONTAINER_TYPE = "io.kubernetes.cri.container-type";

export function isSandboxContainer(oci: Json): boolean {
  return annotationsOf(oci)[CONTAINER_TYPE] === "sandbox";
}

export interface SandboxContainerHost {
  /** Reports an exit to containerd. */
  exit(e: ExitEvent): void;
  /** Drops the container from the table. */
  forget(id: string): void;
  /** Stops the pod VM and releases what the pod holds. */
  shutdownPod(reason: string): Promise<void>;
}

export class SandboxContainerOps implements ContainerOps {
  readonly hasDisks = false;

  constructor(private readonly host: SandboxContainerHost) {}

  async create(pod: PodVm, c: PodContainer): Promise<{ pid: number }> {
    c.procs.set("", { started: false, exited: false });
    return { pid: pod.vm.pid };
  }

  async start(pod: PodVm, _c: PodContainer, _execId: string, p: { started: boolean }): Promise<{ pid: number }> {
    p.started = true;
    return { pid: pod.vm.pid };
  }

  exec(c: PodContainer): void {
    throw new WrongStateError(`${c.id} is the pod sandbox: it runs no processes`);
  }

  async kill(c: PodContainer, _execId: string, signal: number): Promise<void> {
    const p = c.procs.get("")!;
    if (p.exited) throw new NotFoundError("process already finished: not found");
    p.exited = true;
    this.host.exit({ id: c.id, execId: "", status: 128 + signal, at: new Date() });
  }

  async remove(c: PodContainer): Promise<void> {
    this.host.forget(c.id);
    await this.host.shutdownPod("sandbox deleted");
  }

  async pids(pod: PodVm): Promise<{ pid: number }[]> {
    return [{ pid: pod.vm.pid }];
  }

  async pause(): Promise<void> {}
  async resume(): Promise<void> {}
  async update(): Promise<void> {}
  async closeStdin(): Promise<void> {}

  async stats(): Promise<object> {
    return {};
  }
}
