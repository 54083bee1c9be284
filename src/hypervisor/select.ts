// Which hypervisor backend runs a pod VM on this host. `auto` takes the embedded VMM where /dev/kvm
// is backed by hardware virtualization (vmx/svm), and QEMU under TCG where it is not (e.g. PVM hosts,
// whose /dev/kvm cannot run a stock Linux guest; see docs/hosts.md). Backends register here
// (builtin.ts), so the sandbox never imports a backend itself and tests can register fakes.
import { NotSupportedError, WrongStateError } from "../common/errors.ts";
import type { CoveConfig, HypervisorChoice } from "../config/config.ts";
import { describeHost, type HostKvm, hasHardwareKvm } from "./host.ts";
import type { Hypervisor } from "./types.ts";

export type BackendKind = "embedded" | "qemu";
export type Accel = "kvm" | "tcg";

export interface BackendChoice {
  kind: BackendKind;
  accel: Accel;
  reason: string;
}

/** Applies the `hypervisor` setting to what the host offers; FAILED_PRECONDITION if it cannot work. */
export function chooseBackend(choice: HypervisorChoice, host: HostKvm): BackendChoice {
  const hwKvm = hasHardwareKvm(host);
  const why = describeHost(host);
  switch (choice) {
    case "embedded":
      if (!hwKvm) {
        throw new WrongStateError(
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

/** Makes the Hypervisor (types.ts) for a choice; a backend module registers one. */
export type BackendFactory = (config: CoveConfig, choice: BackendChoice) => Hypervisor;

const registry = new Map<BackendKind, BackendFactory>();

/** Called by a backend module to make itself available (builtin.ts). */
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
    throw new NotSupportedError(
      `cove cannot start the pod VM: the ${choice.kind} hypervisor backend (${choice.accel}) is not available in this build of cove (chosen because ${choice.reason})`,
    );
  }
  return f;
}
