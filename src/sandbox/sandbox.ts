// The pod sandbox as the Task service's TaskRuntime: one microVM per pod (the shim daemon serves one
// pod, grouped by `start`), the agent inside it, and every task RPC mapped onto the agent.
//
// A CRI sandbox container (io.kubernetes.cri.container-type=sandbox) is the VM itself: no pause
// process runs in the guest. Kata runs pause so that containers can join its namespaces; in cove the
// VM already is the pod's isolation boundary and shared namespace, so a pause process would only
// cost guest memory and an image conversion. Its task pid is the VMM's pid; killing it ends the
// "process", and deleting it tears the VM down.
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import { ConfigError, type CoveConfig, loadConfig } from "../config/config.ts";
import type { Hypervisor } from "../hypervisor/types.ts";
import type { PodNetwork } from "../network/pod-network.ts";
import { messageType } from "../proto/root.ts";
import { type ContainerdAddress, containerdLookup } from "../rootfs/containerd.ts";
import { layerImage } from "../rootfs/layers.ts";
import { planRootfs } from "../rootfs/plan.ts";
import { committedChain } from "../rootfs/snapshots.ts";
import { createWritableLayer } from "../rootfs/writable.ts";
import type { AnyValue, CreateSpec, ExecSpec, RuntimeEvents, TaskRuntime } from "../shim/runtime.ts";
import { Code, TtrpcError } from "../ttrpc/index.ts";
import type { Storage } from "./agent/index.ts";
import { backendFactory, chooseBackend, type HostKvm, probeHost } from "./backend.ts";
import { checkGuestArtifacts } from "./guest.ts";
import { ProcessIo } from "./io.ts";
import {
  attachPodNetwork,
  describeNics,
  hostNetworkRefusal,
  nicsOf,
  podDns,
  podNetnsOf,
  resolvConfSource,
} from "./network.ts";
import { podOverrides } from "./overrides.ts";
import { PodVm } from "./pod.ts";
import { fitSlots, SlotTable } from "./slots.ts";
import { VolumeSync } from "./volume-sync.ts";
import { planVolumes } from "./volumes.ts";

export interface SandboxOptions {
  logger: Logger;
  /** cove.toml path the shim was started with (runtime options of `start`), if any. */
  configPath?: string;
  /** Host probe (tests). */
  probe?: () => HostKvm;
  /** containerd's gRPC socket and our namespace: it names the layers' snapshots (layer cache keys). */
  containerd?: ContainerdAddress;
}

/** config_path from a runtimeoptions.v1.Options Any, if that is what the options are. */
export function configPathFromOptions(options: AnyValue | undefined): string | undefined {
  if (!options?.type_url) return undefined;
  const name = options.type_url.slice(options.type_url.lastIndexOf("/") + 1);
  if (name !== "runtimeoptions.v1.Options") return undefined;
  const T = messageType("runtimeoptions.v1.Options");
  const o = T.toObject(T.decode(options.value)) as { config_path?: string };
  return o.config_path || undefined;
}

type Json = Record<string, unknown>;

const CONTAINER_TYPE = "io.kubernetes.cri.container-type";
/** The guest exit status of a process whose VM went away (as Kata reports it). */
export const VM_GONE_STATUS = 255;

interface Proc {
  io?: ProcessIo;
  process?: unknown;
  started: boolean;
  exited: boolean;
}

interface Ctr {
  id: string;
  bundle: string;
  sandbox: boolean;
  /** Slot images this container holds (released on delete). */
  images: string[];
  /** Files made for it (writable layer). */
  files: string[];
  procs: Map<string, Proc>;
}

function readSpec(bundle: string): Json {
  try {
    return JSON.parse(readFileSync(join(bundle, "config.json"), "utf8")) as Json;
  } catch (e) {
    throw new TtrpcError(Code.INVALID_ARGUMENT, `cannot read ${bundle}/config.json: ${(e as Error).message}`);
  }
}

function annotationsOf(spec: Json): Record<string, string> {
  const a = spec.annotations;
  return a && typeof a === "object" ? (a as Record<string, string>) : {};
}

function isNotFound(e: unknown): boolean {
  return e instanceof TtrpcError && e.code === Code.NOT_FOUND;
}

