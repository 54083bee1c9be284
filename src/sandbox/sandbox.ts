// The pod sandbox as the Task service's TaskRuntime: one microVM per pod (the shim daemon serves one
// pod, grouped by `start`), the agent inside it, and every task RPC mapped onto the agent.
//
// This file is the runtime's frame: it boots the pod for its first task (pod-boot.ts), keeps the
// container table (containers.ts), finds the container an RPC names and checks that the VM is
// alive, then lets the container's kind decide what the RPC does: the CRI sandbox container is the
// VM itself (sandbox-container.ts); every other container runs in the guest (guest-container.ts).
// It also watches the VM (an unexpected exit ends every process; OOM events) and tears the pod down.
import type { Logger } from "pino";
import { errorMessage, NotFoundError, UnavailableError, WrongStateError } from "../common/errors.ts";
import { grpcStatus } from "../common/grpc-status.ts";
import type { CoveConfig } from "../config/config.ts";
import type { HostKvm } from "../hypervisor/host.ts";
import { type PodMetricsHandle, startPodMetrics } from "../metrics/shim.ts";
import type { PodNetwork } from "../network/pod-network.ts";
import { messageType } from "../proto/root.ts";
import type { ContainerdAddress } from "../rootfs/containerd.ts";
import type { AnyValue, CreateSpec, ExecSpec, PtySize, RuntimeEvents, TaskRuntime } from "../shim/runtime.ts";
import { Code } from "../ttrpc/index.ts";
import { ContainerTable, type PodContainer } from "./containers.ts";
import { noDisks, type PodDisks, type PreparedDisks, releaseDisks } from "./disks.ts";
import { GuestContainerOps, isNotFound, VM_GONE_STATUS } from "./guest-container.ts";
import { podDns, resolvConfSource } from "./network.ts";
import { type Json, readSpec } from "./oci.ts";
import type { PodVm } from "./pod.ts";
import {
  type BootedPod,
  bootPod,
  type FirstContainer,
  type PodBootDeps,
  type PodBootPlan,
  type Preflight,
  planPodBoot,
  preflight,
  realPodBootDeps,
} from "./pod-boot.ts";
import { containerMemoryLimit } from "./pod-resources.ts";
import { namespaceOfBundle, PodRunStateFile } from "./run-state.ts";
import { isSandboxContainer, SandboxContainerOps } from "./sandbox-container.ts";
import { memoryFitWarning } from "./vm-size.ts";
import { VolumeSync } from "./volume-sync.ts";

export { VM_GONE_STATUS };

/** The OOM long poll runs at most 1000 / OOM_POLL_MIN_MS times a second. */
export const OOM_POLL_MIN_MS = 10;

export interface SandboxOptions {
  logger: Logger;
  /** cove.toml path the shim was started with (runtime options of `start`), if any. */
  configPath?: string;
  /** Host probe (tests). */
  probe?: () => HostKvm;
  /** containerd's gRPC socket and our namespace: it names the layers' snapshots (layer cache keys). */
  containerd?: ContainerdAddress;
  /** What the pod boot takes from the host (tests). */
  deps?: Partial<PodBootDeps>;
}

export class SandboxRuntime implements TaskRuntime {
  protected events?: RuntimeEvents;
  private pod?: PodVm;
  private metrics?: PodMetricsHandle;
  private booting?: Promise<BootedPod>;
  private disks?: PodDisks;
  /** The pod's network wiring (taps + redirects in its netns), if it has one; detached after the VM. */
  private net?: PodNetwork;
  /** The resolv.conf the guest has been given (a container's mount may name it first). */
  private dnsFrom?: string;
  /** The booted VM's memory, and the config that says how much of it the guest itself needs. */
  private vmSize?: { memoryMib: number; config: CoveConfig };
  private readonly containers = new ContainerTable();
  private shuttingDown = false;
  /** Read-only host volumes copied into the guest, kept in step with the host. */
  private readonly volumes: VolumeSync;
  private readonly deps: PodBootDeps;
  private readonly sandboxOps: SandboxContainerOps;
  private readonly guestOps: GuestContainerOps;

