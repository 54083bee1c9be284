// A container the agent runs in the guest: every task RPC becomes an agent call. Its rootfs is on
// the pod's disks (disks.ts), its stdio copied by ProcessIo, its copied volumes kept in step by
// VolumeSync; each started process is followed (WaitProcess) until its exit is reported.
import type { Logger } from "pino";
import { errorMessage } from "../common/errors.ts";
import { grpcStatus } from "../common/grpc-status.ts";
import type { CreateSpec, ExecSpec, ExitEvent } from "../shim/runtime.ts";
import { Code } from "../ttrpc/index.ts";
import type { ContainerOps, PodContainer, PodProcess } from "./containers.ts";
import type { PodDisks, PreparedDisks } from "./disks.ts";
import { ProcessIo } from "./io.ts";
import type { Json } from "./oci.ts";
import type { PodVm } from "./pod.ts";
import type { VolumeSync } from "./volume-sync.ts";
import { planVolumes } from "./volumes.ts";

/** The guest exit status of a process whose VM went away (as Kata reports it). */
export const VM_GONE_STATUS = 255;

/** A NOT_FOUND, whether the agent sent it or cove's own code threw it. */
export function isNotFound(e: unknown): boolean {
  return grpcStatus(e).code === Code.NOT_FOUND;
}

/** What guest containers use of the runtime. */
export interface GuestContainerHost {
  readonly log: Logger;
  /** The running pod VM, or FAILED_PRECONDITION / UNAVAILABLE. */
  alive(): PodVm;
  /** The pod's disks (the pod has booted). */
  disks(): PodDisks;
  readonly volumes: VolumeSync;
  /** Gives the guest the pod's DNS if this container mounts a resolv.conf the guest has not seen. */
  dnsFromContainer(pod: PodVm, oci: Json): Promise<void>;
  /** A warning when this container's memory limit does not fit the pod's VM (vm-size.ts). */
  memoryFit(oci: Json): string | undefined;
  /** Releases the container's volumes, disks and files. */
  release(c: PodContainer): Promise<void>;
  /** Drops the container from the table. */
  forget(id: string): void;
  /** Reports an exit to containerd. */
  exit(e: ExitEvent): void;
  /** Runs an agent call that ends something; if the agent does not answer, stops the pod VM. */
  orStopVm(pod: PodVm, what: string, call: () => Promise<unknown>): Promise<void>;
}

export class GuestContainerOps implements ContainerOps {
  readonly hasDisks = true;

  constructor(private readonly host: GuestContainerHost) {}

  async create(
    pod: PodVm,
    c: PodContainer,
    spec: CreateSpec,
    oci: Json,
    prepared?: PreparedDisks,
  ): Promise<{ pid: number }> {
    const h = this.host;
    prepared ??= await h.disks().prepare(c, spec.rootfs, h.log);
    const disks = await h.disks().attach(pod, c, prepared);
    await h.dnsFromContainer(pod, oci);
    // No memory hotplug: a limit the VM cannot meet still applies in the guest, and is said so.
    const unfit = h.memoryFit(oci);
    if (unfit) h.log.warn({ id: c.id }, unfit);
    const io = new ProcessIo(spec, h.log.child({ id: c.id }));
    const vols = planVolumes(oci);
    for (const n of vols.notes) h.log.info({ id: c.id }, n);
    const req = {
      container_id: c.id,
      spec: Buffer.from(JSON.stringify(vols.spec)),
      storages: [...disks.storages, ...vols.storages],
      rootfs: disks.rootfs,
      stdio: io.want,
      files: h.volumes.add(c.id, vols.copies),
    };
    const pid = await pod.agent.createContainer(req);
    c.procs.set("", { io, started: false, exited: false });
    await io.attach((stream) => pod.agent.openStdio(c.id, "", stream));
    return { pid };
  }