export class SandboxRuntime implements TaskRuntime {
  protected events?: RuntimeEvents;
  private pod?: PodVm;
  private booting?: Promise<PodVm>;
  private config?: CoveConfig;
  private slots?: SlotTable;
  /** The pod's network wiring (taps + redirects in its netns), if it has one; detached after the VM. */
  private net?: PodNetwork;
  /** The resolv.conf the guest has been given (a container's mount may name it first). */
  private dnsFrom?: string;
  private readonly ctrs = new Map<string, Ctr>();
  private shuttingDown = false;
  /** Read-only host volumes copied into the guest, kept in step with the host. */
  private readonly volumes: VolumeSync;

  constructor(private readonly opts: SandboxOptions) {
    this.volumes = new VolumeSync((req) => this.alive().agent.syncFiles(req), opts.logger);
  }

  private get log(): Logger {
    return this.opts.logger;
  }

  setEvents(events: RuntimeEvents): void {
    this.events = events;
  }

  private loadConfig(spec: CreateSpec): CoveConfig {
    const configPath = configPathFromOptions(spec.options) ?? this.opts.configPath;
    try {
      return loadConfig({ configPath });
    } catch (e) {
      if (e instanceof ConfigError) throw new TtrpcError(Code.FAILED_PRECONDITION, e.message);
      throw e;
    }
  }

  /** Before anything is read or built for the pod's first task: config, guest artifacts, backend. */
  private preflight(spec: CreateSpec): { config: CoveConfig; hypervisor: Hypervisor } {
    const log = this.log;
    const config = this.loadConfig(spec);
    log.info({ id: spec.id, config: config.source, hypervisor: config.hypervisor }, "pod config loaded");
    checkGuestArtifacts(config);
    const host = (this.opts.probe ?? probeHost)();
    const choice = chooseBackend(config.hypervisor, host);
    log.info(
      { id: spec.id, backend: choice.kind, accel: choice.accel, reason: choice.reason },
      "hypervisor backend chosen",
    );
    return { config, hypervisor: backendFactory(choice)(config, choice) };
  }