  constructor(private readonly opts: SandboxOptions) {
    this.deps = {
      ...realPodBootDeps,
      ...(opts.containerd ? { containerd: opts.containerd } : {}),
      ...opts.deps,
      ...(opts.probe ? { probe: opts.probe } : {}),
    };
    this.volumes = new VolumeSync((req) => this.alive().agent.syncFiles(req), opts.logger);
    const exit = (e: Parameters<RuntimeEvents["exit"]>[0]) => this.events?.exit(e);
    const forget = (id: string) => this.containers.delete(id);
    this.sandboxOps = new SandboxContainerOps({ exit, forget, shutdownPod: (r) => this.shutdownPod(r) });
    this.guestOps = new GuestContainerOps({
      log: opts.logger,
      alive: () => this.alive(),
      disks: () => this.disks!,
      volumes: this.volumes,
      dnsFromContainer: (pod, oci) => this.dnsFromContainer(pod, oci),
      memoryFit: (oci) =>
        this.vmSize && memoryFitWarning(containerMemoryLimit(oci), this.vmSize.memoryMib, this.vmSize.config),
      release: (c) => this.release(c),
      forget,
      exit,
      orStopVm: (pod, what, call) => this.orStopVm(pod, what, call),
    });
  }

  private get log(): Logger {
    return this.opts.logger;
  }

  setEvents(events: RuntimeEvents): void {
    this.events = events;
  }

  /** The pod's VM, booting it for the pod's first task (`first`: a container whose disks go in at boot). */
  private async podFor(
    spec: CreateSpec,
    oci: Json,
    pre: Preflight | undefined,
    first: FirstContainer | undefined,
  ): Promise<{ pod: PodVm; firstDisks?: PreparedDisks }> {
    if (this.pod) return { pod: this.pod };
    if (this.booting) return { pod: (await this.booting).pod };
    if (!pre) throw new UnavailableError("the pod VM is not available (its boot failed)");
    const plan = planPodBoot(spec, oci, pre, this.log);
    this.booting = bootPod(plan, first, this.deps, this.log);
    try {
      const b = await this.booting;
      this.pod = b.pod;
      this.vmSize = { memoryMib: plan.size.memoryMib, config: plan.config };
      this.disks = b.disks;
      this.net = b.net;
      this.dnsFrom = b.dnsFrom;
      this.recordRunState(plan, b.pod);
      this.watch(b.pod);
      return { pod: b.pod, firstDisks: b.firstDisks };
    } finally {
      this.booting = undefined;
    }
  }

  /** pod.json in the VM's work dir for `cove ps`, kept in step with the container table. */
  private recordRunState(plan: PodBootPlan, pod: PodVm): void {
    const state = {
      id: plan.id,
      namespace: namespaceOfBundle(plan.bundle),
      bundle: plan.bundle,
      shimPid: process.pid,
      vmmPid: pod.vm.pid,
      backend: plan.hypervisor.name,
      ...(plan.choice ? { accel: plan.choice.accel } : {}),
      vcpus: plan.size.vcpus,
      memoryMib: plan.size.memoryMib,
      startedAt: new Date().toISOString(),
      bootMs: Math.round(pod.bootMs),
      containers: this.containers.ids(),
      debugConsole: plan.config.debug.console,
    };
    const file = new PodRunStateFile(pod.workDir, state);
    this.containers.onChange = () => file.setContainers(this.containers.ids());
    this.metrics = startPodMetrics({
      workDir: pod.workDir,
      state,
      vm: pod.vm,
      containers: () => this.containers.ids().length,
      log: this.log,
    });
  }

