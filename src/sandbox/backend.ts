// Which hypervisor backend runs a pod VM on this host. `auto` takes the embedded VMM where /dev/kvm
// is backed by hardware virtualization (vmx/svm), and QEMU under TCG where it is not (e.g. PVM hosts,
// whose /dev/kvm cannot run a stock Linux guest; see docs/hosts.md). Backends register here.
import { accessSync, constants, existsSync, readFileSync } from "node:fs";
import type { CoveConfig, HypervisorChoice } from "../config/config.ts";
import type { Hypervisor } from "../hypervisor/types.ts";
import { Code, TtrpcError } from "../ttrpc/index.ts";

export type BackendKind = "embedded" | "qemu";
export type Accel = "kvm" | "tcg";

export interface HostKvm {
  /** /dev/kvm exists and we may open it read-write. */
  kvm: boolean;
  /** vmx or svm in /proc/cpuinfo, or null. */
  hwVirt: "vmx" | "svm" | null;
  /** The kvm_pvm module is loaded (KVM without hardware virtualization). */
  pvm: boolean;
}

export interface HostPaths {
  kvm: string;
  cpuinfo: string;
  pvmModule: string;
}

const DEFAULT_PATHS: HostPaths = { kvm: "/dev/kvm", cpuinfo: "/proc/cpuinfo", pvmModule: "/sys/module/kvm_pvm" };

export function probeHost(paths: HostPaths = DEFAULT_PATHS): HostKvm {
  let kvm = false;
  try {
    accessSync(paths.kvm, constants.R_OK | constants.W_OK);
    kvm = true;
  } catch {
    kvm = false;
  }
  let hwVirt: HostKvm["hwVirt"] = null;
  try {
    const flags = readFileSync(paths.cpuinfo, "utf8")
      .split("\n")
      .find((l) => l.startsWith("flags"));
    const set = new Set((flags ?? "").split(":")[1]?.trim().split(/\s+/) ?? []);
    hwVirt = set.has("vmx") ? "vmx" : set.has("svm") ? "svm" : null;
  } catch {
    hwVirt = null;
  }
  return { kvm, hwVirt, pvm: existsSync(paths.pvmModule) };
}

export interface BackendChoice {
  kind: BackendKind;
  accel: Accel;
  reason: string;
}

/** Applies the `hypervisor` setting to what the host offers; FAILED_PRECONDITION if it cannot work. */
export function chooseBackend(choice: HypervisorChoice, host: HostKvm): BackendChoice {
  const hwKvm = host.kvm && host.hwVirt !== null;
  const why = !host.kvm
    ? "/dev/kvm is not available"
    : host.hwVirt === null
      ? `/dev/kvm is not backed by hardware virtualization (no vmx/svm in /proc/cpuinfo${host.pvm ? "; kvm_pvm is loaded" : ""})`
      : `/dev/kvm is backed by ${host.hwVirt}`;
  switch (choice) {
    case "embedded":
      if (!hwKvm) {
        throw new TtrpcError(
          Code.FAILED_PRECONDITION,
          `hypervisor = "embedded" needs KVM with hardware virtualization, but ${why}; set hypervisor = "qemu" or "auto"`,
        );
      }
      return { kind: "embedded", accel: "kvm", reason: `configured "embedded"; ${why}` };
    case "qemu":
      return hwKvm
        ? { kind: "qemu", accel: "kvm", reason: `configured "qemu"; ${why}` }
        : { kind: "qemu", accel: "tcg", reason: `configured "qemu"; ${why}, so QEMU uses TCG` };
    case "auto":
      return hwKvm
        ? { kind: "embedded", accel: "kvm", reason: `auto: ${why}` }
        : { kind: "qemu", accel: "tcg", reason: `auto: ${why}, so QEMU with TCG` };
  }
}

/** Makes the Hypervisor (src/hypervisor/types.ts) for a choice; a backend module registers one. */
export type BackendFactory = (config: CoveConfig, choice: BackendChoice) => Hypervisor;

const registry = new Map<BackendKind, BackendFactory>();

/** Called by a backend module to make itself available (src/hypervisor/*). */
export function registerBackend(kind: BackendKind, factory: BackendFactory): void {
  registry.set(kind, factory);
}

export function unregisterBackend(kind: BackendKind): void {
  registry.delete(kind);
}

/** The factory for a backend, or UNIMPLEMENTED naming it when this build has none. */
export function backendFactory(choice: BackendChoice): BackendFactory {
  const f = registry.get(choice.kind);
  if (!f) {
    throw new TtrpcError(
      Code.UNIMPLEMENTED,
      `cove cannot start the pod VM: the ${choice.kind} hypervisor backend (${choice.accel}) is not available in this build of cove (chosen because ${choice.reason})`,
    );
  }
  return f;
}
