// Booting the pod's VM for its first task, in one place and in this order:
//   preflight (config, guest artifacts, backend) → plan (network namespace, VM size) →
//   network (taps in the pod's netns) → disks (slot table; the first container's rootfs) →
//   VM (start, wait for the agent) → CreateSandbox → network config (addresses, routes, DNS).
// Each step that acquires something defers its undo on one Rollback; when a later step fails, the
// undos run newest first, so a failed boot leaves no network wiring, disk file, VM or VM dir behind.
// Each step is itself all-or-nothing (PodVm.boot removes its own VM and dir when the agent never
// answers), so the undo list only ever holds steps that completed.
import type { Logger } from "pino";
import { LimitError, WrongStateError } from "../common/errors.ts";
import { ConfigError, type CoveConfig, loadConfig } from "../config/config.ts";
import { type HostKvm, probeHost } from "../hypervisor/host.ts";
import { type BackendChoice, backendFactory, chooseBackend } from "../hypervisor/select.ts";
import type { Hypervisor } from "../hypervisor/types.ts";
import type { PodNetns } from "../network/netns.ts";
import type { PodNetwork } from "../network/pod-network.ts";
import type { ContainerdAddress } from "../rootfs/containerd.ts";
import type { CreateSpec, MountSpec } from "../shim/runtime.ts";
import type { AgentClientOptions } from "./agent/index.ts";
import {
  type ContainerDisks,
  type DiskMakers,
  PodDisks,
  type PreparedDisks,
  realDiskMakers,
  releaseDisks,
} from "./disks.ts";
import { checkGuestArtifacts } from "./guest.ts";
import {
  attachPodNetwork,
  describeNics,
  hostNetworkRefusal,
  nicsOf,
  podDns,
  podNetnsOf,
  resolvConfSource,
} from "./network.ts";
import { hostnameOf, type Json, sysctlsOf } from "./oci.ts";
import { configPathFromOptions } from "./options.ts";
import { PodVm, VM_RUN_DIR } from "./pod.ts";
import { joinPodCgroup } from "./pod-cgroup.ts";
import { Rollback } from "./rollback.ts";
import { podVmSize, type VmSize } from "./vm-size.ts";

/** What the boot takes from the host; unit tests substitute fakes. */
export interface PodBootDeps {
  /** Host KVM probe (backend choice). */
  probe: () => HostKvm;
  /** Wires the pod's network namespace to taps. */
  attachNetwork: (netns: string, log: Logger) => Promise<PodNetwork>;
  /** Makes layer images and writable layers. */
  diskMakers: DiskMakers;
  /** Where VM work dirs live. */
  runDir: string;
  /** containerd's gRPC socket and our namespace: it names the layers' snapshots (layer cache keys). */
  containerd?: ContainerdAddress;
  /** The agent client's deadlines (tests shorten them; the defaults are sized for TCG). */
  agent?: AgentClientOptions;
}

export const realPodBootDeps: PodBootDeps = {
  probe: probeHost,
  attachNetwork: attachPodNetwork,
  diskMakers: realDiskMakers,
  runDir: VM_RUN_DIR,
};

export interface Preflight {
  config: CoveConfig;
  hypervisor: Hypervisor;
  /** The backend choice and its reason (absent when a test hands in a hypervisor). */
  choice?: BackendChoice;
}

function loadPodConfig(spec: CreateSpec, configPath: string | undefined): CoveConfig {
  try {
    return loadConfig({ configPath: configPathFromOptions(spec.options) ?? configPath });
  } catch (e) {
    if (e instanceof ConfigError) throw new WrongStateError(e.message);
    throw e;
  }
}

/** Before anything is read or built for the pod's first task: config, guest artifacts, backend. */
export function preflight(
  spec: CreateSpec,
  configPath: string | undefined,
  probe: () => HostKvm,
  log: Logger,
): Preflight {
  const config = loadPodConfig(spec, configPath);
  log.info({ id: spec.id, config: config.source, hypervisor: config.hypervisor }, "pod config loaded");
  for (const d of config.deprecations) log.warn({ id: spec.id }, d);
  checkGuestArtifacts(config);
  const choice = chooseBackend(config.hypervisor, probe());
  log.info(
    { id: spec.id, backend: choice.kind, accel: choice.accel, reason: choice.reason },
    "hypervisor backend chosen",
  );
  return { config, hypervisor: backendFactory(choice)(config, choice), choice };
}

/** What the pod boot checked before it acquires anything (it throws, holding nothing, when a check fails). */
export interface PodBootPlan extends Preflight {
  id: string;
  bundle: string;
  oci: Json;
  netns: PodNetns;
  size: VmSize;
}