  /** Reports the end of every process when the VM goes away without being asked to (a fault). */
  private watch(pod: PodVm): void {
    void pod.vm.wait().then((exit) => {
      if (pod.stopping) return;
      this.log.error(
        { code: exit.code, signal: exit.signal, console: pod.console.slice(-2000) },
        "pod VM exited unexpectedly: every process in it is reported as exited",
      );
      const at = new Date();
      for (const { c, execId, p } of this.containers.processes()) {
        if (p.exited) continue;
        p.exited = true;
        p.io?.close();
        this.events?.exit({ id: c.id, execId, status: VM_GONE_STATUS, at });
      }
    });
    void this.oomLoop(pod);
  }

  /**
   * Polls the agent for OOM kills. The agent answers whenever it likes, so a hostile one could make
   * this loop spin on round trips: at most one poll per OOM_POLL_MIN_MS (the events publisher sends
   * containerd at most one TaskOOM per container per second anyway).
   */
  private async oomLoop(pod: PodVm): Promise<void> {
    while (!pod.exited && !pod.stopping) {
      try {
        const t0 = Date.now();
        const id = await pod.agent.getOomEvent();
        if (id && this.containers.has(id)) this.events?.oom(id);
        const wait = t0 + OOM_POLL_MIN_MS - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      } catch {
        if (pod.exited || pod.stopping) return;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  /**
   * An agent call that ends a process or a container (Kill, Delete). When the agent does not
   * answer within the call's deadline, the pod VM is stopped: the whole pod ends, which the watch
   * above reports as an exit of every process in it, and containerd gets its answer in bounded
   * time (the deadline plus the VM's stop) instead of a hang. Any other failure is the caller's.
   */
  private async orStopVm(pod: PodVm, what: string, call: () => Promise<unknown>): Promise<void> {
    try {
      await call();
    } catch (e) {
      if (grpcStatus(e).code !== Code.DEADLINE_EXCEEDED || pod.stopping) throw e;
      this.log.error(
        { what, err: errorMessage(e) },
        "the guest agent does not answer: stopping the pod VM (every process in it is reported as exited)",
      );
      await pod.vm.kill();
      // The watch's exits go out before this call answers.
      await new Promise((r) => setImmediate(r));
    }
  }

  private alive(): PodVm {
    const pod = this.pod;
    if (!pod) throw new WrongStateError("the pod VM is not running");
    if (pod.exited) throw new UnavailableError("the pod VM has exited");
    return pod;
  }

  async create(spec: CreateSpec): Promise<{ pid: number }> {
    const pre =
      !this.pod && !this.booting ? preflight(spec, this.opts.configPath, this.deps.probe, this.log) : undefined;
    const oci = readSpec(spec.bundle);
    const ops = isSandboxContainer(oci) ? this.sandboxOps : this.guestOps;
    const c: PodContainer = { id: spec.id, bundle: spec.bundle, ops, disks: noDisks(), procs: new Map() };
    try {
      const first = !this.pod && !this.booting && ops.hasDisks ? { c, rootfs: spec.rootfs } : undefined;
      const { pod, firstDisks } = await this.podFor(spec, oci, pre, first);
      this.containers.add(c);
      return await ops.create(pod, c, spec, oci, firstDisks);
    } catch (e) {
      await this.release(c);
      this.containers.delete(c.id);
      throw e;
    }
  }

  /**
   * CRI mounts the pod's resolv.conf into its containers, not (always) into the sandbox: the first
   * container that names one gives the guest its DNS (ConfigureNetwork is idempotent).
   */
  private async dnsFromContainer(pod: PodVm, oci: Json): Promise<void> {
    const net = this.net;
    const src = resolvConfSource(oci);
    if (!net || !src || src === this.dnsFrom) return;
    const dns = podDns(oci, this.log);
    if (!dns) return;
    await pod.agent.configureNetwork(net.guestConfig(dns));
    this.dnsFrom = src;
    this.log.info({ path: src, nameservers: dns.nameservers }, "pod network: DNS from the pod's resolv.conf");
  }

  /** Gives back the container's volumes and disks (ejecting media nobody uses) and removes its files. */
  private async release(c: PodContainer): Promise<void> {
    this.volumes.remove(c.id);
    await releaseDisks(c.id, c.disks, this.disks, this.pod, this.log);
  }

  async start(id: string, execId: string): Promise<{ pid: number }> {
    const c = this.containers.need(id);
    const pod = this.alive();
    const p = c.procs.get(execId);
    if (!p) throw new NotFoundError(`process ${execId} does not exist in ${id}: not found`);
    return await c.ops.start(pod, c, execId, p);
  }

  async exec(id: string, execId: string, spec: ExecSpec): Promise<void> {
    const c = this.containers.need(id);
    this.alive();
    c.ops.exec(c, execId, spec);
  }

  async kill(id: string, execId: string, signal: number, all: boolean): Promise<void> {
    const c = this.containers.need(id);
    await c.ops.kill(c, execId, signal, all);
  }

  async delete(id: string, execId: string): Promise<void> {
    const c = this.containers.get(id);
    if (!c) return;
    const p = c.procs.get(execId);
    p?.io?.close();
    const pod = this.pod && !this.pod.exited ? this.pod : undefined;
    if (execId) {
      c.procs.delete(execId);
      if (pod && p?.started) {
        await this.orStopVm(pod, "Delete", () =>
          pod.agent.deleteProcess(id, execId).catch((e) => isNotFound(e) || Promise.reject(e)),
        );
      }
      return;
    }
    await c.ops.remove(c, pod);
  }

  async pids(id: string): Promise<{ pid: number }[]> {
    const c = this.containers.need(id);
    return await c.ops.pids(this.alive(), c);
  }

  async pause(id: string): Promise<void> {
    const c = this.containers.need(id);
    await c.ops.pause(this.alive(), c);
  }

  async resume(id: string): Promise<void> {
    const c = this.containers.need(id);
    await c.ops.resume(this.alive(), c);
  }

  async resizePty({ id, execId, width, height }: PtySize): Promise<void> {
    this.containers.need(id);
    await this.alive().agent.resizeTty({ containerId: id, execId, rows: height, cols: width });
  }

  async closeIO(id: string, execId: string, stdin: boolean): Promise<void> {
    const c = this.containers.need(id);
    if (!stdin) return;
    const p = c.procs.get(execId);
    if (p?.io?.want.stdin) p.io.closeStdin();
    else await c.ops.closeStdin(c, execId, p);
  }

  async update(id: string, resources: unknown): Promise<void> {
    const c = this.containers.need(id);
    await c.ops.update(this.alive(), c, resources);
  }

  async stats(id: string): Promise<AnyValue> {
    const c = this.containers.need(id);
    const pod = this.alive();
    const T = messageType("io.containerd.cgroups.v2.Metrics");
    const metrics = await c.ops.stats(pod, c);
    return { type_url: "io.containerd.cgroups.v2.Metrics", value: T.encode(T.fromObject(metrics)).finish() };
  }

  private async shutdownPod(reason: string): Promise<void> {
    const pod = this.pod;
    if (!pod) return;
    this.volumes.stop();
    this.log.info({ reason }, "pod VM shutting down");
    await this.metrics?.close();
    await pod.destroy(this.log);
    // The VM (and its virtio-net devices) are gone: now the taps and redirects can go.
    const net = this.net;
    this.net = undefined;
    if (net) {
      await net.detach();
      this.log.info({ netns: net.netns }, "pod network detached");
    }
    for (const c of this.containers.values()) await this.release(c);
    await this.disks?.close();
  }

  async shutdown(): Promise<void> {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    if (this.booting) await this.booting.catch(() => undefined);
    for (const { p } of this.containers.processes()) p.io?.close();
    await this.shutdownPod("shim shutdown");
    this.events = undefined;
  }
}