  async start(pod: PodVm, c: PodContainer, execId: string, p: PodProcess): Promise<{ pid: number }> {
    const id = c.id;
    let pid: number;
    if (!execId) pid = await pod.agent.startContainer(id);
    else {
      await p.io!.attach((stream) => pod.agent.openStdio(id, execId, stream));
      pid = await pod.agent.execProcess({
        container_id: id,
        exec_id: execId,
        process: p.process as object,
        stdio: p.io!.want,
      });
    }
    p.started = true;
    this.follow(pod, c, execId, p);
    return { pid };
  }

  /** Reports the process's exit once the agent has it and its output reached containerd's side. */
  private follow(pod: PodVm, c: PodContainer, execId: string, p: PodProcess): void {
    void (async () => {
      let status = VM_GONE_STATUS;
      let at = new Date();
      try {
        const r = await pod.agent.waitProcess(c.id, execId);
        status = r.exit_status;
        if (r.exited_at) at = new Date(r.exited_at.seconds * 1000 + Math.floor(r.exited_at.nanos / 1e6));
        await p.io?.outputDone();
      } catch (e) {
        if (pod.exited || pod.stopping) return; // the VM watcher reports it
        this.host.log.warn({ id: c.id, exec_id: execId, err: errorMessage(e) }, "waiting for a process failed");
      }
      if (p.exited) return;
      p.exited = true;
      p.io?.close();
      this.host.exit({ id: c.id, execId, status, at });
    })();
  }

  exec(c: PodContainer, execId: string, spec: ExecSpec): void {
    // The agent starts an exec at once, so the process and its streams wait for Start.
    c.procs.set(execId, {
      io: new ProcessIo(spec, this.host.log.child({ id: c.id, exec_id: execId })),
      process: spec.process,
      started: false,
      exited: false,
    });
  }

  async kill(c: PodContainer, execId: string, signal: number, all: boolean): Promise<void> {
    const pod = this.host.alive();
    await this.host.orStopVm(pod, "Kill", () => pod.agent.signalProcess(c.id, execId, signal, all));
  }

  async remove(c: PodContainer, pod: PodVm | undefined): Promise<void> {
    if (pod) {
      try {
        await this.host.orStopVm(pod, "Delete", () =>
          pod.agent.removeContainer(c.id, true).catch((e) => isNotFound(e) || Promise.reject(e)),
        );
      } catch (e) {
        // The VM went away during the call (SIGKILLed, crashed): the container went with it. Kept
        // in the table, it would keep the shim alive after containerd's Shutdown.
        if (!(await vmGone(pod))) throw e;
      }
    }
    await this.host.release(c);
    this.host.forget(c.id);
  }

  async pids(pod: PodVm, c: PodContainer): Promise<{ pid: number }[]> {
    return (await pod.agent.listPids(c.id)).map((p) => ({ pid: p.pid }));
  }

  async pause(pod: PodVm, c: PodContainer): Promise<void> {
    await pod.agent.pauseContainer(c.id);
  }

  async resume(pod: PodVm, c: PodContainer): Promise<void> {
    await pod.agent.resumeContainer(c.id);
  }

  async update(pod: PodVm, c: PodContainer, resources: unknown): Promise<void> {
    await pod.agent.updateContainer(c.id, (resources ?? {}) as object);
  }

  async closeStdin(c: PodContainer, execId: string, p: PodProcess | undefined): Promise<void> {
    if (p?.started) await this.host.alive().agent.closeStdin(c.id, execId);
  }

  async stats(pod: PodVm, c: PodContainer): Promise<object> {
    return await pod.agent.statsContainer(c.id);
  }
}

/** Whether the pod's VM has exited, or exits within a second (its exit is being processed). */
async function vmGone(pod: PodVm): Promise<boolean> {
  if (pod.exited) return true;
  let t: NodeJS.Timeout | undefined;
  const gone = await Promise.race([
    pod.vm.wait().then(() => true),
    new Promise<boolean>((r) => {
      t = setTimeout(() => r(false), 1000);
    }),
  ]);
  clearTimeout(t);
  return gone;
}