export function planPodBoot(spec: CreateSpec, oci: Json, pre: Preflight, log: Logger): PodBootPlan {
  const netns = podNetnsOf(oci, spec.id);
  if (netns.kind === "host") throw hostNetworkRefusal(spec.id);
  const size = podVmSize(oci, pre.config);
  for (const n of size.notes) log.info({ id: spec.id }, n);
  return { ...pre, id: spec.id, bundle: spec.bundle, oci, netns, size };
}

/** The pod's first container, whose disks are in the VM from boot. */
export interface FirstContainer {
  c: { id: string; bundle: string; disks: ContainerDisks };
  rootfs: MountSpec[];
}

export interface BootedPod {
  pod: PodVm;
  /** The pod's network wiring, if it has one; detached after the VM is gone. */
  net?: PodNetwork;
  disks: PodDisks;
  /** The resolv.conf the guest was given its DNS from. */
  dnsFrom?: string;
  /** The first container's prepared disks. */
  firstDisks?: PreparedDisks;
}

/**
 * The pod VM's virtio devices: the guest image, the two disks of extents (every container's rootfs,
 * however many), vsock and one per NIC. RESOURCE_EXHAUSTED when the backend has fewer.
 */
function checkDevices(plan: PodBootPlan, nics: number, log: Logger): void {
  const max = plan.hypervisor.maxDevices;
  const need = 1 + PodDisks.vmDisks().length + 1 + nics;
  if (max === undefined || need <= max) return;
  const msg = `the pod VM needs ${need} virtio devices (guest image, 2 container disks, vsock, ${nics} NIC(s)); ${plan.hypervisor.name} has ${max}`;
  log.error({ id: plan.id, nics, max_devices: max }, msg);
  throw new LimitError(msg);
}

/** Boots the pod: on success the caller owns everything in the result; on failure nothing is held. */
export async function bootPod(
  plan: PodBootPlan,
  first: FirstContainer | undefined,
  deps: PodBootDeps,
  log: Logger,
): Promise<BootedPod> {
  const { id, oci, netns, hypervisor } = plan;
  const undo = new Rollback();
  try {
    // First, so the VMM it starts inherits the pod's cgroup.
    const cgroup = joinPodCgroup(oci, log);
    if (cgroup) undo.defer("pod cgroup", () => cgroup.leave(log));
    let net: PodNetwork | undefined;
    if (netns.kind === "netns" && !hypervisor.nets) {
      log.warn(
        { id, netns: netns.path, hypervisor: hypervisor.name },
        "pod network: the guest has loopback only (this hypervisor backend has no virtio-net yet)",
      );
    } else if (netns.kind === "netns") {
      const attached = await deps.attachNetwork(netns.path, log);
      undo.defer("pod network", () => attached.detach());
      net = attached;
    }
    checkDevices(plan, net?.interfaces.length ?? 0, log);
    const disks = new PodDisks(plan.config, deps.diskMakers, deps.containerd, id);
    undo.defer("layer cache hold", () => disks.close());
    let firstDisks: PreparedDisks | undefined;
    if (first) {
      // Deferred first: prepare records each image and file in the container's disks as it makes it.
      const c = first.c;
      undo.defer("first container's disks", () => releaseDisks(c.id, c.disks, disks, undefined, log));
      firstDisks = await disks.prepare(c, first.rootfs, log);
    }
    const pod = await PodVm.boot({
      id,
      bundle: plan.bundle,
      runDir: deps.runDir,
      ...(deps.agent ? { agent: deps.agent } : {}),
      hostname: hostnameOf(oci) || id,
      config: plan.config,
      vcpus: plan.size.vcpus,
      memoryMib: plan.size.memoryMib,
      hypervisor,
      ...(net ? { nets: nicsOf(net), netRecord: net.record() } : {}),
      logger: log,
    });
    undo.defer("pod VM", () => pod.destroy(log));
    await pod.agent.createSandbox({ hostname: hostnameOf(oci), sysctls: sysctlsOf(oci) });
    let dnsFrom: string | undefined;
    if (net) {
      // After CreateSandbox: its DNS would otherwise overwrite ours.
      const t0 = performance.now();
      await pod.agent.configureNetwork(net.guestConfig(podDns(oci, log)));
      dnsFrom = resolvConfSource(oci);
      log.info(
        { id, netns: netns.kind === "netns" ? netns.path : undefined, ms: Math.round(performance.now() - t0) },
        `pod network: ${describeNics(net)}`,
      );
    } else if (netns.kind === "new") {
      log.info({ id }, "pod network: the guest has loopback only (the pod has a fresh, empty network namespace)");
    }
    undo.dismiss();
    return { pod, net, disks, dnsFrom, firstDisks };
  } catch (e) {
    await undo.unwind(log);
    throw e;
  }
}