  /** The pod's VM, booting it for the pod's first task. */
  private async podFor(
    spec: CreateSpec,
    oci: Json,
    pre: { config: CoveConfig; hypervisor: Hypervisor } | undefined,
    first: Ctr | undefined,
    prepare: () => Promise<void>,
  ) {
    if (this.pod) return this.pod;
    if (this.booting) return this.booting;
    if (!pre) throw new TtrpcError(Code.UNAVAILABLE, "the pod VM is not available (its boot failed)");
    const log = this.log;
    const { config, hypervisor } = pre;
    const ns = podNetnsOf(oci, spec.id);
    if (ns.kind === "host") throw hostNetworkRefusal(spec.id);
    const o = podOverrides(annotationsOf(oci), config);
    for (const n of o.notes) log.info({ id: spec.id }, n);
    this.config = config;
    this.booting = (async () => {
      let net: PodNetwork | undefined;
      if (ns.kind === "netns" && !hypervisor.nets) {
        log.warn(
          { id: spec.id, netns: ns.path, hypervisor: hypervisor.name },
          "pod network: the guest has loopback only (this hypervisor backend has no virtio-net yet)",
        );
      } else if (ns.kind === "netns") {
        net = await attachPodNetwork(ns.path, log);
      }
      // Each NIC takes a device place the disks could have used (root and vsock take one each).
      const nics = net?.interfaces.length ?? 0;
      const free = hypervisor.maxDevices === undefined ? undefined : hypervisor.maxDevices - 2 - nics;
      let fit: ReturnType<typeof fitSlots>;
      try {
        fit = fitSlots(config.pod.layerSlots, config.pod.writableSlots, free);
      } catch (e) {
        log.error({ id: spec.id, nics, max_devices: hypervisor.maxDevices }, (e as Error).message);
        await net?.detach();
        throw e;
      }
      if (fit.layerSlots !== config.pod.layerSlots || fit.writableSlots !== config.pod.writableSlots) {
        log.info(
          { id: spec.id, nics, layer_slots: fit.layerSlots, writable_slots: fit.writableSlots },
          `disk slots reduced to fit ${hypervisor.name}'s ${hypervisor.maxDevices} virtio devices`,
        );
      }
      this.slots = new SlotTable(fit.layerSlots, fit.writableSlots);
      try {
        // The first container's disks are in place at boot; later ones use the empty slots.
        if (first) await prepare();
      } catch (e) {
        await net?.detach();
        throw e;
      }
      let pod: PodVm | undefined;
      try {
        pod = await PodVm.boot({
          id: spec.id,
          bundle: spec.bundle,
          hostname: typeof oci.hostname === "string" && oci.hostname ? oci.hostname : spec.id,
          config,
          vcpus: o.vcpus,
          memoryMib: o.memoryMib,
          hypervisor,
          slots: this.slots,
          ...(net ? { nets: nicsOf(net), netRecord: net.record() } : {}),
          logger: log,
        });
        await pod.agent.createSandbox({
          hostname: typeof oci.hostname === "string" ? oci.hostname : undefined,
          sysctls: sysctlsOf(oci),
        });
        if (net) {
          // After CreateSandbox: its DNS would otherwise overwrite ours.
          const t0 = performance.now();
          await pod.agent.configureNetwork(net.guestConfig(podDns(oci, log)));
          this.dnsFrom = resolvConfSource(oci);
          log.info(
            { id: spec.id, netns: ns.kind === "netns" ? ns.path : undefined, ms: Math.round(performance.now() - t0) },
            `pod network: ${describeNics(net)}`,
          );
        } else if (ns.kind === "new") {
          log.info(
            { id: spec.id },
            "pod network: the guest has loopback only (the pod has a fresh, empty network namespace)",
          );
        }
      } catch (e) {
        if (pod) await pod.destroy(log);
        await net?.detach();
        throw e;
      }
      this.net = net;
      this.watch(pod);
      return pod;
    })();
    try {
      this.pod = await this.booting;
      return this.pod;
    } catch (e) {
      this.slots = undefined;
      throw e;
    } finally {
      this.booting = undefined;
    }
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
      for (const c of this.ctrs.values()) {
        for (const [execId, p] of c.procs) {
          if (p.exited) continue;
          p.exited = true;
          p.io?.close();
          this.events?.exit({ id: c.id, execId, status: VM_GONE_STATUS, at });
        }
      }
    });
    void this.oomLoop(pod);
  }

  private async oomLoop(pod: PodVm): Promise<void> {
    while (!pod.exited && !pod.stopping) {
      try {
        const id = await pod.agent.getOomEvent();
        if (id && this.ctrs.has(id)) this.events?.oom(id);
      } catch {
        if (pod.exited || pod.stopping) return;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  private alive(): PodVm {
    const pod = this.pod;
    if (!pod) throw new TtrpcError(Code.FAILED_PRECONDITION, "the pod VM is not running");
    if (pod.exited) throw new TtrpcError(Code.UNAVAILABLE, "the pod VM has exited");
    return pod;
  }

  private ctr(id: string): Ctr {
    const c = this.ctrs.get(id);
    if (!c) throw new TtrpcError(Code.NOT_FOUND, `container ${id}: container not created: not found`);
    return c;
  }

  /** Layer images and the writable layer for a container; slots claimed (media inserted if booted). */
  private async disks(c: Ctr, spec: CreateSpec, config: CoveConfig) {
    const log = this.log.child({ id: c.id });
    const slots = this.slots!;
    const plan = planRootfs(spec.rootfs);
    const storages: Storage[] = [];
    const inserts: { serial: string; path: string }[] = [];
    const use = (image: string, storageId: string, readOnly: boolean, fstype: string, options: string[]) => {
      let s = slots.reuse(image);
      if (!s) {
        s = slots.claim(image, storageId, readOnly);
        inserts.push({ serial: s.serial, path: image });
      }
      c.images.push(image);
      storages.push({ id: s.storageId!, source: `serial:${s.serial}`, fstype, options });
      return s.storageId!;
    };
    if (plan.kind === "block") {
      const id = use(plan.device, `dev-${c.id}`, false, plan.fstype, plan.options);
      return { storages, rootfs: { upper: id }, inserts };
    }
    const t0 = performance.now();
    const at = this.opts.containerd;
    const chain =
      plan.committed && at
        ? await committedChain(() => containerdLookup(at), c.id, plan.lowers.length, log)
        : undefined;
    const images = await Promise.all(
      plan.lowers.map((dir, i) => layerImage(config.cacheDir, { dir, snapshot: chain?.[i] }, log)),
    );
    const lower = images.map((img) => use(img.path, `layer-${img.key}`, true, "erofs", ["ro"]));
    const upperFile = join(spec.bundle, "work", "cove-upper.ext4");
    await createWritableLayer(upperFile, config.pod.writableLayerMib);
    c.files.push(upperFile);
    const upper = use(upperFile, `upper-${c.id}`, false, "ext4", []);
    log.info(
      {
        layers: images.length,
        converted: images.filter((i) => i.built).length,
        cached: images.filter((i) => !i.built).length,
        ms: Math.round(performance.now() - t0),
      },
      "rootfs: block devices ready",
    );
    return { storages, rootfs: { lower, upper }, inserts };
  }

  async create(spec: CreateSpec): Promise<{ pid: number }> {
    const pre = !this.pod && !this.booting ? this.preflight(spec) : undefined;
    const oci = readSpec(spec.bundle);
    const sandbox = annotationsOf(oci)[CONTAINER_TYPE] === "sandbox";
    const c: Ctr = { id: spec.id, bundle: spec.bundle, sandbox, images: [], files: [], procs: new Map() };
    let prepared: Awaited<ReturnType<SandboxRuntime["disks"]>> | undefined;
    try {
      const first = !this.pod && !this.booting && !sandbox ? c : undefined;
      const pod = await this.podFor(spec, oci, pre, first, async () => {
        prepared = await this.disks(c, spec, this.config!);
      });
      this.ctrs.set(c.id, c);
      if (sandbox) {
        c.procs.set("", { started: false, exited: false });
        return { pid: pod.vm.pid };
      }
      if (!prepared) {
        prepared = await this.disks(c, spec, this.config ?? this.loadConfig(spec));
        for (const i of prepared.inserts) await pod.changeMedia(i.serial, i.path);
      }
      await this.dnsFromContainer(pod, oci);
      const io = new ProcessIo(spec, this.log.child({ id: c.id }));
      const vols = planVolumes(oci);
      for (const n of vols.notes) this.log.info({ id: c.id }, n);
      const req = {
        container_id: c.id,
        spec: Buffer.from(JSON.stringify(vols.spec)),
        storages: [...prepared.storages, ...vols.storages],
        rootfs: prepared.rootfs,
        stdio: io.want,
        files: this.volumes.add(c.id, vols.copies),
      };
      const pid = await pod.agent.createContainer(req);
      c.procs.set("", { io, started: false, exited: false });
      await io.attach((stream) => pod.agent.openStdio(c.id, "", stream));
      return { pid };
    } catch (e) {
      await this.release(c);
      this.ctrs.delete(c.id);
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

  /** Gives back the container's slots (ejecting media nobody uses) and removes its files. */
  private async release(c: Ctr): Promise<void> {
    this.volumes.remove(c.id);
    for (const image of c.images.splice(0)) {
      const s = this.slots?.release(image);
      if (s && this.pod && !this.pod.exited) {
        await this.pod.changeMedia(s.serial, undefined).catch((e: Error) => {
          this.log.warn({ id: c.id, slot: s.serial, err: e.message }, "ejecting a disk failed");
        });
      }
    }
    for (const f of c.files.splice(0)) rmSync(f, { force: true });
  }

  private follow(pod: PodVm, c: Ctr, execId: string, p: Proc): void {
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
        this.log.warn({ id: c.id, exec_id: execId, err: (e as Error).message }, "waiting for a process failed");
      }
      if (p.exited) return;
      p.exited = true;
      p.io?.close();
      this.events?.exit({ id: c.id, execId, status, at });
    })();
  }

  async start(id: string, execId: string): Promise<{ pid: number }> {
    const c = this.ctr(id);
    const pod = this.alive();
    const p = c.procs.get(execId);
    if (!p) throw new TtrpcError(Code.NOT_FOUND, `process ${execId} does not exist in ${id}: not found`);
    if (c.sandbox) {
      p.started = true;
      return { pid: pod.vm.pid };
    }
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

  async exec(id: string, execId: string, spec: ExecSpec): Promise<void> {
    const c = this.ctr(id);
    this.alive();
    if (c.sandbox) throw new TtrpcError(Code.FAILED_PRECONDITION, `${id} is the pod sandbox: it runs no processes`);
    // The agent starts an exec at once, so the process and its streams wait for Start.
    c.procs.set(execId, {
      io: new ProcessIo(spec, this.log.child({ id, exec_id: execId })),
      process: spec.process,
      started: false,
      exited: false,
    });
  }

  async kill(id: string, execId: string, signal: number, all: boolean): Promise<void> {
    const c = this.ctr(id);
    if (c.sandbox) {
      const p = c.procs.get("")!;
      if (p.exited) throw new TtrpcError(Code.NOT_FOUND, "process already finished: not found");
      p.exited = true;
      this.events?.exit({ id, execId: "", status: 128 + signal, at: new Date() });
      return;
    }
    const pod = this.alive();
    await pod.agent.signalProcess(id, execId, signal, all);
  }

  async delete(id: string, execId: string): Promise<void> {
    const c = this.ctrs.get(id);
    if (!c) return;
    const p = c.procs.get(execId);
    p?.io?.close();
    const pod = this.pod && !this.pod.exited ? this.pod : undefined;
    if (execId) {
      c.procs.delete(execId);
      if (pod && p?.started) await pod.agent.deleteProcess(id, execId).catch((e) => isNotFound(e) || Promise.reject(e));
      return;
    }
    if (c.sandbox) {
      this.ctrs.delete(id);
      await this.shutdownPod("sandbox deleted");
      return;
    }
    if (pod) {
      try {
        await pod.agent.removeContainer(id, true);
      } catch (e) {
        if (!isNotFound(e)) throw e;
      }
    }
    await this.release(c);
    this.ctrs.delete(id);
  }

  async pids(id: string): Promise<{ pid: number }[]> {
    const c = this.ctr(id);
    const pod = this.alive();
    if (c.sandbox) return [{ pid: pod.vm.pid }];
    return (await pod.agent.listPids(id)).map((p) => ({ pid: p.pid }));
  }

  async pause(id: string): Promise<void> {
    const c = this.ctr(id);
    const pod = this.alive();
    if (!c.sandbox) await pod.agent.pauseContainer(id);
  }

  async resume(id: string): Promise<void> {
    const c = this.ctr(id);
    const pod = this.alive();
    if (!c.sandbox) await pod.agent.resumeContainer(id);
  }

  async resizePty(id: string, execId: string, width: number, height: number): Promise<void> {
    this.ctr(id);
    await this.alive().agent.resizeTty(id, execId, height, width);
  }

  async closeIO(id: string, execId: string, stdin: boolean): Promise<void> {
    const c = this.ctr(id);
    if (!stdin) return;
    const p = c.procs.get(execId);
    if (p?.io?.want.stdin) p.io.closeStdin();
    else if (!c.sandbox && p?.started) await this.alive().agent.closeStdin(id, execId);
  }

  async update(id: string, resources: unknown): Promise<void> {
    const c = this.ctr(id);
    const pod = this.alive();
    if (!c.sandbox) await pod.agent.updateContainer(id, (resources ?? {}) as object);
  }

  async stats(id: string): Promise<AnyValue> {
    const c = this.ctr(id);
    const pod = this.alive();
    const T = messageType("io.containerd.cgroups.v2.Metrics");
    const metrics = c.sandbox ? {} : await pod.agent.statsContainer(id);
    return { type_url: "io.containerd.cgroups.v2.Metrics", value: T.encode(T.fromObject(metrics)).finish() };
  }

  private async shutdownPod(reason: string): Promise<void> {
    const pod = this.pod;
    if (!pod) return;
    this.volumes.stop();
    this.log.info({ reason }, "pod VM shutting down");
    await pod.destroy(this.log);
    // The VM (and its virtio-net devices) are gone: now the taps and redirects can go.
    const net = this.net;
    this.net = undefined;
    if (net) {
      await net.detach();
      this.log.info({ netns: net.netns }, "pod network detached");
    }
    for (const c of this.ctrs.values()) await this.release(c);
  }

  async shutdown(): Promise<void> {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    if (this.booting) await this.booting.catch(() => undefined);
    for (const c of this.ctrs.values()) for (const p of c.procs.values()) p.io?.close();
    await this.shutdownPod("shim shutdown");
    this.events = undefined;
  }
}

/** The pod's sysctls (CRI puts them on the sandbox's spec): string values only, as OCI has them. */
export function sysctlsOf(oci: Json): Record<string, string> {
  const linux = oci.linux as { sysctl?: unknown } | undefined;
  const out: Record<string, string> = {};
  if (linux && typeof linux.sysctl === "object" && linux.sysctl !== null)
    for (const [k, v] of Object.entries(linux.sysctl)) if (typeof v === "string") out[k] = v;
  return out;
}
